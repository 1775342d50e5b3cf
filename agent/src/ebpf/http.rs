//! The HTTP probe: its ring buffer of events, and on kernels that have them the socket
//! tracepoints `sock:sock_recv_length`/`sock_send_length`. Its syscall part (the calls that
//! create and close sockets, and on older kernels reads and writes) runs inside the raw
//! `sys_enter`/`sys_exit` programs (`agent-ebpf/src/syscall_latency.rs`), attached by the
//! caller: no per-syscall `syscalls:*` tracepoint (and so no tracefs) is used.

use agent_common::http::HttpEvent;
use aya::{Btf, Ebpf};
use aya_obj::btf::BtfKind;

use super::{take_map, EventRing, ProbeError};

pub type HttpEvents = EventRing<HttpEvent>;

/// What the HTTP probe hands to the pipeline.
pub struct HttpProbe {
    pub events: HttpEvents,
    /// Socket reads and writes are seen through `sock:sock_{recv,send}_length` (6.3+), not
    /// by number in the raw syscall programs.
    pub sock_tracepoints: bool,
}

/// Socket reads and writes on kernels with `sock_recv_length`/`sock_send_length`.
const SOCK_IO: &[(&str, &str)] = &[
    ("http_sock_recv", "sock_recv_length"),
    ("http_sock_send", "sock_send_length"),
];

/// Whether the kernel has the socket tracepoints of [`SOCK_IO`] (decided before the object
/// is loaded: the raw syscall programs watch reads and writes by number when it has not).
pub(super) fn has_sock_tracepoints(btf: &Btf) -> bool {
    SOCK_IO.iter().all(|(_, tracepoint)| {
        btf.id_by_type_name_kind(&format!("btf_trace_{tracepoint}"), BtfKind::Typedef)
            .is_ok()
    })
}

/// Takes the HTTP ring and attaches the socket tracepoints when `sock_io`.
pub(super) fn attach(ebpf: &mut Ebpf, btf: &Btf, sock_io: bool) -> Result<HttpProbe, ProbeError> {
    let events = HttpEvents::new(take_map(ebpf, "HTTP_EVENTS")?, "HTTP_EVENTS")?;
    if sock_io {
        for &(name, tracepoint) in SOCK_IO {
            super::attach_btf(ebpf, btf, name, tracepoint)?;
        }
        tracing::info!(
            "HTTP probe: socket reads and writes seen through sock_recv_length/sock_send_length"
        );
    } else {
        tracing::info!(
            "no sock_recv_length/sock_send_length tracepoints: watching socket reads and writes \
             by syscall number"
        );
    }
    Ok(HttpProbe {
        events,
        sock_tracepoints: sock_io,
    })
}

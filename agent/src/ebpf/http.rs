//! The HTTP probe: syscall tracepoints (`syscalls:sys_enter_*`/`sys_exit_*`) of the calls that
//! create, move bytes on and close sockets, and the ring buffer of their events.

use agent_common::http::HttpEvent;
use aya::{programs::TracePoint, Btf, Ebpf};

use super::{take_map, EventRing, ProbeError};

pub type HttpEvents = EventRing<HttpEvent>;

/// What the HTTP probe hands to the pipeline.
pub struct HttpProbe {
    pub events: HttpEvents,
    /// Socket reads and writes are seen through `sock:sock_{recv,send}_length` (6.3+), not
    /// through the per-syscall read and write tracepoints.
    pub sock_tracepoints: bool,
}

/// Socket reads and writes on kernels with `sock_recv_length`/`sock_send_length`.
const SOCK_IO: &[(&str, &str)] = &[
    ("http_sock_recv", "sock_recv_length"),
    ("http_sock_send", "sock_send_length"),
];

/// (program, tracepoint) pairs of the per-syscall reads and writes (older kernels). Exits are
/// attached before enters: a slot armed at an enter always meets its exit.
const SYSCALL_IO: &[(&str, &str)] = &[
    ("http_exit_read", "sys_exit_read"),
    ("http_exit_recvfrom", "sys_exit_recvfrom"),
    ("http_exit_readv", "sys_exit_readv"),
    ("http_exit_recvmsg", "sys_exit_recvmsg"),
    ("http_exit_write", "sys_exit_write"),
    ("http_exit_sendto", "sys_exit_sendto"),
    ("http_exit_writev", "sys_exit_writev"),
    ("http_exit_sendmsg", "sys_exit_sendmsg"),
    ("http_enter_read", "sys_enter_read"),
    ("http_enter_recvfrom", "sys_enter_recvfrom"),
    ("http_enter_readv", "sys_enter_readv"),
    ("http_enter_recvmsg", "sys_enter_recvmsg"),
    ("http_enter_write", "sys_enter_write"),
    ("http_enter_sendto", "sys_enter_sendto"),
    ("http_enter_writev", "sys_enter_writev"),
    ("http_enter_sendmsg", "sys_enter_sendmsg"),
];

/// Which fds are TCP connections, and their ends.
const LIFECYCLE: &[(&str, &str)] = &[
    ("http_exit_sock", "sys_exit_socket"),
    ("http_exit_sock", "sys_exit_connect"),
    ("http_exit_sock", "sys_exit_accept"),
    ("http_exit_sock", "sys_exit_accept4"),
    ("http_enter_close", "sys_enter_close"),
    ("http_enter_socket", "sys_enter_socket"),
    ("http_enter_connect", "sys_enter_connect"),
    ("http_enter_accept", "sys_enter_accept"),
    ("http_enter_accept", "sys_enter_accept4"),
];

/// Loads and attaches the HTTP programs.
pub(super) fn attach(ebpf: &mut Ebpf, btf: &Btf) -> Result<HttpProbe, ProbeError> {
    mount_tracefs();
    let events = HttpEvents::new(take_map(ebpf, "HTTP_EVENTS")?, "HTTP_EVENTS")?;
    // Connections first, then their bytes.
    attach_syscalls(ebpf, LIFECYCLE)?;
    let sock_tracepoints = match attach_sock_io(ebpf, btf) {
        Ok(()) => {
            tracing::info!("HTTP probe: socket reads and writes seen through sock_recv_length/sock_send_length");
            true
        }
        Err(error) => {
            tracing::info!(%error, "no sock_recv_length/sock_send_length tracepoints: watching socket reads and writes through their syscalls");
            attach_syscalls(ebpf, SYSCALL_IO)?;
            false
        }
    };
    Ok(HttpProbe {
        events,
        sock_tracepoints,
    })
}

fn attach_sock_io(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProbeError> {
    for &(name, tracepoint) in SOCK_IO {
        super::attach_btf(ebpf, btf, name, tracepoint)?;
    }
    Ok(())
}

fn attach_syscalls(ebpf: &mut Ebpf, programs: &[(&'static str, &str)]) -> Result<(), ProbeError> {
    let mut loaded: Vec<&str> = Vec::new();
    for &(name, tracepoint) in programs {
        let err = |source| ProbeError::Program { name, source };
        let program: &mut TracePoint = super::program(ebpf, name)?;
        if !loaded.contains(&name) {
            program.load().map_err(err)?;
            loaded.push(name);
        }
        program.attach("syscalls", tracepoint).map_err(err)?;
    }
    Ok(())
}

/// Per-syscall tracepoints are found through tracefs; mount it where the kernel documents it
/// when nothing did (systemd does at boot; a bare container or VM may not have).
fn mount_tracefs() {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || !dir.exists() {
        return;
    }
    let (src, target, fstype) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call and no data.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not mount tracefs at /sys/kernel/tracing"
        );
    }
}

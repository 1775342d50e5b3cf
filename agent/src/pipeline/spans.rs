//! The spans the pipeline makes from kernel events (slow syscalls, TCP retransmits, slow or
//! failed HTTP requests), before export gives them their OTLP form (`export::spans`).
//! Attribute names follow the OpenTelemetry semantic conventions where one exists
//! (`process.pid`, `thread.id`, `process.executable.name`, `error.type`, `network.*`); the
//! rest are `steadfast.*`.

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use agent_common::tcp::{TcpEvent, TCP_RETRANS_SYNACK, UNKNOWN_OWNER};

use super::{
    http_stats::{Done, Side},
    tcp_stats,
};
use crate::{errno, syscalls};

/// Where the pipeline offers spans (export's sampling, rate limit and bounded queue, set by the
/// wiring). Never blocks: what is not admitted or does not fit is dropped and counted there.
pub trait SpanOut: Send + Sync {
    /// Whether one more span is admitted (sampling, rate limit); counts the offer either way.
    fn admit(&self) -> bool;
    /// Queues an admitted span; a full queue drops (and counts) it.
    fn push(&self, span: SpanRecord);
}

impl dyn SpanOut + '_ {
    /// Offers a span; `build` runs only once it is admitted, so an event flood does not build
    /// (and allocate) spans only to drop them.
    pub fn offer(&self, build: impl FnOnce() -> SpanRecord) {
        if self.admit() {
            self.push(build());
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// One finished span, in wall-clock nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub name: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(description)` marks the span as failed.
    pub error: Option<String>,
    /// OTLP span kind: what the process was in the exchange.
    pub kind: SpanKind,
}

impl SpanRecord {
    /// Adds the OpenTelemetry semantic-convention attributes of the container the span's
    /// process runs in: `container.id`, `container.name`, and in Kubernetes
    /// `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name` (those the
    /// runtime's files named).
    pub fn in_container(mut self, c: Option<&super::containers::Identity>) -> Self {
        let Some(c) = c else { return self };
        self.attributes
            .push(("container.id", Value::Str(c.id.clone())));
        let kubernetes = c.pod_uid.is_some() || c.pod.is_some();
        if let Some(name) = &c.container {
            self.attributes
                .push(("container.name", Value::Str(name.clone())));
            if kubernetes {
                self.attributes
                    .push(("k8s.container.name", Value::Str(name.clone())));
            }
        }
        for (key, value) in [
            ("k8s.namespace.name", &c.namespace),
            ("k8s.pod.name", &c.pod),
            ("k8s.pod.uid", &c.pod_uid),
        ] {
            if let Some(v) = value {
                self.attributes.push((key, Value::Str(v.clone())));
            }
        }
        self
    }

    /// A slow syscall: `start_unix_ns` is its entry in wall-clock time.
    pub fn slow_syscall(
        ev: &agent_common::syscall::SlowSyscallEvent,
        service: &str,
        start_unix_ns: u64,
    ) -> Self {
        let syscall = syscalls::label(ev.nr).into_owned();
        let comm = String::from_utf8_lossy(
            &ev.comm[..ev
                .comm
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(ev.comm.len())],
        )
        .into_owned();
        let mut attributes = vec![
            ("process.pid", Value::Int(ev.tgid.into())),
            ("thread.id", Value::Int(ev.tid.into())),
            ("process.executable.name", Value::Str(comm)),
            ("steadfast.service", Value::Str(service.to_string())),
            ("steadfast.syscall.name", Value::Str(syscall.clone())),
            ("steadfast.syscall.number", Value::Int(ev.nr.into())),
            ("steadfast.syscall.return_value", Value::Int(ev.ret)),
            (
                "steadfast.syscall.duration_ns",
                Value::Int(ev.latency_ns as i64),
            ),
        ];
        let error = (-4095..0).contains(&ev.ret).then(|| {
            let name = errno::label((-ev.ret) as u32).into_owned();
            attributes.push(("error.type", Value::Str(name.clone())));
            name
        });
        Self {
            name: format!("syscall {syscall}"),
            start_unix_ns,
            end_unix_ns: start_unix_ns.saturating_add(ev.latency_ns),
            attributes,
            error,
            kind: SpanKind::Internal,
        }
    }

    /// A TCP retransmit: an instant (start = end) at `at_unix_ns`, with the connection's
    /// addresses and state. A failed attempt (`err != 0`) is marked as an error.
    pub fn tcp_retransmit(ev: &TcpEvent, service: &str, at_unix_ns: u64) -> Self {
        let kind = if ev.kind == TCP_RETRANS_SYNACK {
            "synack"
        } else {
            "data"
        };
        let local = tcp_stats::local_address(ev);
        let peer = tcp_stats::peer_address(ev);
        let mut attributes = vec![
            (
                "process.executable.name",
                Value::Str(String::from_utf8_lossy(ev.comm_bytes()).into_owned()),
            ),
            ("steadfast.service", Value::Str(service.to_string())),
            ("network.transport", Value::Str("tcp".into())),
            (
                "network.type",
                Value::Str(if peer.is_ipv4() { "ipv4" } else { "ipv6" }.into()),
            ),
            ("network.local.address", Value::Str(local.to_string())),
            ("network.local.port", Value::Int(ev.sport.into())),
            ("network.peer.address", Value::Str(peer.to_string())),
            ("network.peer.port", Value::Int(ev.dport.into())),
            ("steadfast.tcp.retransmit.kind", Value::Str(kind.into())),
            (
                "steadfast.tcp.state",
                Value::Str(tcp_state(ev.state).into()),
            ),
            ("steadfast.tcp.segments", Value::Int(ev.segs.into())),
        ];
        if ev.tgid != UNKNOWN_OWNER {
            attributes.insert(0, ("process.pid", Value::Int(ev.tgid.into())));
        }
        let error = (ev.err != 0).then(|| {
            let name = errno::label(ev.err.unsigned_abs()).into_owned();
            attributes.push(("error.type", Value::Str(name.clone())));
            name
        });
        Self {
            name: format!("tcp retransmit {kind}"),
            start_unix_ns: at_unix_ns,
            end_unix_ns: at_unix_ns,
            attributes,
            error,
            kind: SpanKind::Internal,
        }
    }

    /// An HTTP/1.x request the process served (`SERVER`) or made (`CLIENT`), timed as its
    /// histogram is; `start_unix_ns` is its first byte in wall-clock time. A 5xx marks the
    /// span as failed on either side (the semantic conventions leave 4xx unset on servers).
    pub fn http_request(done: &Done, service: &str, pid: u32, start_unix_ns: u64) -> Self {
        let method = done.method.label();
        let mut attributes = vec![
            ("process.pid", Value::Int(pid.into())),
            ("steadfast.service", Value::Str(service.to_string())),
            ("http.request.method", Value::Str(method.into())),
            ("http.response.status_code", Value::Int(done.status.into())),
            ("network.protocol.name", Value::Str("http".into())),
            ("network.transport", Value::Str("tcp".into())),
        ];
        if let Some(path) = done.target.path() {
            attributes.push(("url.path", Value::Str(path)));
        }
        if let Some(peer) = done.peer {
            match done.side {
                Side::Client => {
                    attributes.push(("server.address", Value::Str(peer.ip().to_string())));
                    attributes.push(("server.port", Value::Int(peer.port().into())));
                }
                Side::Server => {
                    attributes.push(("client.address", Value::Str(peer.ip().to_string())));
                    attributes.push(("client.port", Value::Int(peer.port().into())));
                }
            }
            attributes.push(("network.peer.address", Value::Str(peer.ip().to_string())));
            attributes.push(("network.peer.port", Value::Int(peer.port().into())));
        }
        let error = (500..600).contains(&done.status).then(|| {
            let code = done.status.to_string();
            attributes.push(("error.type", Value::Str(code.clone())));
            code
        });
        Self {
            // Without a route, the conventions name the span by its method alone.
            name: method.to_string(),
            start_unix_ns,
            end_unix_ns: start_unix_ns.saturating_add(done.end_ns.saturating_sub(done.start_ns)),
            attributes,
            error,
            kind: match done.side {
                Side::Server => SpanKind::Server,
                Side::Client => SpanKind::Client,
            },
        }
    }
}

/// The kernel's name of a TCP state (`include/net/tcp_states.h`).
fn tcp_state(state: u16) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "unknown",
    }
}

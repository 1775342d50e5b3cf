//! Spans the agent exports, and their OTLP form. Attribute names follow the OpenTelemetry
//! semantic conventions where one exists (`process.pid`, `thread.id`,
//! `process.executable.name`, `error.type`, `network.*`); the rest are `steadfast.*`.

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};

use agent_common::tcp::{TcpEvent, TCP_RETRANS_SYNACK, UNKNOWN_OWNER};

use crate::{
    errno,
    pipeline::{
        http_stats::{Done, Side},
        tcp_stats,
    },
    syscalls,
};

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
    pub fn in_container(mut self, c: Option<&crate::pipeline::containers::Identity>) -> Self {
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

    fn to_otlp(&self, ids: &mut IdSource) -> Span {
        Span {
            trace_id: ids.bytes(16),
            span_id: ids.bytes(8),
            name: self.name.clone(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start_unix_ns,
            end_time_unix_nano: self.end_unix_ns,
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| key_value(k, v.clone()))
                .collect(),
            status: Some(match &self.error {
                Some(message) => Status {
                    code: StatusCode::Error as i32,
                    message: message.clone(),
                },
                None => Status::default(),
            }),
            ..Default::default()
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

pub fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(match value {
                Value::Str(s) => any_value::Value::StringValue(s),
                Value::Int(i) => any_value::Value::IntValue(i),
            }),
        }),
        ..Default::default()
    }
}

/// Resource attributes from `otlp.resource_attributes` (and `OTEL_RESOURCE_ATTRIBUTES`), set
/// once when export starts.
static EXTRA_RESOURCE: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Adds `attributes` to the resource of every export from now on (the first call wins).
pub fn set_resource_attributes(attributes: &std::collections::BTreeMap<String, String>) {
    let _ = EXTRA_RESOURCE.set(
        attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
}

/// The resource every export describes: this agent on this host, plus the configured
/// attributes (which replace the defaults of the same key, e.g. `service.name`).
pub fn resource() -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut attributes: Vec<(String, String)> = vec![
        ("service.name".into(), "steadfast".into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("host.name".into(), host),
    ];
    for (k, v) in EXTRA_RESOURCE.get().into_iter().flatten() {
        match attributes.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => attributes.push((k.clone(), v.clone())),
        }
    }
    Resource {
        attributes: attributes
            .into_iter()
            .map(|(k, v)| key_value(&k, Value::Str(v)))
            .collect(),
        ..Default::default()
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "steadfast".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// One batch as OTLP resource spans.
pub fn to_resource_spans(batch: &[SpanRecord], ids: &mut IdSource) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource()),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope()),
            spans: batch.iter().map(|s| s.to_otlp(ids)).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Random trace and span ids and sampling decisions, from the agent's one random source
/// (ids need to be unique, not secret).
#[derive(Default)]
pub struct IdSource(crate::random::Rng);

impl IdSource {
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        self.0.bytes(n)
    }

    /// A value in [0, 1), for sampling decisions.
    pub fn unit(&mut self) -> f64 {
        self.0.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::syscall::SlowSyscallEvent;

    #[test]
    fn slow_syscall_span_has_semantic_attributes() {
        let ev = SlowSyscallEvent {
            tgid: 10,
            tid: 11,
            nr: 74,
            latency_ns: 5_000_000,
            ret: -5,
            comm: *b"postgres\0\0\0\0\0\0\0\0",
            ..Default::default()
        };
        let s = SpanRecord::slow_syscall(&ev, "db.service", 1_000);
        assert_eq!(s.name, "syscall fsync");
        assert_eq!(s.end_unix_ns, 5_001_000);
        assert!(s.attributes.contains(&("process.pid", Value::Int(10))));
        assert!(s
            .attributes
            .contains(&("process.executable.name", Value::Str("postgres".into()))));
        assert!(s
            .attributes
            .contains(&("error.type", Value::Str("EIO".into()))));
        let otlp = to_resource_spans(&[s], &mut IdSource::default());
        let span = &otlp.scope_spans[0].spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
    }

    #[test]
    fn tcp_retransmit_span_names_the_connection() {
        let mut ev = TcpEvent {
            kind: agent_common::tcp::TCP_RETRANS_DATA,
            tgid: 42,
            segs: 2,
            family: 2,
            state: 1,
            sport: 5000,
            dport: 443,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Default::default()
        };
        ev.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        ev.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let s = SpanRecord::tcp_retransmit(&ev, "curl", 7);
        assert_eq!(s.name, "tcp retransmit data");
        assert_eq!((s.start_unix_ns, s.end_unix_ns), (7, 7));
        for (k, v) in [
            ("process.pid", Value::Int(42)),
            ("network.type", Value::Str("ipv4".into())),
            ("network.local.address", Value::Str("10.0.0.1".into())),
            ("network.peer.address", Value::Str("10.0.0.2".into())),
            ("network.peer.port", Value::Int(443)),
            ("steadfast.tcp.state", Value::Str("ESTABLISHED".into())),
            ("steadfast.tcp.segments", Value::Int(2)),
        ] {
            assert!(
                s.attributes.contains(&(k, v.clone())),
                "{k}: {:?}",
                s.attributes
            );
        }
        assert_eq!(s.error, None);
        // A failed attempt of an unknown owner: no pid, an error.
        ev.tgid = UNKNOWN_OWNER;
        ev.err = -105;
        let s = SpanRecord::tcp_retransmit(&ev, "unknown", 7);
        assert!(!s.attributes.iter().any(|(k, _)| *k == "process.pid"));
        assert_eq!(s.error.as_deref(), Some("ENOBUFS"));
    }

    #[test]
    fn http_spans_carry_the_semantic_attributes_of_their_side() {
        use crate::pipeline::http_stats::{Method, Target};
        let done = Done {
            side: Side::Client,
            method: Method::Post,
            status: 503,
            start_ns: 1_000,
            end_ns: 301_000_000,
            target: Target::of_line(b"POST /pay?card=4111 HTTP/1.1"),
            peer: Some("10.1.2.3:8080".parse().unwrap()),
        };
        let s = SpanRecord::http_request(&done, "checkout", 42, 5_000);
        assert_eq!(s.name, "POST");
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.end_unix_ns - s.start_unix_ns, 300_999_000);
        for (k, v) in [
            ("process.pid", Value::Int(42)),
            ("steadfast.service", Value::Str("checkout".into())),
            ("http.request.method", Value::Str("POST".into())),
            ("http.response.status_code", Value::Int(503)),
            ("url.path", Value::Str("/pay".into())),
            ("server.address", Value::Str("10.1.2.3".into())),
            ("server.port", Value::Int(8080)),
            ("network.peer.address", Value::Str("10.1.2.3".into())),
            ("error.type", Value::Str("503".into())),
        ] {
            assert!(
                s.attributes.contains(&(k, v.clone())),
                "{k}: {:?}",
                s.attributes
            );
        }
        assert_eq!(s.error.as_deref(), Some("503"));
        let server = SpanRecord::http_request(
            &Done {
                side: Side::Server,
                status: 200,
                ..done
            },
            "checkout",
            42,
            5_000,
        );
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(server.error, None);
        assert!(server
            .attributes
            .contains(&("client.address", Value::Str("10.1.2.3".into()))));
        assert!(!server
            .attributes
            .iter()
            .any(|(k, _)| *k == "server.address"));
    }
}

//! The OTLP form of the pipeline's spans (`pipeline::spans`).

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};

pub use crate::pipeline::spans::{SpanRecord, Value};

/// One span in OTLP form, with fresh random trace and span ids.
fn to_otlp(s: &SpanRecord, ids: &mut IdSource) -> Span {
    Span {
        trace_id: ids.bytes(16),
        span_id: ids.bytes(8),
        name: s.name.clone(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes: s
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, v.clone()))
            .collect(),
        status: Some(match &s.error {
            Some(message) => Status {
                code: StatusCode::Error as i32,
                message: message.clone(),
            },
            None => Status::default(),
        }),
        ..Default::default()
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
            spans: batch.iter().map(|s| to_otlp(s, ids)).collect(),
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
    use crate::pipeline::{
        http_stats::{Done, Side},
        spans::SpanKind,
    };
    use agent_common::syscall::SlowSyscallEvent;
    use agent_common::tcp::{TcpEvent, UNKNOWN_OWNER};

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

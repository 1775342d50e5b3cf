//! Spans the agent exports, and their OTLP form. Attribute names follow the OpenTelemetry
//! semantic conventions where one exists (`process.pid`, `thread.id`,
//! `process.executable.name`, `error.type`, `network.*`); the rest are `steadfast.*`.

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};

use crate::{errno, syscalls};

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
}

impl SpanRecord {
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
        }
    }

    fn to_otlp(&self, ids: &mut IdSource) -> Span {
        Span {
            trace_id: ids.bytes(16),
            span_id: ids.bytes(8),
            name: self.name.clone(),
            kind: SpanKind::Internal as i32,
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

/// The resource every export describes: this agent on this host.
pub fn resource() -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    Resource {
        attributes: vec![
            key_value("service.name", Value::Str("steadfast".into())),
            key_value(
                "service.version",
                Value::Str(env!("CARGO_PKG_VERSION").into()),
            ),
            key_value("host.name", Value::Str(host)),
        ],
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

/// Random trace and span ids (xorshift seeded from the clock and pid: ids need to be unique,
/// not secret).
pub struct IdSource(u64);

impl Default for IdSource {
    fn default() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self(t ^ (u64::from(std::process::id()) << 32) | 1)
    }
}

impl IdSource {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A value in [0, 1), for sampling decisions.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
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
}

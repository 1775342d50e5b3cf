//! OpenTelemetry export (OTLP): slow syscalls as spans and the whole metric catalogue as
//! metrics, over gRPC or HTTP/protobuf, batched, with bounded queues and retries with capped
//! exponential backoff and full jitter. Off unless `otlp.endpoint` is set.
//!
//! Nothing here can block a probe: spans are offered with `try_send` into a bounded queue and
//! whatever does not fit (or is sampled out, or over the rate limit) is counted and dropped.

pub mod otlp;
pub mod otlp_metrics;
pub mod spans;
pub mod stats;
pub mod transport;

pub use otlp::{start, Exporter, SpanSink};
pub use spans::SpanRecord;
pub use stats::ExportStats;

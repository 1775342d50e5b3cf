//! Counters of the exporter, shared between the producers, the export tasks and the metric
//! catalogue.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans offered by the pipeline.
    pub spans_offered: AtomicU64,
    /// Not kept by head sampling.
    pub spans_sampled_out: AtomicU64,
    /// Over the configured spans-per-second limit.
    pub spans_rate_limited: AtomicU64,
    /// Dropped because the queue was full (receiver down or slow).
    pub spans_queue_full: AtomicU64,
    /// Dropped at shutdown when the flush deadline passed.
    pub spans_dropped_at_shutdown: AtomicU64,
    /// In a batch the receiver rejected for good (not retryable, e.g. HTTP 400).
    pub spans_rejected: AtomicU64,
    /// Accepted by the receiver.
    pub spans_exported: AtomicU64,
    pub span_batches: AtomicU64,
    pub span_requests_failed: AtomicU64,
    pub metric_requests: AtomicU64,
    pub metric_requests_failed: AtomicU64,
    /// Spans waiting in the queue, as of the last look.
    pub queue_length: AtomicU64,
    pub queue_capacity: AtomicU64,
}

impl ExportStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

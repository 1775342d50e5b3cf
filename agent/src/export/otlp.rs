//! The export tasks: one batches spans from a bounded queue and sends them, retrying a batch
//! that failed in a retryable way with backoff while new spans wait in (or overflow) the
//! queue, and dropping (and counting) a batch the receiver rejected for good; one sends a
//! snapshot of the metric catalogue every interval, in requests of bounded size, retrying
//! a request with backoff but taking a new snapshot once its snapshot is an interval old.
//! On shutdown both flush within a deadline.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest,
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util_shutdown::Shutdown;

use super::{
    otlp_metrics,
    spans::{to_resource_spans, IdSource, SpanRecord},
    stats::ExportStats,
    transport::{SendError, Transport},
};
use crate::{
    backoff::Backoff,
    clock::unix_now_ns,
    collector::Snapshots,
    config::{OtlpConfig, Signal},
    pipeline::spans::SpanOut,
};

/// How long a partial batch waits for more spans before it is sent.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the pipeline offers spans. Never blocks: sampling, the rate limit and a full queue
/// all drop (and count) instead.
#[derive(Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanRecord>,
    stats: Arc<ExportStats>,
    limiter: Arc<Mutex<Limiter>>,
}

struct Limiter {
    ratio: f64,
    per_sec: u64,
    window_start: Instant,
    in_window: u64,
    ids: IdSource,
}

impl SpanOut for SpanSink {
    fn admit(&self) -> bool {
        ExportStats::add(&self.stats.spans_offered, 1);
        let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        if l.ratio < 1.0 && l.ids.unit() >= l.ratio {
            ExportStats::add(&self.stats.spans_sampled_out, 1);
            return false;
        }
        let now = Instant::now();
        if now.duration_since(l.window_start) >= Duration::from_secs(1) {
            l.window_start = now;
            l.in_window = 0;
        }
        if l.per_sec > 0 && l.in_window >= l.per_sec {
            ExportStats::add(&self.stats.spans_rate_limited, 1);
            return false;
        }
        l.in_window += 1;
        true
    }

    fn push(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            ExportStats::add(&self.stats.spans_queue_full, 1);
        }
        self.stats.queue_length.store(
            (self.tx.max_capacity() - self.tx.capacity()) as u64,
            Relaxed,
        );
    }
}

/// The running exporter: its sink (when traces are exported), its counters, and its tasks.
pub struct Exporter {
    pub sink: Option<SpanSink>,
    pub stats: Arc<ExportStats>,
    tasks: JoinSet<()>,
    shutdown: Shutdown,
    deadline: Duration,
}

/// Starts the export tasks for the signals `config` gives a target (see
/// [`OtlpConfig::signal_target`]); `None` when it gives none. Each metrics export sends the
/// collector's latest snapshot.
pub fn start(
    config: &OtlpConfig,
    snapshots: Snapshots,
    start_unix_ns: u64,
    stats: Arc<ExportStats>,
) -> Result<Option<Exporter>, SendError> {
    let traces = config.signal_target(Signal::Traces);
    let metrics = config.signal_target(Signal::Metrics);
    if traces.is_none() && metrics.is_none() {
        return Ok(None);
    }
    super::spans::set_resource_attributes(&config.resource_attributes);
    let shutdown = Shutdown::default();
    let backoff = || {
        Backoff::new(
            Duration::from_millis(config.retry_initial_backoff_ms),
            Duration::from_secs(config.retry_max_backoff_secs),
        )
    };
    let mut tasks = JoinSet::new();
    let mut sink = None;
    if let Some((protocol, url)) = &traces {
        let transport = Transport::new(config, *protocol, url)?;
        stats
            .queue_capacity
            .store(config.queue_size as u64, Relaxed);
        let (tx, rx) = mpsc::channel(config.queue_size);
        tasks.spawn(export_spans(
            rx,
            transport,
            stats.clone(),
            config.batch_size,
            backoff(),
            shutdown.clone(),
        ));
        sink = Some(SpanSink {
            tx,
            stats: stats.clone(),
            limiter: Arc::new(Mutex::new(Limiter {
                ratio: config.sampling_ratio,
                per_sec: config.max_spans_per_sec,
                window_start: Instant::now(),
                in_window: 0,
                ids: IdSource::default(),
            })),
        });
    }
    if let Some((protocol, url)) = &metrics {
        tasks.spawn(export_metrics(
            Transport::new(config, *protocol, url)?,
            Catalogue {
                snapshots,
                batch_size: config.metrics_batch_size,
                histograms: config.histograms,
                start_unix_ns,
            },
            stats.clone(),
            Duration::from_secs(config.metrics_interval_secs),
            backoff(),
            shutdown.clone(),
        ));
    }
    Ok(Some(Exporter {
        sink,
        stats,
        tasks,
        shutdown,
        deadline: Duration::from_secs(config.shutdown_timeout_secs),
    }))
}

impl Exporter {
    /// Flushes what is queued and stops, giving up after the configured deadline.
    pub async fn shutdown(mut self) {
        self.shutdown.trigger();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.deadline, all).await.is_err() {
            tracing::warn!(deadline = ?self.deadline, "OTLP flush did not finish in time");
            self.tasks.abort_all();
        }
    }
}

async fn export_spans(
    mut rx: mpsc::Receiver<SpanRecord>,
    transport: Transport,
    stats: Arc<ExportStats>,
    batch_size: usize,
    mut backoff: Backoff,
    mut shutdown: Shutdown,
) {
    let mut ids = IdSource::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut stopping = false;
    loop {
        if !stopping {
            let flush_at = tokio::time::sleep(FLUSH_INTERVAL);
            tokio::pin!(flush_at);
            while batch.len() < batch_size {
                tokio::select! {
                    span = rx.recv() => match span {
                        Some(s) => batch.push(s),
                        None => { stopping = true; break; }
                    },
                    _ = &mut flush_at => break,
                    _ = shutdown.wait() => { stopping = true; break; }
                }
            }
        }
        if stopping {
            // Take what is queued, up to one batch at a time.
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
        }
        stats.queue_length.store(rx.len() as u64, Relaxed);
        if batch.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![to_resource_spans(&batch, &mut ids)],
        };
        loop {
            match transport.send_traces(request.clone()).await {
                Ok(()) => {
                    ExportStats::add(&stats.spans_exported, batch.len() as u64);
                    ExportStats::add(&stats.span_batches, 1);
                    succeeded("traces", &mut backoff);
                    break;
                }
                Err(e) if !e.is_retryable() => {
                    // It would fail the same way again: drop it so the queue moves on.
                    ExportStats::add(&stats.span_requests_failed, 1);
                    ExportStats::add(&stats.spans_rejected, batch.len() as u64);
                    tracing::warn!(
                        signal = "traces",
                        spans = batch.len(),
                        error = %e,
                        "OTLP receiver rejected a span batch; dropped, not retried"
                    );
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    ExportStats::add(&stats.span_requests_failed, 1);
                    if stopping {
                        // At shutdown there is no time to wait: what cannot go now is dropped.
                        drop_at_shutdown(&stats, &mut rx, batch.len());
                        return;
                    }
                    stopping =
                        wait_to_retry("traces", &e, &mut backoff, Duration::MAX, &mut shutdown)
                            .await;
                }
            }
        }
        batch.clear();
    }
}

fn drop_at_shutdown(stats: &ExportStats, rx: &mut mpsc::Receiver<SpanRecord>, in_batch: usize) {
    let mut dropped = in_batch as u64;
    while rx.try_recv().is_ok() {
        dropped += 1;
    }
    ExportStats::add(&stats.spans_dropped_at_shutdown, dropped);
}

async fn export_metrics(
    transport: Transport,
    catalogue: Catalogue,
    stats: Arc<ExportStats>,
    interval: Duration,
    mut backoff: Backoff,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    'interval: while !stopping {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => stopping = true,
        }
        'snapshot: loop {
            let Some(mut snapshot) = catalogue.snapshot().await else {
                continue 'interval;
            };
            while let Some(request) = snapshot.next_request().await {
                loop {
                    ExportStats::add(&stats.metric_requests, 1);
                    let Err(e) = transport.send_metrics(request.clone()).await else {
                        succeeded("metrics", &mut backoff);
                        break;
                    };
                    ExportStats::add(&stats.metric_requests_failed, 1);
                    if !e.is_retryable() {
                        // The next interval sends new values anyway.
                        tracing::warn!(
                            signal = "metrics",
                            error = %e,
                            "OTLP receiver rejected a metrics request; not retried"
                        );
                        backoff.reset();
                        break;
                    }
                    if stopping {
                        break 'interval;
                    }
                    stopping =
                        wait_to_retry("metrics", &e, &mut backoff, interval, &mut shutdown).await;
                    // Counters are cumulative, so newer values lose nothing: a snapshot
                    // older than an interval is given up for a new one.
                    if snapshot.taken.elapsed() >= interval {
                        continue 'snapshot;
                    }
                }
            }
            break;
        }
    }
}

/// The metric catalogue, and how it is cut into requests.
struct Catalogue {
    snapshots: Snapshots,
    /// Points per request at most.
    batch_size: usize,
    histograms: otlp_metrics::HistogramFormat,
    /// When the counters started (the agent's start), Unix nanoseconds.
    start_unix_ns: u64,
}

impl Catalogue {
    /// The collector's latest snapshot (at most a collection interval old).
    async fn snapshot(&self) -> Option<Snapshot> {
        let families = self.snapshots.latest();
        if families.generation == 0 {
            // Nothing collected yet.
            return None;
        }
        Some(Snapshot {
            families,
            cursor: Some(otlp_metrics::Cursor::default()),
            taken: Instant::now(),
            batch_size: self.batch_size,
            histograms: self.histograms,
            start_unix_ns: self.start_unix_ns,
            now_unix_ns: unix_now_ns(),
        })
    }
}

/// The metric catalogue at one instant, sent as a series of requests.
struct Snapshot {
    families: Arc<crate::collector::Snapshot>,
    cursor: Option<otlp_metrics::Cursor>,
    taken: Instant,
    batch_size: usize,
    histograms: otlp_metrics::HistogramFormat,
    start_unix_ns: u64,
    now_unix_ns: u64,
}

impl Snapshot {
    /// The next request, `None` once all were built.
    async fn next_request(&mut self) -> Option<ExportMetricsServiceRequest> {
        let mut cursor = self.cursor.take()?;
        let request = otlp_metrics::next_request(
            &self.families.families,
            &mut cursor,
            self.batch_size,
            self.start_unix_ns,
            self.now_unix_ns,
            self.histograms,
        )?;
        self.cursor = Some(cursor);
        Some(request)
    }
}

/// After a request went through: says so once if it ends a run of failures, and resets the
/// backoff.
fn succeeded(signal: &str, backoff: &mut Backoff) {
    if backoff.attempt() > 0 {
        tracing::info!(
            signal,
            failed_attempts = backoff.attempt(),
            "OTLP export recovered"
        );
    }
    backoff.reset();
}

/// After a retryable failure: logs it, waits the next backoff, or as long as the receiver
/// asked (`Retry-After`, gRPC `RetryInfo`) up to the backoff's cap, at most `cap` either
/// way, and returns true if shutdown began meanwhile.
async fn wait_to_retry(
    signal: &str,
    error: &SendError,
    backoff: &mut Backoff,
    cap: Duration,
    shutdown: &mut Shutdown,
) -> bool {
    let ceiling = backoff.ceiling();
    let asked = error.retry_after();
    let delay = backoff.next_delay_or(asked).min(cap);
    // One WARN when the receiver becomes unreachable; the retries after it at debug, and one
    // INFO with their count when it answers again (`recovered`).
    if backoff.attempt() == 1 {
        tracing::warn!(
            signal,
            ceiling_ms = ceiling.as_millis() as u64,
            attempt = backoff.attempt(),
            delay_ms = delay.as_millis() as u64,
            retry_after_ms = asked.map(|d| d.as_millis() as u64),
            error = %error,
            "OTLP export failed; retrying with backoff (further failures at debug level)"
        );
    } else {
        tracing::debug!(
            signal,
            ceiling_ms = ceiling.as_millis() as u64,
            attempt = backoff.attempt(),
            delay_ms = delay.as_millis() as u64,
            retry_after_ms = asked.map(|d| d.as_millis() as u64),
            error = %error,
            "OTLP export failed again; retrying"
        );
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait() => true,
    }
}

/// A one-shot shutdown signal every task can wait on.
mod tokio_util_shutdown {
    use tokio::sync::watch;

    #[derive(Clone)]
    pub struct Shutdown {
        tx: std::sync::Arc<watch::Sender<bool>>,
        rx: watch::Receiver<bool>,
    }

    impl Default for Shutdown {
        fn default() -> Self {
            let (tx, rx) = watch::channel(false);
            Self {
                tx: std::sync::Arc::new(tx),
                rx,
            }
        }
    }

    impl Shutdown {
        pub fn trigger(&self) {
            let _ = self.tx.send(true);
        }

        /// Resolves once `trigger` has been called (at once if it already was).
        pub async fn wait(&mut self) {
            let _ = self.rx.wait_for(|&v| v).await;
        }
    }
}

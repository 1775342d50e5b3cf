//! The collector: the one owner of collection. Once a second (and when a reader asks for a
//! fresher one) it reads the kernel (`Pipeline::collect`: ring drains and map walks), then
//! the registry's typed families (the Prometheus data model, `io.prometheus.client`), and
//! publishes them as an immutable [`Snapshot`] on a `tokio::sync::watch`. The `/metrics`
//! endpoint (every format), the OTLP exporter and the rule store read snapshots; none of them
//! walks a kernel map or parses the agent's own text.
//!
//! A scrape or a rule tick asks for a *fresh* snapshot: one whose collection started after
//! it asked, waiting at most a bound and serving the latest one after that. So a scrape
//! right after a workload ends sees all of it (the tests count calls exactly), and a stalled
//! collection delays a scrape by the bound, never forever. Concurrent askers share one
//! collection.
//!
//! The kernel's log2 histograms are held as native buckets only (schema 0, [`model::Histogram`]
//! without classic buckets): their classic buckets are the same counts at fixed bounds, which
//! every reader gets from [`classic_buckets`] when it needs them. Two thirds of a snapshot's
//! size was those classic buckets (25 per series, 80 bytes each), built and dropped at every
//! collection.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use agent_common::syscall::{bucket_upper_exp, bucket_upper_seconds, ZERO_BUCKET_EXP};
use prometheus_client::{
    encoding::prometheus_protobuf::{
        encode,
        prometheus_data_model::{Metric, MetricFamily},
    },
    registry::Registry,
};
use tokio::sync::{watch, Notify};

/// The Prometheus data model the snapshots are made of.
pub use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as model;

use crate::pipeline::Pipeline;

/// When the periodic collection last completed: bumped by the collection task, read by the
/// watchdog.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last completion.
    last_ms: AtomicU64,
    completions: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            completions: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// A collection completed now.
    pub fn bump(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        self.completions.fetch_add(1, Ordering::Relaxed);
    }

    /// How long ago the last collection completed (since start-up, before the first).
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    pub fn completions(&self) -> u64 {
        self.completions.load(Ordering::Relaxed)
    }
}

/// Every series of the agent at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The collection that made it: 1, 2, ... (0: none yet).
    pub generation: u64,
    pub families: Vec<MetricFamily>,
}

/// The last kernel bucket with a bound of its own in the classic exposition: 2^3 s. Longer
/// calls are in `+Inf` there (and each in its own native bucket, up to 2^9 s).
pub const LAST_CLASSIC_BUCKET: usize = 24;
const _: () = assert!(bucket_upper_exp(LAST_CLASSIC_BUCKET) == 3);

/// Whether `h` is a kernel histogram held as native buckets only: no classic buckets, schema
/// 0, and the kernel's zero bucket (at most `2^-21` s). No other histogram of the agent has
/// that zero bucket.
fn kernel_native(h: &model::Histogram) -> bool {
    h.bucket.is_empty() && h.schema == 0 && h.zero_threshold == bucket_upper_seconds(0)
}

/// A histogram series' classic buckets as `(upper bound, cumulative count)`, in increasing
/// order: the ones it holds or, for a kernel histogram held as native buckets, the kernel's
/// classic bounds (`2^-21` s to `2^3` s) with the counts its native buckets give, exactly.
/// `+Inf` is not listed unless held: its count is the series' `sample_count`.
pub fn classic_buckets(h: &model::Histogram) -> ClassicBuckets<'_> {
    let mut counts = [0u64; LAST_CLASSIC_BUCKET + 1];
    let derived = kernel_native(h);
    if derived {
        counts[0] = h.zero_count;
        // Native bucket k is kernel bucket k - ZERO_BUCKET_EXP (see `metrics::catalogue`).
        let (mut index, mut delta, mut count) = (0i64, 0usize, 0i64);
        'spans: for (i, span) in h.positive_span.iter().enumerate() {
            index = if i == 0 {
                i64::from(span.offset)
            } else {
                index.saturating_add(i64::from(span.offset))
            };
            for _ in 0..span.length {
                let Some(d) = h.positive_delta.get(delta) else {
                    break 'spans;
                };
                delta += 1;
                count = count.saturating_add(*d);
                let bucket = index.saturating_sub(i64::from(ZERO_BUCKET_EXP));
                if (1..=LAST_CLASSIC_BUCKET as i64).contains(&bucket) {
                    counts[bucket as usize] = count.max(0) as u64;
                }
                index = index.saturating_add(1);
            }
        }
    }
    ClassicBuckets {
        held: h.bucket.iter(),
        derived: derived.then_some(counts),
        next: 0,
        cumulative: 0,
    }
}

/// See [`classic_buckets`].
pub struct ClassicBuckets<'a> {
    held: std::slice::Iter<'a, model::Bucket>,
    /// Per kernel bucket counts (not cumulative), when derived.
    derived: Option<[u64; LAST_CLASSIC_BUCKET + 1]>,
    next: usize,
    cumulative: u64,
}

impl Iterator for ClassicBuckets<'_> {
    type Item = (f64, u64);

    fn next(&mut self) -> Option<(f64, u64)> {
        let Some(counts) = &self.derived else {
            return self
                .held
                .next()
                .map(|b| (b.upper_bound, b.cumulative_count));
        };
        let n = counts.get(self.next)?;
        self.cumulative = self.cumulative.saturating_add(*n);
        let bound = bucket_upper_seconds(self.next);
        self.next += 1;
        Some((bound, self.cumulative))
    }
}

/// `m` as the Prometheus data model would hold it with the classic buckets of
/// [`classic_buckets`] written out (the protobuf exposition carries both kinds).
pub fn with_classic_buckets(m: &Metric) -> std::borrow::Cow<'_, Metric> {
    match &m.histogram {
        Some(h) if kernel_native(h) => {
            let mut full = m.clone();
            if let Some(fh) = &mut full.histogram {
                fh.bucket = classic_buckets(h)
                    .map(|(upper_bound, cumulative_count)| model::Bucket {
                        cumulative_count,
                        upper_bound,
                        ..Default::default()
                    })
                    .collect();
                fh.bucket.push(model::Bucket {
                    cumulative_count: h.sample_count,
                    upper_bound: f64::INFINITY,
                    ..Default::default()
                });
            }
            std::borrow::Cow::Owned(full)
        }
        _ => std::borrow::Cow::Borrowed(m),
    }
}

/// A counter series' value.
pub fn counter_value(m: &Metric) -> f64 {
    m.counter.as_ref().map_or(0.0, |c| c.value)
}

/// A gauge (or untyped) series' value.
pub fn gauge_value(m: &Metric) -> f64 {
    m.gauge
        .as_ref()
        .map(|g| g.value)
        .or(m.untyped.as_ref().map(|u| u.value))
        .unwrap_or(0.0)
}

/// A reader's handle: the latest snapshot, or a fresh one.
#[derive(Clone)]
pub struct Snapshots {
    rx: watch::Receiver<Arc<Snapshot>>,
    wake: Arc<Notify>,
    /// Collections started so far.
    started: Arc<AtomicU64>,
}

impl Snapshots {
    /// The latest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// A snapshot whose collection started after this call, waiting at most `bound`; the
    /// latest one if none came by then.
    pub async fn fresh(&self, bound: Duration) -> Arc<Snapshot> {
        let wanted = self.started.load(SeqCst) + 1;
        self.wake.notify_one();
        let mut rx = self.rx.clone();
        let _ = tokio::time::timeout(bound, rx.wait_for(|s| s.generation >= wanted)).await;
        let latest = rx.borrow().clone();
        latest
    }

    /// Snapshots that never change: for tests of the readers.
    pub fn fixed(families: Vec<MetricFamily>) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot {
            generation: u64::MAX,
            families,
        }));
        Self {
            rx,
            wake: Arc::default(),
            started: Arc::default(),
        }
    }
}

/// Starts collecting every `interval` and on request. `progress` is bumped after each
/// collection (the watchdog's evidence that collection is alive). While the file `stall`
/// exists collection waits (a test hook, `STEADFAST_TEST_STALL_COLLECTION_WHILE`).
pub fn spawn(
    pipeline: Arc<Mutex<Pipeline>>,
    registry: Arc<Registry>,
    interval: Duration,
    progress: Arc<Progress>,
    stall: Option<PathBuf>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Snapshots {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let snapshots = Snapshots {
        rx,
        wake: Arc::default(),
        started: Arc::default(),
    };
    let (wake, started) = (snapshots.wake.clone(), snapshots.started.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = wake.notified() => {}
            }
            while stall.as_deref().is_some_and(std::path::Path::exists) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let generation = started.fetch_add(1, SeqCst) + 1;
            let (p, r) = (pipeline.clone(), registry.clone());
            // Map walks and encoding are bulk work: off the runtime's workers, which serve
            // the local API (`background`).
            let read = crate::background::run(move || {
                p.lock().unwrap_or_else(|e| e.into_inner()).collect();
                // The pipeline's lock is released: the registry's collectors take it again.
                encode(&r)
            })
            .await;
            match read {
                Ok(Ok(families)) => {
                    tx.send_replace(Arc::new(Snapshot {
                        generation,
                        families,
                    }));
                    progress.bump();
                }
                Ok(Err(e)) => tracing::error!(error = %e, "encoding the registry failed"),
                Err(e) => tracing::error!(error = %e, "a collection failed"),
            }
        }
    });
    snapshots
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic buckets derived from a kernel histogram's native buckets are the ones the
    /// client library writes from the kernel's counts: every kernel bucket filled (gaps in the
    /// native spans where one is empty), the overflow bucket too, and the empty histogram.
    #[test]
    fn derived_classic_buckets_are_the_written_ones() {
        use agent_common::syscall::{Hist, HIST_BUCKETS};
        let mut cases = vec![Hist::default()];
        let mut every = Hist::default();
        for (i, b) in every.buckets.iter_mut().enumerate() {
            *b = i as u64 * 3 + 1;
        }
        cases.push(every);
        let mut gaps = Hist::default();
        for i in [0, 1, 5, 6, 24, 25, HIST_BUCKETS - 1] {
            gaps.buckets[i] = 7 + i as u64;
        }
        cases.push(gaps);
        for hist in cases {
            let ours = crate::metrics::kernel_histogram_families("h_seconds", &hist);
            let theirs = crate::metrics::classic_reference_families("h_seconds", &hist);
            let native = ours[0].metric[0].histogram.as_ref().unwrap();
            let written = theirs[0].metric[0].histogram.as_ref().unwrap();
            assert!(native.bucket.is_empty());
            let derived: Vec<(f64, u64)> = classic_buckets(native).collect();
            let finite: Vec<(f64, u64)> = written
                .bucket
                .iter()
                .filter(|b| b.upper_bound.is_finite())
                .map(|b| (b.upper_bound, b.cumulative_count))
                .collect();
            assert_eq!(derived, finite, "{hist:?}");
            let inf = written.bucket.last().unwrap();
            assert_eq!(
                (inf.upper_bound, inf.cumulative_count),
                (f64::INFINITY, native.sample_count)
            );
            // A histogram that holds classic buckets is read as it is.
            let held: Vec<(f64, u64)> = classic_buckets(written).collect();
            assert_eq!(held.len(), written.bucket.len());
        }
    }

    /// A fresh snapshot is one whose collection started after the ask, and a collection in
    /// progress at the ask does not count.
    #[tokio::test(start_paused = true)]
    async fn fresh_waits_for_a_collection_started_after_the_ask() {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let s = Snapshots {
            rx,
            wake: Arc::default(),
            started: Arc::new(AtomicU64::new(3)),
        };
        // Collection 3 is in progress; it ends, then 4 runs.
        let asker = tokio::spawn({
            let s = s.clone();
            async move { s.fresh(Duration::from_secs(5)).await.generation }
        });
        tokio::task::yield_now().await;
        tx.send_replace(Arc::new(Snapshot {
            generation: 3,
            families: Vec::new(),
        }));
        tokio::task::yield_now().await;
        assert!(!asker.is_finished(), "collection 3 began before the ask");
        s.started.store(4, SeqCst);
        tx.send_replace(Arc::new(Snapshot {
            generation: 4,
            families: Vec::new(),
        }));
        assert_eq!(asker.await.unwrap(), 4);
        // Nothing comes: the latest after the bound.
        let t = tokio::time::Instant::now();
        assert_eq!(s.fresh(Duration::from_secs(2)).await.generation, 4);
        assert_eq!(t.elapsed(), Duration::from_secs(2));
    }
}

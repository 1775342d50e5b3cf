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

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

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

//! Local control: circuit breakers and degrade signals, published as one snapshot with a
//! monotonically increasing index through a `tokio::sync::watch` channel, which the API, the
//! signal files and the metrics all read. Manual forces persist under the state directory.

pub mod breaker;
pub mod files;
pub mod host;
pub mod metrics;
pub mod page;
pub mod persist;
pub mod signal;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::{sync::watch, time::Instant};

use breaker::{Breaker, Force, Observation, Spec, State};
use files::SignalFiles;
use page::StatePage;

/// Indices are reserved on disk this far ahead, so the index file is written once per this
/// many changes and a restart after a crash still starts above every index handed out.
const INDEX_LEASE: u64 = 1024;

/// A breaker as applications see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerView {
    pub state: State,
    /// Share of traffic to let through now (1 admit, 0 shed, the ramp step in probe).
    pub admit_ratio: f64,
    pub forced: Option<Force>,
    /// Consecutive openings (grows the open wait).
    pub openings: u32,
    /// Unix milliseconds of the last state change.
    pub since_unix_ms: u64,
    pub reason: String,
    /// The rule engine could not evaluate the inputs at the last evaluation (no data, stale
    /// data, several series, not a number): the state is held, as it was decided last.
    pub inputs_unknown: bool,
    /// Why the inputs are unknown (e.g. `volume: no series matched`); null when known.
    pub unknown_reason: Option<String>,
}

/// A degrade signal as applications see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalView {
    /// In [0, 1]: 0 all is well, 1 shed everything optional.
    pub level: f64,
    /// What set it (e.g. `cpu_pressure`, an alert name, an SLO budget policy).
    pub source: String,
    /// The rule engine could not evaluate the signal's expression at the last evaluation:
    /// the level is held, as it was last set.
    pub inputs_unknown: bool,
    /// Why the inputs are unknown; null when known.
    pub unknown_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Grows by one on every change of any breaker or signal.
    pub index: u64,
    pub breakers: BTreeMap<String, BreakerView>,
    pub signals: BTreeMap<String, SignalView>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("no breaker named {0:?}")]
    UnknownBreaker(String),
}

/// A configured breaker: its state machine, why it is in its state, and why its inputs are
/// unknown (None: known).
struct Entry {
    breaker: Breaker,
    reason: String,
    unknown: Option<String>,
}

/// Before the first evaluation of a rule-file breaker.
pub const NOT_EVALUATED: &str = "not evaluated yet";

pub struct Control {
    breakers: BTreeMap<String, Entry>,
    signals: BTreeMap<String, SignalView>,
    tx: watch::Sender<Snapshot>,
    files: Option<SignalFiles>,
    overrides: Option<PathBuf>,
    /// Unix time minus tokio's clock, to show `since` in wall-clock time.
    epoch: (Instant, u64),
    /// Transitions per (breaker, to-state), for metrics.
    pub transitions: BTreeMap<(String, &'static str), u64>,
    page: Option<StatePage>,
    /// Where the snapshot index persists, and the highest index reserved there.
    index_file: Option<(PathBuf, u64)>,
    /// Shut down: nothing is published any more.
    stopped: bool,
}

/// Logs a change of a breaker's or signal's inputs between known (None) and unknown (why).
/// The first evaluation of a new breaker is not news: it is not logged when its inputs are known.
fn log_inputs(kind: &str, name: &str, was: Option<&str>, now: Option<&str>) {
    match now {
        Some(reason) => {
            tracing::warn!(
                kind,
                name,
                reason,
                "inputs unknown: the last decision is held"
            )
        }
        None if was != Some(NOT_EVALUATED) => {
            tracing::info!(kind, name, "inputs known again")
        }
        None => {}
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Control {
    /// `files`: where signal files go (None: none); `overrides`: the file forces persist in.
    pub fn new(files: Option<SignalFiles>, overrides: Option<PathBuf>) -> Self {
        // Index 1 from the start, so `?index=0` never waits.
        let (tx, _) = watch::channel(Snapshot {
            index: 1,
            ..Snapshot::default()
        });
        Self {
            breakers: BTreeMap::new(),
            signals: BTreeMap::new(),
            tx,
            files,
            overrides,
            epoch: (Instant::now(), unix_ms()),
            transitions: BTreeMap::new(),
            page: None,
            index_file: None,
            stopped: false,
        }
    }

    /// Keeps the snapshot index across restarts in `path`: this run starts above every index
    /// an earlier run handed out (even one killed with SIGKILL), so a client holding
    /// `?index=N` from before a restart gets an answer at once. Call before `subscribe`.
    pub fn with_index_file(mut self, path: PathBuf) -> Self {
        let persisted = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), error = %e, "unreadable snapshot index: starting again at 1; clients holding an older index wait out their query");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "unreadable snapshot index: starting again at 1");
                0
            }
        };
        let start = persisted.saturating_add(1).max(1);
        self.tx.send_modify(|s| s.index = start);
        self.index_file = Some((path, 0));
        self.reserve_index(start);
        self
    }

    /// Publishes every snapshot to the memory-mapped state page too (from the current one on).
    pub fn with_state_page(mut self, mut page: StatePage) -> Self {
        page.publish(&self.tx.borrow());
        self.page = Some(page);
        self
    }

    /// Writes the index file when `index` passes the reserved one.
    fn reserve_index(&mut self, index: u64) {
        let Some((path, reserved)) = &mut self.index_file else {
            return;
        };
        if index <= *reserved {
            return;
        }
        let next = index.saturating_add(INDEX_LEASE);
        match persist::write_atomic(path, format!("{next}\n").as_bytes()) {
            Ok(()) => *reserved = next,
            Err(e) => tracing::error!(error = %e, "saving the snapshot index failed"),
        }
    }

    /// Refreshes the state page's time (the daemon calls it at least once a second).
    pub fn heartbeat(&mut self) {
        if let Some(page) = &mut self.page {
            page.heartbeat();
        }
    }

    /// At shutdown: every signal file reads 0 (nothing to shed without an agent), the state
    /// page says stopped, and the index file holds the last index. Nothing is published after.
    pub fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let last = self.tx.borrow().clone();
        if let Some(files) = &self.files {
            files.reset_all(&last);
        }
        if let Some(page) = &mut self.page {
            page.stop();
        }
        if let Some((path, _)) = &self.index_file {
            if let Err(e) = persist::write_atomic(path, format!("{}\n", last.index).as_bytes()) {
                tracing::error!(error = %e, "saving the snapshot index failed");
            }
        }
        // Dropping the sender closes every receiver: blocking queries answer at once with the
        // last snapshot and event streams end, so no client waits on a stopping agent.
        self.tx = watch::channel(last).0;
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    fn wall_ms(&self, t: Instant) -> u64 {
        let (base_i, base_ms) = self.epoch;
        if t >= base_i {
            base_ms + (t - base_i).as_millis() as u64
        } else {
            base_ms.saturating_sub((base_i - t).as_millis() as u64)
        }
    }

    /// Replaces the breaker set (at start and on reload). Breakers with the same name inherit
    /// their state (or restart in Admit if their spec changed); forces always survive, and
    /// persisted forces are restored for breakers seen for the first time.
    pub fn configure_breakers(&mut self, specs: Vec<(String, Spec)>, now: Instant) {
        let persisted = self.load_overrides();
        let mut old = std::mem::take(&mut self.breakers);
        for (name, spec) in specs {
            let mut b = Breaker::new(spec, now);
            match old.remove(&name) {
                Some(prev) => {
                    b.inherit(prev.breaker);
                    let entry = Entry {
                        breaker: b,
                        reason: prev.reason,
                        unknown: prev.unknown,
                    };
                    self.breakers.insert(name, entry);
                }
                None => {
                    if let Some(f) = persisted.get(&name) {
                        b.set_force(Some(*f), now);
                    }
                    let entry = Entry {
                        breaker: b,
                        reason: "configured".into(),
                        unknown: Some(NOT_EVALUATED.into()),
                    };
                    self.breakers.insert(name, entry);
                }
            }
        }
        self.publish();
    }

    pub fn breaker_names(&self) -> impl Iterator<Item = &str> {
        self.breakers.keys().map(String::as_str)
    }

    /// Feeds one evaluation of breaker `name`.
    pub fn observe(&mut self, name: &str, obs: Observation, now: Instant) {
        let Some(Entry {
            breaker: b, reason, ..
        }) = self.breakers.get_mut(name)
        else {
            return;
        };
        if let Some(t) = b.observe(now, obs) {
            tracing::info!(breaker = name, from = t.from.label(), to = t.to.label(), reason = %t.reason, "breaker transition");
            *self
                .transitions
                .entry((name.to_string(), t.to.label()))
                .or_default() += 1;
            *reason = t.reason;
        }
        self.publish();
    }

    /// Records whether the rule engine could evaluate breaker `name`'s inputs (`None`: it
    /// could; else why not). A change is logged once and published; the state is untouched.
    pub fn set_breaker_inputs(&mut self, name: &str, unknown: Option<String>) {
        let Some(entry) = self.breakers.get_mut(name) else {
            return;
        };
        if entry.unknown == unknown {
            return;
        }
        log_inputs(
            "breaker",
            name,
            entry.unknown.as_deref(),
            unknown.as_deref(),
        );
        entry.unknown = unknown;
        self.publish();
    }

    /// Lets time-driven transitions (Shed -> Probe, probe timeout) happen between evaluations.
    pub fn tick(&mut self, now: Instant) {
        let names: Vec<String> = self.breakers.keys().cloned().collect();
        for name in names {
            self.observe(&name, Observation::default(), now);
        }
    }

    pub fn set_force(
        &mut self,
        name: &str,
        force: Option<Force>,
        now: Instant,
    ) -> Result<(), ControlError> {
        let Entry {
            breaker: b, reason, ..
        } = self
            .breakers
            .get_mut(name)
            .ok_or_else(|| ControlError::UnknownBreaker(name.to_string()))?;
        match force {
            Some(f) => {
                b.set_force(Some(f), now);
                *reason = format!(
                    "forced {}",
                    if f == Force::Open { "open" } else { "closed" }
                );
            }
            None => {
                b.reset(now);
                *reason = "reset".into();
            }
        }
        tracing::info!(breaker = name, ?force, "breaker override");
        self.save_overrides();
        self.publish();
        Ok(())
    }

    /// Sets a degrade signal's level (clamped to [0, 1], rounded to 0.01); its inputs are
    /// known.
    pub fn set_signal(&mut self, name: &str, level: f64, source: &str) {
        let was = self
            .signals
            .get(name)
            .and_then(|s| s.unknown_reason.clone());
        if was.is_some() {
            log_inputs("signal", name, was.as_deref(), None);
        }
        self.signals.insert(
            name.to_string(),
            SignalView {
                level: signal::publishable(level),
                source: source.to_string(),
                inputs_unknown: false,
                unknown_reason: None,
            },
        );
        self.publish();
    }

    /// Marks a signal's inputs unknown (`reason`): its level stays as it was (0 for a signal
    /// that never had one). A change is logged once.
    pub fn set_signal_unknown(&mut self, name: &str, reason: &str, source: &str) {
        let entry = self.signals.entry(name.to_string()).or_insert(SignalView {
            level: 0.0,
            source: source.to_string(),
            inputs_unknown: false,
            unknown_reason: None,
        });
        if entry.unknown_reason.as_deref() == Some(reason) {
            return;
        }
        log_inputs(
            "signal",
            name,
            entry.unknown_reason.as_deref(),
            Some(reason),
        );
        entry.inputs_unknown = true;
        entry.unknown_reason = Some(reason.to_string());
        self.publish();
    }

    pub fn remove_signal(&mut self, name: &str) {
        if self.signals.remove(name).is_some() {
            self.publish();
        }
    }

    /// Publishes a new snapshot if anything an application can see changed.
    fn publish(&mut self) {
        if self.stopped {
            return;
        }
        let breakers: BTreeMap<String, BreakerView> = self
            .breakers
            .iter()
            .map(|(name, e)| {
                let b = &e.breaker;
                (
                    name.clone(),
                    BreakerView {
                        state: b.state(),
                        admit_ratio: b.admit_ratio(),
                        forced: b.force(),
                        openings: b.openings(),
                        since_unix_ms: self.wall_ms(b.since()),
                        reason: e.reason.clone(),
                        inputs_unknown: e.unknown.is_some(),
                        unknown_reason: e.unknown.clone(),
                    },
                )
            })
            .collect();
        let current = self.tx.borrow().clone();
        if current.breakers == breakers && current.signals == self.signals {
            return;
        }
        let next = Snapshot {
            index: current.index + 1,
            breakers,
            signals: self.signals.clone(),
        };
        if let Some(files) = &self.files {
            files.write_changes(&current, &next);
        }
        if let Some(page) = &mut self.page {
            page.publish(&next);
        }
        self.reserve_index(next.index);
        self.tx.send_replace(next);
    }

    fn load_overrides(&self) -> BTreeMap<String, Force> {
        let Some(path) = &self.overrides else {
            return BTreeMap::new();
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), error = %e, "unreadable breaker overrides ignored");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    fn save_overrides(&self) {
        let Some(path) = &self.overrides else { return };
        let forces: BTreeMap<&str, Force> = self
            .breakers
            .iter()
            .filter_map(|(n, e)| e.breaker.force().map(|f| (n.as_str(), f)))
            .collect();
        let json = serde_json::to_vec_pretty(&forces).unwrap_or_default();
        if let Err(e) = persist::write_atomic(path, &json) {
            tracing::error!(error = %e, "saving breaker overrides failed");
        }
    }
}

/// The rules hand their decisions to control through this (the wiring connects them).
impl crate::rules::runtime::Decisions for Control {
    fn configure_breakers(&mut self, specs: Vec<(String, Spec)>, now: Instant) {
        Control::configure_breakers(self, specs, now);
    }
    fn observe(&mut self, name: &str, obs: Observation, now: Instant) {
        Control::observe(self, name, obs, now);
    }
    fn set_breaker_inputs(&mut self, name: &str, unknown: Option<String>) {
        Control::set_breaker_inputs(self, name, unknown);
    }
    fn set_signal(&mut self, name: &str, level: f64, source: &str) {
        Control::set_signal(self, name, level, source);
    }
    fn set_signal_unknown(&mut self, name: &str, reason: &str, source: &str) {
        Control::set_signal_unknown(self, name, reason, source);
    }
    fn remove_signal(&mut self, name: &str) {
        Control::remove_signal(self, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> Spec {
        Spec {
            jitter: 0.0,
            min_volume: 1.0,
            ..Spec::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_count_changes_and_forces_persist_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let overrides = dir.path().join("overrides.json");
        let now = Instant::now();
        let mut c = Control::new(None, Some(overrides.clone()));
        let mut rx = c.subscribe();
        assert_eq!(c.snapshot().index, 1);
        c.configure_breakers(vec![("db".into(), spec())], now);
        assert_eq!(c.snapshot().index, 2);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();

        // Same data again: no new index.
        c.observe("db", Observation::default(), now);
        c.set_signal("freeze", 0.0, "slo");
        assert_eq!(c.snapshot().index, 3);
        c.set_signal("freeze", 0.001, "slo");
        assert_eq!(c.snapshot().index, 3, "rounded to 0.01: no change");

        c.observe(
            "db",
            Observation {
                failure_ratio: Some(0.9),
                slow_ratio: None,
                volume: Some(100.0),
            },
            now,
        );
        let s = c.snapshot();
        assert_eq!(s.index, 4);
        assert_eq!(s.breakers["db"].state, State::Shed);
        assert_eq!(c.transitions[&("db".to_string(), "shed")], 1);

        assert_eq!(
            c.set_force("nope", Some(Force::Open), now),
            Err(ControlError::UnknownBreaker("nope".into()))
        );
        c.set_force("db", Some(Force::Close), now).unwrap();
        assert_eq!(c.snapshot().breakers["db"].state, State::Admit);

        // A restart: a new Control restores the force from the state file.
        let mut again = Control::new(None, Some(overrides));
        again.configure_breakers(vec![("db".into(), spec())], now + Duration::from_secs(1));
        assert_eq!(again.snapshot().breakers["db"].forced, Some(Force::Close));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_inputs_are_published_and_hold_the_decision() {
        let now = Instant::now();
        let mut c = Control::new(None, None);
        c.configure_breakers(vec![("db".into(), spec())], now);
        let b = &c.snapshot().breakers["db"];
        assert!(b.inputs_unknown, "not evaluated yet");
        assert_eq!(b.unknown_reason.as_deref(), Some(NOT_EVALUATED));
        let trip = Observation {
            failure_ratio: Some(0.9),
            slow_ratio: None,
            volume: Some(100.0),
        };
        c.observe("db", trip, now);
        c.set_breaker_inputs("db", None);
        let i = c.snapshot().index;
        assert!(!c.snapshot().breakers["db"].inputs_unknown);
        // No data: unknown with the reason, the Shed decision held; the same reason again
        // changes nothing.
        c.observe("db", Observation::default(), now);
        c.set_breaker_inputs("db", Some("volume: no series matched".into()));
        let s = c.snapshot();
        assert_eq!(s.index, i + 1);
        assert_eq!(s.breakers["db"].state, State::Shed);
        assert_eq!(
            s.breakers["db"].unknown_reason.as_deref(),
            Some("volume: no series matched")
        );
        c.set_breaker_inputs("db", Some("volume: no series matched".into()));
        assert_eq!(c.snapshot().index, i + 1);
        // A reload of the same breaker keeps what is known about its inputs.
        c.configure_breakers(vec![("db".into(), spec())], now);
        assert!(c.snapshot().breakers["db"].inputs_unknown);

        // A signal: unknown keeps its level; a known level clears it.
        c.set_signal("io", 0.4, "rules");
        c.set_signal_unknown("io", "expr: no series matched", "rules");
        let v = &c.snapshot().signals["io"];
        assert_eq!((v.level, v.inputs_unknown), (0.4, true));
        c.set_signal("io", 0.2, "rules");
        let v = &c.snapshot().signals["io"];
        assert_eq!(
            (v.level, v.inputs_unknown, v.unknown_reason.as_deref()),
            (0.2, false, None)
        );
        // A signal never known shows up as unknown at level 0.
        c.set_signal_unknown("new", "expr: 2 series, one expected", "rules");
        assert!(c.snapshot().signals["new"].inputs_unknown);
        assert_eq!(c.snapshot().signals["new"].level, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_index_never_goes_back_and_a_shutdown_releases_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("snapshot_index");
        let page = dir.path().join("state.page");
        let files = dir.path().join("signals");
        let now = Instant::now();
        let mut c = Control::new(Some(SignalFiles::new(files.clone())), None)
            .with_index_file(file.clone())
            .with_state_page(StatePage::new(page.clone(), None));
        assert_eq!(c.snapshot().index, 1);
        let reserved: u64 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(reserved, 1 + INDEX_LEASE);
        c.configure_breakers(vec![("db".into(), spec())], now);
        c.set_signal("io", 0.4, "rules");
        c.set_force("db", Some(Force::Open), now).unwrap();
        assert_eq!(c.snapshot().index, 4);
        let read = |n: &str| std::fs::read_to_string(files.join(n)).unwrap();
        assert_eq!((read("db").as_str(), read("io").as_str()), ("1\n", "0.4\n"));

        // Killed (no shutdown): the next run starts above everything reserved.
        let again = Control::new(None, None).with_index_file(file.clone());
        assert_eq!(again.snapshot().index, reserved + 1);

        // A clean shutdown writes the exact index, resets the files, stops the page and
        // closes the channel, so a blocking query waiting on it returns at once.
        let mut rx = c.subscribe();
        rx.mark_unchanged();
        c.shutdown();
        assert!(rx.changed().await.is_err());
        assert_eq!(rx.borrow().index, 4);
        assert_eq!((read("db").as_str(), read("io").as_str()), ("0\n", "0\n"));
        let bytes = std::fs::read(&page).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 1);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "4\n");
        c.set_signal("io", 0.9, "rules");
        assert_eq!(read("io"), "0\n", "nothing is published after a shutdown");
        let restarted = Control::new(None, None).with_index_file(file);
        assert_eq!(restarted.snapshot().index, 5);
    }
}

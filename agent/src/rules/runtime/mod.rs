//! The rule engine inside the daemon: initial load, the evaluation loop on the wall clock,
//! and the loading of the rule files that reloads ask for. Reloads themselves (SIGHUP,
//! `POST /-/reload`, the rules directory watch) are decided, serialised and recorded by the
//! one coordinator, `crate::reload`, which calls [`RulesRuntime::reload`] and
//! [`RulesRuntime::files_changed`].
//!
//! Each tick at which some group is due, the agent's registry is read as typed families (the
//! Prometheus data model; no text) and the series some rule can read are fed to the store (see
//! `store::families`), then the due groups are evaluated and the resulting notifications
//! queued for Alertmanager. Loads are all or nothing: every file of the directory must parse and
//! validate, or the running rules and their state stay as they are, every problem is logged
//! with file:line:column, and `steadfast_rules_last_reload_successful` reads 0.

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::registry::Registry;
use tokio::task::JoinSet;

pub mod alertmanager;
pub mod metrics;

use self::{alertmanager::Notifier, metrics::RulesCollector};
use crate::rules::engine::{ControlInput, Engine, EngineOptions};
use crate::rules::spec::breaker::{Observation, Spec};
use crate::rules::spec::{file, lint};
use crate::{collector::Snapshots, config::Config};

pub struct RulesRuntime {
    pub engine: Arc<Mutex<Engine>>,
    /// Where breaker observations and signal levels go.
    control: Option<Arc<Mutex<dyn Decisions>>>,
    /// Signal names the loaded rules define or may raise (to lower ones that went away).
    signal_names: Mutex<std::collections::BTreeSet<String>>,
    /// Of those, the ones `signals:` entries define (set from their expression only).
    expr_signals: Mutex<std::collections::BTreeSet<String>>,
    dir: PathBuf,
    eval_interval: Duration,
    notifier: Option<Notifier>,
    /// Hash of the names and contents of the files last loaded (or rejected).
    last_seen: Mutex<Option<u64>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The rule files of a directory: every `*.yaml` and `*.yml` entry, hidden names skipped,
/// sorted. Entries that are not regular files (after following symlinks: a dangling symlink,
/// a directory or a FIFO named `x.yaml`) are listed too, and fail the load with a message
/// naming them. A missing directory has none.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        out.push(path);
    }
    out.sort();
    Ok(out)
}

/// Hash of the files' names and contents (a file that cannot be read counts as empty).
fn contents_hash(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        crate::input::read_bytes(f, file::MAX_FILE_BYTES)
            .unwrap_or_default()
            .hash(&mut h);
    }
    h.finish()
}

/// Creates the engine, loads the rules once, registers the engine's metrics and starts the
/// Alertmanager sender. Call [`spawn`] once the registry is shared.
pub fn setup(
    config: &Config,
    registry: &mut Registry,
    tasks: &mut JoinSet<()>,
    control: Option<Arc<Mutex<dyn Decisions>>>,
) -> Arc<RulesRuntime> {
    let opts = EngineOptions {
        eval_interval_ms: config.rules.evaluation_interval_ms as i64,
        max_series: config.rules.max_series,
        max_alerts: config.rules.max_alerts,
        max_retention_ms: config.rules.max_retention_secs as i64 * 1000,
        state_dir: Some(config.rules.state_dir.clone()),
        resend_ms: config.alertmanager.resend_interval_secs as i64 * 1000,
        generator_url: format!("http://{}/metrics", config.http.listen_address),
    };
    let notifier = config.alertmanager.url.as_deref().map(|url| {
        tracing::info!(%url, "alerts go to Alertmanager");
        Notifier::spawn(
            url,
            Duration::from_secs(config.alertmanager.timeout_secs),
            tasks,
        )
    });
    let rt = Arc::new(RulesRuntime {
        engine: Arc::new(Mutex::new(Engine::new(opts))),
        control,
        signal_names: Mutex::new(Default::default()),
        expr_signals: Mutex::new(Default::default()),
        dir: config.rules.directory.clone(),
        eval_interval: Duration::from_millis(config.rules.evaluation_interval_ms),
        notifier,
        last_seen: Mutex::new(None),
    });
    if !rt.dir.exists() {
        tracing::info!(directory = %rt.dir.display(), "rules directory does not exist: no rules loaded");
    }
    let _ = rt.reload("start");
    registry.register_collector(Box::new(RulesCollector {
        engine: rt.engine.clone(),
        notifier: rt.notifier.as_ref().map(|n| n.stats.clone()),
    }));
    rt
}

/// Starts evaluation (the directory watch is `crate::reload`'s). `pipeline` is collected
/// right before each evaluation, so rules see the kernel's counts of that moment.
pub fn spawn(rt: &Arc<RulesRuntime>, snapshots: Snapshots, tasks: &mut JoinSet<()>) {
    tasks.spawn(evaluate_periodically(rt.clone(), snapshots));
}

/// How long a rule tick waits for a collection started after it.
const FRESH_BOUND: Duration = Duration::from_secs(1);

impl RulesRuntime {
    /// Loads every rule file; all or nothing. Returns how many of each kind were loaded.
    pub fn reload(&self, reason: &str) -> Result<file::RuleCounts, String> {
        let result = rule_files(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))
            .and_then(|files| {
                *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(contents_hash(&files));
                file::load_files(&files).map_err(|p| p.to_string())
            });
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(files) => {
                let n = files.len();
                let eval_ms = self.eval_interval.as_millis() as u64;
                for f in lint::lint(&files, lint::Catalogue::agent(), eval_ms) {
                    match f.severity {
                        lint::Severity::Warning => {
                            tracing::warn!(reason, finding = %f, "rules loaded with a warning (see `steadfast check rules`)")
                        }
                        lint::Severity::Note => {
                            tracing::info!(reason, finding = %f, "rules")
                        }
                    }
                }
                engine.load(files);
                self.configure_control(&engine);
                engine.stats.last_reload_successful = true;
                engine.stats.last_reload_success_ms = now_ms();
                let c = engine.counts();
                tracing::info!(
                    reason,
                    files = n,
                    alerting_rules = c.alerting_rules,
                    recording_rules = c.recording_rules,
                    slos = c.slos,
                    breakers = c.breakers,
                    signals = c.signals,
                    directory = %self.dir.display(),
                    "rules loaded"
                );
                Ok(c)
            }
            Err(e) => {
                engine.stats.last_reload_successful = false;
                engine.stats.reloads_failed += 1;
                for line in e.lines() {
                    tracing::error!(reason, problem = %line, "rules rejected; the previous rules keep running");
                }
                Err(e)
            }
        }
    }

    /// Gives the control layer the loaded breakers, and lowers signals no rule defines now.
    fn configure_control(&self, engine: &Engine) {
        let Some(control) = &self.control else { return };
        let names = engine.signal_names();
        let mut c = control.lock().unwrap_or_else(|p| p.into_inner());
        c.configure_breakers(engine.breaker_specs(), tokio::time::Instant::now());
        let mut old = self.signal_names.lock().unwrap_or_else(|p| p.into_inner());
        for gone in old.difference(&names) {
            c.remove_signal(gone);
        }
        *old = names;
        *self.expr_signals.lock().unwrap_or_else(|p| p.into_inner()) = engine.expr_signal_names();
    }

    /// Hands an evaluation's breaker observations and signal levels to the control layer;
    /// signals raised by alerts and spent SLO budgets read 1 while raised, else 0.
    fn feed_control(&self, inputs: Vec<ControlInput>, raised: std::collections::BTreeSet<String>) {
        let Some(control) = &self.control else { return };
        let names = self
            .signal_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let from_exprs = self
            .expr_signals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut c = control.lock().unwrap_or_else(|p| p.into_inner());
        feed(
            &mut *c,
            inputs,
            &raised,
            &names,
            &from_exprs,
            tokio::time::Instant::now(),
        );
    }

    /// Whether a file's name or content changed since the last load (or rejected load).
    pub fn files_changed(&self) -> bool {
        let files = rule_files(&self.dir).unwrap_or_default();
        let hash = contents_hash(&files);
        *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) != Some(hash)
    }

    /// The rules directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the last load succeeded, when the last successful one was (ms since the
    /// epoch), and what is loaded.
    pub fn load_state(&self) -> (bool, i64, file::RuleCounts) {
        let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        (
            engine.stats.last_reload_successful,
            engine.stats.last_reload_success_ms,
            engine.counts(),
        )
    }

    /// Writes state that must survive a restart (at shutdown).
    pub fn shutdown(&self) {
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .persist_all(now_ms());
    }
}

/// Where the rules' decisions go: the local control layer (`control::Control` implements
/// it; the wiring connects them), so that the rules do not import the layer they feed.
pub trait Decisions: Send {
    /// The breakers the loaded rules define (a reload restarts changed ones).
    fn configure_breakers(&mut self, specs: Vec<(String, Spec)>, now: tokio::time::Instant);
    /// One evaluation's inputs of a breaker.
    fn observe(&mut self, name: &str, obs: Observation, now: tokio::time::Instant);
    /// Why a breaker's inputs could not be evaluated (`None`: they could).
    fn set_breaker_inputs(&mut self, name: &str, unknown: Option<String>);
    /// A signal's level from `source`.
    fn set_signal(&mut self, name: &str, level: f64, source: &str);
    /// A signal whose expression gave no number: its level is held.
    fn set_signal_unknown(&mut self, name: &str, reason: &str, source: &str);
    /// A signal no rule defines any more.
    fn remove_signal(&mut self, name: &str);
}

/// Hands an evaluation's breaker observations and signal levels to `c` (the daemon, and
/// `steadfast test rules`): `names` are every signal the rules define or may raise,
/// `from_exprs` those `signals:` entries define (set from their expression only, when their
/// group is evaluated); the others read 1 while `raised` (by a firing alert or a spent SLO
/// budget), else 0.
pub fn feed(
    c: &mut dyn Decisions,
    inputs: Vec<ControlInput>,
    raised: &std::collections::BTreeSet<String>,
    names: &std::collections::BTreeSet<String>,
    from_exprs: &std::collections::BTreeSet<String>,
    now: tokio::time::Instant,
) {
    for input in inputs {
        match input {
            ControlInput::Breaker(name, obs, unknown) => {
                c.observe(&name, obs, now);
                c.set_breaker_inputs(&name, unknown);
            }
            ControlInput::Signal(name, level) => {
                let level = if raised.contains(&name) { 1.0 } else { level };
                c.set_signal(&name, level, "rules");
            }
            ControlInput::SignalUnknown(name, reason) => {
                if raised.contains(&name) {
                    c.set_signal(&name, 1.0, "rules");
                } else {
                    c.set_signal_unknown(&name, &reason, "rules");
                }
            }
        }
    }
    for name in names.difference(from_exprs) {
        let level = if raised.contains(name) { 1.0 } else { 0.0 };
        c.set_signal(name, level, "rules");
    }
}

async fn evaluate_periodically(rt: Arc<RulesRuntime>, snapshots: Snapshots) {
    let mut tick = tokio::time::interval(rt.eval_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = {
            let engine = rt.engine.lock().unwrap_or_else(|p| p.into_inner());
            engine.has_work() && engine.any_due(now_ms())
        };
        if !due {
            continue;
        }
        // Counts collected after this tick began (waited for before locking the engine: the
        // collector's registry read locks it too).
        let snapshot = snapshots.fresh(FRESH_BOUND).await;
        // Ingesting and evaluating run on the bulk-work threads: with a large catalogue they
        // take milliseconds, which the two runtime workers that serve the local API should
        // not spend (`background`).
        let engine_rt = rt.clone();
        let work = crate::background::run(move || {
            let families = &snapshot.families;
            let t = now_ms();
            let mut engine = engine_rt.engine.lock().unwrap_or_else(|p| p.into_inner());
            engine.ingest_families(t, families);
            let batch = engine.evaluate(t);
            Some((batch, engine.take_control_inputs(), engine.signals()))
        })
        .await;
        let Ok(Some((batch, inputs, raised))) = work else {
            continue;
        };
        rt.feed_control(inputs, raised);
        if let Some(n) = &rt.notifier {
            n.send(batch);
        }
    }
}

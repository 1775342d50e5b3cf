//! The one reload coordinator, for the config file and the rules directory.
//!
//! Every way of asking for a reload comes here: SIGHUP (from `lifecycle`, which also tells
//! systemd RELOADING=1 and then READY=1 with the outcome), `POST /-/reload` on the API's
//! unix socket, and the watch on the rules directory and its parent (an edited, added or
//! removed file, the directory replaced, a symlink to it or a Kubernetes ConfigMap's `..data`
//! symlink swapped). One reload runs at a time; each one, here and only here:
//!
//! 1. decides what changed: SIGHUP and `POST` re-read and validate the config file (invalid,
//!    unchanged, or changed) and always reload the rules; the watch reloads the rules only,
//!    and only when a file's name or content changed since the last attempt (a change
//!    without one is not a reload, and is not counted);
//! 2. applies it: a changed config's live part (the slow-syscall thresholds, rewritten in
//!    their kernel map) then becomes the running config that later reloads compare with, so
//!    A -> B -> A is a change each time; everything else in the config waits for a restart.
//!    Rules load all or nothing. An invalid config or rules file changes nothing: every
//!    problem is logged (rules with file:line:column) and answered, and the running config
//!    and rules keep running. The two parts are independent: a bad config file does not
//!    stop a good rules change, nor the other way round;
//! 3. records what is running now ([`Status`]): the config's and the rules' generation
//!    (1 at start, +1 per applied change), when each was last loaded, the last attempt's error,
//!    and the last reload's trigger and outcome. It is served as JSON on `GET /v1/reload`
//!    (both listeners) and as metrics: `steadfast_reloads_total{trigger, outcome}`,
//!    `steadfast_config_last_reload_successful`,
//!    `steadfast_config_last_reload_success_timestamp_seconds` (and the rules' own
//!    `steadfast_rules_last_reload_*`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use serde::Serialize;

use crate::{
    config::{Config, ConfigError},
    rules::{runtime::RulesRuntime, spec::file::RuleCounts},
};

/// How long the rules directory must be quiet after a change before it is reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Who asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// SIGHUP (`systemctl reload`).
    Signal,
    /// `POST /-/reload` on the API socket.
    Api,
    /// The rules directory changed.
    Watch,
}

impl Trigger {
    /// The `trigger` label.
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::Api => "api",
            Trigger::Watch => "watch",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Api => "POST /-/reload",
            Trigger::Watch => "rules directory changed",
        }
    }
}

/// What a reload found in the config file.
#[derive(Debug)]
pub enum ConfigOutcome {
    /// The file is invalid: the running configuration stays.
    Invalid(ConfigError),
    /// Valid and identical to the running configuration.
    Unchanged,
    /// Valid but different: live parts are applied, the rest takes effect at the next restart.
    Changed(Box<Config>),
}

/// Re-reads and validates `path` against the running configuration, and logs the outcome.
pub fn check_config(path: &Path, running: &Config) -> ConfigOutcome {
    match Config::load(path) {
        Err(e) => {
            match &e {
                ConfigError::Invalid { path, problems } => {
                    for p in problems {
                        tracing::error!(file = %path, "reload: {p}");
                    }
                }
                other => tracing::error!("reload: {other}"),
            }
            tracing::error!("reload: configuration rejected, still running with the old one");
            ConfigOutcome::Invalid(e)
        }
        Ok(new) if &new == running => {
            tracing::info!(file = %path.display(), "reload: configuration valid and unchanged");
            ConfigOutcome::Unchanged
        }
        Ok(new) => {
            tracing::warn!(
                file = %path.display(),
                "reload: configuration valid and changed; slow-syscall thresholds apply now, \
                 other changes (probes, map sizes, listen address, logging, export) at restart"
            );
            ConfigOutcome::Changed(Box::new(new))
        }
    }
}

/// What a reload did with the config file.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigResult {
    /// Not looked at (a rules-directory change).
    NotChecked,
    Unchanged,
    /// Changed and its live part applied: now the running config.
    Applied,
    /// Valid and changed, but its live part could not be applied: not the running config,
    /// so the same file is a change again next time.
    NotApplied(String),
    /// Invalid: the running config stays.
    Rejected(String),
}

/// What one reload did.
#[derive(Debug, Clone)]
pub struct Report {
    pub trigger: Trigger,
    pub config: ConfigResult,
    /// `None`: the rules were not reloaded (a watch event that changed no file).
    pub rules: Option<Result<RuleCounts, String>>,
}

impl Report {
    /// Nothing was refused or failed.
    pub fn ok(&self) -> bool {
        matches!(
            self.config,
            ConfigResult::NotChecked | ConfigResult::Unchanged | ConfigResult::Applied
        ) && !matches!(self.rules, Some(Err(_)))
    }

    /// Whether anything was attempted at all.
    fn attempted(&self) -> bool {
        self.config != ConfigResult::NotChecked || self.rules.is_some()
    }

    /// The one-line status systemd shows (`systemctl status`).
    pub fn status_line(&self) -> String {
        let config = match &self.config {
            ConfigResult::NotChecked => "running",
            ConfigResult::Unchanged => "running; config reloaded, unchanged",
            ConfigResult::Applied => {
                "running; config changed: thresholds applied, restart for the rest"
            }
            ConfigResult::NotApplied(_) => {
                "running; config changed but the thresholds could not be written"
            }
            ConfigResult::Rejected(_) => "reload rejected: config invalid, old config kept",
        };
        match &self.rules {
            Some(Err(_)) => format!("{config}; rules rejected, old rules kept"),
            _ => config.to_string(),
        }
    }

    /// The answer to `POST /-/reload`: 200 when everything was applied, else 400 with every
    /// problem. The first line is the rules' (`ok: <counts>` or their problems), then the
    /// config's.
    fn answer(&self) -> (StatusCode, String) {
        let mut body = match &self.rules {
            Some(Ok(counts)) => format!("ok: {counts}\n"),
            Some(Err(e)) => format!("{e}\n"),
            None => String::new(),
        };
        match &self.config {
            ConfigResult::NotChecked => {}
            ConfigResult::Unchanged => body.push_str("config: valid, unchanged\n"),
            ConfigResult::Applied => body.push_str(
                "config: changed; slow-syscall thresholds applied, other changes at restart\n",
            ),
            ConfigResult::NotApplied(e) => body.push_str(&format!(
                "config: changed, but the slow-syscall thresholds could not be written: {e}\n"
            )),
            ConfigResult::Rejected(e) => body.push_str(&format!(
                "config rejected, the old one keeps running: {e}\n"
            )),
        }
        let status = if self.ok() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        (status, body)
    }
}

/// What is running, for one of the two parts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartStatus {
    /// The file or directory read.
    pub source: String,
    /// 1 for what the agent started with, +1 per change applied by a reload (for the rules:
    /// per successful load, also of unchanged files).
    pub generation: u64,
    /// When the running generation was loaded (Unix seconds).
    pub loaded_at: f64,
    /// When the last reload looked at it (Unix seconds), if one has.
    pub last_attempt_at: Option<f64>,
    /// The last attempt succeeded (or nothing was attempted since start).
    pub last_successful: bool,
    /// The last attempt's problems, while it is the last attempt.
    pub last_error: Option<String>,
}

/// The last reload.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    pub trigger: &'static str,
    pub at: f64,
    /// `success` or `failure`.
    pub outcome: &'static str,
    pub status: String,
}

/// What the coordinator records; `GET /v1/reload`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub config: PartStatus,
    pub rules: PartStatus,
    /// The loaded rules, as `steadfast check rules` counts them.
    pub rules_loaded: String,
    pub last: Option<LastReload>,
    /// Reloads by `trigger` then `outcome`.
    pub reloads: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

/// Applies a changed config's live part (the daemon writes the slow-syscall thresholds).
pub type ApplyLive = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

pub struct Reloader {
    config_path: PathBuf,
    running: Mutex<Config>,
    apply_live: ApplyLive,
    rules: Arc<RulesRuntime>,
    status: Mutex<Status>,
    /// One reload at a time.
    serial: tokio::sync::Mutex<()>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Reloader {
    /// `running` is the config the agent started with; `rules` has loaded the rules once.
    pub fn new(
        config_path: &Path,
        running: &Config,
        rules: Arc<RulesRuntime>,
        apply_live: ApplyLive,
    ) -> Arc<Self> {
        let now = unix_now();
        let (rules_ok, rules_ms, counts) = rules.load_state();
        let status = Status {
            config: PartStatus {
                source: config_path.display().to_string(),
                generation: 1,
                loaded_at: now,
                last_successful: true,
                ..Default::default()
            },
            rules: PartStatus {
                source: rules.dir().display().to_string(),
                generation: u64::from(rules_ok),
                loaded_at: rules_ms as f64 / 1000.0,
                last_successful: rules_ok,
                ..Default::default()
            },
            rules_loaded: counts.to_string(),
            ..Default::default()
        };
        Arc::new(Self {
            config_path: config_path.to_path_buf(),
            running: Mutex::new(running.clone()),
            apply_live,
            rules,
            status: Mutex::new(status),
            serial: tokio::sync::Mutex::new(()),
        })
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs one reload (after any running one), off the runtime's workers: reading and
    /// parsing up to the load limits takes a noticeable fraction of a second, which the
    /// workers (they also serve the local API) should not spend.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Report {
        let _one = self.serial.lock().await;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.reload_now(trigger))
            .await
            .unwrap_or_else(|e| Report {
                trigger,
                config: ConfigResult::NotChecked,
                rules: Some(Err(format!("the reload failed: {e}"))),
            })
    }

    /// One reload, on the calling thread (callers hold `serial`).
    fn reload_now(&self, trigger: Trigger) -> Report {
        let config = if trigger == Trigger::Watch {
            ConfigResult::NotChecked
        } else {
            self.reload_config()
        };
        let rules = if trigger != Trigger::Watch || self.rules.files_changed() {
            Some(self.rules.reload(trigger.reason()))
        } else {
            None
        };
        let report = Report {
            trigger,
            config,
            rules,
        };
        if report.attempted() {
            self.record(&report);
        }
        report
    }

    fn reload_config(&self) -> ConfigResult {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match check_config(&self.config_path, &running) {
            ConfigOutcome::Invalid(e) => ConfigResult::Rejected(e.to_string()),
            ConfigOutcome::Unchanged => ConfigResult::Unchanged,
            ConfigOutcome::Changed(new) => match (self.apply_live)(&new) {
                Ok(()) => {
                    *self.running.lock().unwrap_or_else(|p| p.into_inner()) = *new;
                    ConfigResult::Applied
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload: writing slow-syscall thresholds failed");
                    ConfigResult::NotApplied(e)
                }
            },
        }
    }

    fn record(&self, report: &Report) {
        let now = unix_now();
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let config_error = match &report.config {
            ConfigResult::NotChecked => None,
            ConfigResult::Unchanged => Some(None),
            ConfigResult::Applied => {
                s.config.generation += 1;
                s.config.loaded_at = now;
                Some(None)
            }
            ConfigResult::NotApplied(e) | ConfigResult::Rejected(e) => Some(Some(e.clone())),
        };
        if let Some(error) = config_error {
            s.config.last_attempt_at = Some(now);
            s.config.last_successful = error.is_none();
            s.config.last_error = error;
        }
        if let Some(rules) = &report.rules {
            s.rules.last_attempt_at = Some(now);
            s.rules.last_successful = rules.is_ok();
            match rules {
                Ok(counts) => {
                    s.rules.generation += 1;
                    s.rules.loaded_at = now;
                    s.rules.last_error = None;
                    s.rules_loaded = counts.to_string();
                }
                Err(e) => s.rules.last_error = Some(e.clone()),
            }
        }
        let outcome = if report.ok() { "success" } else { "failure" };
        *s.reloads
            .entry(report.trigger.label())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        s.last = Some(LastReload {
            trigger: report.trigger.label(),
            at: now,
            outcome,
            status: report.status_line(),
        });
        tracing::info!(
            trigger = report.trigger.label(),
            outcome,
            config_generation = s.config.generation,
            rules_generation = s.rules.generation,
            status = %report.status_line(),
            "reload done"
        );
    }
}

/// `POST /-/reload` (served on the unix socket only: see `api::read_only`) and
/// `GET /v1/reload` (the recorded [`Status`]).
pub fn router(reloader: &Arc<Reloader>) -> Router {
    Router::new()
        .route("/-/reload", post(reload_handler))
        .route("/v1/reload", get(status_handler))
        .with_state(reloader.clone())
}

async fn reload_handler(State(r): State<Arc<Reloader>>) -> (StatusCode, String) {
    r.reload(Trigger::Api).await.answer()
}

async fn status_handler(State(r): State<Arc<Reloader>>) -> Response {
    Json(r.status()).into_response()
}

/// Watches the rules directory and its parent (non-recursively) and reloads, debounced by
/// [`DEBOUNCE`], when they change.
pub async fn watch_rules(reloader: Arc<Reloader>) {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = reloader.rules.dir().to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, EventKind::Access(_)) {
                let _ = tx.try_send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the rules directory: reload with SIGHUP or POST /-/reload");
            return;
        }
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = watcher.watch(&parent, RecursiveMode::NonRecursive) {
        // A missing parent is the default set-up without rules: nothing to say above debug.
        if parent.exists() {
            tracing::warn!(directory = %parent.display(), error = %e, "cannot watch the rules directory's parent: reload with SIGHUP or POST /-/reload");
        } else {
            tracing::debug!(directory = %parent.display(), "the rules directory's parent does not exist: not watched");
        }
    }
    let _ = watcher.watch(&dir, RecursiveMode::NonRecursive);
    while rx.recv().await.is_some() {
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        reloader.reload(Trigger::Watch).await;
        // The directory (or a symlink to it) may have been replaced: watch what is there now.
        let _ = watcher.unwatch(&dir);
        let _ = watcher.watch(&dir, RecursiveMode::NonRecursive);
    }
}

/// Registers the coordinator's metrics.
pub fn register(registry: &mut Registry, reloader: &Arc<Reloader>) {
    registry.register_collector(Box::new(ReloadCollector(reloader.clone())));
}

struct ReloadCollector(Arc<Reloader>);

impl std::fmt::Debug for ReloadCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadCollector")
    }
}

impl Collector for ReloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.status();
        let mut f = encoder.encode_descriptor(
            "reloads",
            "Reloads of the config and rules, by trigger (sighup, api, watch) and outcome (success: everything applied; failure: something was refused and the old state kept).",
            None,
            MetricType::Counter,
        )?;
        for trigger in [Trigger::Signal, Trigger::Api, Trigger::Watch] {
            for outcome in ["success", "failure"] {
                let n = s
                    .reloads
                    .get(trigger.label())
                    .and_then(|m| m.get(outcome))
                    .copied()
                    .unwrap_or(0);
                let labels = [("trigger", trigger.label()), ("outcome", outcome)];
                ConstCounter::new(n).encode(f.encode_family(&labels)?)?;
            }
        }
        let f = encoder.encode_descriptor(
            "config_last_reload_successful",
            "1 if the last reload of the config file applied it (or found it unchanged), 0 if it was refused (the running config stays).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(if s.config.last_successful { 1.0 } else { 0.0 }).encode(f)?;
        let f = encoder.encode_descriptor(
            "config_last_reload_success_timestamp_seconds",
            "When the running config was loaded: at start, or by the last reload that changed it.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.config.loaded_at).encode(f)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_classifies_the_file_and_never_replaces_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steadfast.yaml");
        let running = Config::default();

        std::fs::write(&path, "log:\n  level: info\n").unwrap();
        assert!(matches!(
            check_config(&path, &running),
            ConfigOutcome::Unchanged
        ));

        std::fs::write(&path, "services:\n  max_services: 7\n").unwrap();
        assert!(matches!(
            check_config(&path, &running),
            ConfigOutcome::Changed(c) if c.services.max_services == 7
        ));

        std::fs::write(&path, "services:\n  max_services: lots\n").unwrap();
        assert!(matches!(
            check_config(&path, &running),
            ConfigOutcome::Invalid(ConfigError::Parse { .. })
        ));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            check_config(&path, &running),
            ConfigOutcome::Invalid(ConfigError::Read { .. })
        ));
    }

    /// A -> B -> A, a refused file and a failed live apply, a rules change and a bad rules
    /// file, through the coordinator: what it answers, what it records, what it counts.
    #[test]
    fn the_coordinator_applies_records_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steadfast.yaml");
        let rules_dir = dir.path().join("rules.d");
        std::fs::create_dir(&rules_dir).unwrap();
        let a = format!(
            "rules:\n  directory: {}\n  state_dir: {}\n",
            rules_dir.display(),
            dir.path().join("state").display()
        );
        let b = format!("{a}services:\n  max_services: 7\n");
        std::fs::write(&path, &a).unwrap();
        let config = Config::load(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut registry = Registry::default();
            let mut tasks = tokio::task::JoinSet::new();
            let rules = crate::rules::runtime::setup(&config, &mut registry, &mut tasks, None);
            let applied = Arc::new(Mutex::new(Vec::new()));
            let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (seen, failing) = (applied.clone(), fail.clone());
            let r = Reloader::new(
                &path,
                &config,
                rules,
                Box::new(move |c: &Config| {
                    if failing.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err("map write failed".into());
                    }
                    seen.lock().unwrap().push(c.services.max_services);
                    Ok(())
                }),
            );
            assert_eq!(r.status().config.generation, 1);
            assert_eq!(r.status().rules.generation, 1, "the empty directory loaded");

            let rep = r.reload(Trigger::Signal).await;
            assert_eq!(rep.config, ConfigResult::Unchanged);
            assert!(rep.ok() && rep.status_line().contains("unchanged"));

            std::fs::write(&path, &b).unwrap();
            assert_eq!(r.reload(Trigger::Api).await.config, ConfigResult::Applied);
            std::fs::write(&path, &a).unwrap();
            assert_eq!(
                r.reload(Trigger::Signal).await.config,
                ConfigResult::Applied
            );
            let default_max = Config::default().services.max_services;
            assert_eq!(*applied.lock().unwrap(), [7, default_max], "A -> B -> A");
            assert_eq!(r.status().config.generation, 3);

            // A failed live apply is not the running config: the same file is a change again.
            fail.store(true, std::sync::atomic::Ordering::Relaxed);
            std::fs::write(&path, &b).unwrap();
            let rep = r.reload(Trigger::Signal).await;
            assert!(matches!(rep.config, ConfigResult::NotApplied(_)), "{rep:?}");
            assert!(!rep.ok());
            fail.store(false, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(
                r.reload(Trigger::Signal).await.config,
                ConfigResult::Applied
            );

            // An invalid file: refused, the error recorded, the running config kept.
            std::fs::write(&path, format!("{b}  nonsense: 1\n")).unwrap();
            let rep = r.reload(Trigger::Api).await;
            let (code, body) = rep.answer();
            assert_eq!(code, StatusCode::BAD_REQUEST);
            assert!(body.contains("config rejected"), "{body}");
            let s = r.status();
            assert_eq!(s.config.generation, 4);
            assert!(!s.config.last_successful);
            assert!(s.config.last_error.as_deref().unwrap().contains("nonsense"));
            std::fs::write(&path, &b).unwrap();
            assert_eq!(r.reload(Trigger::Api).await.config, ConfigResult::Unchanged);
            assert!(r.status().config.last_error.is_none());

            // The watch: nothing changed, nothing done or counted; a rules change loads; a
            // bad rules file is refused and the loaded rules stay.
            let before = r.status().reloads.clone();
            let rep = r.reload(Trigger::Watch).await;
            assert!(rep.rules.is_none() && rep.config == ConfigResult::NotChecked);
            assert_eq!(r.status().reloads, before);
            std::fs::write(
                rules_dir.join("a.yaml"),
                "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n",
            )
            .unwrap();
            let rep = r.reload(Trigger::Watch).await;
            assert!(
                matches!(&rep.rules, Some(Ok(c)) if c.alerting_rules == 1),
                "{rep:?}"
            );
            let generation = r.status().rules.generation;
            std::fs::write(rules_dir.join("b.yaml"), "groups: [").unwrap();
            let rep = r.reload(Trigger::Watch).await;
            assert!(matches!(rep.rules, Some(Err(_))));
            let s = r.status();
            assert_eq!(s.rules.generation, generation);
            assert!(s.rules.last_error.as_deref().unwrap().contains("b.yaml"));
            assert!(
                s.rules_loaded.contains("1 alerting rule"),
                "{}",
                s.rules_loaded
            );
            assert_eq!(s.last.as_ref().unwrap().outcome, "failure");
            assert_eq!(s.reloads["watch"]["success"], 1);
            assert_eq!(s.reloads["watch"]["failure"], 1);
            assert_eq!(s.reloads["sighup"]["success"], 3);
            assert_eq!(s.reloads["sighup"]["failure"], 1);
            assert_eq!(s.reloads["api"]["failure"], 1);
            assert_eq!(s.reloads["api"]["success"], 2);

            register(&mut registry, &r);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            assert!(
                text.contains("reloads_total{trigger=\"watch\",outcome=\"failure\"} 1"),
                "{text}"
            );
            assert!(text.contains("config_last_reload_successful 1"), "{text}");
        });
    }
}

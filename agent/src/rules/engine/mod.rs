//! The rule engine proper: the loaded groups with their running state, the series store they
//! read, evaluation of due groups at a given time, and the notifications that result. Time is
//! always passed in (ms since the epoch), so `steadfast test rules` and unit tests drive it
//! with synthetic time; the daemon drives it with the wall clock (see `runtime`).
//!
//! Loading is all or nothing (the caller hands over only fully parsed files) and keeps state
//! across reloads: an alerting rule whose definition (group, name, expression, `for`,
//! `keep_firing_for`, labels, annotations, signal) did not change keeps its pending and firing
//! alerts; an SLO keeps its alerts when unchanged and its error budget whenever its name is
//! unchanged; new SLOs restore their budget from the state directory.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
};

pub mod alert;
pub mod slo;

use self::{
    alert::{Alert, AlertSpec, AlertingRule, Outcome, State},
    slo::{Budget, SloRuntime},
};
use crate::rules::eval::{self, Sample, Value};
use crate::rules::spec::file::{AlertRule, BreakerDef, Query, RuleCounts, RuleFile, SignalDef};
use crate::rules::spec::promql;
use crate::store::{Labels, Store, StoreLimits, LOOKBACK_MS};

/// Engine settings (from the agent's config, or from a rule test).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub eval_interval_ms: i64,
    pub max_series: usize,
    pub max_retention_ms: i64,
    /// Alerts held at most, over every rule and SLO (pending, firing, recently resolved).
    pub max_alerts: usize,
    /// Where error budgets are persisted; None: not persisted (tests).
    pub state_dir: Option<PathBuf>,
    pub resend_ms: i64,
    /// `generatorURL` of the alerts.
    pub generator_url: String,
}

/// An alert as handed to Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub generator_url: String,
}

/// Counters and gauges of the engine itself.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub last_reload_successful: bool,
    pub last_reload_success_ms: i64,
    pub reloads_failed: u64,
    pub evaluations: u64,
    pub evaluation_failures: u64,
    /// Evaluation durations: (sum in seconds, count per bucket of [`EVAL_BUCKETS`]).
    pub eval_seconds_sum: f64,
    pub eval_buckets: [u64; EVAL_BUCKETS.len() + 1],
    /// New alerts refused because a rule held [`alert::MAX_ALERTS_PER_RULE`] or the
    /// engine held `max_alerts`.
    pub alerts_refused: u64,
}

pub use crate::rules::spec::lint::EVAL_BUCKETS;

#[derive(Debug)]
struct RuleRt {
    def: AlertRule,
    fingerprint: String,
    state: AlertingRule,
    last_error: Option<String>,
    /// A recording rule's series at its last evaluation: those missing from the next one
    /// get a stale marker, as Prometheus writes.
    recorded: BTreeSet<Labels>,
}

#[derive(Debug)]
struct GroupRt {
    name: String,
    interval_ms: i64,
    last_eval: Option<i64>,
    rules: Vec<RuleRt>,
    slos: Vec<SloRuntime>,
    breakers: Vec<BreakerDef>,
    signals: Vec<SignalDef>,
}

/// What an evaluation decided for local control, handed to `control::Control`.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlInput {
    /// A breaker's inputs, and why they are unknown (None: known).
    Breaker(
        String,
        crate::rules::spec::breaker::Observation,
        Option<String>,
    ),
    /// A degrade signal's level in [0, 1].
    Signal(String, f64),
    /// A degrade signal whose expression gave no number, and why: its level is held.
    SignalUnknown(String, String),
}

/// One number from an evaluation: a scalar, or a vector of exactly one sample. Anything
/// else is unknown, and the error says why (no series matched, several series, NaN, ...).
pub fn one_number(q: &Query, store: &Store, t: i64) -> Result<f64, String> {
    let ev = eval::eval(&q.expr, store, t).map_err(|e| format!("evaluation failed: {e}"))?;
    let v = match ev.value {
        Value::Scalar(s) => s,
        Value::Vector(v) if v.len() == 1 => v[0].value,
        Value::Vector(v) if v.is_empty() && ev.missing => {
            return Err("no series matched (no data, or stale)".into())
        }
        Value::Vector(v) if v.is_empty() => return Err("an empty result (a filter dropped every sample, or a range held fewer than two samples)".into()),
        Value::Vector(v) => return Err(format!("{} series, one expected", v.len())),
    };
    if v.is_nan() {
        Err("not a number (0/0: no calls?)".into())
    } else if v.is_infinite() {
        Err("infinite (x/0)".into())
    } else {
        Ok(v)
    }
}

/// A breaker's observation at `t`, and why its inputs are unknown (None: known). Inputs are
/// unknown when the volume has no value, or when it reaches `min_volume` and a ratio the
/// breaker judges has none (below `min_volume` the ratios are not needed: too few calls is a
/// verdict of its own).
pub fn breaker_inputs(
    b: &BreakerDef,
    store: &Store,
    t: i64,
) -> (crate::rules::spec::breaker::Observation, Option<String>) {
    let volume = one_number(&b.volume, store, t);
    let failure = b.failure_ratio.as_ref().map(|q| one_number(q, store, t));
    let slow = b.slow_ratio.as_ref().map(|q| one_number(q, store, t));
    let obs = crate::rules::spec::breaker::Observation {
        failure_ratio: failure.as_ref().and_then(|r| r.as_ref().ok().copied()),
        slow_ratio: slow.as_ref().and_then(|r| r.as_ref().ok().copied()),
        volume: volume.as_ref().ok().copied(),
    };
    let unknown = match &volume {
        Err(e) => Some(format!("volume: {e}")),
        Ok(v) if *v < b.spec.min_volume => None,
        Ok(_) => [("failure_ratio", &failure), ("slow_ratio", &slow)]
            .into_iter()
            .find_map(|(name, r)| match r {
                Some(Err(e)) => Some(format!("{name}: {e}")),
                _ => None,
            }),
    };
    (obs, unknown)
}

#[derive(Debug)]
pub struct Engine {
    pub opts: EngineOptions,
    pub store: Store,
    groups: Vec<GroupRt>,
    pub stats: EngineStats,
    /// Saved alert states were read (once, at the first load).
    restored: bool,
    /// Breaker observations and signal levels of the last evaluations, not yet taken.
    control: Vec<ControlInput>,
    last_alert_persist: Option<i64>,
    /// Selectors whose series the store keeps besides the rules' (`promql_expr_test`
    /// expressions of a rule test), and the longest range among them (ms).
    extra_interest: (Vec<Vec<promql_parser::label::Matcher>>, i64),
}

/// Alert states persisted across restarts, by rule key (see [`Engine::rule_keys`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct AlertsFile {
    version: u32,
    rules: BTreeMap<String, Vec<Alert>>,
}

/// Pending and firing alerts are written at most this often (and at shutdown).
const ALERT_PERSIST_EVERY_MS: i64 = 5_000;

fn short_hash(s: &str) -> String {
    // FNV-1a: stable across builds and runs (std's hashers are not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn fingerprint(group: &str, r: &AlertRule) -> String {
    format!(
        "{group}\u{0}{}{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}",
        if r.record { "record:" } else { "" },
        r.name,
        r.expr.text,
        r.for_,
        r.keep_firing_for,
        r.labels,
        r.annotations,
        r.signal
    )
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        let limits = StoreLimits {
            max_series: opts.max_series,
            retention_ms: LOOKBACK_MS,
            ..StoreLimits::default()
        };
        Self {
            store: Store::new(limits),
            opts,
            groups: Vec::new(),
            stats: EngineStats::default(),
            restored: false,
            last_alert_persist: None,
            control: Vec::new(),
            extra_interest: (Vec::new(), 0),
        }
    }

    fn alerts_path(&self) -> Option<PathBuf> {
        self.opts.state_dir.as_ref().map(|d| d.join("alerts.json"))
    }

    /// Every alerting state machine with a key that changes when its definition does.
    /// Alerts held now, over every rule and SLO.
    fn alerts_held(&self) -> usize {
        self.groups
            .iter()
            .map(|g| {
                g.rules.iter().map(|r| r.state.held()).sum::<usize>()
                    + g.slos
                        .iter()
                        .map(|s| s.page.held() + s.ticket.held())
                        .sum::<usize>()
            })
            .sum()
    }

    fn rule_keys(&mut self) -> Vec<(String, &mut AlertingRule)> {
        let mut out = Vec::new();
        for g in &mut self.groups {
            for r in &mut g.rules {
                out.push((format!("rule:{}", short_hash(&r.fingerprint)), &mut r.state));
            }
            for s in &mut g.slos {
                let h = short_hash(&format!("{:?}", s.def));
                out.push((format!("slo:{}:page:{h}", s.def.name), &mut s.page));
                out.push((format!("slo:{}:ticket:{h}", s.def.name), &mut s.ticket));
            }
        }
        out
    }

    /// Writes pending and firing alerts (with their `for` timers) to the state directory.
    pub fn persist_alerts(&mut self, t: i64) {
        let Some(path) = self.alerts_path() else {
            return;
        };
        // No alerting rules, no SLOs and no file yet: nothing to keep, and no directory to
        // create.
        if self
            .groups
            .iter()
            .all(|g| g.rules.is_empty() && g.slos.is_empty())
            && !path.exists()
        {
            return;
        }
        let mut file = AlertsFile {
            version: 1,
            ..AlertsFile::default()
        };
        for (key, rule) in self.rule_keys() {
            let alerts: Vec<Alert> = rule
                .alerts()
                .into_iter()
                .filter(|a| a.state != State::Resolved)
                .cloned()
                .collect();
            if !alerts.is_empty() {
                file.rules.insert(key, alerts);
            }
        }
        let result = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|body| slo::write_atomic(&path, &body));
        match result {
            Ok(()) => self.last_alert_persist = Some(t),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "persisting alert states failed")
            }
        }
    }

    /// At the first load only: puts back the alerts of rules whose definition is unchanged.
    fn restore_alerts(&mut self) {
        if self.restored {
            return;
        }
        self.restored = true;
        let Some(path) = self.alerts_path() else {
            return;
        };
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "alert states not restored");
                return;
            }
        };
        let mut file: AlertsFile = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "alert states not restored");
                return;
            }
        };
        if file.version != 1 {
            return;
        }
        let mut n = 0;
        let mut room = self.opts.max_alerts.saturating_sub(self.alerts_held());
        for (key, rule) in self.rule_keys() {
            if let Some(alerts) = file.rules.remove(&key) {
                n += alerts.len();
                rule.restore(alerts, &mut room);
            }
        }
        if n > 0 {
            tracing::info!(alerts = n, "pending and firing alerts restored");
        }
    }

    /// Replaces the loaded rules with `files`, keeping the state of unchanged rules.
    pub fn load(&mut self, files: Vec<(String, RuleFile)>) {
        let mut old_rules: HashMap<String, RuleRt> = HashMap::new();
        let mut old_slos: HashMap<String, SloRuntime> = HashMap::new();
        let mut old_last: HashMap<String, i64> = HashMap::new();
        for g in self.groups.drain(..) {
            if let Some(l) = g.last_eval {
                old_last.insert(g.name.clone(), l);
            }
            for r in g.rules {
                old_rules.insert(r.fingerprint.clone(), r);
            }
            for s in g.slos {
                old_slos.insert(s.def.name.clone(), s);
            }
        }
        let mut groups = Vec::new();
        for (_, file) in files {
            for g in file.groups {
                let rules = g
                    .rules
                    .into_iter()
                    .map(|def| {
                        let fp = fingerprint(&g.name, &def);
                        old_rules.remove(&fp).unwrap_or_else(|| RuleRt {
                            state: AlertingRule::new(AlertSpec {
                                name: def.name.clone(),
                                for_ms: def.for_.as_millis() as i64,
                                keep_firing_for_ms: def.keep_firing_for.as_millis() as i64,
                                labels: def.labels.clone(),
                                annotations: def.annotations.clone(),
                            }),
                            def,
                            fingerprint: fp,
                            last_error: None,
                            recorded: BTreeSet::new(),
                        })
                    })
                    .collect();
                let slos = g
                    .slos
                    .into_iter()
                    .map(|def| {
                        let name = def.name.clone();
                        let mut rt = SloRuntime::new(def, Budget::default());
                        match old_slos.remove(&name) {
                            Some(old) => rt.inherit(old),
                            None => {
                                if let Some(dir) = &self.opts.state_dir {
                                    match slo::load_budget(dir, &name) {
                                        Ok(Some(b)) => {
                                            tracing::info!(slo = %name, buckets = b.buckets.len(), "error budget restored");
                                            rt.budget = b;
                                        }
                                        Ok(None) => {}
                                        Err(e) => tracing::warn!(error = %e, "error budget not restored: starting afresh"),
                                    }
                                }
                            }
                        }
                        rt
                    })
                    .collect();
                groups.push(GroupRt {
                    interval_ms: g
                        .interval
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(self.opts.eval_interval_ms),
                    last_eval: old_last.get(&g.name).copied(),
                    name: g.name,
                    rules,
                    slos,
                    breakers: g.breakers,
                    signals: g.signals,
                });
            }
        }
        self.groups = groups;
        self.configure_store();
        self.restore_alerts();
    }

    /// Keeps the series `exprs` select too (rule tests' `promql_expr_test`), and keeps every
    /// sample at full resolution (no downsampling: a test compares with Prometheus).
    pub fn keep_also(&mut self, exprs: &[&promql_parser::parser::Expr]) {
        let mut interest = Vec::new();
        let mut longest = 0i64;
        for e in exprs {
            promql::selectors(e, &mut interest);
            longest = longest.max(promql::max_range_ms(e));
        }
        self.extra_interest = (interest, longest);
        let limits = StoreLimits {
            raw_ms: i64::MAX / 4,
            ..self.store.limits()
        };
        self.store.configure(limits, Vec::new());
        self.configure_store();
    }

    fn configure_store(&mut self) {
        let mut interest = self.extra_interest.0.clone();
        let mut longest = self.extra_interest.1;
        for g in &self.groups {
            for r in &g.rules {
                promql::selectors(&r.def.expr.expr, &mut interest);
                longest = longest.max(promql::max_range_ms(&r.def.expr.expr));
            }
            for s in &g.slos {
                interest.extend(s.selectors());
                longest = longest.max(s.max_range_ms());
            }
            let queries = g
                .breakers
                .iter()
                .flat_map(|b| {
                    [
                        b.failure_ratio.as_ref(),
                        b.slow_ratio.as_ref(),
                        Some(&b.volume),
                    ]
                })
                .flatten()
                .chain(g.signals.iter().map(|s| &s.expr));
            for q in queries {
                promql::selectors(&q.expr, &mut interest);
                longest = longest.max(promql::max_range_ms(&q.expr));
            }
        }
        // Saturating: a range can be up to i64::MAX ms (`x[100000000y]`).
        let wanted = longest
            .saturating_add(LOOKBACK_MS)
            .saturating_add(self.opts.eval_interval_ms);
        if wanted > self.opts.max_retention_ms {
            tracing::warn!(
                needed_secs = wanted / 1000,
                max_retention_secs = self.opts.max_retention_ms / 1000,
                "the loaded rules need a longer retention than rules.max_retention_secs: longer windows see only part of their range"
            );
        }
        // Ranges and instants are read at the latest ingest: past the longest range (and a
        // tick, for a group evaluated late) only an instant lookup's newest sample is needed.
        let range_ms = longest
            .saturating_add(self.opts.eval_interval_ms)
            .min(self.opts.max_retention_ms);
        let limits = StoreLimits {
            max_series: self.opts.max_series,
            retention_ms: wanted.min(self.opts.max_retention_ms),
            range_ms,
            ..self.store.limits()
        };
        self.store.configure(limits, interest);
    }

    /// Whether anything is loaded that needs evaluating.
    pub fn has_work(&self) -> bool {
        self.groups.iter().any(|g| {
            !(g.rules.is_empty()
                && g.slos.is_empty()
                && g.breakers.is_empty()
                && g.signals.is_empty())
        })
    }

    /// The breakers the loaded rules define, for `control::Control::configure_breakers`.
    pub fn breaker_specs(&self) -> Vec<(String, crate::rules::spec::breaker::Spec)> {
        self.groups
            .iter()
            .flat_map(|g| g.breakers.iter().map(|b| (b.name.clone(), b.spec.clone())))
            .collect()
    }

    /// Names of the degrade signals defined by `signals:` entries (an expression each).
    pub fn expr_signal_names(&self) -> BTreeSet<String> {
        self.groups
            .iter()
            .flat_map(|g| g.signals.iter().map(|s| s.name.clone()))
            .collect()
    }

    /// Names of the degrade signals the loaded rules define or may raise.
    pub fn signal_names(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .groups
            .iter()
            .flat_map(|g| g.signals.iter().map(|s| s.name.clone()))
            .collect();
        for g in &self.groups {
            out.extend(g.rules.iter().filter_map(|r| r.def.signal.clone()));
            out.extend(g.slos.iter().filter_map(|s| s.def.budget_signal.clone()));
        }
        out
    }

    /// Takes the breaker observations and signal levels decided since the last call.
    pub fn take_control_inputs(&mut self) -> Vec<ControlInput> {
        std::mem::take(&mut self.control)
    }

    /// Rules of each kind loaded.
    pub fn counts(&self) -> RuleCounts {
        self.groups
            .iter()
            .fold(RuleCounts::default(), |c, g| RuleCounts {
                alerting_rules: c.alerting_rules + g.rules.iter().filter(|r| !r.def.record).count(),
                recording_rules: c.recording_rules
                    + g.rules.iter().filter(|r| r.def.record).count(),
                slos: c.slos + g.slos.len(),
                breakers: c.breakers + g.breakers.len(),
                signals: c.signals + g.signals.len(),
            })
    }

    /// The metric names the rules can read (`None`: any): what the families fed to
    /// [`Engine::ingest_families`] need to hold at least.
    pub fn wanted_names(&self) -> Option<crate::store::NameSet> {
        self.store.wanted_names()
    }

    /// Feeds the store from the registry's typed families (the series some rule can read).
    pub fn ingest_families(
        &mut self,
        t: i64,
        families: &[prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily],
    ) {
        let names = self.store.wanted_names();
        let wanted = |name: &str| names.as_ref().is_none_or(|n| n.contains(name));
        self.store.ingest_with(t, |put| {
            crate::store::families::visit(families, wanted, put)
        });
    }

    /// Feeds the store from exposition text: tests and the fuzzer write their series this way
    /// (the agent feeds it typed families, [`Engine::ingest_families`]).
    pub fn ingest_text(
        &mut self,
        t: i64,
        text: &str,
    ) -> Result<(), crate::store::exposition::ExpositionError> {
        let store = &self.store;
        let (samples, errors) = crate::store::exposition::parse_selected(
            text,
            |name| store.wants_name(name),
            |s| store.might_want(&s.name, &s.labels),
        );
        self.store
            .ingest(t, samples.into_iter().map(|s| (s.labels, s.value)));
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn due(g: &GroupRt, t: i64, half_tick: i64) -> bool {
        g.last_eval
            .is_none_or(|l| t - l + half_tick >= g.interval_ms || t < l)
    }

    /// True when some group is due at `t`: the daemon feeds the store only then, so the
    /// store's resolution is the shortest group interval (and a 10 s group costs a tenth of
    /// the encoding work of a 1 s one).
    pub fn any_due(&self, t: i64) -> bool {
        let half_tick = self.opts.eval_interval_ms / 2;
        self.groups.iter().any(|g| Self::due(g, t, half_tick))
    }

    /// Evaluates every group that is due at `t`; returns what to send to Alertmanager.
    pub fn evaluate(&mut self, t: i64) -> Vec<Notification> {
        let started = std::time::Instant::now();
        let half_tick = self.opts.eval_interval_ms / 2;
        let mut room = self.opts.max_alerts.saturating_sub(self.alerts_held());
        for g in &mut self.groups {
            if !Self::due(g, t, half_tick) {
                continue;
            }
            g.last_eval = Some(t);
            for r in &mut g.rules {
                if r.def.record {
                    Self::record(&mut self.store, &mut self.stats, &g.name, r, t);
                    continue;
                }
                let outcome = match eval::eval(&r.def.expr.expr, &self.store, t) {
                    Ok(ev) => {
                        r.last_error = None;
                        match ev.value {
                            Value::Vector(v) if v.is_empty() && ev.missing => Outcome::Unknown,
                            Value::Vector(v) => Outcome::Known(v),
                            Value::Scalar(s) => Outcome::Known(if s.is_nan() {
                                vec![]
                            } else {
                                vec![Sample {
                                    labels: Labels::new(),
                                    value: s,
                                }]
                            }),
                        }
                    }
                    Err(e) => {
                        if r.last_error.as_deref() != Some(&e.to_string()) {
                            tracing::warn!(group = %g.name, alert = %r.def.name, error = %e, "rule evaluation failed: state held");
                        }
                        r.last_error = Some(e.to_string());
                        self.stats.evaluation_failures += 1;
                        Outcome::Unknown
                    }
                };
                self.stats.alerts_refused += r.state.update(t, outcome, &mut room);
            }
            for s in &mut g.slos {
                self.stats.alerts_refused +=
                    s.evaluate(&self.store, t, self.opts.state_dir.as_deref(), &mut room);
            }
            for b in &g.breakers {
                let (obs, unknown) = breaker_inputs(b, &self.store, t);
                self.control
                    .push(ControlInput::Breaker(b.name.clone(), obs, unknown));
            }
            for s in &g.signals {
                // Unknown pressure holds the signal's last level.
                self.control
                    .push(match one_number(&s.expr, &self.store, t) {
                        Ok(p) => ControlInput::Signal(s.name.clone(), s.scaled.level(p)),
                        Err(e) => ControlInput::SignalUnknown(s.name.clone(), format!("expr: {e}")),
                    });
            }
        }
        // Bounded: a consumer that stopped taking them must not grow this.
        if self.control.len() > 10_000 {
            let excess = self.control.len() - 10_000;
            self.control.drain(..excess);
        }
        if self
            .last_alert_persist
            .is_none_or(|p| t - p >= ALERT_PERSIST_EVERY_MS || t < p)
        {
            self.persist_alerts(t);
        }
        self.stats.evaluations += 1;
        let secs = started.elapsed().as_secs_f64();
        self.stats.eval_seconds_sum += secs;
        let i = EVAL_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(EVAL_BUCKETS.len());
        self.stats.eval_buckets[i] += 1;
        self.notifications(t)
    }

    /// Evaluates a recording rule at `t` and writes its output to the store as series named
    /// by the rule (`__name__` replaced, the rule's labels added), like Prometheus: series
    /// that left the output get a stale marker; an evaluation that fails, or whose output
    /// has two series with one label set, writes nothing (its series age out through the
    /// lookback).
    fn record(store: &mut Store, stats: &mut EngineStats, group: &str, r: &mut RuleRt, t: i64) {
        let result = eval::eval(&r.def.expr.expr, store, t).and_then(|ev| {
            let samples = match ev.value {
                Value::Scalar(v) => vec![Sample {
                    labels: Labels::new(),
                    value: v,
                }],
                Value::Vector(v) => v,
            };
            let mut out: BTreeMap<Labels, f64> = BTreeMap::new();
            for s in samples {
                let mut labels = s.labels;
                labels.insert("__name__".into(), r.def.name.clone());
                for (k, v) in &r.def.labels {
                    if v.is_empty() {
                        labels.remove(k);
                    } else {
                        labels.insert(k.clone(), v.clone());
                    }
                }
                if out.insert(labels, s.value).is_some() {
                    return Err(promql::ExprError::Eval(
                        "vector contains metrics with the same labelset after applying rule labels"
                            .into(),
                    ));
                }
            }
            Ok(out)
        });
        let out = match result {
            Ok(out) => {
                r.last_error = None;
                out
            }
            Err(e) => {
                if r.last_error.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(group = %group, record = %r.def.name, error = %e, "recording rule evaluation failed: nothing recorded");
                }
                r.last_error = Some(e.to_string());
                stats.evaluation_failures += 1;
                // Like Prometheus: nothing is written, not even stale markers.
                return;
            }
        };
        let gone: Vec<(Labels, f64)> = r
            .recorded
            .iter()
            .filter(|l| !out.contains_key(*l))
            .map(|l| (l.clone(), crate::store::stale_marker()))
            .collect();
        r.recorded = out.keys().cloned().collect();
        store.record(t, out.into_iter().chain(gone));
    }

    fn notifications(&mut self, t: i64) -> Vec<Notification> {
        let resend = self.opts.resend_ms;
        let valid_for = 4 * resend.max(self.opts.eval_interval_ms);
        let url = self.opts.generator_url.clone();
        let mut out = Vec::new();
        for a in self.alerts_mut() {
            let due = match a.state {
                State::Pending => false,
                State::Firing => a.last_sent.is_none_or(|s| t - s >= resend),
                State::Resolved => a
                    .last_sent
                    .is_none_or(|s| a.resolved_at.is_some_and(|r| s < r) || t - s >= resend),
            };
            if !due {
                continue;
            }
            a.last_sent = Some(t);
            out.push(Notification {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.active_at,
                ends_at: match a.state {
                    State::Resolved => a.resolved_at.unwrap_or(t),
                    _ => t + valid_for,
                },
                generator_url: url.clone(),
            });
        }
        out
    }

    fn alerts_mut(&mut self) -> Vec<&mut Alert> {
        let mut out = Vec::new();
        for g in &mut self.groups {
            for r in &mut g.rules {
                out.extend(r.state.alerts_mut());
            }
            for s in &mut g.slos {
                out.extend(s.page.alerts_mut());
                out.extend(s.ticket.alerts_mut());
            }
        }
        out
    }

    /// Every alert held (pending, firing, resolved-and-kept).
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut out = Vec::new();
        for g in &self.groups {
            for r in &g.rules {
                out.extend(r.state.alerts());
            }
            for s in &g.slos {
                out.extend(s.page.alerts());
                out.extend(s.ticket.alerts());
            }
        }
        out
    }

    /// Alert counts by (alertname, state), for every loaded rule (0 when none).
    pub fn alert_counts(&self) -> BTreeMap<(String, &'static str), usize> {
        let mut out = BTreeMap::new();
        let mut add = |rule: &AlertingRule| {
            for st in [State::Pending, State::Firing] {
                *out.entry((rule.spec.name.clone(), st.as_str()))
                    .or_insert(0) += rule.count(st);
            }
        };
        for g in &self.groups {
            for r in &g.rules {
                add(&r.state);
            }
            for s in &g.slos {
                add(&s.page);
                add(&s.ticket);
            }
        }
        out
    }

    pub fn slos(&self) -> impl Iterator<Item = &SloRuntime> {
        self.groups.iter().flat_map(|g| g.slos.iter())
    }

    /// Signals raised now: by firing rules with `signal:` and by spent SLO budgets.
    pub fn signals(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in &self.groups {
            for r in &g.rules {
                if let Some(sig) = &r.def.signal {
                    if r.state.count(State::Firing) > 0 {
                        out.insert(sig.clone());
                    }
                }
            }
            for s in &g.slos {
                if let Some(sig) = s.raised_signal() {
                    out.insert(sig.to_string());
                }
            }
        }
        out
    }

    /// Writes every SLO's budget and every pending and firing alert now (at shutdown).
    pub fn persist_all(&mut self, t: i64) {
        self.persist_alerts(t);
        if let Some(dir) = self.opts.state_dir.clone() {
            for g in &mut self.groups {
                for s in &mut g.slos {
                    s.persist(&dir, t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::spec::file;

    fn opts(state_dir: Option<PathBuf>) -> EngineOptions {
        EngineOptions {
            eval_interval_ms: 1000,
            max_series: 100,
            max_alerts: 10_000,
            max_retention_ms: 86_400_000,
            state_dir,
            resend_ms: 60_000,
            generator_url: "http://127.0.0.1/".into(),
        }
    }

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      - alert: High
        expr: x > 5
        for: 10s
      - alert: Other
        expr: y > 0
"#;

    fn load(e: &mut Engine, text: &str) {
        e.load(vec![(
            "r.yaml".into(),
            file::parse(text, "r.yaml").unwrap(),
        )]);
    }

    /// Recording rules: the same group's later rule reads this evaluation's output, a series
    /// that leaves the output is stale at once (not looked back at), a scrape without the
    /// recorded series does not make it stale, and a failing evaluation writes nothing.
    #[test]
    fn recording_rules_write_series_and_stale_markers() {
        let mut e = Engine::new(opts(None));
        load(
            &mut e,
            r#"
groups:
  - name: g
    rules:
      - record: doubled
        expr: x * 2
        labels: {by: rule}
      - alert: Big
        expr: doubled > 10
"#,
        );
        let x = |k: &str, v: f64| {
            let mut l = Labels::new();
            l.insert("__name__".into(), "x".into());
            l.insert("k".into(), k.into());
            (l, v)
        };
        let read = |e: &Engine, q: &str, t: i64| -> Vec<(Labels, f64)> {
            match eval::eval(&promql::parse(q).unwrap(), &e.store, t)
                .unwrap()
                .value
            {
                Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.value)).collect(),
                Value::Scalar(v) => vec![(Labels::new(), v)],
            }
        };
        e.store.ingest(1000, vec![x("a", 6.0)]);
        e.evaluate(1000);
        let got = read(&e, "doubled", 1000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, 12.0);
        assert_eq!(got[0].0["by"], "rule");
        assert_eq!(got[0].0["__name__"], "doubled");
        assert_eq!(
            firing(&e),
            ["Big"],
            "the alert read this evaluation's output"
        );
        // A scrape without `doubled` (it never has it) does not make it stale.
        e.store.ingest(2000, vec![x("a", 6.0), x("b", 1.0)]);
        assert_eq!(read(&e, "doubled", 2000).len(), 1);
        e.evaluate(2000);
        assert_eq!(read(&e, "doubled", 2000).len(), 2);
        // `a` ends: its recorded series is stale at once, `b`'s lives on.
        e.store.ingest(3000, vec![x("b", 1.0)]);
        e.evaluate(3000);
        let got = read(&e, "doubled", 3000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0["k"], "b");
        assert!(firing(&e).is_empty());
    }

    #[test]
    fn a_recording_rule_with_two_series_of_one_label_set_fails_and_writes_nothing() {
        let mut e = Engine::new(opts(None));
        load(
            &mut e,
            r#"
groups:
  - name: g
    rules:
      - record: same
        expr: x
        labels: {k: one}
"#,
        );
        // Nothing reads `same`: keep it as a rule test's promql_expr_test would.
        e.keep_also(&[&promql::parse("same").unwrap()]);
        let x = |k: &str| {
            let mut l = Labels::new();
            l.insert("__name__".into(), "x".into());
            l.insert("k".into(), k.into());
            (l, 1.0)
        };
        e.store.ingest(1000, vec![x("a")]);
        e.evaluate(1000);
        let ms = vec![promql_parser::label::Matcher::new(
            promql_parser::label::MatchOp::Equal,
            "__name__",
            "same",
        )];
        assert_eq!(e.store.instant(&ms, 1000).len(), 1);
        e.store.ingest(2000, vec![x("a"), x("b")]);
        e.evaluate(2000);
        assert_eq!(e.stats.evaluation_failures, 1);
        // Nothing written at 2000 (not even a stale marker): 1000's sample is looked back at.
        assert_eq!(e.store.instant(&ms, 2000).len(), 1);
        assert_eq!(e.counts().recording_rules, 1);
        assert_eq!(e.counts().alerting_rules, 0);
    }

    fn firing(e: &Engine) -> Vec<String> {
        e.alerts()
            .into_iter()
            .filter(|a| a.state == State::Firing)
            .map(|a| a.labels["alertname"].clone())
            .collect()
    }

    /// Alerts over every rule stay within `max_alerts`: new label sets beyond it are refused
    /// and counted, and a place freed by an alert that went away is taken again.
    #[test]
    fn alerts_over_every_rule_stay_within_max_alerts() {
        let mut e = Engine::new(EngineOptions {
            max_alerts: 5,
            ..opts(None)
        });
        load(
            &mut e,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 0\n      - alert: B\n        expr: x > 0\n",
        );
        let series =
            |n: usize| -> String { (0..n).map(|i| format!("x{{i=\"{i}\"}} 1\n")).collect() };
        e.ingest_text(0, &series(4)).unwrap();
        e.evaluate(0);
        let held = |e: &Engine| {
            let mut by_rule = BTreeMap::<String, usize>::new();
            for a in e.alerts() {
                *by_rule.entry(a.labels["alertname"].clone()).or_default() += 1;
            }
            by_rule
        };
        // A takes 4 places, B the fifth; B's other 3 are refused.
        assert_eq!(held(&e), BTreeMap::from([("A".into(), 4), ("B".into(), 1)]));
        assert_eq!(e.stats.alerts_refused, 3);
        // The same series again: nothing new is held, the 3 are refused again.
        e.ingest_text(1000, &series(4)).unwrap();
        e.evaluate(1000);
        assert_eq!(e.alerts().len(), 5);
        assert_eq!(e.stats.alerts_refused, 6);
        // Series i=0 ends: A's alert for it resolves and is kept (it still holds a place);
        // once it has been resolved for the retention, its place goes to B.
        let without_0 = series(4).replace("x{i=\"0\"} 1", "x{i=\"0\"} 0");
        e.ingest_text(2000, &without_0).unwrap();
        e.evaluate(2000);
        assert_eq!(e.alerts().len(), 5);
        let later = 2000 + super::alert::RESOLVED_RETENTION_MS;
        e.ingest_text(later, &without_0).unwrap();
        e.evaluate(later);
        assert_eq!(held(&e), BTreeMap::from([("A".into(), 3), ("B".into(), 2)]));
    }

    #[test]
    fn state_survives_a_reload_of_unchanged_rules_only() {
        let mut e = Engine::new(opts(None));
        load(&mut e, RULES);
        for i in 0..=20 {
            e.ingest_text(i * 1000, "x 10\ny 1\n").unwrap();
            let sent = e.evaluate(i * 1000);
            if i == 10 {
                assert_eq!(sent.len(), 1, "High fires and is sent at 10 s: {sent:?}");
            }
        }
        assert_eq!(firing(&e).len(), 2);
        // change Other only: High keeps firing, Other starts afresh (for: 0 fires again, but
        // its active_at is new)
        load(&mut e, &RULES.replace("y > 0", "y > 0.5"));
        e.ingest_text(21_000, "x 10\ny 1\n").unwrap();
        e.evaluate(21_000);
        let high = e
            .alerts()
            .into_iter()
            .find(|a| a.labels["alertname"] == "High")
            .unwrap();
        assert_eq!((high.state, high.active_at), (State::Firing, 0));
        let other = e
            .alerts()
            .into_iter()
            .find(|a| a.labels["alertname"] == "Other")
            .unwrap();
        assert_eq!(other.active_at, 21_000);
    }

    #[test]
    fn notifications_resend_and_resolve() {
        let mut e = Engine::new(opts(None));
        load(
            &mut e,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 5\n",
        );
        let mut log = Vec::new();
        for i in 0..=200 {
            let v = if i < 150 { 10 } else { 1 };
            e.ingest_text(i * 1000, &format!("x {v}\n")).unwrap();
            for n in e.evaluate(i * 1000) {
                log.push((i, n.ends_at));
            }
        }
        // firing sent at 0, 60, 120 s (ends 4 resend intervals later); resolved at 150 s
        assert_eq!(
            log,
            [(0, 240_000), (60, 300_000), (120, 360_000), (150, 150_000)]
        );
    }

    #[test]
    fn signals_are_raised_while_their_rule_fires() {
        let mut e = Engine::new(opts(None));
        load(
            &mut e,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 5\n        signal: shed-batch\n",
        );
        e.ingest_text(0, "x 1\n").unwrap();
        e.evaluate(0);
        assert!(e.signals().is_empty());
        e.ingest_text(1000, "x 10\n").unwrap();
        e.evaluate(1000);
        assert_eq!(e.signals().into_iter().collect::<Vec<_>>(), ["shed-batch"]);
        e.ingest_text(2000, "x 1\n").unwrap();
        e.evaluate(2000);
        assert!(e.signals().is_empty());
    }

    #[test]
    fn for_timers_and_firing_alerts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let text = "groups:\n  - name: g\n    rules:\n      - alert: Slow\n        expr: x > 5\n        for: 60s\n      - alert: Fast\n        expr: x > 5\n";
        let mut e = Engine::new(opts(Some(dir.path().into())));
        load(&mut e, text);
        for i in 0..=30 {
            e.ingest_text(i * 1000, "x 10\n").unwrap();
            e.evaluate(i * 1000);
        }
        e.persist_all(30_000);
        // a restart: Slow is still pending since 0 s and fires at 60 s, not 60 s after the
        // restart; Fast is firing again at once (and re-sent)
        let mut e2 = Engine::new(opts(Some(dir.path().into())));
        load(&mut e2, text);
        let state = |e: &Engine, n: &str| {
            e.alerts()
                .into_iter()
                .find(|a| a.labels["alertname"] == n)
                .map(|a| (a.state, a.active_at))
        };
        assert_eq!(state(&e2, "Slow"), Some((State::Pending, 0)));
        assert_eq!(state(&e2, "Fast"), Some((State::Firing, 0)));
        e2.ingest_text(59_000, "x 10\n").unwrap();
        let sent = e2.evaluate(59_000);
        assert_eq!(sent.len(), 1, "Fast re-sent after the restart: {sent:?}");
        e2.ingest_text(60_000, "x 10\n").unwrap();
        e2.evaluate(60_000);
        assert_eq!(state(&e2, "Slow"), Some((State::Firing, 0)));
        // a changed definition starts afresh
        let mut e3 = Engine::new(opts(Some(dir.path().into())));
        load(&mut e3, &text.replace("for: 60s", "for: 90s"));
        assert_eq!(state(&e3, "Slow"), None);
        assert_eq!(state(&e3, "Fast"), Some((State::Firing, 0)));
    }

    /// Issue 17: with only an SLO loaded no alerts.json was written, so its firing alert was
    /// lost by a restart; and a long window must hold data for most of its length.
    #[test]
    fn an_slo_alert_waits_for_its_window_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // Page windows scaled to 36 s and 3 s; 50% errors against a 1% budget: burn rate 50.
        let text = "groups:\n  - name: g\n    slos:\n      - name: api\n        objective: 99\n        period: 30d\n        window_scale: 0.01\n        sli:\n          events:\n            error_query: sum(rate(err_total[{{.window}}]))\n            total_query: sum(rate(req_total[{{.window}}]))\n";
        let mut e = Engine::new(opts(Some(dir.path().into())));
        load(&mut e, text);
        let page = |e: &Engine| {
            e.alerts()
                .into_iter()
                .find(|a| a.labels.get("severity").map(String::as_str) == Some("page"))
                .map(|a| a.state)
        };
        let mut fired_at = None;
        for i in 0..=60 {
            e.ingest_text(
                i * 1000,
                &format!("err_total {}\nreq_total {}\n", i * 10, i * 20),
            )
            .unwrap();
            e.evaluate(i * 1000);
            if fired_at.is_none() && page(&e) == Some(State::Firing) {
                fired_at = Some(i);
            }
        }
        // Data from 1 s on (the first known rate); 90% of 36 s is 32.4 s.
        let fired_at = fired_at.expect("the page alert fired");
        assert!((33..=35).contains(&fired_at), "fired at {fired_at} s");
        e.persist_all(60_000);
        assert!(
            dir.path().join("alerts.json").exists(),
            "written with only an SLO"
        );

        let mut e2 = Engine::new(opts(Some(dir.path().into())));
        load(&mut e2, text);
        assert_eq!(page(&e2), Some(State::Firing), "restored");
        // A new store has no data: unknown, so the alert holds until the window is covered.
        e2.evaluate(61_000);
        assert_eq!(page(&e2), Some(State::Firing));
        // Healthy seconds: no new errors, 20 requests a second.
        let healthy = |e: &mut Engine, seconds: std::ops::RangeInclusive<i64>| {
            for i in seconds {
                e.ingest_text(i * 1000, &format!("err_total 0\nreq_total {}\n", i * 20))
                    .unwrap();
                e.evaluate(i * 1000);
            }
        };
        healthy(&mut e2, 62..=80);
        assert_eq!(
            page(&e2),
            Some(State::Firing),
            "18 s of data cover no 36 s window"
        );
        healthy(&mut e2, 81..=120);
        assert_ne!(
            page(&e2),
            Some(State::Firing),
            "resolved once covered and healthy"
        );
    }

    #[test]
    fn groups_are_due_at_their_own_interval() {
        let mut e = Engine::new(opts(None));
        load(&mut e, "groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: A\n        expr: x > 5\n");
        assert!(e.any_due(0));
        e.ingest_text(0, "x 1\n").unwrap();
        e.evaluate(0);
        assert!(!e.any_due(1000) && !e.any_due(9000));
        assert!(e.any_due(9500) && e.any_due(10_000));
    }

    #[test]
    fn missing_input_holds_a_firing_alert() {
        let mut e = Engine::new(opts(None));
        load(
            &mut e,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 5\n",
        );
        e.ingest_text(0, "x 10\n").unwrap();
        e.evaluate(0);
        for i in 1..=400 {
            e.ingest_text(i * 1000, "other 1\n").unwrap(); // x is gone: stale
            e.evaluate(i * 1000);
        }
        assert_eq!(firing(&e), ["A"]);
        // back with a value under the threshold: resolved
        e.ingest_text(401_000, "x 1\n").unwrap();
        e.evaluate(401_000);
        assert!(firing(&e).is_empty());
    }

    #[test]
    fn slo_budget_is_restored_from_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
groups:
  - name: g
    slos:
      - name: api
        objective: 99
        period: 30d
        window_scale: 0.0166666667
        sli:
          events:
            error_query: sum(rate(err_total[{{.window}}]))
            total_query: sum(rate(req_total[{{.window}}]))
"#;
        let mut e = Engine::new(opts(Some(dir.path().into())));
        load(&mut e, text);
        for i in 0..=120 {
            e.ingest_text(
                i * 1000,
                &format!("req_total {}\nerr_total {}\n", i * 10, i),
            )
            .unwrap();
            e.evaluate(i * 1000);
        }
        let spent = e.slos().next().unwrap().budget_remaining();
        assert!(spent < -5.0, "10% errors on a 1% budget: {spent}");
        e.persist_all(120_000);
        let mut e2 = Engine::new(opts(Some(dir.path().into())));
        load(&mut e2, text);
        assert_eq!(e2.slos().next().unwrap().budget_remaining(), spent);
    }
}

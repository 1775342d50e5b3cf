//! SLOs: burn rates over the Google SRE workbook windows, multiwindow multi-burn-rate page and
//! ticket alerts, and the error budget over the SLO period.
//!
//! Windows and factors for a 30 day period (SRE workbook, "Alerting on SLOs"): page when
//! both the 1h and 5m burn rates exceed 14.4 or both 6h and 30m exceed 6; ticket when both 1d
//! and 2h exceed 3 or both 3d and 6h exceed 1. A factor is a share of the budget spent in the
//! long window (2%, 5%, 10%, 10%) times period / long window, so for another period the
//! factors scale by period / 30d (28d: 13.44, 5.6, 2.8, 0.933) and the windows stay. For tests
//! `window_scale` multiplies every window (factors unchanged).
//!
//! Burn rate over a window = (error rate / total rate) / (1 - objective). The SLI is either
//! `events` (two queries returning per-second rates, with `{{.window}}` as their range, like
//! Sloth; an error query that selects nothing while the total query has data counts as zero
//! errors) or `latency` (a histogram selector and a threshold: events are
//! `rate(<h>_count[w])`, good events `rate(<h>_bucket{le=B}[w])` where B is the largest
//! bucket bound at most the threshold present in the store; with steadfast's power-of-two
//! buckets "under 50 ms" is judged at 33.5 ms, the conservative side).
//!
//! Missing input (the total query selects nothing) makes a burn rate UNKNOWN: alerts hold
//! their state. No traffic (total rate 0) is not unknown: the burn rate is NaN and no alert
//! condition holds. A long window with fewer than `min_events` events never alerts.
//!
//! A long window is a long window: the store holds only what the agent has seen since it
//! started, so a window pair counts only once the SLO's data covers at least
//! [`MIN_COVERAGE`] of its long window (from the first evaluation at which the SLO's event
//! rate was known, since this agent started). Only covered pairs fire or resolve an alert;
//! with no pair covered the alert is unknown and holds, so a firing alert restored after a
//! restart keeps firing until its shortest pair can judge it, and no new one fires on minutes
//! of data called an hour.
//!
//! Error budget: every evaluation adds `rate[1m] * seconds since the last evaluation` of
//! errors and of events (at most 60 s, so a gap is not extrapolated) into 10 minute buckets
//! covering the period; remaining = 1 - (errors / events) / (1 - objective), 1 with no events,
//! negative when overspent. The buckets are persisted in `<state_dir>/slo/<name>.json`
//! (temporary file, fsync, rename) at most every 5 s and restored at start, so a restart
//! keeps the budget (keyed by SLO name). A `budget_policy.signal` is raised while the
//! remaining budget is at most 0.

use std::{
    collections::{BTreeMap, VecDeque},
    io::Write,
    path::{Path, PathBuf},
};

use super::alert::{AlertSpec, AlertingRule, Outcome};
use crate::rules::eval::{self, Sample, Value};
use crate::rules::spec::file::{Sli, SloDef};
use crate::rules::spec::promql;
use crate::rules::spec::time::{fmt_ms, windows, Window, MIN_MS};
use crate::store::{Labels, Store};

/// Share of a long window the SLO's data must cover before its window pair can alert.
pub const MIN_COVERAGE: f64 = 0.9;

pub const BUCKET_MS: i64 = 10 * MIN_MS;
/// Budget state is written at most this often.
const PERSIST_EVERY_MS: i64 = 5_000;

/// Errors and events per 10 minute bucket over the period.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    /// (bucket start ms, errors, events), oldest first.
    pub buckets: VecDeque<(i64, f64, f64)>,
}

impl Budget {
    pub fn add(&mut self, t: i64, errors: f64, events: f64, period_ms: i64) {
        if !(errors.is_finite() && events.is_finite()) {
            return;
        }
        let start = t.div_euclid(BUCKET_MS) * BUCKET_MS;
        match self.buckets.back_mut() {
            Some(b) if b.0 == start => {
                b.1 += errors;
                b.2 += events;
            }
            Some(b) if b.0 > start => return,
            _ => self.buckets.push_back((start, errors, events)),
        }
        self.expire(t, period_ms);
    }

    fn expire(&mut self, t: i64, period_ms: i64) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0 + BUCKET_MS <= t - period_ms)
        {
            self.buckets.pop_front();
        }
    }

    /// (errors, events) over the period ending at `t`.
    pub fn totals(&self) -> (f64, f64) {
        self.buckets
            .iter()
            .fold((0.0, 0.0), |(e, n), b| (e + b.1, n + b.2))
    }

    /// Share of the error budget left: 1 with no events, negative when overspent.
    pub fn remaining(&self, objective_percent: f64) -> f64 {
        let (e, n) = self.totals();
        if n <= 0.0 {
            return 1.0;
        }
        1.0 - (e / n) / (1.0 - objective_percent / 100.0)
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct BudgetFile {
    version: u32,
    slo: String,
    bucket_ms: i64,
    budget: Budget,
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

pub fn budget_path(state_dir: &Path, slo: &str) -> PathBuf {
    state_dir.join("slo").join(format!("{slo}.json"))
}

/// Writes the budget atomically: temporary file, fsync, rename, fsync of the directory.
pub fn save_budget(state_dir: &Path, slo: &str, budget: &Budget) -> Result<(), BudgetFileError> {
    let path = budget_path(state_dir, slo);
    let io = |source| BudgetFileError::Io {
        path: path.clone(),
        source,
    };
    let body = serde_json::to_vec(&BudgetFile {
        version: 1,
        slo: slo.into(),
        bucket_ms: BUCKET_MS,
        budget: budget.clone(),
    })
    .map_err(|e| BudgetFileError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &body).map_err(io)
}

/// Writes `path` atomically: a temporary file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a persisted budget; `Ok(None)` when there is none.
pub fn load_budget(state_dir: &Path, slo: &str) -> Result<Option<Budget>, BudgetFileError> {
    let path = budget_path(state_dir, slo);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BudgetFileError::Io { path, source }),
    };
    let f: BudgetFile = serde_json::from_slice(&body).map_err(|e| BudgetFileError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if f.version != 1 || f.bucket_ms != BUCKET_MS {
        return Err(BudgetFileError::Format {
            path,
            message: format!("unsupported version {} / bucket {}", f.version, f.bucket_ms),
        });
    }
    Ok(Some(f.budget))
}

/// One SLO's running state.
#[derive(Debug)]
pub struct SloRuntime {
    pub def: SloDef,
    pub page: AlertingRule,
    pub ticket: AlertingRule,
    pub budget: Budget,
    /// Burn rate by window length (ms): `None` unknown, NaN no traffic.
    pub burn: BTreeMap<i64, Option<f64>>,
    last_account: Option<i64>,
    last_persist: Option<i64>,
    /// The bucket bound a latency SLI is judged at, once seen.
    pub latency_bound: Option<String>,
    /// The first evaluation (since this agent started) at which the SLO's event rate over
    /// the shortest window was known: how far back its windows hold data.
    pub data_since: Option<i64>,
}

fn spec(def: &SloDef, page: bool) -> AlertSpec {
    let mut labels = def.labels.clone();
    labels.extend(if page {
        def.page_labels.clone()
    } else {
        def.ticket_labels.clone()
    });
    labels.insert("slo".into(), def.name.clone());
    let mut annotations = def.annotations.clone();
    annotations.entry("summary".into()).or_insert_with(|| {
        format!(
            "SLO {} ({}% over {}) is burning its error budget at {{{{ $value | humanize }}}}x",
            def.name,
            def.objective,
            fmt_ms(def.period.as_millis() as i64)
        )
    });
    AlertSpec {
        name: def.alert_name.clone(),
        for_ms: 0,
        keep_firing_for_ms: 0,
        labels,
        annotations,
    }
}

impl SloRuntime {
    pub fn new(def: SloDef, budget: Budget) -> Self {
        Self {
            page: AlertingRule::new(spec(&def, true)),
            ticket: AlertingRule::new(spec(&def, false)),
            def,
            budget,
            burn: BTreeMap::new(),
            last_account: None,
            last_persist: None,
            latency_bound: None,
            data_since: None,
        }
    }

    /// Keeps the alert states and budget of `old` (same definition) or only its budget.
    pub fn inherit(&mut self, old: SloRuntime) {
        if old.def == self.def {
            self.page = old.page;
            self.ticket = old.ticket;
            self.last_account = old.last_account;
            self.latency_bound = old.latency_bound;
        }
        self.budget = old.budget;
        self.last_persist = old.last_persist;
        // The store (and the data in it) outlives a reload.
        self.data_since = old.data_since;
    }

    pub fn period_ms(&self) -> i64 {
        self.def.period.as_millis() as i64
    }

    pub fn windows(&self) -> Vec<Window> {
        windows(self.period_ms(), self.def.window_scale)
    }

    /// The longest range this SLO queries (for the store's retention).
    pub fn max_range_ms(&self) -> i64 {
        self.windows()
            .iter()
            .map(|w| w.long_ms)
            .max()
            .unwrap_or(0)
            .max(MIN_MS)
    }

    /// The selectors of this SLO (for the store's interest).
    pub fn selectors(&self) -> Vec<Vec<promql_parser::label::Matcher>> {
        let mut out = Vec::new();
        let texts: Vec<String> = match &self.def.sli {
            Sli::Events {
                error_query,
                total_query,
            } => vec![error_query.clone(), total_query.clone()],
            Sli::Latency { histogram, .. } => {
                let (name, rest) = split_selector(histogram);
                vec![
                    format!("{name}_count{rest}"),
                    format!("{name}_bucket{rest}"),
                ]
            }
        };
        for t in texts {
            if let Ok(e) = promql::parse(&t.replace("{{.window}}", "1m")) {
                promql::selectors(&e, &mut out);
            }
        }
        out
    }

    /// (error query, total query) for a window, or None when a latency SLI has no bucket yet.
    fn queries(&mut self, store: &Store, window: &str) -> Option<(String, String)> {
        match &self.def.sli {
            Sli::Events {
                error_query,
                total_query,
            } => Some((
                error_query.replace("{{.window}}", window),
                total_query.replace("{{.window}}", window),
            )),
            Sli::Latency {
                histogram,
                threshold_seconds,
            } => {
                let (name, rest) = split_selector(histogram);
                if self.latency_bound.is_none() {
                    let sel = format!("{name}_bucket{rest}");
                    let mut ms = Vec::new();
                    if let Ok(e) = promql::parse(&sel) {
                        promql::selectors(&e, &mut ms);
                    }
                    let best = ms.first().and_then(|m| {
                        store
                            .label_values(m, "le")
                            .into_iter()
                            .filter_map(|le| le.parse::<f64>().ok().map(|v| (v, le)))
                            .filter(|(v, _)| *v <= threshold_seconds * (1.0 + 1e-9))
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                    });
                    if let Some((_, le)) = best {
                        tracing::info!(slo = %self.def.name, bound = %le, "latency SLI judged at this bucket bound");
                        self.latency_bound = Some(le);
                    }
                }
                let le = self.latency_bound.as_ref()?;
                let inner = rest.trim_start_matches('{').trim_end_matches('}').trim();
                let bucket_sel = if inner.is_empty() {
                    format!("{name}_bucket{{le=\"{le}\"}}")
                } else {
                    format!("{name}_bucket{{{inner},le=\"{le}\"}}")
                };
                let total = format!("sum(rate({name}_count{rest}[{window}]))");
                let errors = format!("{total} - sum(rate({bucket_sel}[{window}]))");
                Some((errors, total))
            }
        }
    }

    /// (error rate, event rate) over `window_ms` at `t`; None when unknown.
    fn rates(&mut self, store: &Store, t: i64, window_ms: i64) -> Option<(f64, f64)> {
        let (eq, tq) = self.queries(store, &fmt_ms(window_ms))?;
        let total = sum_of(store, &tq, t)?;
        let errors = sum_of(store, &eq, t).unwrap_or(0.0);
        Some((errors, total))
    }

    /// Evaluates burn rates and alerts at `t` (a new alert takes one of `room`, as in
    /// [`AlertingRule::update`]), accounts the budget, persists it when due. Returns the
    /// alerts refused for want of room.
    pub fn evaluate(
        &mut self,
        store: &Store,
        t: i64,
        state_dir: Option<&Path>,
        room: &mut usize,
    ) -> u64 {
        let objective = self.def.objective / 100.0;
        let mut lens: Vec<i64> = self
            .windows()
            .iter()
            .flat_map(|w| [w.long_ms, w.short_ms])
            .collect();
        lens.sort();
        lens.dedup();
        let mut events = BTreeMap::new();
        self.burn.clear();
        for len in lens {
            let r = self.rates(store, t, len);
            let burn = r.map(|(e, n)| {
                if n > 0.0 {
                    (e / n).max(0.0) / (1.0 - objective)
                } else {
                    f64::NAN
                }
            });
            events.insert(len, r.map(|(_, n)| n * len as f64 / 1000.0));
            self.burn.insert(len, burn);
        }
        if self.data_since.is_none() && events.first_key_value().is_some_and(|(_, e)| e.is_some()) {
            self.data_since = Some(t);
        }
        let covered = |long_ms: i64| {
            self.data_since
                .is_some_and(|since| (t - since) as f64 >= MIN_COVERAGE * long_ms as f64)
        };
        let mut refused = 0;
        for page in [true, false] {
            let mut unknown = false;
            // Pairs whose long window holds enough data: only they fire or resolve.
            let mut any_covered = false;
            let mut hit = None;
            for w in self.windows().into_iter().filter(|w| w.page == page) {
                let (Some(long), Some(short)) = (self.burn[&w.long_ms], self.burn[&w.short_ms])
                else {
                    unknown = true;
                    continue;
                };
                if !covered(w.long_ms) {
                    continue;
                }
                any_covered = true;
                let enough = events[&w.long_ms].unwrap_or(0.0) >= self.def.min_events;
                if enough && long > w.factor && short > w.factor && hit.is_none() {
                    hit = Some(long);
                }
            }
            let outcome = match hit {
                Some(v) => Outcome::Known(vec![Sample {
                    labels: Labels::new(),
                    value: v,
                }]),
                None if unknown || !any_covered => Outcome::Unknown,
                None => Outcome::Known(vec![]),
            };
            refused += if page {
                self.page.update(t, outcome, room)
            } else {
                self.ticket.update(t, outcome, room)
            };
        }
        // budget accounting
        if let Some(last) = self.last_account {
            let dt = (t - last).clamp(0, MIN_MS) as f64 / 1000.0;
            if let Some((e, n)) = self.rates(store, t, MIN_MS) {
                if n.is_finite() && e.is_finite() {
                    self.budget.add(
                        t,
                        e.clamp(0.0, n.max(0.0)) * dt,
                        n.max(0.0) * dt,
                        self.period_ms(),
                    );
                }
            }
        }
        self.last_account = Some(t);
        self.budget.expire(t, self.period_ms());
        if let Some(dir) = state_dir {
            if self.last_persist.is_none_or(|p| t - p >= PERSIST_EVERY_MS) {
                self.persist(dir, t);
            }
        }
        refused
    }

    pub fn persist(&mut self, dir: &Path, t: i64) {
        match save_budget(dir, &self.def.name, &self.budget) {
            Ok(()) => self.last_persist = Some(t),
            Err(e) => tracing::warn!(error = %e, "persisting an error budget failed"),
        }
    }

    pub fn budget_remaining(&self) -> f64 {
        self.budget.remaining(self.def.objective)
    }

    /// The budget policy's signal, when the budget is spent over at least `min_events` events
    /// (as for the alerts: a handful of calls, one of them failed, is not a spent budget).
    pub fn raised_signal(&self) -> Option<&str> {
        let (_, n) = self.budget.totals();
        (n > 0.0 && n >= self.def.min_events && self.budget_remaining() <= 0.0)
            .then_some(self.def.budget_signal.as_deref())
            .flatten()
    }
}

/// `name{...}` -> (`name`, `{...}` or ``).
fn split_selector(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find('{') {
        Some(i) => (s[..i].trim(), &s[i..]),
        None => (s, ""),
    }
}

/// Sum of the query's samples at `t`; None when it selects nothing (missing input) or fails.
fn sum_of(store: &Store, query: &str, t: i64) -> Option<f64> {
    let e = promql::parse(query).ok()?;
    let r = eval::eval(&e, store, t).ok()?;
    match r.value {
        Value::Scalar(v) => Some(v),
        Value::Vector(v) if v.is_empty() => None,
        Value::Vector(v) => Some(v.iter().map(|s| s.value).sum()),
    }
}

#[cfg(test)]
mod tests {
    /// Room for any number of alerts (the engine's cap is tested in `engine`).
    fn unlimited() -> usize {
        usize::MAX
    }
    use super::*;
    use crate::rules::spec::time::DAY_MS;
    use crate::store::{tests::l, StoreLimits};
    use std::time::Duration;

    #[test]
    fn workbook_windows_and_factors() {
        let w = windows(30 * DAY_MS, 1.0);
        let got: Vec<(String, String, f64, bool)> = w
            .iter()
            .map(|w| (fmt_ms(w.long_ms), fmt_ms(w.short_ms), w.factor, w.page))
            .collect();
        assert_eq!(
            got,
            [
                ("1h".into(), "5m".into(), 14.4, true),
                ("6h".into(), "30m".into(), 6.0, true),
                ("1d".into(), "2h".into(), 3.0, false),
                ("3d".into(), "6h".into(), 1.0, false),
            ]
        );
        let f: Vec<f64> = windows(28 * DAY_MS, 1.0).iter().map(|w| w.factor).collect();
        for (got, want) in f.iter().zip([13.44, 5.6, 2.8, 0.9333333333333333]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        let s = windows(30 * DAY_MS, 1.0 / 60.0);
        assert_eq!((s[0].long_ms, s[0].short_ms), (60_000, 5_000));
    }

    fn def(sli: Sli, min_events: f64) -> SloDef {
        SloDef {
            name: "api".into(),
            objective: 99.0,
            period: Duration::from_secs(30 * 86_400),
            sli,
            min_events,
            labels: BTreeMap::new(),
            alert_name: "ApiErrorBudgetBurn".into(),
            annotations: BTreeMap::new(),
            page_labels: BTreeMap::from([("severity".into(), "page".into())]),
            ticket_labels: BTreeMap::from([("severity".into(), "ticket".into())]),
            budget_signal: Some("change-freeze".into()),
            window_scale: 1.0 / 60.0,
        }
    }

    fn events_sli() -> Sli {
        Sli::Events {
            error_query: "sum(rate(req_errors_total[{{.window}}]))".into(),
            total_query: "sum(rate(req_total[{{.window}}]))".into(),
        }
    }

    fn store_for(slo: &SloRuntime) -> Store {
        let mut s = Store::new(StoreLimits::default());
        s.configure(StoreLimits::default(), slo.selectors());
        s
    }

    /// Issue 17: the budget signal went up after about 21 calls despite `min_events: 100`.
    #[test]
    fn the_budget_signal_waits_for_min_events() {
        let mut slo = SloRuntime::new(def(events_sli(), 100.0), Budget::default());
        let mut store = store_for(&slo);
        // 1 call/s, every second one failing: the budget is spent from the start.
        let mut t = 0;
        let mut step = |slo: &mut SloRuntime, i: i64| {
            t = i * 1000;
            store.ingest(
                t,
                [
                    (l("req_total", &[]), i as f64),
                    (l("req_errors_total", &[]), (i / 2) as f64),
                ],
            );
            slo.evaluate(&store, t, None, &mut unlimited());
        };
        for i in 0..=60 {
            step(&mut slo, i);
        }
        let (_, n) = slo.budget.totals();
        assert!(n > 20.0 && n < 100.0, "{n} events");
        assert!(slo.budget_remaining() <= 0.0);
        assert_eq!(slo.raised_signal(), None, "{n} events < min_events 100");
        for i in 61..=200 {
            step(&mut slo, i);
        }
        let (_, n) = slo.budget.totals();
        assert!(n >= 100.0, "{n} events");
        assert_eq!(slo.raised_signal(), Some("change-freeze"));
    }

    #[test]
    fn burn_rate_arithmetic_matches_hand_computed_values() {
        // 100 req/s, 5 errors/s, steady: error ratio 0.05, objective 99% -> burn 5.0 on
        // every window. Page needs > 14.4: no page; ticket (> 3 on 1d/2h scaled) fires.
        let mut slo = SloRuntime::new(def(events_sli(), 0.0), Budget::default());
        let mut store = store_for(&slo);
        for i in 0..=4000i64 {
            let t = i * 1000;
            store.ingest(
                t,
                [
                    (l("req_total", &[]), 100.0 * i as f64),
                    (l("req_errors_total", &[]), 5.0 * i as f64),
                ],
            );
            slo.evaluate(&store, t, None, &mut unlimited());
        }
        for (w, b) in &slo.burn {
            let b = b.expect("known");
            assert!((b - 5.0).abs() < 1e-6, "window {}: {b}", fmt_ms(*w));
        }
        assert_eq!(
            slo.page.count(crate::rules::engine::alert::State::Firing),
            0
        );
        assert_eq!(
            slo.ticket.count(crate::rules::engine::alert::State::Firing),
            1
        );
        // budget: 5% errors against a 1% budget -> remaining 1 - 5 = -4
        assert!(
            (slo.budget_remaining() + 4.0).abs() < 1e-3,
            "{}",
            slo.budget_remaining()
        );
        assert_eq!(slo.raised_signal(), Some("change-freeze"));
        let (e, n) = slo.budget.totals();
        // 4000 s of 100 req/s (the first minute of rate ramps up from the first sample)
        assert!((n - 400_000.0).abs() / 400_000.0 < 0.01, "{n}");
        assert!((e / n - 0.05).abs() < 1e-6);
    }

    #[test]
    fn page_fires_on_fast_burn_and_resolves_when_it_stops() {
        let mut slo = SloRuntime::new(def(events_sli(), 10.0), Budget::default());
        let mut store = store_for(&slo);
        let mut errs = 0.0;
        let mut reqs = 0.0;
        let mut fired_at = None;
        for i in 0..=900i64 {
            let t = i * 1000;
            reqs += 10.0;
            // Errors once both long windows (60 s, 360 s) are covered (90%: 324 s).
            if (400..600).contains(&i) {
                errs += 5.0; // 50% errors: burn 50 > 14.4
            }
            store.ingest(
                t,
                [
                    (l("req_total", &[]), reqs),
                    (l("req_errors_total", &[]), errs),
                ],
            );
            slo.evaluate(&store, t, None, &mut unlimited());
            let firing = slo.page.count(crate::rules::engine::alert::State::Firing) == 1;
            if firing && fired_at.is_none() {
                fired_at = Some(i);
            }
            if i == 620 {
                // the 30 s short window (scaled 30m) of the second pair still sees errors
                assert!(firing);
            }
            if i == 640 {
                // both short windows (5 s, 30 s) have seen no error for 40 s: resolved
                assert!(!firing);
            }
        }
        // fires once the 60 s window's error ratio exceeds 0.144 (burn 14.4 at 99%):
        // 5(k+1) errors over 600 requests k seconds after the errors start, k ~ 16; the
        // 5 s window is at burn 50 from the first erroring second.
        let f = fired_at.expect("page fired");
        assert!((410..=418).contains(&f), "fired at {f}");
        let a = &slo.page.alerts()[0];
        assert_eq!(a.labels["severity"], "page");
        assert_eq!(a.labels["slo"], "api");
        assert_eq!(a.labels["alertname"], "ApiErrorBudgetBurn");
    }

    #[test]
    fn min_events_guard_and_missing_input() {
        // 1 request/s, all failing: burn 100, but the long windows (60 s, 360 s) hold at
        // most 300 events, under a guard of 500; without the guard the page fires.
        for (guard, alerts) in [(500.0, 0), (0.0, 1)] {
            let mut slo = SloRuntime::new(def(events_sli(), guard), Budget::default());
            let mut store = store_for(&slo);
            for i in 0..=300i64 {
                store.ingest(
                    i * 1000,
                    [
                        (l("req_total", &[]), i as f64),
                        (l("req_errors_total", &[]), i as f64),
                    ],
                );
                slo.evaluate(&store, i * 1000, None, &mut unlimited());
            }
            assert_eq!(slo.page.alerts().len(), alerts, "guard {guard}");
        }
        // no input at all: unknown, nothing changes
        let mut slo = SloRuntime::new(def(events_sli(), 0.0), Budget::default());
        let store = store_for(&slo);
        slo.evaluate(&store, 1000, None, &mut unlimited());
        assert!(slo.burn.values().all(Option::is_none));
        assert_eq!(slo.budget_remaining(), 1.0);
    }

    #[test]
    fn latency_sli_uses_the_bucket_at_or_under_the_threshold() {
        let sli = Sli::Latency {
            histogram: "h_seconds{svc=\"a\"}".into(),
            threshold_seconds: 0.05,
        };
        let mut slo = SloRuntime::new(def(sli, 0.0), Budget::default());
        let mut store = store_for(&slo);
        for i in 0..=120i64 {
            // 10 obs/s: 9 under 33.5 ms, 1 above
            let n = i as f64;
            store.ingest(
                i * 1000,
                [
                    (
                        l("h_seconds_bucket", &[("svc", "a"), ("le", "0.033554432")]),
                        9.0 * n,
                    ),
                    (
                        l("h_seconds_bucket", &[("svc", "a"), ("le", "0.067108864")]),
                        10.0 * n,
                    ),
                    (
                        l("h_seconds_bucket", &[("svc", "a"), ("le", "+Inf")]),
                        10.0 * n,
                    ),
                    (l("h_seconds_count", &[("svc", "a")]), 10.0 * n),
                    (l("h_seconds_count", &[("svc", "b")]), 99.0 * n),
                ],
            );
            slo.evaluate(&store, i * 1000, None, &mut unlimited());
        }
        assert_eq!(slo.latency_bound.as_deref(), Some("0.033554432"));
        // error ratio 0.1 / 0.01 = burn 10
        let b = slo.burn[&60_000].unwrap();
        assert!((b - 10.0).abs() < 1e-6, "{b}");
    }

    #[test]
    fn budget_persists_atomically_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Budget::default();
        b.add(0, 5.0, 100.0, 30 * DAY_MS);
        b.add(BUCKET_MS + 1, 1.0, 100.0, 30 * DAY_MS);
        save_budget(dir.path(), "api", &b).unwrap();
        assert_eq!(load_budget(dir.path(), "api").unwrap(), Some(b.clone()));
        assert_eq!(load_budget(dir.path(), "other").unwrap(), None);
        assert!((b.remaining(99.0) - (1.0 - 0.03 / 0.01)).abs() < 1e-9);
        // buckets older than the period are dropped
        b.add(30 * DAY_MS + BUCKET_MS + 5, 0.0, 1.0, 30 * DAY_MS);
        assert_eq!(b.buckets.len(), 2);
        std::fs::write(budget_path(dir.path(), "bad"), b"{").unwrap();
        assert!(load_budget(dir.path(), "bad").is_err());
    }
}

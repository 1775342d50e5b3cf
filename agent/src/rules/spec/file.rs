//! Rule files: YAML in the shape the README's rules section shows (Prometheus-style `groups:`
//! with `rules:` and Sloth-style `slos:`), decoded from saphyr's marked node tree so that every
//! problem names file, line and column, and every problem of a file is reported, not just the
//! first.
//!
//! ```yaml
//! groups:
//!   - name: host
//!     interval: 10s                 # optional, default: rules.evaluation_interval_ms
//!     rules:
//!       - alert: ManyErrors
//!         expr: sum(rate(steadfast_syscall_errors_total[5m])) > 10
//!         for: 5m                   # optional
//!         keep_firing_for: 1m       # optional
//!         labels: {severity: ticket}
//!         annotations: {summary: "{{ $value }} errors/s"}
//!         signal: errors-high       # optional: raised while the alert fires
//!     slos:
//!       - name: fsync-latency
//!         objective: 99.9           # percent
//!         period: 30d               # usually 28d or 30d (1d to 366d are accepted)
//!         sli:
//!           latency:                # or events: {error_query: ..., total_query: ...}
//!             histogram: steadfast_syscall_duration_seconds{syscall="fsync"}
//!             threshold_seconds: 0.05
//!         min_events: 100           # optional: fewer events in a long window never alert
//!         labels: {team: storage}   # optional: on every alert of the SLO
//!         alerting:                 # optional
//!           name: FsyncLatencyBudgetBurn
//!           annotations: {summary: ...}
//!           page_labels: {severity: page}
//!           ticket_labels: {severity: ticket}
//!         budget_policy:            # optional
//!           signal: change-freeze   # raised while the error budget is spent
//!         window_scale: 1           # optional, for tests: multiplies every burn-rate window
//! ```
//!
//! `breakers:` define circuit breakers judged each group interval from a failure-ratio,
//! slow-ratio and volume expression (see `control::breaker`); `signals:` define degrade
//! signals, a level in [0, 1] scaled from a pressure expression.

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use promql_parser::parser::Expr;
use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

use super::{promql, time::parse_duration};

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a set of rule files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

#[derive(Debug, Clone)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

/// How many rules of each kind some groups hold (`check rules`, reloads, the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounts {
    pub alerting_rules: usize,
    pub recording_rules: usize,
    pub slos: usize,
    pub breakers: usize,
    pub signals: usize,
}

impl RuleCounts {
    pub fn of<'a>(groups: impl IntoIterator<Item = &'a Group>) -> Self {
        groups.into_iter().fold(Self::default(), |c, g| Self {
            alerting_rules: c.alerting_rules + g.rules.iter().filter(|r| !r.record).count(),
            recording_rules: c.recording_rules + g.rules.iter().filter(|r| r.record).count(),
            slos: c.slos + g.slos.len(),
            breakers: c.breakers + g.breakers.len(),
            signals: c.signals + g.signals.len(),
        })
    }
}

impl std::fmt::Display for RuleCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds = [
            (self.alerting_rules, "alerting rule"),
            (self.recording_rules, "recording rule"),
            (self.slos, "SLO"),
            (self.breakers, "breaker"),
            (self.signals, "signal"),
        ];
        // Recording rules are named only when there are some (the line stays as it was).
        let kinds = kinds
            .into_iter()
            .filter(|(n, kind)| *n > 0 || *kind != "recording rule");
        for (i, (n, kind)) in kinds.enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let s = if n == 1 { "" } else { "s" };
            write!(f, "{sep}{n} {kind}{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub interval: Option<Duration>,
    /// Where the group and its `interval` are, and each SLO (line, column), for warnings.
    pub at: Position,
    pub interval_at: Option<Position>,
    pub slos_at: Vec<Position>,
    pub rules: Vec<AlertRule>,
    pub slos: Vec<SloDef>,
    pub breakers: Vec<BreakerDef>,
    pub signals: Vec<SignalDef>,
}

/// A circuit breaker: expressions evaluated each group interval, each to one number (a scalar
/// or a one-sample vector; no sample, or several, is unknown and holds the state).
#[derive(Debug, Clone)]
pub struct BreakerDef {
    pub name: String,
    pub failure_ratio: Option<Query>,
    pub slow_ratio: Option<Query>,
    pub volume: Query,
    pub spec: crate::rules::spec::breaker::Spec,
}

/// A degrade signal: `expr` (one number) scaled to [0, 1].
#[derive(Debug, Clone)]
pub struct SignalDef {
    pub name: String,
    pub expr: Query,
    pub scaled: crate::config::Scaled,
}

/// Breaker and signal names become file names under the signals directory.
fn valid_control_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A place in a rule file: line and column (1-based).
pub type Position = (usize, usize);

/// A parsed expression with its source text.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub expr: Expr,
    /// Where the expression is in its file.
    pub at: Position,
}

/// An alerting rule, or a recording rule (`record`: then `name` is the recorded metric's
/// name and only `expr` and `labels` are set).
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub record: bool,
    pub expr: Query,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Per-second rates with a `{{.window}}` placeholder for the range.
    Events {
        error_query: String,
        total_query: String,
    },
    /// Events are the histogram's observations; errors those above the threshold.
    Latency {
        histogram: String,
        threshold_seconds: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SloDef {
    pub name: String,
    pub objective: f64,
    pub period: Duration,
    pub sli: Sli,
    pub min_events: f64,
    pub labels: BTreeMap<String, String>,
    pub alert_name: String,
    pub annotations: BTreeMap<String, String>,
    pub page_labels: BTreeMap<String, String>,
    pub ticket_labels: BTreeMap<String, String>,
    pub budget_signal: Option<String>,
    pub window_scale: f64,
}

/// Rule files larger than this are refused (memory stays bounded whatever is in the directory).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Rules (alerting rules, SLOs, breakers and signals) that the files of one load may hold
/// together. A 4 MiB file can hold 70,000 small ones, which took 130 MiB and 40 ms of every
/// evaluation (debug build); 10,000 load in about 0.3 s and take about 30 MiB.
pub const MAX_RULES: usize = 10_000;

/// Longest expression, in bytes (VictoriaMetrics' default `-search.maxQueryLen`).
pub const MAX_EXPR_BYTES: usize = 16 << 10;

/// Syntax tree nodes that the expressions of one load may hold together (about 150 bytes
/// each: some 75 MiB). Typical rules take 3 to 30; `1+1+...` takes a node per byte.
pub const MAX_EXPR_NODES: usize = 500_000;

/// What the files of one load hold so far, against [`MAX_RULES`] and [`MAX_EXPR_NODES`].
#[derive(Debug, Default)]
pub struct Budget {
    rules: usize,
    nodes: usize,
}

/// Loads and checks files; every problem of every file, or the parsed files.
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<Vec<(String, RuleFile)>, Problems> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut budget = Budget::default();
    for path in paths {
        let shown = path.as_ref().display().to_string();
        match crate::input::read_text(path.as_ref(), MAX_FILE_BYTES) {
            Ok(text) => match parse_within(&text, &shown, &mut budget) {
                Ok(f) => out.push((shown, f)),
                Err(p) => problems.extend(p.0),
            },
            Err(e) => {
                let (line, column) = match e {
                    crate::input::ReadError::NotUtf8 { line, column } => (line, column),
                    _ => (0, 0),
                };
                problems.push(Problem {
                    file: shown,
                    line,
                    column,
                    message: e.to_string(),
                })
            }
        }
    }
    check_unique(&out, &mut problems);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Problems(problems))
    }
}

/// Group names must be unique over all files, SLO names too (they name state files).
fn check_unique(files: &[(String, RuleFile)], problems: &mut Vec<Problem>) {
    let mut groups = std::collections::HashSet::new();
    let mut slos = std::collections::HashSet::new();
    for (file, f) in files {
        for g in &f.groups {
            if !groups.insert(g.name.clone()) {
                problems.push(Problem {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    message: format!("group {:?} is defined more than once", g.name),
                });
            }
            for s in &g.slos {
                if !slos.insert(s.name.clone()) {
                    problems.push(Problem {
                        file: file.clone(),
                        line: 0,
                        column: 0,
                        message: format!("SLO {:?} is defined more than once", s.name),
                    });
                }
            }
        }
    }
}

/// Parses one file's text; `file` names it in problems.
pub fn parse(text: &str, file: &str) -> Result<RuleFile, Problems> {
    parse_within(text, file, &mut Budget::default())
}

/// Parses one file's text, counting its rules and expressions into `budget`.
fn parse_within(text: &str, file: &str, budget: &mut Budget) -> Result<RuleFile, Problems> {
    let mut cx = Cx {
        file,
        problems: Vec::new(),
        budget,
    };
    let docs = match MarkedYamlOwned::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: file.into(),
                line: e.marker().line(),
                column: e.marker().col() + 1,
                message: format!("YAML: {}", e.info()),
            }]))
        }
    };
    let mut groups = Vec::new();
    match docs.as_slice() {
        [] => {}
        [root] => {
            if !matches!(root.data, YamlDataOwned::Value(ScalarOwned::Null)) {
                if let Some(fields) = cx.mapping(root, "the file", &["groups"]) {
                    if let Some(gs) = fields.get("groups") {
                        for g in cx.seq(gs, "groups") {
                            if let Some(g) = cx.group(g) {
                                groups.push(g);
                            }
                        }
                    }
                }
            }
        }
        [_, second, ..] => cx.err(second, "one YAML document per file".into()),
    }
    let mut names = std::collections::HashSet::new();
    for g in &groups {
        if !names.insert(&g.name) {
            cx.problems.push(Problem {
                file: file.into(),
                line: 0,
                column: 0,
                message: format!("group {:?} is defined more than once", g.name),
            });
        }
    }
    if cx.problems.is_empty() {
        Ok(RuleFile { groups })
    } else {
        Err(Problems(cx.problems))
    }
}

struct Cx<'a> {
    file: &'a str,
    problems: Vec<Problem>,
    budget: &'a mut Budget,
}

/// The fields of a mapping by key, each with its key node (for positions).
struct Fields<'n> {
    map: BTreeMap<String, &'n MarkedYamlOwned>,
    at: &'n MarkedYamlOwned,
}

impl<'n> Fields<'n> {
    fn get(&self, k: &str) -> Option<&'n MarkedYamlOwned> {
        self.map.get(k).copied()
    }
}

fn scalar_text(node: &MarkedYamlOwned) -> Option<String> {
    match &node.data {
        YamlDataOwned::Value(ScalarOwned::String(s)) => Some(s.clone()),
        YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(i.to_string()),
        YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => Some(f.to_string()),
        YamlDataOwned::Value(ScalarOwned::Boolean(b)) => Some(b.to_string()),
        YamlDataOwned::Representation(s, _, _) => Some(s.clone()),
        _ => None,
    }
}

fn position(node: &MarkedYamlOwned) -> Position {
    (node.span.start.line(), node.span.start.col() + 1)
}

impl<'a> Cx<'a> {
    fn err(&mut self, node: &MarkedYamlOwned, message: String) {
        self.problems.push(Problem {
            file: self.file.into(),
            line: node.span.start.line(),
            column: node.span.start.col() + 1,
            message,
        });
    }

    fn mapping<'n>(
        &mut self,
        node: &'n MarkedYamlOwned,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let YamlDataOwned::Mapping(m) = &node.data else {
            self.err(node, format!("{what}: expected a mapping"));
            return None;
        };
        let mut map = BTreeMap::new();
        for (k, v) in m {
            let Some(key) = scalar_text(k) else {
                self.err(k, format!("{what}: keys must be strings"));
                continue;
            };
            if !allowed.contains(&key.as_str()) {
                let msg = format!(
                    "{what}: unknown field `{key}`, expected one of {}",
                    allowed.join(", ")
                );
                self.err(k, msg);
                continue;
            }
            map.insert(key, v);
        }
        Some(Fields { map, at: node })
    }

    fn seq<'n>(&mut self, node: &'n MarkedYamlOwned, what: &str) -> &'n [MarkedYamlOwned] {
        match &node.data {
            YamlDataOwned::Sequence(s) => s,
            YamlDataOwned::Value(ScalarOwned::Null) => &[],
            _ => {
                self.err(node, format!("{what}: expected a list"));
                &[]
            }
        }
    }

    fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        key: &str,
        what: &str,
    ) -> Option<&'n MarkedYamlOwned> {
        let got = f.get(key);
        if got.is_none() {
            self.err(f.at, format!("{what}: `{key}` is required"));
        }
        got
    }

    fn string(&mut self, node: &MarkedYamlOwned, what: &str) -> Option<String> {
        match &node.data {
            YamlDataOwned::Value(ScalarOwned::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => {
                self.err(node, format!("{what}: expected a non-empty string"));
                None
            }
        }
    }

    fn number(&mut self, node: &MarkedYamlOwned, what: &str) -> Option<f64> {
        match &node.data {
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(*i as f64),
            YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => Some(f.0),
            _ => {
                self.err(node, format!("{what}: expected a number"));
                None
            }
        }
    }

    fn duration(&mut self, node: &MarkedYamlOwned, what: &str) -> Option<Duration> {
        let text = scalar_text(node).unwrap_or_default();
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(node, format!("{what}: {e}"));
                None
            }
        }
    }

    /// The text of an expression, at most [`MAX_EXPR_BYTES`] long.
    fn expr_text(&mut self, node: &MarkedYamlOwned, what: &str) -> Option<String> {
        let text = self.string(node, what)?;
        if text.len() > MAX_EXPR_BYTES {
            let n = text.len();
            self.err(
                node,
                format!("{what}: the expression is {n} bytes long, more than the limit of {MAX_EXPR_BYTES}"),
            );
            return None;
        }
        Some(text)
    }

    fn query(&mut self, node: &MarkedYamlOwned, what: &str) -> Option<Query> {
        let text = self.expr_text(node, what)?;
        self.query_of(text, node, what)
    }

    /// Parses `text` (written at `node`) as an expression.
    fn query_of(&mut self, text: String, node: &MarkedYamlOwned, what: &str) -> Option<Query> {
        if self.budget.nodes > MAX_EXPR_NODES {
            return None; // said once already; parsing the rest would only take time
        }
        match promql::parse(&text) {
            Ok(expr) => {
                let before = self.budget.nodes;
                self.budget.nodes += promql::node_count(&expr);
                if self.budget.nodes > MAX_EXPR_NODES {
                    if before <= MAX_EXPR_NODES {
                        self.err(node, format!("{what}: the expressions of the rule files hold more than {MAX_EXPR_NODES} syntax tree nodes together (the limit)"));
                    }
                    return None;
                }
                Some(Query {
                    text,
                    expr,
                    at: position(node),
                })
            }
            Err(e) => {
                self.err(node, format!("{what}: bad expression: {e}"));
                None
            }
        }
    }

    /// Counts a rule against [`MAX_RULES`]: false (said once, at the first rule over) when
    /// the files already hold that many, and this one is not parsed.
    fn admit_rule(&mut self, node: &MarkedYamlOwned) -> bool {
        self.budget.rules += 1;
        if self.budget.rules == MAX_RULES + 1 {
            self.err(node, format!("more than {MAX_RULES} rules (alerting rules, SLOs, breakers and signals) in the rule files together: this one and the rest are not loaded"));
        }
        self.budget.rules <= MAX_RULES
    }

    /// The items of the list under `key` (alerting rules, SLOs, breakers or signals), each
    /// counted against [`MAX_RULES`] and parsed with `item`.
    fn rules_of<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        item: fn(&mut Self, &MarkedYamlOwned) -> Option<T>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        let Some(list) = f.get(key) else { return out };
        for node in self.seq(list, key) {
            if !self.admit_rule(node) {
                break;
            }
            out.extend(item(self, node));
        }
        out
    }

    fn string_map(
        &mut self,
        node: Option<&MarkedYamlOwned>,
        what: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(node) = node else { return out };
        if matches!(node.data, YamlDataOwned::Value(ScalarOwned::Null)) {
            return out;
        }
        let YamlDataOwned::Mapping(m) = &node.data else {
            self.err(node, format!("{what}: expected a mapping of strings"));
            return out;
        };
        for (k, v) in m {
            match (scalar_text(k), scalar_text(v)) {
                (Some(k), Some(v)) if valid_label_name(&k) => {
                    out.insert(k, v);
                }
                (Some(k), Some(_)) => self.err(
                    k_node(k.as_str(), m).unwrap_or(node),
                    format!("{what}: {k:?} is not a valid label name"),
                ),
                _ => self.err(v, format!("{what}: keys and values must be scalars")),
            }
        }
        out
    }

    fn group(&mut self, node: &MarkedYamlOwned) -> Option<Group> {
        let f = self.mapping(
            node,
            "group",
            &["name", "interval", "rules", "slos", "breakers", "signals"],
        )?;
        let name = self
            .required(&f, "name", "group")
            .and_then(|n| self.string(n, "group name"));
        let interval = f.get("interval").and_then(|n| self.duration(n, "interval"));
        if let (Some(i), Some(n)) = (interval, f.get("interval")) {
            if i < Duration::from_millis(100) {
                self.err(n, "interval: must be at least 100ms".into());
            }
        }
        let rules = self.rules_of(&f, "rules", Self::rule);
        let mut slos_at = Vec::new();
        let slos = self.rules_of(&f, "slos", |cx, node| {
            let slo = Self::slo(cx, node)?;
            Some((slo, position(node)))
        });
        let slos = slos
            .into_iter()
            .map(|(slo, at)| {
                slos_at.push(at);
                slo
            })
            .collect();
        let breakers = self.rules_of(&f, "breakers", Self::breaker);
        let signals = self.rules_of(&f, "signals", Self::signal);
        Some(Group {
            name: name?,
            interval,
            at: position(node),
            interval_at: f.get("interval").map(position),
            slos_at,
            rules,
            slos,
            breakers,
            signals,
        })
    }

    fn control_name(&mut self, f: &Fields<'_>, what: &str) -> Option<String> {
        let node = self.required(f, "name", what)?;
        let name = self.string(node, &format!("{what} name"))?;
        if !valid_control_name(&name) {
            self.err(
                node,
                format!(
                    "{what} name {name:?}: use letters, digits, `_`, `.` and `-` (it names a file)"
                ),
            );
            return None;
        }
        Some(name)
    }

    fn ratio(&mut self, node: &MarkedYamlOwned, what: &str) -> Option<f64> {
        let v = self.number(node, what)?;
        if !(0.0..=1.0).contains(&v) {
            self.err(node, format!("{what}: must be in [0, 1]"));
            return None;
        }
        Some(v)
    }

    fn breaker(&mut self, node: &MarkedYamlOwned) -> Option<BreakerDef> {
        use crate::rules::spec::breaker::Spec;
        let f = self.mapping(
            node,
            "breaker",
            &[
                "name",
                "failure_ratio",
                "slow_ratio",
                "volume",
                "open_failure_ratio",
                "close_failure_ratio",
                "open_slow_ratio",
                "close_slow_ratio",
                "min_volume",
                "wait_base",
                "wait_multiplier",
                "wait_max",
                "jitter",
                "ramp",
                "step",
                "probe_timeout",
                "latency",
            ],
        )?;
        let name = self.control_name(&f, "breaker");
        // `latency:` writes `slow_ratio` and `volume` from a histogram and a threshold.
        let latency = f.get("latency").and_then(|n| self.breaker_latency(n));
        if let Some(n) = f.get("latency") {
            for key in ["slow_ratio", "volume"] {
                if let Some(k) = f.get(key) {
                    self.err(k, format!("breaker: `{key}` and `latency` exclude each other (`latency` writes both)"));
                }
            }
            if latency.is_none() && self.problems.is_empty() {
                self.err(n, "breaker: bad `latency`".into());
            }
        }
        let has_slow = f.get("slow_ratio").is_some() || f.get("latency").is_some();
        let failure_ratio = f
            .get("failure_ratio")
            .and_then(|n| self.query(n, "failure_ratio"));
        let (slow_ratio, volume) = match latency {
            Some((slow, volume)) => (Some(slow), Some(volume)),
            None if f.get("latency").is_some() => (None, None),
            None => (
                f.get("slow_ratio")
                    .and_then(|n| self.query(n, "slow_ratio")),
                self.required(&f, "volume", "breaker")
                    .and_then(|n| self.query(n, "volume")),
            ),
        };
        if f.get("failure_ratio").is_none() && !has_slow {
            self.err(
                f.at,
                "breaker: give `failure_ratio`, `slow_ratio` (or `latency`) or both".into(),
            );
        }
        let d = Spec::default();
        let mut spec = Spec {
            open_failure_ratio: None,
            close_failure_ratio: None,
            open_slow_ratio: None,
            close_slow_ratio: None,
            ..d.clone()
        };
        let mut ok = true;
        for (given, open_key, close_key, open, close) in [
            (
                f.get("failure_ratio").is_some(),
                "open_failure_ratio",
                "close_failure_ratio",
                &mut spec.open_failure_ratio,
                &mut spec.close_failure_ratio,
            ),
            (
                has_slow,
                "open_slow_ratio",
                "close_slow_ratio",
                &mut spec.open_slow_ratio,
                &mut spec.close_slow_ratio,
            ),
        ] {
            if !given {
                continue;
            }
            let o = match f.get(open_key) {
                Some(n) => self.ratio(n, open_key),
                None => Some(0.5),
            };
            let c = match f.get(close_key) {
                Some(n) => self.ratio(n, close_key),
                None => o.map(|o| o / 2.0),
            };
            if let (Some(o), Some(c)) = (o, c) {
                if c >= o {
                    self.err(
                        f.get(close_key).unwrap_or(f.at),
                        format!("{close_key} ({c}) must be below {open_key} ({o}): hysteresis"),
                    );
                    ok = false;
                }
            } else {
                ok = false;
            }
            *open = o;
            *close = c;
        }
        if let Some(n) = f.get("min_volume") {
            match self.number(n, "min_volume") {
                Some(v) if v >= 0.0 => spec.min_volume = v,
                Some(_) => {
                    self.err(n, "min_volume: must not be negative".into());
                    ok = false;
                }
                None => ok = false,
            }
        }
        for (key, slot) in [
            ("wait_base", &mut spec.wait_base),
            ("wait_max", &mut spec.wait_max),
            ("step", &mut spec.step),
            ("probe_timeout", &mut spec.probe_timeout),
        ] {
            if let Some(n) = f.get(key) {
                match self.duration(n, key) {
                    Some(v) if !v.is_zero() => *slot = v,
                    Some(_) => {
                        self.err(n, format!("{key}: must be above zero"));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        if spec.wait_max < spec.wait_base {
            self.err(
                f.get("wait_max").unwrap_or(f.at),
                "wait_max must be at least wait_base".into(),
            );
            ok = false;
        }
        if let Some(n) = f.get("wait_multiplier") {
            match self.number(n, "wait_multiplier") {
                Some(v) if (1.0..=10.0).contains(&v) => spec.wait_multiplier = v,
                Some(_) => {
                    self.err(n, "wait_multiplier: must be in [1, 10]".into());
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(n) = f.get("jitter") {
            match self.ratio(n, "jitter") {
                Some(v) => spec.jitter = v,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("ramp") {
            let mut ramp = Vec::new();
            for step in self.seq(n, "ramp") {
                match self.number(step, "ramp step") {
                    Some(v) if v > 0.0 && v <= 1.0 && ramp.last().is_none_or(|l| v > *l) => {
                        ramp.push(v)
                    }
                    Some(_) => {
                        self.err(step, "ramp: steps must rise, each in (0, 1]".into());
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            if ramp.is_empty() {
                self.err(n, "ramp: give at least one step".into());
                ok = false;
            }
            spec.ramp = ramp;
        }
        if !ok {
            return None;
        }
        Some(BreakerDef {
            name: name?,
            failure_ratio,
            slow_ratio,
            volume: volume?,
            spec,
        })
    }

    /// `latency: {histogram, threshold_seconds, window}` of a breaker: its slow ratio (the
    /// share of calls above the largest bucket bound at or under the threshold) and volume
    /// (calls) over `window` (default 10s).
    fn breaker_latency(&mut self, node: &MarkedYamlOwned) -> Option<(Query, Query)> {
        let f = self.mapping(
            node,
            "latency",
            &["histogram", "threshold_seconds", "window"],
        )?;
        let histogram = self
            .required(&f, "histogram", "latency")
            .and_then(|n| self.expr_text(n, "histogram"))?;
        let threshold = self
            .required(&f, "threshold_seconds", "latency")
            .and_then(|n| self.number(n, "threshold_seconds"))?;
        let window = match f.get("window") {
            Some(n) => self.duration(n, "window")?,
            None => Duration::from_secs(10),
        };
        let at = f.get("histogram").unwrap_or(node);
        let (name, rest) = match histogram.find('{') {
            Some(i) => (histogram[..i].trim(), histogram[i..].trim()),
            None => (histogram.trim(), ""),
        };
        let catalogue = super::lint::Catalogue::agent();
        let Some(bounds) = catalogue.bounds(name) else {
            self.err(at, format!("latency.histogram: {name} is not a histogram this agent serves with known bounds (give the family's name, without _bucket)"));
            return None;
        };
        let Some(bound) = bounds
            .iter()
            .copied()
            .rfind(|b| *b <= threshold * (1.0 + 1e-9))
        else {
            let smallest = bounds.first().copied().unwrap_or(0.0);
            self.err(
                f.get("threshold_seconds").unwrap_or(node),
                format!("latency.threshold_seconds: {threshold} is below the smallest bucket bound of {name} ({smallest})"),
            );
            return None;
        };
        let inner = rest.trim_start_matches('{').trim_end_matches('}').trim();
        let sep = if inner.is_empty() { "" } else { "," };
        let w = super::time::fmt_ms(window.as_millis() as i64);
        let count = format!("sum(increase({name}_count{{{inner}}}[{w}]))");
        let slow = format!(
            "1 - sum(increase({name}_bucket{{{inner}{sep}le=\"{bound}\"}}[{w}])) / {count}"
        );
        let slow = self.query_of(slow, at, "latency")?;
        let volume = self.query_of(count, at, "latency")?;
        Some((slow, volume))
    }

    fn signal(&mut self, node: &MarkedYamlOwned) -> Option<SignalDef> {
        let f = self.mapping(node, "signal", &["name", "expr", "scaling", "saturation"])?;
        let name = self.control_name(&f, "signal");
        let expr = self
            .required(&f, "expr", "signal")
            .and_then(|n| self.query(n, "expr"));
        let scaling = self
            .required(&f, "scaling", "signal")
            .and_then(|n| self.number(n, "scaling"));
        let saturation = self
            .required(&f, "saturation", "signal")
            .and_then(|n| self.number(n, "saturation"));
        let scaled = crate::config::Scaled {
            scaling: scaling?,
            saturation: saturation?,
        };
        if let Some(p) = scaled.problem() {
            self.err(f.get("saturation").unwrap_or(f.at), format!("signal: {p}"));
            return None;
        }
        Some(SignalDef {
            name: name?,
            expr: expr?,
            scaled,
        })
    }

    fn rule(&mut self, node: &MarkedYamlOwned) -> Option<AlertRule> {
        let f = self.mapping(
            node,
            "rule",
            &[
                "alert",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
                "signal",
                "record",
            ],
        )?;
        if let Some(r) = f.get("record") {
            return self.recording_rule(&f, r);
        }
        let name = self
            .required(&f, "alert", "rule")
            .and_then(|n| self.string(n, "alert"));
        if let (Some(n), Some(node)) = (&name, f.get("alert")) {
            if !valid_label_name(n) {
                self.err(node, format!("alert: {n:?} is not a valid alert name"));
            }
        }
        let expr = self
            .required(&f, "expr", "rule")
            .and_then(|n| self.query(n, "expr"));
        let for_ = match f.get("for") {
            Some(n) => self.duration(n, "for"),
            None => Some(Duration::ZERO),
        };
        let keep = match f.get("keep_firing_for") {
            Some(n) => self.duration(n, "keep_firing_for"),
            None => Some(Duration::ZERO),
        };
        let labels = self.string_map(f.get("labels"), "labels");
        let annotations = self.string_map(f.get("annotations"), "annotations");
        let signal = f.get("signal").and_then(|n| self.string(n, "signal"));
        Some(AlertRule {
            name: name?,
            record: false,
            expr: expr?,
            for_: for_?,
            keep_firing_for: keep?,
            labels,
            annotations,
            signal,
        })
    }

    /// A recording rule (`record`, `expr`, `labels`), as Prometheus has them.
    fn recording_rule(&mut self, f: &Fields<'_>, record: &MarkedYamlOwned) -> Option<AlertRule> {
        for key in ["alert", "for", "keep_firing_for", "annotations", "signal"] {
            if let Some(n) = f.get(key) {
                self.err(
                    n,
                    format!("rule: a recording rule (`record`) takes no `{key}`"),
                );
            }
        }
        let name = self.string(record, "record");
        if let Some(n) = &name {
            let mut chars = n.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if !valid {
                self.err(record, format!("record: {n:?} is not a valid metric name"));
            }
        }
        let expr = self
            .required(f, "expr", "rule")
            .and_then(|n| self.query(n, "expr"));
        let labels = self.string_map(f.get("labels"), "labels");
        if labels.contains_key("__name__") {
            self.err(
                f.get("labels").unwrap_or(f.at),
                "labels: a recording rule cannot set __name__".into(),
            );
        }
        Some(AlertRule {
            name: name?,
            record: true,
            expr: expr?,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            labels,
            annotations: BTreeMap::new(),
            signal: None,
        })
    }

    fn slo(&mut self, node: &MarkedYamlOwned) -> Option<SloDef> {
        let f = self.mapping(
            node,
            "slo",
            &[
                "name",
                "objective",
                "period",
                "description",
                "sli",
                "min_events",
                "labels",
                "alerting",
                "budget_policy",
                "window_scale",
            ],
        )?;
        let name = self
            .required(&f, "name", "slo")
            .and_then(|n| self.string(n, "slo name"));
        if let (Some(n), Some(node)) = (&name, f.get("name")) {
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                self.err(
                    node,
                    format!("slo name {n:?}: use letters, digits, '-', '_', '.'"),
                );
            }
        }
        let objective = self.required(&f, "objective", "slo").and_then(|n| {
            let v = self.number(n, "objective")?;
            if !(v > 0.0 && v < 100.0) {
                self.err(n, format!("objective: {v} is not a percentage in (0, 100)"));
                return None;
            }
            Some(v)
        });
        let period = self.required(&f, "period", "slo").and_then(|n| {
            let d = self.duration(n, "period")?;
            if d < Duration::from_secs(86_400) || d > Duration::from_secs(366 * 86_400) {
                self.err(
                    n,
                    "period: must be between 1d and 366d (usually 28d or 30d)".into(),
                );
                return None;
            }
            Some(d)
        });
        let sli = self.required(&f, "sli", "slo").and_then(|n| self.sli(n));
        let min_events = match f.get("min_events") {
            Some(n) => self.number(n, "min_events").filter(|v| *v >= 0.0),
            None => Some(0.0),
        };
        let window_scale = match f.get("window_scale") {
            Some(n) => {
                let v = self.number(n, "window_scale");
                if v.is_some_and(|v| !(v > 0.0 && v <= 1.0)) {
                    self.err(n, "window_scale: must be in (0, 1]".into());
                    None
                } else {
                    v
                }
            }
            None => Some(1.0),
        };
        let labels = self.string_map(f.get("labels"), "labels");
        let mut alert_name = name.as_ref().map(|n| {
            let mut s: String = n
                .split(['-', '_', '.'])
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect::<String>())
                        .unwrap_or_default()
                })
                .collect();
            s.push_str("ErrorBudgetBurn");
            s
        });
        let mut annotations = BTreeMap::new();
        let mut page_labels = BTreeMap::from([("severity".to_string(), "page".to_string())]);
        let mut ticket_labels = BTreeMap::from([("severity".to_string(), "ticket".to_string())]);
        if let Some(a) = f.get("alerting") {
            if let Some(af) = self.mapping(
                a,
                "alerting",
                &[
                    "name",
                    "labels",
                    "annotations",
                    "page_labels",
                    "ticket_labels",
                ],
            ) {
                if let Some(n) = af.get("name") {
                    alert_name = self.string(n, "alerting name");
                }
                annotations = self.string_map(af.get("annotations"), "annotations");
                if af.get("page_labels").is_some() {
                    page_labels = self.string_map(af.get("page_labels"), "page_labels");
                }
                if af.get("ticket_labels").is_some() {
                    ticket_labels = self.string_map(af.get("ticket_labels"), "ticket_labels");
                }
                let extra = self.string_map(af.get("labels"), "labels");
                page_labels.extend(extra.clone());
                ticket_labels.extend(extra);
            }
        }
        let mut budget_signal = None;
        if let Some(b) = f.get("budget_policy") {
            if let Some(bf) = self.mapping(b, "budget_policy", &["signal"]) {
                budget_signal = self
                    .required(&bf, "signal", "budget_policy")
                    .and_then(|n| self.string(n, "signal"));
            }
        }
        Some(SloDef {
            name: name?,
            objective: objective?,
            period: period?,
            sli: sli?,
            min_events: min_events?,
            labels,
            alert_name: alert_name?,
            annotations,
            page_labels,
            ticket_labels,
            budget_signal,
            window_scale: window_scale?,
        })
    }

    fn sli(&mut self, node: &MarkedYamlOwned) -> Option<Sli> {
        let f = self.mapping(node, "sli", &["events", "latency"])?;
        match (f.get("events"), f.get("latency")) {
            (Some(e), None) => {
                let ef = self.mapping(e, "events", &["error_query", "total_query"])?;
                let mut q = |key: &str| {
                    let n = self.required(&ef, key, "events")?;
                    let text = self.expr_text(n, key)?;
                    if !text.contains("{{.window}}") {
                        self.err(n, format!("{key}: must contain {{{{.window}}}} as the range (e.g. rate(x[{{{{.window}}}}]))"));
                        return None;
                    }
                    if let Err(e) = promql::parse(&text.replace("{{.window}}", "5m")) {
                        self.err(n, format!("{key}: bad expression: {e}"));
                        return None;
                    }
                    Some(text)
                };
                let error_query = q("error_query");
                let total_query = q("total_query");
                Some(Sli::Events {
                    error_query: error_query?,
                    total_query: total_query?,
                })
            }
            (None, Some(l)) => {
                let lf = self.mapping(l, "latency", &["histogram", "threshold_seconds"])?;
                let histogram = self.required(&lf, "histogram", "latency").and_then(|n| {
                    let text = self.expr_text(n, "histogram")?;
                    match promql::parse(&text) {
                        Ok(Expr::VectorSelector(vs)) if vs.name.is_some() && vs.offset.is_none() => Some(text),
                        Ok(_) => {
                            self.err(n, "histogram: expected a selector with a metric name, like h_seconds{service=\"x\"}".into());
                            None
                        }
                        Err(e) => {
                            self.err(n, format!("histogram: bad selector: {e}"));
                            None
                        }
                    }
                });
                let threshold = self
                    .required(&lf, "threshold_seconds", "latency")
                    .and_then(|n| {
                        let v = self.number(n, "threshold_seconds")?;
                        if !(v > 0.0 && v.is_finite()) {
                            self.err(n, "threshold_seconds: must be positive".into());
                            return None;
                        }
                        Some(v)
                    });
                Some(Sli::Latency {
                    histogram: histogram?,
                    threshold_seconds: threshold?,
                })
            }
            _ => {
                self.err(node, "sli: give exactly one of `events`, `latency`".into());
                None
            }
        }
    }
}

fn k_node<'n>(
    key: &str,
    m: &'n saphyr::AnnotatedMappingOwned<MarkedYamlOwned>,
) -> Option<&'n MarkedYamlOwned> {
    m.keys().find(|k| scalar_text(k).as_deref() == Some(key))
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with one group of `n` alerting rules whose expression is `expr`.
    fn rules_file(n: usize, expr: &str) -> String {
        let mut text = String::from("groups:\n  - name: g\n    rules:\n");
        for i in 0..n {
            text.push_str(&format!("      - alert: A{i}\n        expr: {expr}\n"));
        }
        text
    }

    #[test]
    fn long_and_deep_expressions_are_refused_at_their_position() {
        let long = format!("vector(1) > {}", "1".repeat(MAX_EXPR_BYTES));
        let deep = format!("{}1{}", "abs(".repeat(200), ")".repeat(200));
        let chain = vec!["x"; 200].join(" + ");
        let text = format!(
            "{}      - alert: B\n        expr: {deep}\n      - alert: C\n        expr: {chain}\n",
            rules_file(1, &long)
        );
        let p = parse(&text, "l.yaml").unwrap_err().0;
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("l.yaml:5:15: expr: the expression is 16396 bytes long"),
            "{shown:#?}"
        );
        for (s, line) in shown[1..].iter().zip([7, 9]) {
            assert!(
                s.starts_with(&format!(
                    "l.yaml:{line}:15: expr: bad expression: nested more than 128 levels deep"
                )),
                "{shown:#?}"
            );
        }
        // the same limit in an SLO's queries and histogram
        let slo = format!("groups:\n  - name: g\n    slos:\n      - name: s\n        objective: 99\n        period: 30d\n        sli:\n          events:\n            error_query: {deep} + rate(e[{{{{.window}}}}])\n            total_query: rate(t[{{{{.window}}}}])\n");
        let p = parse(&slo, "s.yaml").unwrap_err().0;
        assert!(
            p[0].to_string()
                .starts_with("s.yaml:9:26: error_query: bad expression: nested"),
            "{p:?}"
        );
    }

    #[test]
    fn the_rule_and_expression_budgets_span_every_file_of_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, rules_file(MAX_RULES / 2, "vector(1)")).unwrap();
        std::fs::write(
            &b,
            rules_file(MAX_RULES / 2 + 5, "vector(1)").replace("- name: g", "- name: h"),
        )
        .unwrap();
        let p = load_files(&[&a, &b]).unwrap_err().0;
        assert_eq!(p.len(), 1, "{p:?}");
        // rule 5001 of b.yaml: line 4 + 2 * 5000
        assert_eq!((p[0].line, p[0].column), (10_004, 9), "{p:?}");
        assert!(p[0].file.ends_with("b.yaml"), "{p:?}");
        assert!(p[0].message.starts_with("more than 10000 rules"), "{p:?}");
        assert!(load_files(&[&a]).is_ok());

        // (x+x+...) groups of 60: 16 KiB expressions of some 8,000 nodes each
        let group = format!("({})", vec!["x"; 60].join("+"));
        let big = vec![group.as_str(); 60].join("+");
        assert!(big.len() < MAX_EXPR_BYTES);
        let per = promql::node_count(&promql::parse(&big).unwrap());
        let n = MAX_EXPR_NODES / per / 2 + 1;
        std::fs::write(&a, rules_file(n, &big)).unwrap();
        std::fs::write(&b, rules_file(n, &big).replace("- name: g", "- name: h")).unwrap();
        let p = load_files(&[&a, &b]).unwrap_err().0;
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].file.ends_with("b.yaml"), "{p:?}");
        assert!(
            p[0].message.contains("more than 500000 syntax tree nodes"),
            "{p:?}"
        );
    }

    #[test]
    fn unreadable_entries_are_problems_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, b"groups:\n  - name: \xc3\n").unwrap();
        let gone = dir.path().join("gone.yaml");
        let p = load_files(&[&bad, &gone]).unwrap_err().0;
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].ends_with("bad.yaml:2:11: not UTF-8: invalid byte at line 2, column 11"),
            "{shown:?}"
        );
        assert!(
            shown[1]
                .ends_with("gone.yaml:0:0: cannot read: No such file or directory (os error 2)"),
            "{shown:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn bad_input_never_panics(text in "\\PC{0,200}") {
            let _ = parse_duration(&text);
            let _ = parse(&text, "p.yaml");
        }

        #[test]
        fn yaml_shaped_input_never_panics(
            keys in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just("groups:"), proptest::strategy::Just("- name: g"),
                proptest::strategy::Just("rules:"), proptest::strategy::Just("slos:"),
                proptest::strategy::Just("- alert: A"), proptest::strategy::Just("expr: x > 1"),
                proptest::strategy::Just("for: 5é"), proptest::strategy::Just("objective: 99"),
                proptest::strategy::Just("period: 30d"), proptest::strategy::Just("sli:"),
                proptest::strategy::Just("latency:"), proptest::strategy::Just("events: *a"),
                proptest::strategy::Just("labels: {a: [1]}"), proptest::strategy::Just("&a x: 1"),
            ], 0..30),
            indents in proptest::collection::vec(0usize..8, 30)
        ) {
            let text: String = keys.iter().zip(&indents).map(|(k, i)| format!("{}{k}\n", " ".repeat(*i))).collect();
            let _ = parse(&text, "p.yaml");
        }
    }

    #[test]
    fn a_valid_file() {
        let text = r#"
groups:
  - name: g
    interval: 10s
    rules:
      - alert: High
        expr: sum(rate(x_total[5m])) > 1
        for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $value }}"}
    slos:
      - name: fsync
        objective: 99.9
        period: 30d
        sli:
          latency:
            histogram: h_seconds{service="a"}
            threshold_seconds: 0.05
        budget_policy: {signal: change-freeze}
"#;
        let f = parse(text, "f.yaml").unwrap();
        assert_eq!(f.groups[0].rules[0].for_, Duration::from_secs(60));
        let s = &f.groups[0].slos[0];
        assert_eq!(s.alert_name, "FsyncErrorBudgetBurn");
        assert_eq!(s.budget_signal.as_deref(), Some("change-freeze"));
        assert_eq!(s.page_labels["severity"], "page");
    }

    #[test]
    fn recording_rules_parse_and_their_mistakes_have_positions() {
        let ok = "groups:\n  - name: g\n    rules:\n      - record: job:x:rate5m\n        expr: rate(x[5m])\n        labels: {a: b}\n";
        let f = parse(ok, "ok.yaml").unwrap();
        let r = &f.groups[0].rules[0];
        assert!(r.record);
        assert_eq!(r.name, "job:x:rate5m");
        assert_eq!(r.labels["a"], "b");
        assert_eq!(RuleCounts::of(&f.groups).recording_rules, 1);
        assert_eq!(RuleCounts::of(&f.groups).alerting_rules, 0);
        let bad = "groups:\n  - name: g\n    rules:\n      - record: 1bad\n        expr: x\n        for: 1m\n";
        let p = parse(bad, "bad.yaml").unwrap_err().0;
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 2, "{shown:#?}");
        assert!(
            shown[0].starts_with("bad.yaml:6:14: rule: a recording rule (`record`) takes no `for`"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("bad.yaml:4:17: record: \"1bad\" is not a valid metric name"),
            "{shown:#?}"
        );
    }

    #[test]
    fn every_problem_is_listed_with_line_and_column() {
        let text = "groups:\n  - name: g\n    colour: red\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n        for: 5 minutes\n";
        let p = parse(text, "bad.yaml").unwrap_err().0;
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("bad.yaml:3:5: group: unknown field `colour`"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("bad.yaml:6:15: expr: bad expression"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("bad.yaml:7:14: for: \"5 minutes\" is not a duration"),
            "{shown:#?}"
        );
    }

    #[test]
    fn breakers_and_signals_parse_and_their_mistakes_have_positions() {
        let ok = parse(
            "groups:\n  - name: g\n    breakers:\n      - name: db\n        slow_ratio: vector(0.1)\n        volume: vector(10)\n        open_slow_ratio: 0.6\n        ramp: [0.2, 1]\n        wait_base: 2s\n    signals:\n      - name: io\n        expr: vector(3)\n        scaling: 1\n        saturation: 5\n",
            "b.yaml",
        )
        .unwrap();
        let b = &ok.groups[0].breakers[0];
        assert_eq!(b.spec.open_slow_ratio, Some(0.6));
        assert_eq!(b.spec.close_slow_ratio, Some(0.3));
        assert_eq!(b.spec.open_failure_ratio, None);
        assert_eq!(b.spec.ramp, [0.2, 1.0]);
        assert_eq!(b.spec.wait_base, Duration::from_secs(2));
        assert_eq!(ok.groups[0].signals[0].scaled.saturation, 5.0);
        let bad = parse(
            "groups:\n  - name: g\n    breakers:\n      - name: a/b\n        volume: vector(1)\n      - name: ok\n        failure_ratio: vector(0)\n        volume: vector(1)\n        open_failure_ratio: 0.2\n        close_failure_ratio: 0.4\n",
            "b.yaml",
        )
        .unwrap_err()
        .0;
        let msgs: Vec<String> = bad
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.column, p.message))
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("4:") && m.contains("names a file")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("give `failure_ratio`, `slow_ratio`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("10:") && m.contains("hysteresis")),
            "{msgs:?}"
        );
        let p = parse("groups:\n  - name: g\n    breakers: [{name: x, slow_ratio: up, volume: up, colour: red}]\n", "b.yaml")
            .unwrap_err()
            .0;
        assert_eq!(p[0].line, 3);
        assert!(p[0].message.contains("unknown field `colour`"), "{p:?}");
        let p = parse("groups:\n  - name: [\n", "s.yaml").unwrap_err().0;
        assert!(p[0].line >= 2 && p[0].message.starts_with("YAML"), "{p:?}");
        let p = parse("groups:\n  - name: g\n  - name: g\n", "d.yaml")
            .unwrap_err()
            .0;
        assert!(p[0].message.contains("more than once"), "{p:?}");
    }
}

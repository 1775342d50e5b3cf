//! What `check rules` (and every load) says beyond the syntax: selectors that cannot match
//! anything this agent exports, and group intervals the engine cannot keep.
//!
//! The rule engine reads only the agent's own metrics, so a selector is checked against the
//! agent's catalogue: the families of docs/metrics.md (compiled in; `tests/catalogue.rs`
//! keeps that page equal to what a running agent serves, and `tests/rules_cli.rs` its label
//! names), their label names, the bucket bounds of its histograms, and the syscall and errno
//! names of its tables (`crate::syscalls`, `crate::errno`). Only matchers that require a label
//! to have a value are judged (`=` with a non-empty value, `=~` with a regex that does not
//! match the empty string): `x!="a"` or `x=""` select what they select on any family.
//!
//! A *warning* is a selector that can never match, or matches less than it says (a glibc
//! wrapper's name, such as `nanosleep`, where glibc makes another syscall); `--strict` fails
//! on warnings. A *note* is said and never fails (an SLO threshold judged at a lower bound).

use std::{collections::BTreeMap, sync::OnceLock};

use promql_parser::label::{MatchOp, Matcher};

use super::{
    file::{Group, Position, RuleFile, Sli},
    promql,
};

/// Bucket bounds of the engine's `steadfast_rules_evaluation_duration_seconds` (seconds).
/// Here rather than in `engine` because the catalogue below knows every family's buckets
/// and the spec comes before the engine; the engine observes with them.
pub const EVAL_BUCKETS: [f64; 8] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5];

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Cannot match, or matches something else than it says: `--strict` fails.
    Warning,
    /// Worth knowing; never fails.
    Note,
}

/// One finding, at a place in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric family of the agent's catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub labels: Vec<String>,
}

/// The agent's metric families by name, and the bucket bounds of its histograms.
#[derive(Debug, Clone)]
pub struct Catalogue {
    families: BTreeMap<String, Family>,
    bounds: BTreeMap<&'static str, Vec<f64>>,
}

/// The metric reference, whose tables list every family with its type and labels.
const METRICS_MD: &str = include_str!("../../../../docs/metrics.md");

/// Which part of a family a series name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Bucket,
    SumOrCount,
}

impl Catalogue {
    /// This agent's catalogue.
    pub fn agent() -> &'static Catalogue {
        static C: OnceLock<Catalogue> = OnceLock::new();
        C.get_or_init(|| Catalogue::parse(METRICS_MD))
    }

    /// The families of the tables of a metric reference page: rows
    /// `` | `name` | type | `label`, `label` | meaning | ``.
    pub fn parse(markdown: &str) -> Catalogue {
        let mut families = BTreeMap::new();
        for line in markdown.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // ["", name, type, labels, meaning, ""]
            if cells.len() < 5 {
                continue;
            }
            let Some(name) = cells[1]
                .strip_prefix('`')
                .and_then(|n| n.strip_suffix('`'))
                .filter(|n| n.starts_with("steadfast_"))
            else {
                continue;
            };
            let kind = match cells[2] {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                _ => continue,
            };
            let labels = cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .filter(|l| !l.is_empty())
                .collect();
            families.insert(
                name.to_string(),
                Family {
                    name: name.to_string(),
                    kind,
                    labels,
                },
            );
        }
        let syscall: Vec<f64> = crate::metrics::export_buckets(&Default::default())
            .into_iter()
            .map(|(b, _)| b)
            .filter(|b| b.is_finite())
            .collect();
        let http = crate::pipeline::http_stats::BUCKETS.to_vec();
        let bounds = BTreeMap::from([
            ("steadfast_syscall_duration_seconds", syscall),
            (
                "steadfast_http_server_request_duration_seconds",
                http.clone(),
            ),
            ("steadfast_http_client_request_duration_seconds", http),
            (
                "steadfast_rules_evaluation_duration_seconds",
                EVAL_BUCKETS.to_vec(),
            ),
            (
                "steadfast_scrape_duration_seconds",
                crate::metrics::SCRAPE_BUCKETS.to_vec(),
            ),
        ]);
        Catalogue { families, bounds }
    }

    pub fn families(&self) -> impl Iterator<Item = &Family> {
        self.families.values()
    }

    /// The family a series name belongs to, and which part of it the name is.
    fn series(&self, name: &str) -> Option<(&Family, Part)> {
        if let Some(f) = self.families.get(name) {
            return (f.kind != Kind::Histogram).then_some((f, Part::Whole));
        }
        for (suffix, part) in [
            ("_bucket", Part::Bucket),
            ("_sum", Part::SumOrCount),
            ("_count", Part::SumOrCount),
        ] {
            if let Some(f) = name
                .strip_suffix(suffix)
                .and_then(|base| self.families.get(base))
            {
                if f.kind == Kind::Histogram {
                    return Some((f, part));
                }
            }
        }
        None
    }

    /// Every series name the agent can serve.
    fn series_names(&self) -> Vec<String> {
        self.families
            .values()
            .flat_map(|f| match f.kind {
                Kind::Histogram => vec![
                    format!("{}_bucket", f.name),
                    format!("{}_sum", f.name),
                    format!("{}_count", f.name),
                ],
                _ => vec![f.name.clone()],
            })
            .collect()
    }

    /// The finite bucket bounds of a histogram family, in seconds (None: not known here).
    pub fn bounds(&self, family: &str) -> Option<&[f64]> {
        self.bounds.get(family).map(Vec::as_slice)
    }
}

/// Names people write for a syscall that glibc makes under another name (x86_64, glibc 2.36
/// as in Debian 12): (what is written, the syscall made, why).
const GLIBC_WRAPPERS: &[(&str, &str, &str)] = &[
    (
        "nanosleep",
        "clock_nanosleep",
        "glibc's nanosleep(), usleep() and sleep() make the clock_nanosleep syscall",
    ),
    (
        "usleep",
        "clock_nanosleep",
        "glibc's usleep() makes the clock_nanosleep syscall",
    ),
    (
        "sleep",
        "clock_nanosleep",
        "glibc's sleep() makes the clock_nanosleep syscall",
    ),
    (
        "open",
        "openat",
        "glibc's open() and fopen() make the openat syscall",
    ),
    (
        "open64",
        "openat",
        "glibc's open64() makes the openat syscall",
    ),
    (
        "fopen",
        "openat",
        "glibc's fopen() makes the openat syscall",
    ),
    (
        "stat",
        "newfstatat",
        "glibc's stat() (2.33 and later) makes the newfstatat syscall",
    ),
    (
        "lstat",
        "newfstatat",
        "glibc's lstat() (2.33 and later) makes the newfstatat syscall",
    ),
    (
        "stat64",
        "newfstatat",
        "glibc's stat64() makes the newfstatat syscall",
    ),
    ("fork", "clone", "glibc's fork() makes the clone syscall"),
    ("wait", "wait4", "glibc's wait() makes the wait4 syscall"),
    (
        "waitpid",
        "wait4",
        "glibc's waitpid() makes the wait4 syscall",
    ),
    (
        "pread",
        "pread64",
        "glibc's pread() makes the pread64 syscall",
    ),
    (
        "pwrite",
        "pwrite64",
        "glibc's pwrite() makes the pwrite64 syscall",
    ),
    (
        "readdir",
        "getdents64",
        "glibc's readdir() makes the getdents64 syscall",
    ),
    (
        "sigaction",
        "rt_sigaction",
        "glibc's sigaction() and signal() make the rt_sigaction syscall",
    ),
    (
        "signal",
        "rt_sigaction",
        "glibc's signal() makes the rt_sigaction syscall",
    ),
    (
        "sigprocmask",
        "rt_sigprocmask",
        "glibc's sigprocmask() makes the rt_sigprocmask syscall",
    ),
    (
        "exit",
        "exit_group",
        "glibc's exit() and _exit() make the exit_group syscall",
    ),
    ("lseek64", "lseek", "lseek64() is the lseek syscall"),
    ("mmap64", "mmap", "mmap64() is the mmap syscall"),
    (
        "posix_fallocate",
        "fallocate",
        "glibc's posix_fallocate() makes the fallocate syscall",
    ),
];

/// Syscalls a program hardly ever makes, because the vDSO answers them in user space.
const VDSO: &[&str] = &["clock_gettime", "gettimeofday", "time", "getcpu"];

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c)
}

/// Formats a bound as the agent's exposition (and its store) writes it.
fn fmt_bound(b: f64) -> String {
    format!("{b}")
}

/// Whether `v` is one of `bounds` (to a relative 1e-9).
fn is_bound(v: f64, bounds: &[f64]) -> bool {
    bounds.iter().any(|b| (b - v).abs() <= b.abs() * 1e-9)
}

/// The bounds either side of `v`.
fn around(v: f64, bounds: &[f64]) -> String {
    let below = bounds.iter().copied().rfind(|b| *b < v);
    let above = bounds.iter().copied().find(|b| *b > v);
    match (below, above) {
        (Some(b), Some(a)) => format!("the nearest are {} and {}", fmt_bound(b), fmt_bound(a)),
        (Some(b), None) => format!("the largest is {} (then +Inf)", fmt_bound(b)),
        (None, Some(a)) => format!("the smallest is {}", fmt_bound(a)),
        (None, None) => "it has none".into(),
    }
}

struct Linter<'a> {
    catalogue: &'a Catalogue,
    /// The names recording rules write (over every file): selectors of them are not judged
    /// against the catalogue.
    recorded: &'a std::collections::BTreeSet<String>,
    file: &'a str,
    out: Vec<Finding>,
}

impl Linter<'_> {
    fn say(&mut self, at: Position, severity: Severity, message: String) {
        self.out.push(Finding {
            file: self.file.to_string(),
            line: at.0,
            column: at.1,
            severity,
            message,
        });
    }

    fn warn(&mut self, at: Position, message: String) {
        self.say(at, Severity::Warning, message);
    }

    /// Every selector of an expression.
    fn expr(&mut self, what: &str, e: &promql_parser::parser::Expr, at: Position) {
        let mut selectors = Vec::new();
        promql::selectors(e, &mut selectors);
        for ms in selectors {
            self.selector(what, &ms, at);
        }
    }

    fn selector(&mut self, what: &str, ms: &[Matcher], at: Position) {
        let c = self.catalogue;
        let names = c.series_names();
        let name_matchers: Vec<&Matcher> = ms.iter().filter(|m| m.name == "__name__").collect();
        if !name_matchers.is_empty()
            && self
                .recorded
                .iter()
                .any(|n| name_matchers.iter().all(|m| m.is_match(n)))
        {
            return;
        }
        // The series names this selector can select.
        let selected: Vec<&String> = names
            .iter()
            .filter(|n| name_matchers.iter().all(|m| m.is_match(n)))
            .collect();
        if selected.is_empty() {
            let exact = name_matchers
                .iter()
                .find(|m| m.op == MatchOp::Equal)
                .map(|m| m.value.as_str());
            let msg = match exact {
                Some(name) => {
                    let hint = nearest(name, names.iter().map(String::as_str))
                        .map(|n| format!("; did you mean {n}?"))
                        .unwrap_or_else(|| {
                            "; see docs/metrics.md for every metric it serves".into()
                        });
                    format!("{what}: this agent serves no metric named {name}{hint}")
                }
                None => {
                    format!("{what}: the metric-name matchers select no metric this agent serves")
                }
            };
            self.warn(at, msg);
            return;
        }
        for m in ms.iter().filter(|m| m.name != "__name__") {
            // Matchers that any series satisfies whether or not it has the label.
            if m.is_match("") {
                continue;
            }
            let has = |n: &&String| {
                c.series(n).is_some_and(|(f, part)| {
                    f.labels.contains(&m.name) || (m.name == "le" && part == Part::Bucket)
                })
            };
            if !selected.iter().any(has) {
                let msg = match selected.as_slice() {
                    [one] => {
                        let (f, part) = c.series(one).expect("a served name");
                        let mut labels = f.labels.clone();
                        if part == Part::Bucket {
                            labels.push("le".into());
                        }
                        let hint = if m.name == "le" {
                            format!(" (`le` is on {}_bucket only)", f.name)
                        } else {
                            nearest(&m.name, labels.iter().map(String::as_str))
                                .map(|l| format!("; did you mean {l}?"))
                                .unwrap_or_default()
                        };
                        let list = if labels.is_empty() {
                            "it has none".to_string()
                        } else {
                            format!("its labels: {}", labels.join(", "))
                        };
                        format!("{what}: {one} has no label {} ({list}){hint}", m.name)
                    }
                    _ => format!(
                        "{what}: none of the metrics this selector names has a label {}",
                        m.name
                    ),
                };
                self.warn(at, msg);
                continue;
            }
            match m.name.as_str() {
                "le" => self.le(what, m, &selected, at),
                "syscall" => self.syscall(what, m, at),
                "errno" => self.errno(what, m, at),
                _ => {}
            }
        }
    }

    fn le(&mut self, what: &str, m: &Matcher, selected: &[&String], at: Position) {
        if m.op != MatchOp::Equal || m.value == "+Inf" {
            return;
        }
        for name in selected {
            let Some((f, Part::Bucket)) = self.catalogue.series(name) else {
                continue;
            };
            let Some(bounds) = self.catalogue.bounds(&f.name) else {
                continue;
            };
            match m.value.parse::<f64>() {
                Ok(v) if is_bound(v, bounds) => {}
                Ok(v) => {
                    let msg = format!(
                        "{what}: le=\"{}\" is not a bucket bound of {} ({}): it matches no series",
                        m.value,
                        f.name,
                        around(v, bounds)
                    );
                    self.warn(at, msg);
                }
                Err(_) => {
                    let msg = format!("{what}: le=\"{}\" is not a number", m.value);
                    self.warn(at, msg);
                }
            }
        }
    }

    fn syscall(&mut self, what: &str, m: &Matcher, at: Position) {
        let known = |n: &str| {
            crate::syscalls::number(n).is_some()
                || n.strip_prefix("sys_")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        };
        match &m.op {
            MatchOp::Equal => {
                let v = m.value.as_str();
                if let Some((_, made, why)) = GLIBC_WRAPPERS.iter().find(|(w, _, _)| *w == v) {
                    let also = if known(v) {
                        format!(
                            " (a program that makes the {v} syscall itself, e.g. through syscall(2) or Go's runtime, is matched; write syscall=~\"{v}\" to say that is meant)"
                        )
                    } else {
                        String::new()
                    };
                    let msg = format!(
                        "{what}: syscall=\"{v}\": {why}; did you mean syscall=\"{made}\"?{also}"
                    );
                    self.warn(at, msg);
                } else if VDSO.contains(&v) {
                    let msg = format!(
                        "{what}: syscall=\"{v}\": the vDSO answers {v}() in user space on x86_64, so it is hardly ever a syscall (write syscall=~\"{v}\" if that is meant)"
                    );
                    self.warn(at, msg);
                } else if !known(v) {
                    let hint = nearest(v, crate::syscalls::names())
                        .map(|n| format!("; did you mean {n}?"))
                        .unwrap_or_default();
                    let msg = format!(
                        "{what}: syscall=\"{v}\" is not a syscall name of this agent's table (x86_64){hint}"
                    );
                    self.warn(at, msg);
                }
            }
            MatchOp::Re(_) if !crate::syscalls::names().any(|n| m.is_match(n)) => {
                let msg = format!(
                    "{what}: syscall=~\"{}\" matches no syscall name of this agent's table (x86_64)",
                    m.value
                );
                self.warn(at, msg);
            }
            _ => {}
        }
    }

    fn errno(&mut self, what: &str, m: &Matcher, at: Position) {
        let known = |n: &str| {
            crate::errno::names().any(|e| e == n)
                || n.strip_prefix('E')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        };
        match &m.op {
            MatchOp::Equal if !known(&m.value) => {
                let upper = m.value.to_ascii_uppercase();
                let hint = if known(&upper) {
                    format!("; did you mean {upper}?")
                } else {
                    nearest(&upper, crate::errno::names())
                        .map(|n| format!("; did you mean {n}?"))
                        .unwrap_or_default()
                };
                let msg = format!("{what}: errno=\"{}\" is not an errno name{hint}", m.value);
                self.warn(at, msg);
            }
            MatchOp::Re(_) if !crate::errno::names().any(|n| m.is_match(n)) => {
                let msg = format!("{what}: errno=~\"{}\" matches no errno name", m.value);
                self.warn(at, msg);
            }
            _ => {}
        }
    }

    fn group(&mut self, g: &Group, eval_interval_ms: u64) {
        if let (Some(i), Some(at)) = (g.interval, g.interval_at) {
            let i = i.as_millis() as u64;
            let tick = eval_interval_ms.max(1);
            // The engine evaluates at ticks of rules.evaluation_interval_ms; a group is due at
            // the first tick at least its interval (less half a tick) after its last run.
            let k = (i.saturating_sub(tick / 2)).div_ceil(tick).max(1);
            let runs = k * tick;
            if runs != i {
                let msg = if i < tick {
                    format!(
                        "group {:?}: interval {i}ms is finer than rules.evaluation_interval_ms ({tick} ms): the engine evaluates it every {runs} ms; set rules.evaluation_interval_ms to {i} or less for it to run every {i} ms",
                        g.name
                    )
                } else {
                    format!(
                        "group {:?}: interval {i}ms is not a multiple of rules.evaluation_interval_ms ({tick} ms): the engine evaluates it every {runs} ms",
                        g.name
                    )
                };
                self.warn(at, msg);
            }
        }
        for r in &g.rules {
            let what = if r.record {
                format!("record {}", r.name)
            } else {
                format!("alert {}", r.name)
            };
            self.expr(&what, &r.expr.expr, r.expr.at);
        }
        for b in &g.breakers {
            for (key, q) in [
                ("failure_ratio", b.failure_ratio.as_ref()),
                ("slow_ratio", b.slow_ratio.as_ref()),
                ("volume", Some(&b.volume)),
            ] {
                if let Some(q) = q {
                    let what = format!("breaker {} {key}", b.name);
                    self.expr(&what, &q.expr, q.at);
                }
            }
        }
        for s in &g.signals {
            let what = format!("signal {} expr", s.name);
            self.expr(&what, &s.expr.expr, s.expr.at);
        }
        for (i, slo) in g.slos.iter().enumerate() {
            let at = g.slos_at.get(i).copied().unwrap_or(g.at);
            self.slo(slo, at);
        }
    }

    fn slo(&mut self, slo: &super::file::SloDef, at: Position) {
        let what = format!("slo {}", slo.name);
        match &slo.sli {
            Sli::Events {
                error_query,
                total_query,
            } => {
                for (key, q) in [("error_query", error_query), ("total_query", total_query)] {
                    if let Ok(e) = promql::parse(&q.replace("{{.window}}", "1m")) {
                        self.expr(&format!("{what} {key}"), &e, at);
                    }
                }
            }
            Sli::Latency {
                histogram,
                threshold_seconds,
            } => {
                let name = histogram.split('{').next().unwrap_or("").trim();
                let family = self
                    .catalogue
                    .families
                    .get(name)
                    .filter(|f| f.kind == Kind::Histogram);
                let Some(family) = family else {
                    let msg = format!(
                        "{what} latency.histogram: {name} is not a histogram this agent serves (give the family's name, without _bucket)"
                    );
                    self.warn(at, msg);
                    return;
                };
                let family_name = family.name.clone();
                let count = histogram.replacen(name, &format!("{name}_count"), 1);
                if let Ok(e) = promql::parse(&count) {
                    self.expr(&format!("{what} latency.histogram"), &e, at);
                }
                if let Some(bounds) = self.catalogue.bounds(&family_name) {
                    let t = *threshold_seconds;
                    let judged = bounds.iter().copied().rfind(|b| *b <= t * (1.0 + 1e-9));
                    match judged {
                        None => {
                            let msg = format!(
                                "{what}: threshold_seconds {t} is below every bucket bound of {family_name} ({}): no call can be under it",
                                around(t, bounds)
                            );
                            self.warn(at, msg);
                        }
                        Some(b) if !is_bound(t, bounds) => {
                            let msg = format!(
                                "{what}: threshold_seconds {t} is judged at the bucket bound {} (the largest at or under it; {})",
                                fmt_bound(b),
                                around(t, bounds)
                            );
                            self.say(at, Severity::Note, msg);
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

/// Findings for loaded files, against `catalogue`, for an engine evaluating every
/// `eval_interval_ms`.
pub fn lint(
    files: &[(String, RuleFile)],
    catalogue: &Catalogue,
    eval_interval_ms: u64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let recorded: std::collections::BTreeSet<String> = files
        .iter()
        .flat_map(|(_, f)| &f.groups)
        .flat_map(|g| &g.rules)
        .filter(|r| r.record)
        .map(|r| r.name.clone())
        .collect();
    for (file, f) in files {
        let mut l = Linter {
            catalogue,
            recorded: &recorded,
            file,
            out: Vec::new(),
        };
        for g in &f.groups {
            l.group(g, eval_interval_ms);
        }
        // Two selectors of one expression with the same mistake say it once.
        l.out.dedup();
        out.extend(l.out);
    }
    out
}

/// `steadfast check rules`: loads `paths` (every problem to stderr), says every finding
/// (stderr) and each file's counts (stdout). True when the files load and, with `strict`, no
/// warning was found.
pub fn check_command(paths: &[std::path::PathBuf], strict: bool, eval_interval_ms: u64) -> bool {
    let loaded = match super::file::load_files(paths) {
        Ok(l) => l,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s)", problems.0.len());
            return false;
        }
    };
    let findings = lint(&loaded, Catalogue::agent(), eval_interval_ms);
    for f in &findings {
        eprintln!("{f}");
    }
    for (file, f) in &loaded {
        let counts = super::file::RuleCounts::of(&f.groups);
        let warned = findings
            .iter()
            .filter(|w| &w.file == file && w.severity == Severity::Warning)
            .count();
        match warned {
            0 => println!("{file}: ok ({counts})"),
            n => println!(
                "{file}: {} ({counts}; {n} warning{})",
                if strict { "FAILED" } else { "ok" },
                if n == 1 { "" } else { "s" }
            ),
        }
    }
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    if warnings > 0 {
        eprintln!(
            "{warnings} warning(s){}",
            if strict { ": failed (--strict)" } else { "" }
        );
    }
    !(strict && warnings > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::spec::file;

    fn findings(text: &str, eval_ms: u64) -> Vec<String> {
        let f = file::parse(text, "r.yaml").unwrap();
        lint(&[("r.yaml".into(), f)], Catalogue::agent(), eval_ms)
            .into_iter()
            .map(|f| f.to_string())
            .collect()
    }

    fn one_breaker(volume: &str) -> String {
        format!(
            "groups:\n  - name: g\n    breakers:\n      - name: b\n        failure_ratio: vector(0)\n        volume: '{volume}'\n"
        )
    }

    #[test]
    fn the_catalogue_holds_every_documented_family_with_its_labels() {
        let c = Catalogue::agent();
        let f = &c.families["steadfast_syscall_errors_total"];
        assert_eq!(
            (f.kind, f.labels.as_slice()),
            (
                Kind::Counter,
                &["syscall".to_string(), "errno".into(), "service".into()][..]
            )
        );
        assert_eq!(
            c.families["steadfast_syscall_duration_seconds"].kind,
            Kind::Histogram
        );
        assert!(c.families["steadfast_control_snapshot_index"]
            .labels
            .is_empty());
        assert!(c.families().count() >= 50);
        let b = c.bounds("steadfast_syscall_duration_seconds").unwrap();
        assert_eq!((b[0], b.len()), (2f64.powi(-21), 25));
        assert!(is_bound(0.015625, b));
    }

    #[test]
    fn selectors_that_cannot_match_are_warned_about() {
        let ok = "sum(increase(steadfast_syscall_duration_seconds_bucket{syscall=\"clock_nanosleep\",le=\"0.015625\",service=\"x\"}[10s]))";
        assert_eq!(findings(&one_breaker(ok), 1000), Vec::<String>::new());

        let w = findings(
            &one_breaker("sum(rate(steadfast_syscal_duration_seconds_count[1m]))"),
            1000,
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("r.yaml:6:17: warning: breaker b volume: this agent serves no metric named steadfast_syscal_duration_seconds_count; did you mean steadfast_syscall_duration_seconds_count?"), "{w:?}");

        let w = findings(
            &one_breaker(
                "sum(rate(steadfast_syscall_duration_seconds_count{syscal=\"fsync\"}[1m]))",
            ),
            1000,
        );
        assert!(
            w[0].contains(
                "has no label syscal (its labels: syscall, service); did you mean syscall?"
            ),
            "{w:?}"
        );

        let w = findings(
            &one_breaker("sum(rate(steadfast_syscall_duration_seconds_bucket{le=\"0.01\"}[1m]))"),
            1000,
        );
        assert!(w[0].contains("le=\"0.01\" is not a bucket bound of steadfast_syscall_duration_seconds (the nearest are 0.0078125 and 0.015625)"), "{w:?}");
        let w = findings(
            &one_breaker("sum(rate(steadfast_syscall_duration_seconds_count{le=\"0.01\"}[1m]))"),
            1000,
        );
        assert!(w[0].contains("has no label le"), "{w:?}");

        let w = findings(
            &one_breaker(
                "sum(rate(steadfast_syscall_duration_seconds_count{syscall=\"nanosleep\"}[1m]))",
            ),
            1000,
        );
        assert!(w[0].contains("glibc's nanosleep(), usleep() and sleep() make the clock_nanosleep syscall; did you mean syscall=\"clock_nanosleep\"?"), "{w:?}");
        // A regex says the syscall itself is meant.
        let w = findings(
            &one_breaker(
                "sum(rate(steadfast_syscall_duration_seconds_count{syscall=~\"nanosleep\"}[1m]))",
            ),
            1000,
        );
        assert!(w.is_empty(), "{w:?}");
        let w = findings(
            &one_breaker(
                "sum(rate(steadfast_syscall_duration_seconds_count{syscall=\"fsycn\"}[1m]))",
            ),
            1000,
        );
        assert!(w[0].contains("syscall=\"fsycn\" is not a syscall name of this agent's table (x86_64); did you mean fsync?"), "{w:?}");
        let w = findings(
            &one_breaker("sum(rate(steadfast_syscall_errors_total{errno=\"enoent\"}[1m]))"),
            1000,
        );
        assert!(
            w[0].contains("errno=\"enoent\" is not an errno name; did you mean ENOENT?"),
            "{w:?}"
        );
        let w = findings(
            &one_breaker("sum(rate(steadfast_syscall_errors_total{errno=~\"EFOO|EBAR\"}[1m]))"),
            1000,
        );
        assert!(w[0].contains("matches no errno name"), "{w:?}");
        // Matchers any series satisfies are not judged.
        let w = findings(
            &one_breaker("sum(rate(steadfast_syscall_errors_total{foo!=\"x\",bar=\"\"}[1m]))"),
            1000,
        );
        assert!(w.is_empty(), "{w:?}");
        let w = findings(
            &one_breaker(
                "sum(rate(steadfast_syscall_errors_total{errno=\"E200\",syscall=\"sys_999\"}[1m]))",
            ),
            1000,
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_breaker_names_its_latency_threshold_in_seconds() {
        let b = |latency: &str, extra: &str| {
            format!("groups:\n  - name: g\n    breakers:\n      - name: b\n        latency: {latency}\n{extra}")
        };
        let f = file::parse(
            &b("{histogram: 'steadfast_syscall_duration_seconds{syscall=\"fsync\"}', threshold_seconds: 0.05}", ""),
            "r.yaml",
        )
        .unwrap();
        let d = &f.groups[0].breakers[0];
        assert_eq!(
            d.slow_ratio.as_ref().unwrap().text,
            "1 - sum(increase(steadfast_syscall_duration_seconds_bucket{syscall=\"fsync\",le=\"0.03125\"}[10s])) / sum(increase(steadfast_syscall_duration_seconds_count{syscall=\"fsync\"}[10s]))"
        );
        assert_eq!(
            d.volume.text,
            "sum(increase(steadfast_syscall_duration_seconds_count{syscall=\"fsync\"}[10s]))"
        );
        assert_eq!(d.spec.open_slow_ratio, Some(0.5));
        let f = file::parse(
            &b("{histogram: steadfast_http_server_request_duration_seconds, threshold_seconds: 0.3, window: 1m}", ""),
            "r.yaml",
        )
        .unwrap();
        assert!(f.groups[0].breakers[0]
            .volume
            .text
            .ends_with("_count{}[1m]))"));
        assert!(f.groups[0].breakers[0]
            .slow_ratio
            .as_ref()
            .unwrap()
            .text
            .contains("{le=\"0.25\"}"));
        let err = |text: &str| file::parse(text, "r.yaml").unwrap_err().to_string();
        let e = err(&b(
            "{histogram: steadfast_syscall_duration_seconds, threshold_seconds: 0.0000001}",
            "",
        ));
        assert!(e.contains("0.0000001 is below the smallest bucket bound of steadfast_syscall_duration_seconds (0.000000476837158203125)"), "{e}");
        let e = err(&b(
            "{histogram: steadfast_syscall_duration_seconds_bucket, threshold_seconds: 1}",
            "",
        ));
        assert!(e.contains("is not a histogram this agent serves"), "{e}");
        let e = err(&b(
            "{histogram: steadfast_syscall_duration_seconds, threshold_seconds: 1}",
            "        volume: vector(1)\n",
        ));
        assert!(
            e.contains("`volume` and `latency` exclude each other"),
            "{e}"
        );
    }

    /// docs/metrics.md lists every histogram's bounds as `check rules` and `latency:` know them.
    #[test]
    fn the_reference_lists_the_bucket_bounds() {
        let c = Catalogue::agent();
        let section = &METRICS_MD[METRICS_MD
            .find("## Bucket bounds")
            .expect("a bounds section")..];
        for (family, bounds) in &c.bounds {
            let row = section
                .lines()
                .find(|l| l.starts_with(&format!("| `{family}` |")))
                .unwrap_or_else(|| panic!("{family} has no row"));
            let listed: Vec<f64> = row
                .split('|')
                .nth(2)
                .unwrap()
                .split(',')
                .map(|v| v.trim().trim_matches('`').parse().unwrap())
                .collect();
            assert_eq!(&listed, bounds, "{family}");
        }
    }

    #[test]
    fn group_intervals_the_engine_cannot_keep_are_warned_about() {
        let g = |i: &str| {
            format!("groups:\n  - name: g\n    interval: {i}\n    rules:\n      - alert: A\n        expr: vector(1)\n")
        };
        let w = findings(&g("250ms"), 1000);
        assert_eq!(w, ["r.yaml:3:15: warning: group \"g\": interval 250ms is finer than rules.evaluation_interval_ms (1000 ms): the engine evaluates it every 1000 ms; set rules.evaluation_interval_ms to 250 or less for it to run every 250 ms"]);
        assert!(findings(&g("250ms"), 250).is_empty());
        assert!(findings(&g("10s"), 1000).is_empty());
        let w = findings(&g("1500ms"), 1000);
        assert!(w[0].contains("not a multiple of rules.evaluation_interval_ms (1000 ms): the engine evaluates it every 1000 ms"), "{w:?}");
    }

    #[test]
    fn slo_selectors_and_thresholds() {
        let slo = |sli: &str| {
            format!("groups:\n  - name: g\n    slos:\n      - name: s\n        objective: 99\n        period: 30d\n        sli:\n{sli}")
        };
        let w = findings(&slo("          latency:\n            histogram: steadfast_syscall_duration_seconds{syscall=\"fsync\"}\n            threshold_seconds: 0.05\n"), 1000);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(
                "note: slo s: threshold_seconds 0.05 is judged at the bucket bound 0.03125"
            ),
            "{w:?}"
        );
        let w = findings(&slo("          latency:\n            histogram: steadfast_syscall_duration_seconds_bucket{syscall=\"fsync\"}\n            threshold_seconds: 0.05\n"), 1000);
        assert!(w[0].contains("warning: slo s latency.histogram: steadfast_syscall_duration_seconds_bucket is not a histogram"), "{w:?}");
        let w = findings(&slo("          events:\n            error_query: sum(rate(steadfast_syscall_errors_total{syscall=\"nanosleep\"}[{{.window}}]))\n            total_query: sum(rate(steadfast_syscall_duration_seconds_count[{{.window}}]))\n"), 1000);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("slo s error_query: syscall=\"nanosleep\""),
            "{w:?}"
        );
    }
}

//! `steadfast test rules FILE...`: unit tests for rule files, in the spirit of
//! `promtool test rules`. A test file names rule files (relative to itself), synthetic input
//! series (promtool's value notation) and, at given times, the alerts expected to be firing
//! (`alert_rule_test`), the samples of an expression (`promql_expr_test`), a breaker's state,
//! admit ratio and inputs (`breaker_test`) and a signal's level (`signal_test`). The format is
//! documented in docs/rules.md.
//!
//! Time starts at 0; every group is evaluated at each multiple of the evaluation interval
//! (groups with a longer `interval` when due), with the same engine the daemon runs; breakers
//! and signals go through a control layer of their own on the test's clock, as the daemon
//! feeds its one (`runtime::feed`), with breaker jitter off so waits are exact. Failures print
//! what was expected and what came, as promtool does.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::rules::engine::{alert::State, Engine, EngineOptions};
use crate::rules::eval;
use crate::rules::spec::{file, promql, time::parse_duration};
use crate::store::{stale_marker, Labels};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    breaker_test: Vec<BreakerTest>,
    #[serde(default)]
    signal_test: Vec<SignalTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    /// `name{label="value"}`, or `{label="value"}` (no name), or empty for a scalar.
    #[serde(default)]
    labels: String,
    value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerTest {
    eval_time: String,
    breaker: String,
    exp_state: crate::control::breaker::State,
    #[serde(default)]
    exp_admit_ratio: Option<f64>,
    #[serde(default)]
    exp_inputs_unknown: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalTest {
    eval_time: String,
    signal: String,
    exp_level: f64,
    #[serde(default)]
    exp_inputs_unknown: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: Option<BTreeMap<String, String>>,
}

/// Expands promtool's value notation into one optional value per step.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    let num = |s: &str| -> Result<f64, String> {
        match s {
            "stale" => Ok(stale_marker()),
            "Inf" | "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => s.parse().map_err(|_| format!("bad value {s:?}")),
        }
    };
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(None);
        } else if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n.min(1_000_000)));
        } else if let Some((head, n)) = tok.split_once('x') {
            let n: i64 = n.parse().map_err(|_| format!("bad repeat {tok:?}"))?;
            if !(0..=1_000_000).contains(&n) {
                return Err(format!("bad repeat {tok:?}"));
            }
            // a+b, a-b (a may itself be negative), or a
            let split = head
                .char_indices()
                .skip(1)
                .find(|(_, c)| *c == '+' || *c == '-')
                .map(|(i, _)| i);
            let (a, b) = match split {
                Some(i) => (num(&head[..i])?, num(head[i..].trim_start_matches('+'))?),
                None => (num(head)?, 0.0),
            };
            for k in 0..=n {
                out.push(Some(a + b * k as f64));
            }
        } else {
            out.push(Some(num(tok)?));
        }
    }
    Ok(out)
}

fn series_labels(text: &str) -> Result<Labels, String> {
    let e = promql_parser::parser::parse(text).map_err(|e| format!("series {text:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = e else {
        return Err(format!("series {text:?}: expected name{{label=\"value\"}}"));
    };
    let mut labels = Labels::new();
    if let Some(n) = vs.name {
        labels.insert("__name__".into(), n);
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            return Err(format!("series {text:?}: only = matchers"));
        }
        labels.insert(m.name, m.value);
    }
    Ok(labels)
}

/// Runs every test of one test file; returns the report lines and whether all passed.
pub fn run_file(path: &Path) -> (Vec<String>, bool) {
    let mut report = Vec::new();
    let shown = path.display().to_string();
    let tf: TestFile = match crate::input::read_text(path, file::MAX_FILE_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|t| crate::yaml::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => return (vec![format!("{shown}: {e}")], false),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let files: Vec<PathBuf> = tf.rule_files.iter().map(|f| base.join(f)).collect();
    let rules = match file::load_files(&files) {
        Ok(r) => r,
        Err(p) => return (vec![format!("{shown}: rule files invalid:\n{p}")], false),
    };
    let eval_ms = match tf
        .evaluation_interval
        .as_deref()
        .map(parse_duration)
        .unwrap_or(Ok(std::time::Duration::from_secs(60)))
    {
        Ok(d) if !d.is_zero() => d.as_millis() as i64,
        _ => return (vec![format!("{shown}: bad evaluation_interval")], false),
    };
    let mut ok = true;
    for (i, g) in tf.tests.iter().enumerate() {
        let name = if g.name.is_empty() {
            format!("test {i}")
        } else {
            g.name.clone()
        };
        match run_group(g, &rules, eval_ms) {
            Ok(failures) if failures.is_empty() => report.push(format!("  PASS: {name}")),
            Ok(failures) => {
                ok = false;
                report.push(format!("  FAILED: {name}"));
                report.extend(failures.into_iter().map(|f| format!("    {f}")));
            }
            Err(e) => {
                ok = false;
                report.push(format!("  FAILED: {name}: {e}"));
            }
        }
    }
    (report, ok)
}

type Got = Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>;

/// `{a="1", b="2"}`, as promtool prints label sets.
fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// One alert as a failure shows it: labels, and annotations when they matter.
fn fmt_alert(labels: &BTreeMap<String, String>, ann: Option<&BTreeMap<String, String>>) -> String {
    match ann {
        Some(a) if !a.is_empty() => format!("{} annotations {}", fmt_labels(labels), fmt_labels(a)),
        _ => fmt_labels(labels),
    }
}

fn fmt_list(items: Vec<String>) -> String {
    if items.is_empty() {
        "[]".into()
    } else {
        format!("[\n        {}\n      ]", items.join(",\n        "))
    }
}

/// A check at one evaluation time.
enum Check<'a> {
    Alert(&'a AlertTest),
    Expr(&'a ExprTest, promql_parser::parser::Expr),
    Breaker(&'a BreakerTest),
    Signal(&'a SignalTest),
}

fn at_ms(text: &str, eval_ms: i64) -> Result<i64, String> {
    let t = parse_duration(text)?.as_millis() as i64;
    if t % eval_ms != 0 {
        return Err(format!(
            "eval_time {text} is not a multiple of evaluation_interval"
        ));
    }
    Ok(t)
}

fn run_group(
    g: &TestGroup,
    rules: &[(String, file::RuleFile)],
    eval_ms: i64,
) -> Result<Vec<String>, String> {
    use crate::control::Control;
    let interval_ms = match &g.interval {
        Some(i) => parse_duration(i)?.as_millis() as i64,
        None => eval_ms,
    };
    if interval_ms == 0 || interval_ms % eval_ms != 0 {
        return Err("interval must be a multiple of evaluation_interval".into());
    }
    let mut series = Vec::new();
    for s in &g.input_series {
        series.push((series_labels(&s.series)?, expand_values(&s.values)?));
    }
    let mut checks: Vec<(i64, Check)> = Vec::new();
    for a in &g.alert_rule_test {
        checks.push((at_ms(&a.eval_time, eval_ms)?, Check::Alert(a)));
    }
    for e in &g.promql_expr_test {
        let parsed = promql::parse(&e.expr).map_err(|err| format!("expr {:?}: {err}", e.expr))?;
        checks.push((at_ms(&e.eval_time, eval_ms)?, Check::Expr(e, parsed)));
    }
    for b in &g.breaker_test {
        checks.push((at_ms(&b.eval_time, eval_ms)?, Check::Breaker(b)));
    }
    for s in &g.signal_test {
        checks.push((at_ms(&s.eval_time, eval_ms)?, Check::Signal(s)));
    }
    let end = checks.iter().map(|c| c.0).max().unwrap_or(0);
    let mut engine = Engine::new(EngineOptions {
        eval_interval_ms: eval_ms,
        max_series: 100_000,
        max_alerts: usize::MAX,
        max_retention_ms: i64::MAX / 4,
        state_dir: None,
        resend_ms: 60_000,
        generator_url: String::new(),
    });
    engine.load(rules.to_vec());
    let exprs: Vec<&promql_parser::parser::Expr> = checks
        .iter()
        .filter_map(|(_, c)| match c {
            Check::Expr(_, parsed) => Some(parsed),
            _ => None,
        })
        .collect();
    engine.keep_also(&exprs);
    // Breakers and signals run in a control layer of their own, on the test's clock; waits
    // have no jitter, so they are exact.
    let base = tokio::time::Instant::now();
    let clock = |t: i64| base + std::time::Duration::from_millis(t as u64);
    let mut control = Control::new(None, None);
    let specs = engine
        .breaker_specs()
        .into_iter()
        .map(|(n, mut s)| {
            s.jitter = 0.0;
            (n, s)
        })
        .collect();
    control.configure_breakers(specs, clock(0));
    let names = engine.signal_names();
    let from_exprs = engine.expr_signal_names();
    let mut failures = Vec::new();
    let mut t = 0;
    while t <= end {
        if t % interval_ms == 0 {
            let step = (t / interval_ms) as usize;
            let batch: Vec<(Labels, f64)> = series
                .iter()
                .filter_map(|(l, v)| v.get(step).copied().flatten().map(|v| (l.clone(), v)))
                .collect();
            engine.store.append(t, batch);
        }
        engine.evaluate(t);
        control.tick(clock(t));
        crate::rules::runtime::feed(
            &mut control,
            engine.take_control_inputs(),
            &engine.signals(),
            &names,
            &from_exprs,
            clock(t),
        );
        let snap = control.snapshot();
        for (_, check) in checks.iter().filter(|c| c.0 == t) {
            match check {
                Check::Alert(a) => {
                    if let Some(f) = check_alert(&engine, a) {
                        failures.push(f);
                    }
                }
                Check::Expr(e, parsed) => {
                    if let Some(f) = check_expr(&engine, e, parsed, t) {
                        failures.push(f);
                    }
                }
                Check::Breaker(b) => {
                    let Some(got) = snap.breakers.get(&b.breaker) else {
                        failures.push(format!(
                            "breaker: {}, time: {}: no breaker of that name in the rule files",
                            b.breaker, b.eval_time
                        ));
                        continue;
                    };
                    let ok = got.state == b.exp_state
                        && b.exp_admit_ratio
                            .is_none_or(|r| (r - got.admit_ratio).abs() < 1e-9)
                        && b.exp_inputs_unknown.is_none_or(|u| u == got.inputs_unknown);
                    if !ok {
                        let mut exp = format!("state: {}", b.exp_state.label());
                        if let Some(r) = b.exp_admit_ratio {
                            exp += &format!(", admit_ratio: {r}");
                        }
                        if let Some(u) = b.exp_inputs_unknown {
                            exp += &format!(", inputs_unknown: {u}");
                        }
                        let mut got_s = format!(
                            "state: {}, admit_ratio: {}, inputs_unknown: {}",
                            got.state.label(),
                            got.admit_ratio,
                            got.inputs_unknown
                        );
                        if let Some(r) = &got.unknown_reason {
                            got_s += &format!(" ({r})");
                        }
                        got_s += &format!(", reason: {}", got.reason);
                        failures.push(format!(
                            "breaker: {}, time: {},\n      exp: {exp}\n      got: {got_s}",
                            b.breaker, b.eval_time
                        ));
                    }
                }
                Check::Signal(s) => {
                    let got = snap.signals.get(&s.signal);
                    let ok = got.is_some_and(|v| {
                        (v.level - s.exp_level).abs() <= 0.005 + 1e-9
                            && s.exp_inputs_unknown.is_none_or(|u| u == v.inputs_unknown)
                    });
                    if !ok {
                        let mut exp = format!("level: {}", s.exp_level);
                        if let Some(u) = s.exp_inputs_unknown {
                            exp += &format!(", inputs_unknown: {u}");
                        }
                        let got_s = match got {
                            None => "no signal of that name (the rule files define or raise none)"
                                .to_string(),
                            Some(v) => {
                                let mut g = format!(
                                    "level: {}, inputs_unknown: {}",
                                    v.level, v.inputs_unknown
                                );
                                if let Some(r) = &v.unknown_reason {
                                    g += &format!(" ({r})");
                                }
                                g
                            }
                        };
                        failures.push(format!(
                            "signal: {}, time: {},\n      exp: {exp}\n      got: {got_s}",
                            s.signal, s.eval_time
                        ));
                    }
                }
            }
        }
        t += eval_ms;
    }
    Ok(failures)
}

/// A failure line for an alert test, or None when it holds.
fn check_alert(engine: &Engine, a: &AlertTest) -> Option<String> {
    let mut got: Got = engine
        .alerts()
        .into_iter()
        .filter(|x| x.state == State::Firing && x.labels["alertname"] == a.alertname)
        .map(|x| {
            let mut l = x.labels.clone();
            l.remove("alertname");
            (l, x.annotations.clone())
        })
        .collect();
    got.sort();
    let mut exp = a.exp_alerts.iter().collect::<Vec<_>>();
    exp.sort_by(|x, y| x.exp_labels.cmp(&y.exp_labels));
    let matched = got.len() == exp.len()
        && got.iter().zip(&exp).all(|(g, e)| {
            g.0 == e.exp_labels && e.exp_annotations.as_ref().is_none_or(|ann| *ann == g.1)
        });
    if matched {
        return None;
    }
    // Annotations are shown where the expectation gives them.
    let show_ann = exp.iter().any(|e| e.exp_annotations.is_some());
    let exp_s = exp
        .iter()
        .map(|e| fmt_alert(&e.exp_labels, e.exp_annotations.as_ref()))
        .collect();
    let got_s = got
        .iter()
        .map(|(l, ann)| fmt_alert(l, show_ann.then_some(ann)))
        .collect();
    Some(format!(
        "alertname: {}, time: {},\n      exp: {}\n      got: {}",
        a.alertname,
        a.eval_time,
        fmt_list(exp_s),
        fmt_list(got_s)
    ))
}

/// A failure line for a PromQL expression test, or None when it holds: the samples (labels
/// and values, to a relative 1e-9) equal the expected ones, in any order.
fn check_expr(
    engine: &Engine,
    e: &ExprTest,
    parsed: &promql_parser::parser::Expr,
    t: i64,
) -> Option<String> {
    let fmt = |labels: &Labels, v: f64| {
        let mut l = labels.clone();
        let name = l.remove("__name__").unwrap_or_default();
        let ls = if l.is_empty() {
            String::new()
        } else {
            fmt_labels(&l)
        };
        format!("{name}{ls} {v}")
    };
    let got: Result<Vec<(Labels, f64)>, String> = match eval::eval(parsed, &engine.store, t) {
        Ok(ev) => Ok(match ev.value {
            eval::Value::Scalar(v) => vec![(Labels::new(), v)],
            eval::Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.value)).collect(),
        }),
        Err(err) => Err(err.to_string()),
    };
    let exp: Result<Vec<(Labels, f64)>, String> = e
        .exp_samples
        .iter()
        .map(|s| {
            let l = if s.labels.trim().is_empty() {
                Labels::new()
            } else {
                series_labels(&s.labels)?
            };
            Ok((l, s.value))
        })
        .collect();
    let exp = match exp {
        Ok(x) => x,
        Err(err) => return Some(format!("expr: {:?}, time: {}: {err}", e.expr, e.eval_time)),
    };
    let close = |a: f64, b: f64| {
        a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
    };
    let mut got_sorted = got.clone().unwrap_or_default();
    got_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut exp_sorted = exp.clone();
    exp_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let matched = got.is_ok()
        && got_sorted.len() == exp_sorted.len()
        && got_sorted
            .iter()
            .zip(&exp_sorted)
            .all(|(g, x)| g.0 == x.0 && close(g.1, x.1));
    if matched {
        return None;
    }
    let got_s = match &got {
        Ok(_) => fmt_list(got_sorted.iter().map(|(l, v)| fmt(l, *v)).collect()),
        Err(err) => format!("error: {err}"),
    };
    Some(format!(
        "expr: {:?}, time: {},\n      exp: {}\n      got: {}",
        e.expr,
        e.eval_time,
        fmt_list(exp_sorted.iter().map(|(l, v)| fmt(l, *v)).collect()),
        got_s
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_notation() {
        let v = expand_values("1 _ 0+10x3 5-1x2 _x2 stale 7x1 -2+1x1").unwrap();
        let shown: Vec<String> = v
            .iter()
            .map(|x| match x {
                None => "_".into(),
                Some(f) if crate::store::is_stale(*f) => "stale".into(),
                Some(f) => f.to_string(),
            })
            .collect();
        assert_eq!(shown.join(" "), "1 _ 0 10 20 30 5 4 3 _ _ stale 7 7 -2 -1");
        assert!(expand_values("1+x").is_err());
        assert!(expand_values("abc").is_err());
    }
}

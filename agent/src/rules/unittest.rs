//! `steadfast test rules FILE...`: unit tests for rule files, in the spirit of
//! `promtool test rules`. A test file names rule files (relative to itself), synthetic input
//! series and the alerts expected to be *firing* at given times:
//!
//! ```yaml
//! rule_files: [host.yaml]
//! evaluation_interval: 1m        # default 1m
//! tests:
//!   - name: errors page
//!     interval: 1m               # spacing of input values, default evaluation_interval
//!     input_series:
//!       - series: 'steadfast_syscall_errors_total{service="db",syscall="read",errno="EIO"}'
//!         values: '0+60x30'      # a+bxn: n+1 values a, a+b, ...; '_' missing; 'stale'; '_xn'
//!     alert_rule_test:
//!       - eval_time: 20m
//!         alertname: ReadErrors
//!         exp_alerts:
//!           - exp_labels: {severity: page, service: db}
//!             exp_annotations: {summary: "..."}   # compared only when given
//! ```
//!
//! Time starts at 0; every group is evaluated at each multiple of the evaluation interval
//! (groups with a longer `interval` when due), with the same engine the daemon runs.
//! `exp_labels` are compared without `alertname`. Differences from promtool: no
//! `promql_expr_test`, no `external_labels`, and `interval` must be a multiple of
//! `evaluation_interval`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{
    alert::State,
    engine::{Engine, EngineOptions},
    file::{self, parse_duration},
};
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
        .and_then(|t| serde_yaml_ng::from_str(&t).map_err(|e| e.to_string()))
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

fn run_group(
    g: &TestGroup,
    rules: &[(String, file::RuleFile)],
    eval_ms: i64,
) -> Result<Vec<String>, String> {
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
    let mut checks: Vec<(i64, &AlertTest)> = Vec::new();
    for a in &g.alert_rule_test {
        let t = parse_duration(&a.eval_time)?.as_millis() as i64;
        if t % eval_ms != 0 {
            return Err(format!(
                "eval_time {} is not a multiple of evaluation_interval",
                a.eval_time
            ));
        }
        checks.push((t, a));
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
        for (_, a) in checks.iter().filter(|c| c.0 == t) {
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
            if !matched {
                failures.push(format!(
                    "alertname: {}, time: {}:\n      exp: {:?}\n      got: {:?}",
                    a.alertname,
                    a.eval_time,
                    exp.iter()
                        .map(|e| (&e.exp_labels, &e.exp_annotations))
                        .collect::<Vec<_>>(),
                    got
                ));
            }
        }
        t += eval_ms;
    }
    Ok(failures)
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

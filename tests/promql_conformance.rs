//! PromQL conformance with Prometheus itself: the same rule files and the same unit-test files
//! run through `steadfast test rules` and Debian's `promtool test rules` (Prometheus 2.42), and
//! both must pass; a wrong expectation must fail in both (so neither passes by not checking).
//! tests/rules/promql_test.yaml covers every function and aggregation the engine supports,
//! recording rules read by the same group and by another, `offset`, staleness (stale markers,
//! the 5 minute lookback, recorded series going stale with their input), empty and missing
//! series, NaN and infinities; tests/rules/leaks_test.yaml the shipped leak rules.
//!
//! Needs promtool (scripts/setup --test installs Debian's prometheus).

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use support::{
    promtool::{both, PROMTOOL},
    repo,
};

/// `text` with `from` replaced once (which must be there), written next to the original test
/// file's rule files, so that relative `rule_files` still resolve.
fn mutated(test_file: &Path, dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(test_file).unwrap();
    assert!(
        text.contains(from),
        "{from:?} not in {}",
        test_file.display()
    );
    let base = test_file.parent().unwrap();
    let rule_files = text.replacen(from, to, 1).replace(
        "rule_files: [",
        &format!("rule_files: [{}/", base.display()),
    );
    let out = dir.join("mutated_test.yaml");
    std::fs::write(&out, rule_files).unwrap();
    out
}

#[test]
fn promql_expressions_mean_the_same_in_steadfast_and_promtool() {
    let tests = repo("tests/rules/promql_test.yaml");
    let (ours, theirs, out) = both(&tests);
    assert!(ours && theirs, "{out}");
    let text = std::fs::read_to_string(&tests).unwrap();
    let exprs = text.matches("- expr:").count();
    assert!(exprs >= 30, "{exprs} expressions");
    // Every function and aggregation the engine supports is exercised.
    let rules = std::fs::read_to_string(repo("tests/rules/promql.yaml")).unwrap();
    let all = format!("{text}\n{rules}");
    let aggregations = [
        "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile",
    ];
    for f in steadfast::rules::spec::promql::FUNCS
        .iter()
        .chain(&aggregations)
    {
        assert!(
            all.contains(&format!("{f}(")) || all.contains(&format!("{f} by (")),
            "{f} is not covered by tests/rules/promql_test.yaml"
        );
    }
}

#[test]
fn wrong_expectations_fail_in_both() {
    let tests = repo("tests/rules/promql_test.yaml");
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        // a quantile a little off
        ("value: 9.6}", "value: 9.5}"),
        // a recorded series lingering after its input went stale (no stale marker written)
        (
            "      - expr: ends:copy\n        eval_time: 3m30s\n        exp_samples: []",
            "      - expr: ends:copy\n        eval_time: 3m30s\n        exp_samples:\n          - {labels: 'ends:copy{source=\"recorded\"}', value: 3}",
        ),
        // absent() without the selector's equality labels
        ("{labels: '{job=\"x\"}', value: 1}", "{value: 1}"),
        // the counter reset not seen by irate
        ("value: 0.08333333333333333}", "value: -0.5833333333333334}"),
    ] {
        let file = mutated(&tests, dir.path(), from, to);
        let (ours, theirs, out) = both(&file);
        assert!(!ours && !theirs, "both must fail with {to:?}:\n{out}");
    }
}

/// For promtool: a copy of `tests/rules/leaks_test.yaml` in `dir` whose rule file is a copy of
/// packaging/rules.d/leaks.yaml without its `signal:` keys (steadfast's own; Prometheus
/// refuses unknown keys), with `from` replaced by `to` in the tests.
fn leaks_for_promtool(dir: &Path, from: &str, to: &str) -> PathBuf {
    let rules = std::fs::read_to_string(repo("packaging/rules.d/leaks.yaml")).unwrap();
    let stripped: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with("signal:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        rules.lines().count() - stripped.lines().count(),
        3,
        "one signal per leak alert"
    );
    std::fs::write(dir.join("leaks.yaml"), stripped).unwrap();
    let tests = std::fs::read_to_string(repo("tests/rules/leaks_test.yaml")).unwrap();
    assert!(tests.contains(from));
    let tests = tests
        .replace("../../packaging/rules.d/leaks.yaml", "leaks.yaml")
        .replacen(from, to, 1);
    let file = dir.join("leaks_test.yaml");
    std::fs::write(&file, tests).unwrap();
    file
}

fn run(program: &str, file: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(["test", "rules"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The shipped leak rules (goroutines, resident memory, threads) mean the same in steadfast
/// and Prometheus: their unit tests pass in both, the signals they raise pass in steadfast,
/// and a wrong expectation (the steady service leaking) fails in both.
#[test]
fn shipped_leak_rules_mean_the_same_in_steadfast_and_promtool() {
    let steadfast = env!("CARGO_BIN_EXE_steadfast");
    for file in [
        "tests/rules/leaks_test.yaml",
        "tests/rules/leaks_signals_test.yaml",
    ] {
        let (ok, out) = run(steadfast, &repo(file));
        assert!(ok, "{file}:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(PROMTOOL, &leaks_for_promtool(dir.path(), "", ""));
    assert!(ok, "promtool:\n{out}");
    let wrong = (
        "          - exp_labels: {severity: ticket, service: api}\n            exp_annotations:\n              summary: \"api: goroutines keep growing (a goroutine leak)\"\n      - eval_time: 130m",
        "          - exp_labels: {severity: ticket, service: api}\n            exp_annotations:\n              summary: \"api: goroutines keep growing (a goroutine leak)\"\n          - exp_labels: {severity: ticket, service: db}\n            exp_annotations:\n              summary: \"db: goroutines keep growing (a goroutine leak)\"\n      - eval_time: 130m",
    );
    let (ok, out) = run(PROMTOOL, &leaks_for_promtool(dir.path(), wrong.0, wrong.1));
    assert!(!ok, "promtool must fail:\n{out}");
    let ours = dir.path().join("ours_test.yaml");
    let text = std::fs::read_to_string(repo("tests/rules/leaks_test.yaml"))
        .unwrap()
        .replace(
            "../../packaging/rules.d/leaks.yaml",
            &repo("packaging/rules.d/leaks.yaml").display().to_string(),
        )
        .replacen(wrong.0, wrong.1, 1);
    std::fs::write(&ours, text).unwrap();
    let (ok, out) = run(steadfast, &ours);
    assert!(!ok, "steadfast must fail:\n{out}");
}

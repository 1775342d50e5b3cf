//! `steadfast check rules` and `steadfast test rules` on files with known mistakes and known
//! outcomes (no root needed: nothing touches the kernel).

use std::{path::PathBuf, process::Command};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn steadfast(args: &[&str], files: &[PathBuf]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rules_lists_all_three_mistakes_with_line_and_column() {
    let f = repo("tests/rules/three_mistakes.yaml");
    let (code, _, err) = steadfast(&["check", "rules"], &[f]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("three_mistakes.yaml:"))
        .collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0]
            .ends_with("three_mistakes.yaml:6:15: expr: bad expression: unclosed left parenthesis"),
        "{err}"
    );
    assert!(
        lines[1].contains("three_mistakes.yaml:9:14: for: \"5 minutes\" is not a duration"),
        "{err}"
    );
    assert!(
        lines[2].contains("three_mistakes.yaml:12:9: rule: unknown field `severity`"),
        "{err}"
    );
}

#[test]
fn check_rules_accepts_the_packaged_rules_and_reports_every_file() {
    let good = repo("packaging/rules.d/host.yaml");
    let (code, out, err) = steadfast(&["check", "rules"], std::slice::from_ref(&good));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok (3 alerting rules, 2 SLOs, 1 breaker, 1 signal)"),
        "{out}"
    );
    // a good and a bad file: exit 1, the bad file's problems listed
    let bad = repo("tests/rules/three_mistakes.yaml");
    let (code, _, err) = steadfast(&["check", "rules"], &[good, bad]);
    assert_eq!(code, 1);
    assert!(err.contains("3 problem(s)"), "{err}");
    // a breaker without its expressions: every problem at the breaker's position
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.yaml");
    std::fs::write(&f, "groups:\n  - name: g\n    breakers:\n      - name: x\n").unwrap();
    let (code, _, err) = steadfast(&["check", "rules"], &[f]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "b.yaml:4:9: breaker: give `failure_ratio`, `slow_ratio` (or `latency`) or both"
        ),
        "{err}"
    );
    assert!(
        err.contains("b.yaml:4:9: breaker: `volume` is required"),
        "{err}"
    );
    // a directory stands for its rule files
    let (code, out, err) = steadfast(&["check", "rules"], &[repo("packaging/rules.d")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host.yaml: ok"), "{out}");
}

#[test]
fn test_rules_passes_and_fails_the_right_examples() {
    let (code, out, err) = steadfast(&["test", "rules"], &[repo("tests/rules/host_test.yaml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("PASS:").count(), 4, "{out}");
    let (code, out, _) = steadfast(&["test", "rules"], &[repo("tests/rules/failing_test.yaml")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED: expects firing too early"), "{out}");
    // Expected and got, as promtool prints them (not Rust debug output).
    assert!(
        out.contains("alertname: SyscallIOErrors, time: 3m,\n      exp: [\n        {service=\"db\", severity=\"ticket\", syscall=\"write\"}\n      ]\n      got: []"),
        "{out}"
    );
    assert!(!out.contains("Some("), "{out}");
}

/// `breaker_test`, `signal_test` and `promql_expr_test` cases run against the same engine and
/// breaker state machine as the agent; failing ones say what was expected and what came.
#[test]
fn test_rules_runs_breaker_and_signal_tests() {
    let (code, out, err) = steadfast(&["test", "rules"], &[repo("tests/rules/control_test.yaml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("PASS:").count(), 2, "{out}");
    let (code, out, _) = steadfast(
        &["test", "rules"],
        &[repo("tests/rules/control_failing_test.yaml")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("breaker: db-writes, time: 12s,\n      exp: state: shed, admit_ratio: 0\n      got: state: admit, admit_ratio: 1, inputs_unknown: false, reason: configured"),
        "{out}"
    );
    assert!(
        out.contains("signal: io-errors, time: 12s,\n      exp: level: 1\n      got: level: 0.5, inputs_unknown: false"),
        "{out}"
    );
}

#[test]
fn packaged_config_is_the_default() {
    let text = std::fs::read_to_string(repo("packaging/steadfast.yaml")).unwrap();
    let parsed = steadfast::config::Config::parse(&text, "steadfast.yaml").unwrap();
    assert_eq!(parsed, steadfast::config::Config::default());
}

#[test]
fn rules_and_alertmanager_config_is_validated() {
    use steadfast::config::{Config, ConfigError};
    let c = Config::parse(
        "rules:\n  directory: /tmp/r\n  evaluation_interval_ms: 5000\nalertmanager:\n  url: http://127.0.0.1:9093\n",
        "c.yaml",
    )
    .unwrap();
    assert_eq!(c.rules.evaluation_interval_ms, 5000);
    assert_eq!(c.alertmanager.url.as_deref(), Some("http://127.0.0.1:9093"));
    let bad = "rules:\n  evaluation_interval_ms: 0\n  max_series: 0\nalertmanager:\n  url: https://am\n  resend_interval_secs: 0\n";
    match Config::parse(bad, "c.yaml") {
        Err(ConfigError::Invalid { problems, .. }) => {
            let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
            assert_eq!(
                keys,
                [
                    "rules.evaluation_interval_ms",
                    "rules.max_series",
                    "alertmanager.url",
                    "alertmanager.resend_interval_secs"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let err = Config::parse("rules:\n  colour: red\n", "c.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown field `colour`") && err.contains("line 2"),
        "{err}"
    );
}

/// The rule files the documentation shows: every YAML code block holding `groups:` in the
/// README and docs/*.md, and every rule file of packaging/rules.d and packaging/examples
/// (whatever is added there).
fn documented_examples(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pages = vec![repo("README.md")];
    for e in std::fs::read_dir(repo("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    pages.sort();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut rest = text.as_str();
        let mut n = 0;
        while let Some(start) = rest.find("```yaml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("a closed code block");
            if body[..end].contains("groups:") {
                n += 1;
                let name = format!("{}-{n}.yaml", page.file_stem().unwrap().to_string_lossy());
                let file = dir.join(name);
                std::fs::write(&file, &body[..end]).unwrap();
                out.push(file);
            }
            rest = &body[end + 3..];
        }
    }
    let mut packaged: Vec<PathBuf> = ["packaging/rules.d", "packaging/examples"]
        .into_iter()
        .filter_map(|d| std::fs::read_dir(repo(d)).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .any(|l| l.starts_with("groups:"))
        })
        .collect();
    packaged.sort();
    out.extend(packaged);
    out
}

#[test]
fn every_documented_example_passes_check_rules_strict() {
    let dir = tempfile::tempdir().unwrap();
    let files = documented_examples(dir.path());
    let readme = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("README-"))
        .count();
    assert!(readme >= 1, "the README's rule example: {files:?}");
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("rules-")),
        "docs/rules.md's example: {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("packaging/rules.d/host.yaml")),
        "{files:?}"
    );
    // Each example on its own: they are independent (two may name the same SLO).
    for f in &files {
        let (code, out, err) = steadfast(&["check", "rules", "--strict"], std::slice::from_ref(f));
        assert_eq!(code, 0, "{f:?}:\n{out}\n{err}");
        assert!(!err.contains("warning"), "{f:?}: {err}");
        assert!(
            out.contains(&format!("{}: ok (", f.display())),
            "{f:?} not checked: {out}"
        );
    }
}

/// The README's breaker example as a new user wrote it (issue 17): `syscall="nanosleep"` for a
/// program calling glibc's nanosleep(). `--strict` refuses it with the suggestion; without
/// `--strict` it is a warning; the fixed example passes (the root test `tests/rules.rs` runs
/// both against a real workload).
#[test]
fn check_rules_strict_refuses_the_nanosleep_mistake_with_the_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let readme = documented_examples(dir.path())
        .into_iter()
        .find(|f| f.to_string_lossy().contains("README-"))
        .unwrap();
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(text.contains(r#"syscall="fsync""#), "{text}");
    let mistaken = dir.path().join("mistaken.yaml");
    std::fs::write(
        &mistaken,
        text.replace(r#"syscall="fsync""#, r#"syscall="nanosleep""#),
    )
    .unwrap();
    let (code, out, err) = steadfast(
        &["check", "rules", "--strict"],
        std::slice::from_ref(&mistaken),
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(r#"breaker db-writes slow_ratio: syscall="nanosleep": glibc's nanosleep(), usleep() and sleep() make the clock_nanosleep syscall; did you mean syscall="clock_nanosleep"?"#),
        "{err}"
    );
    assert!(out.contains("FAILED"), "{out}");
    let (code, _, err) = steadfast(&["check", "rules"], &[mistaken]);
    assert_eq!(code, 0, "warnings alone pass without --strict: {err}");
    assert!(err.contains("warning: breaker db-writes volume"), "{err}");

    let fixed = dir.path().join("fixed.yaml");
    std::fs::write(
        &fixed,
        text.replace(r#"syscall="fsync""#, r#"syscall="clock_nanosleep""#),
    )
    .unwrap();
    let (code, out, err) = steadfast(&["check", "rules", "--strict"], &[fixed]);
    assert_eq!(code, 0, "{out}\n{err}");
}

/// A mistyped bound, label and metric name, and a 250 ms group under the default 1 s tick:
/// every one said with its place and a suggestion; `--config` gives the tick.
#[test]
fn check_rules_knows_bounds_labels_names_and_the_tick() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.yaml");
    std::fs::write(
        &f,
        r#"groups:
  - name: fast
    interval: 250ms
    rules:
      - alert: SlowFsync
        expr: sum(rate(steadfast_syscall_duration_seconds_bucket{syscall="fsync",le="0.01"}[1m])) > 0
      - alert: Typos
        expr: sum(rate(steadfast_syscall_errors_total{sycall="fsync"}[1m])) + sum(rate(steadfast_syscal_slow_total[1m])) > 0
"#,
    )
    .unwrap();
    let (code, _, err) = steadfast(&["check", "rules", "--strict"], std::slice::from_ref(&f));
    assert_eq!(code, 1, "{err}");
    let file = f.display().to_string();
    for want in [
        format!("{file}:3:15: warning: group \"fast\": interval 250ms is finer than rules.evaluation_interval_ms (1000 ms)"),
        format!("{file}:6:15: warning: alert SlowFsync: le=\"0.01\" is not a bucket bound of steadfast_syscall_duration_seconds (the nearest are 0.0078125 and 0.015625)"),
        format!("{file}:8:15: warning: alert Typos: steadfast_syscall_errors_total has no label sycall (its labels: syscall, errno, service); did you mean syscall?"),
        format!("{file}:8:15: warning: alert Typos: this agent serves no metric named steadfast_syscal_slow_total; did you mean steadfast_syscall_slow_total?"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("4 warning(s): failed (--strict)"), "{err}");
    let config = dir.path().join("steadfast.yaml");
    std::fs::write(&config, "rules:\n  evaluation_interval_ms: 250\n").unwrap();
    let (_, _, err) = steadfast(
        &["check", "rules", "--config", config.to_str().unwrap()],
        &[f],
    );
    assert!(!err.contains("interval 250ms"), "{err}");
    assert!(err.contains("3 warning(s)"), "{err}");
}

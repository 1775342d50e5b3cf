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
        err.contains("b.yaml:4:9: breaker: give `failure_ratio`, `slow_ratio` or both"),
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
    assert!(out.contains("got: []"), "{out}");
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

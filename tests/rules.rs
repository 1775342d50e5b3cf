//! Root integration tests of the rule engine with the real agent: an SLO page alert driven by
//! a real workload reaches a real Alertmanager (Debian's `prometheus-alertmanager`) and
//! resolves when the workload stops; reloads (SIGHUP, POST /-/reload, directory watch) are
//! all or nothing; a restart keeps the error budget that was spent.

mod support;

use std::{
    io::{Read, Write},
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use support::{
    alertmanager::{is_active, Alertmanager},
    build_workload, unique_name, wait_for, Agent,
};

/// A POST on the agent's API socket (changes are refused on the TCP listener).
fn http_post(socket: &Path, path: &str) -> (String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_string(), body.to_string())
}

/// Rule file with an SLO: 99% of the service's nanosleep calls under 10 ms (judged at the
/// 8.4 ms bucket bound); windows scaled by 1/60 for the test (page: 60 s & 5 s, 360 s &
/// 30 s at 14.4 and 6).
fn slo_rules(slo: &str, service: &str, alert: &str) -> String {
    format!(
        r#"groups:
  - name: test-{slo}
    interval: 1s
    slos:
      - name: {slo}
        objective: 99
        period: 30d
        window_scale: 0.016666666666666666
        min_events: 5
        sli:
          latency:
            histogram: steadfast_syscall_duration_seconds{{syscall="nanosleep",service="{service}"}}
            threshold_seconds: 0.01
        alerting:
          name: {alert}
          annotations:
            summary: "nanosleep of {service} burns at {{{{ $value | humanize }}}}x"
        budget_policy:
          signal: freeze-{slo}
"#
    )
}

#[test]
fn slo_page_alert_reaches_alertmanager_and_resolves() {
    let am = Alertmanager::start();
    let rules = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let service = unique_name("sfslo");
    let alert = format!("NanosleepBurn{}", service.trim_start_matches("sfslo"));
    std::fs::write(
        rules.path().join("slo.yaml"),
        slo_rules(&format!("ns-{service}"), &service, &alert),
    )
    .unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  state_dir: {}\nalertmanager:\n  url: http://{}\n  resend_interval_secs: 2\n",
        rules.path().display(),
        state.path().display(),
        am.addr
    ));
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &service);
    // every call 20 ms: all over the 8.4 ms bound, burn rate 100
    let mut workload = KillOnDrop(
        Command::new(&bin)
            .args(["0", "100000", "20"])
            .spawn()
            .unwrap(),
    );

    // page and ticket alerts share the name; the page one has severity=page
    let a = wait_for(60, "the page alert in Alertmanager", || {
        let alerts = am.alerts();
        alerts
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == alert.as_str() && a["labels"]["severity"] == "page"
            })
            .cloned()
    });
    assert_eq!(a["labels"]["severity"], "page", "{a}");
    assert_eq!(a["labels"]["slo"], format!("ns-{service}"), "{a}");
    assert_eq!(a["status"]["state"], "active", "{a}");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("nanosleep of {service} burns at 100x")),
        "{a}"
    );
    let s = agent.scrape();
    let slo = format!("ns-{service}");
    // page, and ticket too (burn 100 is over every factor)
    assert_eq!(
        s.value(
            "steadfast_alerts",
            &[("alertname", &alert), ("state", "firing")]
        ),
        Some(2.0),
        "{}",
        s.0
    );
    let burn = s
        .value(
            "steadfast_slo_burn_rate",
            &[("slo", &slo), ("window", "5s")],
        )
        .unwrap();
    assert!((burn - 100.0).abs() < 1e-6, "5 s burn rate {burn}");
    assert!(
        s.value("steadfast_alertmanager_notifications_total", &[])
            .unwrap()
            >= 1.0
    );

    workload.0.kill().unwrap();
    workload.0.wait().unwrap();
    // The page alert resolves once both page short windows (5 s, 30 s) have seen no slow call;
    // the ticket alert's short windows (120 s, 360 s) keep it firing for a few minutes more.
    wait_for(90, "the page alert to resolve in Alertmanager", || {
        (!is_active(&am.alerts(), &alert, "page")).then_some(())
    });
    let s = agent.scrape();
    assert_eq!(
        s.value(
            "steadfast_alerts",
            &[("alertname", &alert), ("state", "firing")]
        ),
        Some(1.0),
        "only the ticket alert is still firing: {:#?}",
        am.alerts()
    );
    assert!(
        is_active(&am.alerts(), &alert, "ticket"),
        "{:#?}",
        am.alerts()
    );
    assert_eq!(
        s.value("steadfast_alertmanager_notifications_failed_total", &[]),
        Some(0.0)
    );
    support::promtool_check(&s);
}

/// A child process killed when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A rule file with `alert` and an unchanging `Keep` rule that needs 5 s pending to fire.
fn plain_rule(alert: &str, expr: &str) -> String {
    format!("groups:\n  - name: reload\n    interval: 1s\n    rules:\n      - alert: {alert}\n        expr: {expr}\n      - alert: Keep\n        expr: vector(1)\n        for: 5s\n")
}

fn firing(agent: &Agent, alert: &str) -> Option<f64> {
    agent.scrape().value(
        "steadfast_alerts",
        &[("alertname", alert), ("state", "firing")],
    )
}

#[test]
fn reloads_are_all_or_nothing() {
    let rules = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let file = rules.path().join("r.yaml");
    std::fs::write(&file, plain_rule("ReloadA", "vector(1) > 0")).unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  state_dir: {}\n",
        rules.path().display(),
        state.path().display()
    ));
    wait_for(10, "ReloadA firing", || {
        (firing(&agent, "ReloadA") == Some(1.0)).then_some(())
    });
    wait_for(15, "Keep firing", || {
        (firing(&agent, "Keep") == Some(1.0)).then_some(())
    });

    // a valid change, by SIGHUP: takes effect without a restart
    std::fs::write(&file, plain_rule("ReloadB", "vector(2) > 1")).unwrap();
    // SAFETY: kill with the pid of a child we own.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    wait_for(10, "ReloadB firing", || {
        (firing(&agent, "ReloadB") == Some(1.0)).then_some(())
    });
    let s = agent.scrape();
    assert_eq!(
        s.value("steadfast_alerts", &[("alertname", "ReloadA")]),
        None
    );
    // Keep did not change: it kept firing through the reload (a fresh rule would be pending
    // for 5 s)
    assert_eq!(
        s.value(
            "steadfast_alerts",
            &[("alertname", "Keep"), ("state", "firing")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value("steadfast_rules_last_reload_successful", &[]),
        Some(1.0)
    );

    // an invalid change: rejected with its position; ReloadB keeps firing and evaluating
    std::fs::write(&file, plain_rule("ReloadC", "vector(1) >")).unwrap();
    let (head, body) = http_post(&agent.api_socket(), "/-/reload");
    assert!(head.contains(" 400 "), "{head}");
    assert!(body.contains("r.yaml:6:15: expr: bad expression"), "{body}");
    let s = agent.scrape();
    assert_eq!(
        s.value("steadfast_rules_last_reload_successful", &[]),
        Some(0.0)
    );
    let evals = s
        .value("steadfast_rules_evaluation_duration_seconds_count", &[])
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let s = agent.scrape();
    assert!(
        s.value("steadfast_rules_evaluation_duration_seconds_count", &[])
            .unwrap()
            >= evals + 2.0
    );
    assert_eq!(firing(&agent, "ReloadB"), Some(1.0));
    assert_eq!(firing(&agent, "ReloadC"), None);
    assert!(agent.log().contains("rules rejected"), "{}", agent.log());

    // a valid change with no signal at all: the directory watch picks it up
    std::fs::write(&file, plain_rule("ReloadD", "vector(3) > 2")).unwrap();
    wait_for(10, "ReloadD firing (directory watch)", || {
        (firing(&agent, "ReloadD") == Some(1.0)).then_some(())
    });
    assert_eq!(
        agent
            .scrape()
            .value("steadfast_rules_last_reload_successful", &[]),
        Some(1.0)
    );

    // a symlink swap of the whole directory (parent watch)
    let v2 = tempfile::tempdir_in(rules.path().parent().unwrap()).unwrap();
    std::fs::write(
        v2.path().join("r.yaml"),
        plain_rule("ReloadE", "vector(4) > 3"),
    )
    .unwrap();
    let link = rules
        .path()
        .parent()
        .unwrap()
        .join(format!("{}-link", unique_name("sfl")));
    std::os::unix::fs::symlink(v2.path(), &link).unwrap();
    drop(agent);
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  state_dir: {}\n",
        link.display(),
        state.path().display()
    ));
    wait_for(10, "ReloadE firing", || {
        (firing(&agent, "ReloadE") == Some(1.0)).then_some(())
    });
    let tmp = link.with_extension("new");
    std::os::unix::fs::symlink(rules.path(), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap(); // atomic swap back to the first directory
    wait_for(10, "ReloadD firing after the symlink swap", || {
        (firing(&agent, "ReloadD") == Some(1.0)).then_some(())
    });
    let _ = std::fs::remove_file(&link);
}

#[test]
fn a_restart_keeps_the_spent_error_budget() {
    let rules = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let service = unique_name("sfbud");
    let slo = format!("budget-{service}");
    std::fs::write(
        rules.path().join("slo.yaml"),
        slo_rules(&slo, &service, "BudgetBurnTest"),
    )
    .unwrap();
    let config = format!(
        "rules:\n  directory: {}\n  state_dir: {}\n",
        rules.path().display(),
        state.path().display()
    );
    let agent = Agent::start(&config);
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &service);
    // A first run creates the service's series (rate never counts a series' first value);
    // then 300 fast calls and 100 slow (20 ms) ones: 25% errors against a 1% budget.
    assert!(Command::new(&bin)
        .args(["10", "0", "0"])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(Command::new(&bin)
        .args(["300", "100", "20"])
        .status()
        .unwrap()
        .success());
    let budget = |a: &Agent| {
        a.scrape().value(
            "steadfast_slo_error_budget_remaining_ratio",
            &[("slo", &slo)],
        )
    };
    // the budget integrates rate[1m]: wait until the whole minute has been accounted
    std::thread::sleep(Duration::from_secs(65));
    let spent = budget(&agent).unwrap();
    // 25% errors / 1% budget: 1 - 25 = -24 (the integral of rate[1m] extrapolates a little)
    assert!((spent + 24.0).abs() < 3.0, "remaining {spent}");
    let state_file = state.path().join("slo").join(format!("{slo}.json"));
    assert!(state_file.exists());
    assert!(agent.stop().success());

    let agent = Agent::start(&config);
    std::thread::sleep(Duration::from_secs(2));
    let restored = budget(&agent).unwrap();
    assert!(
        (restored - spent).abs() < 0.5,
        "after restart: {restored}, before: {spent}\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("error budget restored"),
        "{}",
        agent.log()
    );
}

//! The shipped leak rules through the real agent: a Go program that leaks goroutines at a
//! steady pace (tests/workloads/goroutine_leak.go, 100 a second) fires packaging/rules.d/
//! leaks.yaml's `GoroutineLeak` for its service, into a real Alertmanager, and raises the
//! `goroutine-leak` signal (its file under `control.signals_dir` reads 1); a Go program holding
//! a steady 1000 goroutines beside it raises nothing. The rules run with every window and wait
//! divided by 60 (an hour becomes a minute: the expressions are otherwise the shipped ones),
//! so the alert can fire only once 45 s of history and the 15 s `for` have passed.
//!
//! Needs root, Debian's golang-go and prometheus-alertmanager (scripts/setup --test).

mod support;

use std::time::{Duration, Instant};

use support::{
    alertmanager::Alertmanager, build_go, repo, unique_name, wait_for, wait_until, Agent,
    Interactive,
};

/// packaging/rules.d/leaks.yaml with every window, offset, projection and wait divided by 60.
fn leaks_scaled() -> String {
    let mut text = std::fs::read_to_string(repo("packaging/rules.d/leaks.yaml")).unwrap();
    for (from, to, n) in [
        ("interval: 1m", "interval: 1s", 1),
        ("[1h]", "[60s]", 2),
        ("[15m]", "[15s]", 15),
        ("offset 45m", "offset 45s", 6),
        ("4 * 3600", "4 * 60", 2),
        ("for: 15m", "for: 15s", 3),
    ] {
        assert_eq!(text.matches(from).count(), n, "{from} in leaks.yaml");
        text = text.replace(from, to);
    }
    text
}

#[test]
fn a_goroutine_leak_fires_the_shipped_alert_and_signal() {
    let am = Alertmanager::start();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("leaks.yaml"), leaks_scaled()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (leaker, steady) = (unique_name("sfleak"), unique_name("sfsteady"));
    let leak_bin = build_go("goroutine_leak", dir.path(), &leaker, &[]);
    let steady_bin = build_go("goroutines", dir.path(), &steady, &[]);
    let (leak_svc, steady_svc) = (format!("{leaker}-svc"), format!("{steady}-svc"));
    let agent = Agent::start(&format!(
        "targets:\n  - service: {leak_svc}\n    comm: {leaker}\n  - service: {steady_svc}\n    comm: {steady}\n\
         rules:\n  directory: {r}\n  state_dir: {r}/state\nalertmanager:\n  url: http://{am}\n  resend_interval_secs: 2\n",
        r = rules.path().display(),
        am = am.addr
    ));
    wait_until("the leak rules loaded", Duration::from_secs(10), || {
        agent
            .scrape()
            .value("steadfast_rules_alerting_rules", &[])
            .is_some_and(|n| n == 3.0)
    });
    let gauge = |svc: &str| {
        agent
            .scrape()
            .value("steadfast_go_goroutines", &[("service", svc)])
    };
    // The steady program: probes attached before it parks its 1000 goroutines.
    let mut held = Interactive::spawn(&steady_bin, &["1000", "wait"]);
    held.expect("started");
    wait_for(20, "the steady program's goroutine probes", || {
        agent
            .scrape()
            .value(
                "steadfast_uprobe_attachments",
                &[("probe", "goroutines"), ("scope", "process")],
            )
            .filter(|n| *n >= 1.0)
    });
    held.step();
    assert!(held.read_line().starts_with("ready "));
    // The leak: 10 goroutines every 100 ms.
    let mut leak = Interactive::spawn(&leak_bin, &["10", "100"]);
    assert!(leak.read_line().starts_with("leaking "));
    let started = Instant::now();
    let alerts = wait_for(180, "GoroutineLeak in Alertmanager", || {
        std::thread::sleep(Duration::from_millis(500));
        let alerts = am.alerts();
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "GoroutineLeak")
            .then_some(alerts)
    });
    let after = started.elapsed();
    leak.step();
    let total = leak.read_line();
    let (leaked, held_now) = (gauge(&leak_svc), gauge(&steady_svc));
    eprintln!(
        "GoroutineLeak after {after:?}; workload {total}, gauge {leaked:?}; steady gauge {held_now:?}"
    );
    let services: Vec<&str> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "GoroutineLeak")
        .map(|a| a["labels"]["service"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(services, [leak_svc.as_str()], "{alerts:#?}");
    let alert = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "GoroutineLeak")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "ticket");
    assert_eq!(
        alert["annotations"]["summary"],
        format!("{leak_svc}: goroutines keep growing (a goroutine leak)").as_str()
    );
    // Not before the windows could hold it: 45 s of history, then 15 s pending.
    assert!(after >= Duration::from_secs(55), "fired after {after:?}");
    // The steady program was seen all along, with its 1000 goroutines.
    assert!(held_now.is_some_and(|n| n >= 1000.0), "{held_now:?}");
    assert!(leaked.is_some_and(|n| n >= 4500.0), "{leaked:?}");
    // The signal: raised in the metric and in its file.
    let s = agent.scrape();
    assert_eq!(
        s.value("steadfast_signal_raised", &[("signal", "goroutine-leak")]),
        Some(1.0)
    );
    let file = agent.dir.path().join("signals/goroutine-leak");
    wait_until("the signal file at 1", Duration::from_secs(5), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.trim().parse::<f64>() == Ok(1.0))
    });
    assert_eq!(
        s.value(
            "steadfast_alerts",
            &[("alertname", "GoroutineLeak"), ("state", "firing")]
        ),
        Some(1.0)
    );
    leak.finish();
    held.step();
    assert_eq!(held.read_line(), "done 1");
}

//! The shipped HTTP rules, against ground truth:
//! - packaging/rules.d/http.yaml's unit tests pass in both `steadfast test rules` and
//!   Prometheus's own `promtool test rules` (so the rules mean in steadfast what they mean in
//!   Prometheus), and a wrong expectation fails in both;
//! - a real HTTP service answering 503s fires the shipped availability page alert through the
//!   real agent, and it reaches a real Alertmanager;
//! - the dependency breaker of packaging/examples/dependency-breaker.yaml, pointed at a real
//!   Python server, opens within a second of its own condition (half of at least 20 calls in
//!   10 s failed, by the client's own count) and closes through the probe ramp once the
//!   dependency answers again, with a client that obeys it.
//!
//! Needs root, python3, curl, promtool and prometheus-alertmanager (scripts/setup --test).

mod support;

use std::{
    collections::VecDeque,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use support::{
    alertmanager::{is_active, Alertmanager},
    http_server::{alias, start_server, Server},
    promtool::both,
    repo, request, unique_name, wait_for, wait_until, Agent, Endpoint,
};

#[test]
fn shipped_http_rules_mean_the_same_in_steadfast_and_promtool() {
    let tests = repo("tests/rules/http_test.yaml");
    let (ours, theirs, out) = both(&tests);
    assert!(ours && theirs, "{out}");
    // A wrong expectation (the page alert on the healthy service) fails in both.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&tests).unwrap();
    let wrong = text
        .replacen(
            "{severity: page, slo: http-availability, service: checkout}",
            "{severity: page, slo: http-availability, service: cart}",
            1,
        )
        .replace(
            "../../packaging/rules.d/http.yaml",
            &repo("packaging/rules.d/http.yaml").display().to_string(),
        );
    assert_ne!(wrong, text);
    let file = dir.path().join("wrong_test.yaml");
    std::fs::write(&file, wrong).unwrap();
    let (ours, theirs, out) = both(&file);
    assert!(!ours && !theirs, "both must fail:\n{out}");
}

/// tests/workloads/http_mix.py's server (`/ok` 200, `/fail` 503), its comm `name`.
fn python_server(dir: &Path, name: &str) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(alias(dir, "/usr/bin/python3", name));
    cmd.arg(repo("tests/workloads/http_mix.py"));
    start_server(cmd, dir)
}

/// One keep-alive HTTP/1.1 connection from this process.
struct Client {
    stream: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client { stream }
    }

    /// GET `path`; the status code (the server always sends a 64-byte body).
    fn get(&mut self, path: &str) -> u16 {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let mut body = [0u8; 64];
        self.stream.read_exact(&mut body).unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }
}

/// A real service answering 503s fires the shipped availability page alert (no scaling of
/// windows: a ratio of rates is the same over a minute of data as over an hour), and the
/// alert reaches a real Alertmanager; a healthy service beside it raises nothing.
#[test]
fn failing_service_fires_the_shipped_page_alert_into_alertmanager() {
    let am = Alertmanager::start();
    let rules = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("packaging/rules.d/http.yaml"),
        rules.path().join("http.yaml"),
    )
    .unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  state_dir: {}/state\nalertmanager:\n  url: http://{}\n  resend_interval_secs: 2\n",
        rules.path().display(),
        rules.path().display(),
        am.addr
    ));
    wait_until("the rules loaded", Duration::from_secs(10), || {
        agent
            .scrape()
            .value("steadfast_rules_alerting_rules", &[])
            .is_some_and(|n| n >= 5.0)
    });
    let dir = tempfile::tempdir().unwrap();
    let bad = unique_name("slobad");
    let good = unique_name("slogood");
    let bad_server = python_server(&dir.path().join("bad"), &bad);
    let good_server = python_server(&dir.path().join("good"), &good);
    // Steady traffic to both until the alert arrives (a counter's first sample is its
    // baseline, so a burst before the agent first saw the series would count for nothing):
    // every request to the bad service is answered 503 (burn rate 1000), none to the good
    // one. The rules need 100 requests in the long window.
    let (mut b, mut g) = (
        Client::connect(bad_server.port),
        Client::connect(good_server.port),
    );
    let mut sent = 0;
    let a = wait_for(90, "the page alert in Alertmanager", || {
        for _ in 0..10 {
            assert_eq!(b.get("/fail"), 503);
            assert_eq!(g.get("/ok"), 200);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
        let alerts = am.alerts();
        is_active(&alerts, "HttpAvailabilityBudgetBurn", "page").then_some(alerts)
    });
    eprintln!("the page alert arrived after {sent} requests to each service");
    assert!(
        sent >= 100,
        "not before the 100 requests the rules need: {sent}"
    );
    let services: Vec<_> = a
        .iter()
        .filter(|a| a["labels"]["alertname"] == "HttpAvailabilityBudgetBurn")
        .map(|a| {
            (
                a["labels"]["service"].as_str().unwrap_or("").to_string(),
                a["labels"]["severity"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(services.contains(&(bad.clone(), "page".into())), "{a:#?}");
    assert!(
        !services.iter().any(|(s, _)| *s == good),
        "the healthy service raised nothing: {a:#?}"
    );
    let alert = a
        .iter()
        .find(|x| x["labels"]["service"] == bad.as_str() && x["labels"]["severity"] == "page")
        .unwrap();
    assert_eq!(alert["labels"]["slo"], "http-availability");
    assert_eq!(
        alert["annotations"]["summary"],
        format!("{bad}: 5xx answers burn the 30d error budget of 99.9% availability")
    );
}

/// What the breaker said, and when.
type Seen = Arc<Mutex<Vec<(Instant, String, f64)>>>;

/// Follows `user-service` through the API's blocking reads, recording every state.
fn watch_breaker(api: Endpoint, stop: Arc<Mutex<bool>>) -> (Seen, std::thread::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let handle = std::thread::spawn(move || {
        let mut index = 0;
        while !*stop.lock().unwrap() {
            let Ok((200, body)) = request(
                &api,
                "GET",
                &format!("/v1/breakers?index={index}&wait=1s"),
                b"",
            ) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            index = v["index"].as_u64().unwrap_or(0);
            let b = &v["breakers"]["user-service"];
            let state = b["state"].as_str().unwrap_or("absent").to_string();
            let admit = b["admit_ratio"].as_f64().unwrap_or(f64::NAN);
            let mut s = out.lock().unwrap();
            if s.last()
                .is_none_or(|(_, st, a)| *st != state || *a != admit)
            {
                s.push((Instant::now(), state, admit));
            }
        }
    });
    (seen, handle)
}

fn current(seen: &Seen) -> (String, f64) {
    seen.lock()
        .unwrap()
        .last()
        .map(|(_, s, a)| (s.clone(), *a))
        .unwrap_or(("absent".into(), f64::NAN))
}

#[test]
fn dependency_breaker_opens_within_a_second_of_its_condition_and_closes_through_the_ramp() {
    let dir = tempfile::tempdir().unwrap();
    let server = python_server(dir.path(), &unique_name("usersvc"));
    let peer = format!("127.0.0.1:{}", server.port);
    let rules = dir.path().join("rules.d");
    std::fs::create_dir(&rules).unwrap();
    let shipped =
        std::fs::read_to_string(repo("packaging/examples/dependency-breaker.yaml")).unwrap();
    assert_eq!(
        shipped.matches("127.0.0.1:8081").count(),
        7,
        "the example's peer"
    );
    std::fs::write(
        rules.join("dependency.yaml"),
        shipped.replace("127.0.0.1:8081", &peer),
    )
    .unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  evaluation_interval_ms: 200\n  state_dir: {}/state\n",
        rules.display(),
        dir.path().display()
    ));
    wait_until("the breaker loaded", Duration::from_secs(10), || {
        agent.scrape().value("steadfast_rules_breakers", &[]) == Some(1.0)
    });
    let stop = Arc::new(Mutex::new(false));
    let (seen, watcher) = watch_breaker(Endpoint::Unix(agent.api_socket()), stop.clone());
    wait_until("the breaker's first state", Duration::from_secs(10), || {
        current(&seen).0 == "admit"
    });

    // The client: 40 calls a second while the breaker admits them (a share of them while it
    // probes, none while it sheds), recording each call's time and whether it failed.
    let mut client = Client::connect(server.port);
    let mut calls: VecDeque<(Instant, bool)> = VecDeque::new();
    let mut condition_at: Option<Instant> = None;
    let call = |client: &mut Client, path: &str, calls: &mut VecDeque<(Instant, bool)>| {
        let failed = client.get(path) >= 500;
        let now = Instant::now();
        calls.push_back((now, failed));
        while calls
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            calls.pop_front();
        }
    };
    let pace = Duration::from_millis(25);

    // Healthy: 3 s of calls, the breaker stays closed.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        call(&mut client, "/ok", &mut calls);
        std::thread::sleep(pace);
    }
    assert_eq!(current(&seen).0, "admit");

    // The dependency fails: every answer is a 503. The condition is the breaker's own,
    // counted by the client: at least 20 calls in the last 10 s, at least half failed.
    let failing_from = Instant::now();
    while current(&seen).0 == "admit" {
        assert!(
            failing_from.elapsed() < Duration::from_secs(20),
            "the breaker never opened; calls in window: {}; log:\n{}",
            calls.len(),
            agent.log()
        );
        call(&mut client, "/fail", &mut calls);
        let failed = calls.iter().filter(|(_, f)| *f).count();
        if condition_at.is_none() && calls.len() >= 20 && failed * 2 >= calls.len() {
            condition_at = Some(Instant::now());
        }
        std::thread::sleep(pace);
    }
    let opened_at = seen.lock().unwrap().last().unwrap().0;
    // The breaker reads sampled counters through `increase()` (extrapolated to the window,
    // like Prometheus), so it may open a little before the client's exact count says so,
    // never on a window that was far from its threshold: at most a second early, and at most
    // a second late.
    let failed = calls.iter().filter(|(_, f)| *f).count();
    let ratio_at_open = failed as f64 / calls.len() as f64;
    eprintln!(
        "failures began; the client's own condition held after {:?}; the breaker opened after \
         {:.3} s, its window then {failed} failed of {} ({ratio_at_open:.2})",
        condition_at.map(|c| c.duration_since(failing_from)),
        opened_at.duration_since(failing_from).as_secs_f64(),
        calls.len()
    );
    match condition_at {
        Some(c) => {
            let lag = opened_at.saturating_duration_since(c);
            assert!(
                lag <= Duration::from_secs(1),
                "opened {lag:?} after its condition"
            );
        }
        None => {
            // Early: the window must come to its condition within the next second of calls
            // at this pace (40 a second).
            let total = calls.len() as f64;
            let needed = (total - 2.0 * failed as f64).max(0.0);
            assert!(
                needed <= 40.0,
                "opened early, {needed} failed calls before its condition ({failed} of {total})"
            );
        }
    }
    assert_eq!(current(&seen).0, "shed");

    // The dependency recovers; the client obeys the breaker: no calls while it sheds, the
    // admitted share while it probes. It closes through the ramp.
    let recovering = Instant::now();
    let mut credit = 0.0;
    loop {
        let (state, admit) = current(&seen);
        if state == "admit" {
            break;
        }
        assert!(
            recovering.elapsed() < Duration::from_secs(120),
            "the breaker did not close: {:?}\n{}",
            seen.lock().unwrap(),
            agent.log()
        );
        if state == "probe" {
            credit += admit;
            if credit >= 1.0 {
                credit -= 1.0;
                call(&mut client, "/ok", &mut calls);
            }
        }
        std::thread::sleep(pace);
    }
    let states: Vec<(String, f64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s, a)| (s.clone(), *a))
        .collect();
    // Through every step of the ramp in order, then closed.
    let ramp: Vec<f64> = states
        .iter()
        .filter(|(s, _)| s == "probe")
        .map(|(_, a)| *a)
        .collect();
    assert!(
        ramp.ends_with(&[0.1, 0.25, 0.5, 1.0]),
        "the probe ramp: {states:?}"
    );
    assert_eq!(states.last().unwrap().0, "admit");
    let s = agent.scrape();
    assert!(
        s.sum(
            "steadfast_http_client_request_duration_seconds_count",
            &[("peer", peer.as_str()), ("status_code", "503")]
        ) >= 20.0,
        "the failures were seen by the kernel probe"
    );

    // The dependency goes away: its connections are refused (TCP level, no HTTP answer at
    // all), and that opens the breaker again. Fresh connections, 40 a second.
    drop(client);
    drop(server);
    let gone = Instant::now();
    let mut refused = 0;
    while current(&seen).0 == "admit" {
        assert!(
            gone.elapsed() < Duration::from_secs(20),
            "refused connections did not open the breaker ({refused} refused)\n{}",
            agent.log()
        );
        let e = TcpStream::connect(peer.as_str()).expect_err("the dependency is gone");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        refused += 1;
        std::thread::sleep(pace);
    }
    eprintln!(
        "refused connections opened the breaker after {:.2} s ({refused} refused)",
        gone.elapsed().as_secs_f64()
    );
    *stop.lock().unwrap() = true;
    watcher.join().unwrap();
    assert!(
        agent.scrape().sum(
            "steadfast_tcp_connections_total",
            &[("peer", peer.as_str()), ("outcome", "refused")]
        ) >= 20.0
    );
}

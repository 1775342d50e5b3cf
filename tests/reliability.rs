//! Reliability: process churn, many live processes, API abuse, and crash safety of persisted
//! state. Needs root.

mod support;

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use support::{build_workload, request, unique_name, wait_until, Agent, Endpoint, Interactive};

use support::vm_rss_kib as agent_rss_kib;

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The tests of this file run one at a time: two of them time the agent's answers under a
/// load they make (process churn; 1,100 connections), and another test's agent and load on
/// this 2-core machine would be in those timings. Serially the file takes 15-16 s, against
/// 12-14 s in parallel.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed holding it poisons it; the others still run.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// 10,000 short-lived processes and 1,000 live ones: the agent keeps answering (the signal
/// API always within 100 ms; /metrics, which reads every kernel map first, within 100 ms at
/// the 95th percentile while ~2,000 processes start and end per second), forgets exited
/// processes, and its memory stays bounded.
#[test]
fn process_churn_and_many_live_processes() {
    let _one = one_at_a_time();
    let agent = Agent::start("");
    let dir = agent.dir.path();
    let churn = build_workload("spawn_churn", dir, &unique_name("sfch"));
    let sleepers = build_workload("sleepers", dir, &unique_name("sfsl"));
    let api = Endpoint::Unix(agent.api_socket());
    let tracked = |a: &Agent| {
        a.scrape()
            .value("steadfast_tracked_processes", &[])
            .unwrap()
    };
    let before = tracked(&agent);

    let quiet = support::quiet();
    let mut live = Interactive::spawn(&sleepers, &["1000"]);
    live.expect("ready");
    let mut child = std::process::Command::new(&churn)
        .args(["10000", "4"])
        .spawn()
        .unwrap();
    let (mut metrics, mut signals) = (Vec::new(), Vec::new());
    while child.try_wait().unwrap().is_none() {
        metrics.push(timed(|| {
            agent.scrape();
        }));
        signals.push(timed(|| {
            assert_eq!(request(&api, "GET", "/v1/signals", b"").unwrap().0, 200);
        }));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    drop(quiet);
    let (m95, s_max) = (
        percentile(metrics.clone(), 0.95),
        percentile(signals.clone(), 1.0),
    );
    eprintln!(
        "churn: {} samples; /metrics p50 {:?} p95 {:?} max {:?}; /v1/signals p50 {:?} max {:?}",
        metrics.len(),
        percentile(metrics.clone(), 0.5),
        m95,
        percentile(metrics, 1.0),
        percentile(signals, 0.5),
        s_max
    );
    assert!(m95 < Duration::from_millis(100), "/metrics p95 {m95:?}");
    assert!(
        s_max < Duration::from_millis(100),
        "/v1/signals max {s_max:?}"
    );

    // The 1,000 sleepers are live processes the agent knows; the 10,000 are gone.
    let with_live = tracked(&agent);
    assert!(
        with_live >= before + 900.0,
        "tracked {with_live}, before {before}"
    );
    let rss = agent_rss_kib(agent.pid());
    assert!(rss < 96 * 1024, "agent RSS {rss} KiB");
    live.finish();
    // Exited processes are forgotten within a few collections.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = tracked(&agent);
        if now <= before + 100.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still tracking {now} (before {before})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // One name for 10,000 processes: the series stay per service, not per process.
    let series = agent
        .scrape()
        .0
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(series < 50_000, "{series} series");
}

/// 1,000 concurrent blocking queries plus 100 silent connections: every query is answered,
/// other clients are answered quickly meanwhile, and the agent's descriptors come back down.
#[test]
fn many_blocking_queries_and_slow_clients() {
    let _one = one_at_a_time();
    raise_own_nofile();
    let agent = Agent::start("");
    let sock = agent.api_socket();
    let api = Endpoint::Unix(sock.clone());
    let (_, body) = request(&api, "GET", "/v1/snapshot", b"").unwrap();
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    let index = index["index"].as_u64().unwrap() + 1_000_000;

    let silent: Vec<_> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
        .collect();
    let mut waiting = Vec::new();
    for _ in 0..1000 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        write!(
            s,
            "GET /v1/signals?index={index}&wait=3s HTTP/1.0\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        waiting.push(s);
    }
    // Meanwhile, other clients are served at once.
    let quiet = support::quiet();
    for _ in 0..10 {
        let d = timed(|| assert_eq!(request(&api, "GET", "/v1/breakers", b"").unwrap().0, 200));
        assert!(
            d < Duration::from_millis(100),
            "served in {d:?} under 1,100 open connections"
        );
        let d = timed(|| {
            agent.scrape();
        });
        assert!(d < Duration::from_millis(200), "/metrics in {d:?}");
    }
    drop(quiet);
    let open_fds = agent
        .scrape()
        .value("steadfast_agent_open_fds", &[])
        .unwrap();
    assert!(
        open_fds >= 1000.0,
        "the agent holds the connections: {open_fds}"
    );
    for mut s in waiting {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    }
    drop(silent);
    // Released within the 500 ms a fixed wait allowed, no longer (polled every 100 ms until
    // 400 ms have passed: the last look is at most 500 ms after the drop).
    wait_until(
        "descriptors released (under 200 open)",
        Duration::from_millis(400),
        || {
            agent
                .scrape()
                .value("steadfast_agent_open_fds", &[])
                .unwrap()
                < 200.0
        },
    );
}

fn raise_own_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

/// A reload storm: 100 SIGHUPs within a second. The agent keeps running and answering, the
/// rules stay loaded, and the reload metric says the last load succeeded.
#[test]
fn a_reload_storm_keeps_the_agent_and_its_rules() {
    let _one = one_at_a_time();
    let agent = Agent::start("");
    // A rule file in the agent's own rules directory (support points rules.directory there).
    let rules_dir = agent.dir.path().join("rules.d");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("r.yaml"),
        "groups:\n  - name: storm\n    rules:\n      - alert: Always\n        expr: vector(1)\n",
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let loaded = |a: &Agent| {
        a.scrape()
            .value("steadfast_rules_alerting_rules", &[])
            .unwrap_or(-1.0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while loaded(&agent) != 1.0 {
        assert!(
            Instant::now() < deadline,
            "rules not loaded: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    for _ in 0..100 {
        agent.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(9));
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    // A fixed time for the storm's reloads to run out: they coalesce, so how many there will
    // be is not known, and the check is that the agent comes out of them in this state.
    std::thread::sleep(Duration::from_millis(800));
    let s = agent.scrape();
    assert_eq!(s.value("steadfast_rules_alerting_rules", &[]), Some(1.0));
    assert_eq!(
        s.value("steadfast_rules_last_reload_successful", &[]),
        Some(1.0)
    );
    let api = Endpoint::Unix(agent.api_socket());
    assert_eq!(request(&api, "GET", "/v1/signals", b"").unwrap().0, 200);
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}

/// The agent's allocator runs with the options that keep its memory low (one arena, freed
/// pages returned after a second, in the background): jemalloc confirms each one it set.
#[test]
fn the_allocator_runs_with_the_agents_options() {
    let _one = one_at_a_time();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "confirm_conf:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    for option in [
        "background_thread:true",
        "narenas:1",
        "dirty_decay_ms:1000",
        "muzzy_decay_ms:0",
    ] {
        assert!(
            said.contains(&format!("-- Set conf value: {option}")),
            "jemalloc did not set {option}:\n{said}"
        );
    }
}

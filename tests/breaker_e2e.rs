//! End to end: a workload's nanosleep latency rises past a breaker's slow-ratio threshold in
//! the kernel; the breaker (from a rule file) goes to Shed and a client blocked on the API sees
//! it within a second of the condition becoming true; when the workload recovers, the breaker
//! goes through Probe back to Admit. Needs root.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::{build_workload, request, unique_name, wait_until, Agent, Endpoint};

fn rules(service: &str) -> String {
    let sel = format!("service=\"{service}\",syscall=\"nanosleep\"");
    format!(
        r#"groups:
  - name: e2e
    interval: 200ms
    breakers:
      - name: sleeper
        # Share of calls slower than 15.6 ms over the last 2 s, and how many calls there were.
        slow_ratio: 1 - sum(increase(steadfast_syscall_duration_seconds_bucket{{{sel},le="0.015625"}}[2s])) / sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[2s]))
        volume: sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[2s]))
        min_volume: 2
        open_slow_ratio: 0.5
        close_slow_ratio: 0.2
        wait_base: 1s
        jitter: 0
        ramp: [0.5, 1]
        step: 500ms
        probe_timeout: 10s
"#
    )
}

fn breaker(api: &Endpoint, index: u64, wait: &str) -> (u64, String) {
    let (status, body) = request(
        api,
        "GET",
        &format!("/v1/breakers?index={index}&wait={wait}"),
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let state = v["breakers"]["sleeper"]["state"]
        .as_str()
        .unwrap_or("absent")
        .to_string();
    (v["index"].as_u64().unwrap(), state)
}

#[test]
fn kernel_latency_opens_the_breaker_within_a_second_and_it_recovers_through_probe() {
    let name = unique_name("sfbk");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    std::fs::write(dir.path().join("rules.d/e2e.yaml"), rules(&name)).unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  evaluation_interval_ms: 200\n  state_dir: {}\n",
        dir.path().join("rules.d").display(),
        dir.path().join("state").display()
    ));
    let api = Endpoint::Unix(agent.api_socket());
    // The loaded rules, by kind, as the agent counts them.
    wait_until("the rules loaded", Duration::from_secs(10), || {
        agent.scrape().value("steadfast_rules_breakers", &[]) == Some(1.0)
    });
    let s = agent.scrape();
    assert_eq!(s.value("steadfast_rules_signals", &[]), Some(0.0));
    assert_eq!(s.value("steadfast_rules_alerting_rules", &[]), Some(0.0));
    let bin = build_workload("nanosleep_phases", agent.dir.path(), &name);
    let mut w = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = w.stdin.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(w.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines() {
            let l = l.unwrap();
            let _ = tx.send((Instant::now(), l));
        }
    });
    let say = |stdin: &mut std::process::ChildStdin, cmd: &str| {
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        loop {
            let (_, l) = lines
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("workload after {cmd:?}: {e}"));
            // A "cond" from the previous phase may still be in flight.
            if l == "ok" {
                break;
            }
        }
    };

    // Healthy traffic first: the breaker admits. Then a quiet spell empties the 2 s window,
    // so the slow-ratio condition becomes true at a known moment: when the second slow call
    // (min_volume 2) completes in the kernel, which the workload reports as "cond". Fixed
    // times: workload phases of known length (the breaker admitting through 1.5 s of healthy
    // traffic, a quiet spell longer than the 2 s window).
    say(&mut stdin, "fast");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, state) = breaker(&api, 0, "0s");
    assert_eq!(state, "admit", "{}", agent.log());
    say(&mut stdin, "idle");
    std::thread::sleep(Duration::from_millis(2600));
    let (index, state) = breaker(&api, 0, "0s");
    assert_eq!(
        state,
        "admit",
        "too little traffic holds the state: {}",
        agent.log()
    );

    // A client blocks on the next change while the latency steps up in the kernel.
    let api2 = api.clone();
    let client = std::thread::spawn(move || {
        let mut index = index;
        loop {
            let (i, state) = breaker(&api2, index, "20s");
            if state == "shed" || i == index {
                return (Instant::now(), state);
            }
            index = i;
        }
    });
    writeln!(stdin, "slow 30").unwrap();
    stdin.flush().unwrap();
    let (_, l) = lines.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(l, "ok");
    let (cond_at, l) = lines.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(l, "cond", "two slow calls completed");
    let (seen_at, state) = client.join().unwrap();
    assert_eq!(state, "shed", "{}", agent.log());
    let latency = seen_at.saturating_duration_since(cond_at);
    eprintln!("decision latency: {latency:?} (condition true in the kernel -> client sees Shed)");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    // The file and the metric agree.
    let file = std::fs::read_to_string(agent.dir.path().join("signals/sleeper")).unwrap();
    assert_eq!(
        file.trim(),
        "1",
        "a shedding breaker's file says shed everything"
    );

    // Recovery: fast calls again. The breaker waits 1 s, probes at half traffic, then admits.
    say(&mut stdin, "fast");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = vec!["shed".to_string()];
    let (mut index, _) = breaker(&api, 0, "0s");
    while seen.last().map(String::as_str) != Some("admit") {
        assert!(
            Instant::now() < deadline,
            "states seen: {seen:?}\n{}",
            agent.log()
        );
        let (i, state) = breaker(&api, index, "5s");
        index = i;
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    assert_eq!(seen, ["shed", "probe", "admit"], "{}", agent.log());
    let s = agent.scrape();
    assert_eq!(
        s.value(
            "steadfast_breaker_transitions_total",
            &[("breaker", "sleeper"), ("to", "shed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value("steadfast_breaker_state", &[("breaker", "sleeper")]),
        Some(0.0)
    );
    writeln!(stdin, "quit").unwrap();
    assert!(w.wait().unwrap().success());
}

/// Overrides on a real breaker survive `kill -9` at any moment: after each kill the state
/// file parses (old or new version, never torn), the agent starts, and a force it had
/// acknowledged is back.
#[test]
fn kill_nine_keeps_overrides_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    std::fs::write(dir.path().join("rules.d/b.yaml"), rules("nobody-here")).unwrap();
    let state = dir.path().join("state");
    let overrides = state.join("overrides.json");
    let config = format!(
        "rules:\n  directory: {}\n  state_dir: {}\ncontrol:\n  api_socket: @AGENT_DIR@/api.sock\n  signals_dir: null\n  state_dir: {}\n",
        dir.path().join("rules.d").display(),
        state.display(),
        state.display()
    );
    for round in 0..6 {
        if let Ok(bytes) = std::fs::read(&overrides) {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("round {round}: torn state file: {e}"));
        }
        let agent = Agent::start(&config);
        let api = Endpoint::Unix(agent.api_socket());
        // The force acknowledged in the previous round is restored.
        if round > 0 {
            let (_, body) = request(&api, "GET", "/v1/breakers", b"").unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let want = if round % 2 == 1 { "open" } else { "close" };
            assert_eq!(
                v["breakers"]["sleeper"]["forced"], want,
                "round {round}: {body}"
            );
        }
        // Hammer the state file from another thread and kill the agent mid-write.
        let sock = agent.api_socket();
        let hammer = std::thread::spawn(move || {
            let api = Endpoint::Unix(sock);
            for i in 0..200 {
                let action = if i % 2 == 0 {
                    "force-open"
                } else {
                    "force-close"
                };
                if request(&api, "POST", &format!("/v1/breakers/sleeper/{action}"), b"").is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(30 + 20 * round));
        agent.signal(libc::SIGKILL);
        let _ = hammer.join();
        drop(agent);
        // Leave a known force for the next round to find.
        let agent = Agent::start(&config);
        let api = Endpoint::Unix(agent.api_socket());
        let action = if round % 2 == 0 {
            "force-open"
        } else {
            "force-close"
        };
        let (status, body) =
            request(&api, "POST", &format!("/v1/breakers/sleeper/{action}"), b"").unwrap();
        assert_eq!(status, 200, "{body}");
        agent.signal(libc::SIGKILL);
        drop(agent);
    }
}

/// A breaker (and a signal) whose selectors match no series shows `inputs_unknown` with the
/// reason in the API, `steadfast_breaker_inputs_present` 0, bit 0 of its state-page flags
/// set, and one log line, within one evaluation interval; a breaker and a signal on series
/// that exist show known inputs. The unknown breaker keeps its decision (Admit).
#[test]
fn a_breaker_without_matching_series_shows_unknown_within_one_interval() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    // `ghost` reads a syscall of a service that does not exist; `here` and `present` read
    // the agent's own build info, which always exists.
    let ghost =
        r#"steadfast_syscall_duration_seconds_count{service="nobody-here",syscall="fsync"}"#;
    std::fs::write(
        dir.path().join("rules.d/u.yaml"),
        format!(
            r#"groups:
  - name: u
    breakers:
      - name: ghost
        failure_ratio: sum(rate({ghost}[10s])) * 0
        volume: sum(increase({ghost}[10s]))
      - name: here
        failure_ratio: count(steadfast_build_info) * 0
        volume: count(steadfast_build_info) * 100
    signals:
      - name: ghost-pressure
        expr: sum(rate({ghost}[10s]))
        scaling: 1
        saturation: 2
      - name: present-pressure
        expr: count(steadfast_build_info)
        scaling: 0
        saturation: 2
"#
        ),
    )
    .unwrap();
    let interval = Duration::from_millis(1000);
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  evaluation_interval_ms: {}\n  state_dir: {}\n",
        dir.path().join("rules.d").display(),
        interval.as_millis(),
        dir.path().join("state").display()
    ));
    let api = Endpoint::Unix(agent.api_socket());
    let started = Instant::now();
    let get = |path: &str| -> serde_json::Value {
        let (status, body) = request(&api, "GET", path, b"").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    // The agent answers on its socket once the rules are loaded; from then on, the first
    // evaluation must say why `ghost` is unknown within one interval.
    let mut index = 0;
    let seen = loop {
        let v = get(&format!("/v1/breakers?index={index}&wait=2s"));
        index = v["index"].as_u64().unwrap();
        let reason = v["breakers"]["ghost"]["unknown_reason"]
            .as_str()
            .unwrap_or("");
        if reason.starts_with("volume: no series matched") {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{v}\n{}",
            agent.log()
        );
    };
    let took = seen - started;
    eprintln!("unknown shown {took:?} after the agent answered (interval {interval:?})");
    assert!(took <= interval, "took {took:?}");
    let v = get("/v1/breakers/ghost");
    assert_eq!(v["breaker"]["inputs_unknown"], true, "{v}");
    assert_eq!(v["breaker"]["state"], "admit", "the decision is held: {v}");
    let v = get("/v1/breakers");
    assert_eq!(v["breakers"]["here"]["inputs_unknown"], false, "{v}");
    assert_eq!(
        v["breakers"]["here"]["unknown_reason"],
        serde_json::Value::Null
    );
    // The same evaluation sets the signals, published one change at a time.
    let mut v = get("/v1/signals");
    while v["signals"]["present-pressure"]["inputs_unknown"] != false {
        assert!(started.elapsed() < Duration::from_secs(10), "{v}");
        v = get(&format!("/v1/signals?index={}&wait=2s", v["index"]));
    }
    assert_eq!(
        v["signals"]["ghost-pressure"]["inputs_unknown"], true,
        "{v}"
    );
    assert_eq!(
        v["signals"]["ghost-pressure"]["unknown_reason"],
        "expr: no series matched (no data, or stale)",
        "{v}"
    );
    assert_eq!(v["signals"]["present-pressure"]["inputs_unknown"], false);
    assert_eq!(v["signals"]["present-pressure"]["level"], 0.5);

    let s = agent.scrape();
    let present = |family: &str, label: &str, name: &str| s.value(family, &[(label, name)]);
    assert_eq!(
        present("steadfast_breaker_inputs_present", "breaker", "ghost"),
        Some(0.0)
    );
    assert_eq!(
        present("steadfast_breaker_inputs_present", "breaker", "here"),
        Some(1.0)
    );
    assert_eq!(
        present(
            "steadfast_signal_inputs_present",
            "signal",
            "ghost-pressure"
        ),
        Some(0.0)
    );
    assert_eq!(
        present(
            "steadfast_signal_inputs_present",
            "signal",
            "present-pressure"
        ),
        Some(1.0)
    );

    // The state page says the same (bit 0 of the slot's flags), read by the Rust client.
    let client = steadfast_client::Client::open(steadfast_client::Options {
        page_path: agent.state_page(),
        api_socket: agent.api_socket(),
        ..Default::default()
    })
    .unwrap();
    let b = client.breaker("ghost").expect("ghost on the page");
    assert!(b.inputs_unknown);
    assert!(!client.breaker("here").unwrap().inputs_unknown);
    assert!(client.allow("ghost"), "unknown inputs hold Admit");
    let snap = client.snapshot().unwrap();
    assert!(snap.signals["ghost-pressure"].inputs_unknown);
    assert!(!snap.signals["present-pressure"].inputs_unknown);

    // Said once in the log, with the reason, however many evaluations since.
    let evaluations = |s: &support::Scrape| {
        s.value("steadfast_rules_evaluation_duration_seconds_count", &[])
            .unwrap()
    };
    let before = evaluations(&agent.scrape());
    wait_until("two more evaluations", 5 * interval, || {
        evaluations(&agent.scrape()) >= before + 2.0
    });
    let log = agent.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("inputs unknown") && l.contains("ghost"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one for the breaker, one for the signal:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("volume: no series matched")),
        "{log}"
    );
}

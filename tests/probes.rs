//! The task, error, slow-syscall and memory probes against ground truth: workloads with a
//! known number of threads, failing calls, slow calls and resident bytes. Needs root.

mod support;

use std::time::{Duration, Instant};

use support::{build_workload, run_to_end, unique_name, Agent, Interactive};

/// A process started after the agent holds exactly K threads besides its main thread: the
/// gauge reads K+1 while they live, 1 after they are joined, and the process leaves the gauge
/// when it exits. Creation and exit counters match K.
#[test]
fn task_gauge_follows_a_known_thread_count() {
    const K: i64 = 64;
    let agent = Agent::start("");
    let name = unique_name("sfth");
    let bin = build_workload("threads_hold", agent.dir.path(), &name);
    let mut w = Interactive::spawn(&bin, &["64"]);
    w.expect("ready");

    let tasks = |labels: &str| {
        agent
            .scrape()
            .value(labels, &[("service", &name)])
            .unwrap_or(-1.0)
    };
    assert_eq!(
        tasks("steadfast_process_tasks"),
        (K + 1) as f64,
        "{}",
        agent.log()
    );
    assert_eq!(tasks("steadfast_process_tasks_created_total"), K as f64);

    w.step();
    w.expect("joined");
    assert_eq!(tasks("steadfast_process_tasks"), 1.0);
    assert_eq!(tasks("steadfast_process_tasks_exited_total"), K as f64);

    w.finish();
    let s = agent.scrape();
    assert_eq!(
        s.value("steadfast_process_tasks", &[("service", &name)]),
        None,
        "an exited process leaves the gauge"
    );
    assert_eq!(
        s.value(
            "steadfast_process_tasks_exited_total",
            &[("service", &name)]
        ),
        Some((K + 1) as f64),
        "the main thread's exit is counted too"
    );
}

/// Failed syscalls are counted by errno: close(-1) fails with EBADF exactly N times (the C
/// runtime never closes -1). openat of a missing path fails with ENOENT N times, but the
/// dynamic loader also probes library paths that do not exist (glibc-hwcaps directories), a
/// fixed number L per start: so the workload runs once with 0 calls (L) and once with N
/// (L + N), and the service's total must be exactly 2L + N.
#[test]
fn syscall_errors_are_counted_by_errno() {
    const N: f64 = 5000.0;
    let agent = Agent::start("");
    let name = unique_name("sfer");
    let bin = build_workload("failing_calls", agent.dir.path(), &name);
    let errors_in = |s: &support::Scrape, syscall: &str, errno: &str| {
        s.value(
            "steadfast_syscall_errors_total",
            &[("syscall", syscall), ("errno", errno), ("service", &name)],
        )
        .unwrap_or(0.0)
    };
    run_to_end(&bin, &["0"]);
    let loader = errors_in(&agent.scrape(), "openat", "ENOENT");
    run_to_end(&bin, &["5000"]);
    let s = agent.scrape();
    let errors = |syscall: &str, errno: &str| {
        s.value(
            "steadfast_syscall_errors_total",
            &[("syscall", syscall), ("errno", errno), ("service", &name)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(errors("close", "EBADF"), N, "{}", agent.log());
    assert_eq!(
        errors("openat", "ENOENT"),
        2.0 * loader + N,
        "loader probes: {loader}"
    );
}

/// With a 50 ms threshold on nanosleep, 10 calls of 100 ms among 2000 calls of 0 ms produce
/// exactly 10 slow-syscall events for that process. (With 10 ms and 20 ms calls, a loaded
/// 2-CPU host delayed one 0 ms call past 10 ms and 11 were counted: slow for real, but not
/// a call the workload meant to be slow; under software emulation a 0 ms call took 50 ms.)
/// The workload times its 0 ms calls itself: the kernel's time for a call is within the
/// program's, so a 0 ms call the kernel saw as slow is one the program counted as late, and
/// the events are exactly 10 when it counted none (10 plus at most the late ones otherwise).
#[test]
fn exactly_the_slow_calls_become_events() {
    let agent = Agent::start("probes:\n  syscalls:\n    slow_ms:\n      nanosleep: 50\n");
    let name = unique_name("sfsl");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    let out = std::process::Command::new(&bin)
        .args(["2000", "10", "100", "50"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let late: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let s = agent.scrape();
    let labels = [("syscall", "nanosleep"), ("service", name.as_str())];
    let events = s.value("steadfast_syscall_slow_total", &labels);
    if late == 0.0 {
        assert_eq!(events, Some(10.0), "{}", agent.log());
    } else {
        eprintln!("{late} of the 0 ms calls took 50 ms or more as the workload measured them");
        let events = events.unwrap_or_else(|| panic!("no events: {}", agent.log()));
        assert!(
            (10.0..=10.0 + late).contains(&events),
            "{events} events for 10 slow calls and {late} late ones: {}",
            agent.log()
        );
    }
    assert_eq!(
        s.value("steadfast_syscall_duration_seconds_count", &labels),
        Some(2010.0)
    );
}

/// A flood: 1 ms threshold, 1500 calls of 1 ms, a 4 KiB ring buffer (about 60 events) that
/// wakes the agent only when 1 MiB waits, so it is drained once a second and overflows. Every
/// event is either received or counted lost: lost >= produced - received for this process
/// (other processes' slow nanosleeps may add to both sides, never subtract). The agent keeps
/// answering scrapes meanwhile.
#[test]
fn ring_buffer_overflow_is_counted_and_the_agent_stays_responsive() {
    const PRODUCED: f64 = 1500.0;
    let agent = Agent::start(
        "probes:\n  syscalls:\n    events_ring_buffer_bytes: 4096\n    wakeup_min_bytes: 1048576\n    slow_ms:\n      nanosleep: 1\n",
    );
    let lost = |s: &support::Scrape| {
        s.value("steadfast_events_lost_total", &[("source", "slow_syscall")])
            .unwrap()
    };
    let lost_before = lost(&agent.scrape());
    let name = unique_name("sffl");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    let mut child = std::process::Command::new(&bin)
        .args(["0", "1500", "1"])
        .spawn()
        .unwrap();
    let mut slowest = Duration::ZERO;
    while child.try_wait().unwrap().is_none() {
        let t = Instant::now();
        agent.scrape();
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slowest < Duration::from_millis(500),
        "slowest scrape {slowest:?}"
    );
    let s = agent.scrape();
    let received = s
        .value(
            "steadfast_syscall_slow_total",
            &[("syscall", "nanosleep"), ("service", &name)],
        )
        .unwrap_or(0.0);
    let lost_now = lost(&s) - lost_before;
    assert!(received < PRODUCED, "a 4 KiB ring cannot hold them all");
    assert!(
        lost_now >= PRODUCED - received,
        "unaccounted events: produced {PRODUCED}, received {received}, lost {lost_now}"
    );
}

/// Resident memory per service matches the kernel's own VmRSS of the process within 5%.
#[test]
fn resident_memory_matches_vmrss() {
    let agent = Agent::start("probes:\n  memory:\n    interval_secs: 1\n");
    let name = unique_name("sfmem");
    let bin = build_workload("memory_hold", agent.dir.path(), &name);
    let mut w = Interactive::spawn(&bin, &["96"]);
    w.expect("ready");
    // A fixed time: one memory probe interval (1 s) and some, so the probe has sampled the
    // workload since it was ready (nothing says when it samples).
    std::thread::sleep(Duration::from_millis(1200));
    let vmrss_kib = support::vm_rss_kib(w.pid()) as f64;
    let reported = agent
        .scrape()
        .value(
            "steadfast_process_resident_memory_bytes",
            &[("service", &name)],
        )
        .unwrap_or_else(|| panic!("no memory series: {}", agent.log()));
    let truth = vmrss_kib * 1024.0;
    assert!(truth > 96.0 * 1048576.0);
    assert!(
        (reported - truth).abs() / truth < 0.05,
        "reported {reported}, VmRSS {truth}"
    );
    w.finish();
}

/// A target names matching processes: a workload run from a path given in `targets` is
/// reported under the target's service, whatever its comm. (The executable path is read from
/// procfs when the exec event is handled, so the workload runs long enough to be alive then;
/// a process that exits before its exec event is read is named by comm. See the README.)
#[test]
fn targets_name_processes_by_executable() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sftg");
    let bin = build_workload("getppid_loop", dir.path(), &name);
    let agent = Agent::start(&format!(
        "targets:\n  - service: checkout-api\n    exe: {}\n",
        bin.display()
    ));
    run_to_end(&bin, &["2000000"]);
    let s = agent.scrape();
    assert_eq!(
        s.value(
            "steadfast_syscall_duration_seconds_count",
            &[("syscall", "getppid"), ("service", "checkout-api")]
        ),
        Some(2_000_000.0),
        "{}",
        s.0.lines()
            .filter(|l| l.contains("getppid") && l.contains("_count"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!s.has_label_value("service", &name));
}

/// Slow thresholds change on SIGHUP without reattaching: with a 1 s threshold ten 20 ms
/// nanosleeps are not slow; after the config says 10 ms and the agent is sent SIGHUP, the same
/// workload gives exactly ten events.
#[test]
fn slow_thresholds_change_on_reload() {
    let agent = Agent::start("probes:\n  syscalls:\n    slow_ms:\n      nanosleep: 1000\n");
    let name = unique_name("sfrl");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    let slow = |agent: &Agent| {
        agent
            .scrape()
            .value(
                "steadfast_syscall_slow_total",
                &[("syscall", "nanosleep"), ("service", &name)],
            )
            .unwrap_or(0.0)
    };
    run_to_end(&bin, &["0", "10", "20"]);
    assert_eq!(slow(&agent), 0.0);

    let config = std::fs::read_to_string(agent.config_path()).unwrap();
    std::fs::write(
        agent.config_path(),
        config.replace("nanosleep: 1000", "nanosleep: 10"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("thresholds apply now") {
        assert!(
            Instant::now() < deadline,
            "no reload logged: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run_to_end(&bin, &["0", "10", "20"]);
    assert_eq!(slow(&agent), 10.0, "{}", agent.log());
}

/// Config A -> B -> A by SIGHUP: each reload's thresholds are what the kernel map holds, read
/// back from the agent's own `SYSCALL_SLOW_NS` (not from its logs or metrics). Going back to
/// A is a change from B (the running config follows each applied reload), so B's 10 ms does
/// not stay: ten 20 ms nanosleeps afterwards are not slow under A's 1 s.
#[test]
fn thresholds_a_b_a_are_what_the_kernel_map_holds() {
    let agent = Agent::start("probes:\n  syscalls:\n    slow_ms:\n      nanosleep: 1000\n");
    let nr = libc::SYS_nanosleep as u32;
    let in_kernel = || -> u64 {
        let map = support::kernel_map_of(agent.pid(), "SYSCALL_SLOW_NS").expect("the map");
        let arr: aya::maps::Array<aya::maps::MapData, u64> =
            aya::maps::Array::try_from(map).unwrap();
        arr.get(&nr, 0).unwrap()
    };
    let until = |want: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = in_kernel();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the kernel map holds {got} ns for nanosleep, not {want}: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until(1_000_000_000, "A at start");
    let a = std::fs::read_to_string(agent.config_path()).unwrap();
    std::fs::write(
        agent.config_path(),
        a.replace("nanosleep: 1000", "nanosleep: 10"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    until(10_000_000, "B after SIGHUP");
    std::fs::write(agent.config_path(), &a).unwrap();
    agent.signal(libc::SIGHUP);
    until(1_000_000_000, "A again after SIGHUP");

    // And the probe behaves as A says.
    let name = unique_name("sfaba");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    run_to_end(&bin, &["0", "10", "20"]);
    let s = agent.scrape();
    assert_eq!(
        s.value(
            "steadfast_syscall_duration_seconds_count",
            &[("syscall", "nanosleep"), ("service", &name)]
        ),
        Some(10.0),
        "the workload was seen"
    );
    assert_eq!(
        s.value(
            "steadfast_syscall_slow_total",
            &[("syscall", "nanosleep"), ("service", &name)]
        )
        .unwrap_or(0.0),
        0.0,
        "{}",
        agent.log()
    );
}

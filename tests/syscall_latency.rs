//! Syscall latency probe against ground truth: a workload with a known number of calls and a
//! workload with a known latency, run under the real agent. Needs root.

mod support;

use std::time::{Duration, Instant};

use support::{build_workload, run_to_end, unique_name, Agent};

const HIST: &str = "steadfast_syscall_duration_seconds";

fn count(s: &support::Scrape, syscall: &str, service: &str) -> f64 {
    s.value(
        &format!("{HIST}_count"),
        &[("syscall", syscall), ("service", service)],
    )
    .unwrap_or(0.0)
}

/// Exactly N getppid calls from a process with a unique name: the histogram count for that
/// service grows by exactly N. The C workload calls getppid only through its loop (glibc's
/// start-up and exit make no getppid call), so no tolerance is needed; a scrape later the
/// count is unchanged (no double counting), and the process's kernel keys have been cleaned.
#[test]
fn getppid_count_matches_the_workload_exactly() {
    const N: u64 = 250_000;
    let agent = Agent::start("");
    let name = unique_name("sfgp");
    let bin = build_workload("getppid_loop", agent.dir.path(), &name);

    let before = count(&agent.scrape(), "getppid", &name);
    assert_eq!(before, 0.0, "a fresh name has no series yet");
    run_to_end(&bin, &[&N.to_string()]);

    let after = agent.scrape();
    assert_eq!(
        count(&after, "getppid", &name),
        N as f64,
        "agent log:\n{}",
        agent.log()
    );
    // The same calls must not be counted again by later collections (the exited process's
    // keys are deleted two collections after its exit).
    agent.await_collections(3);
    let later = agent.scrape();
    assert_eq!(count(&later, "getppid", &name), N as f64);
    // Buckets are cumulative and end at the count.
    let inf = later
        .value(
            &format!("{HIST}_bucket"),
            &[("syscall", "getppid"), ("service", &name), ("le", "+Inf")],
        )
        .unwrap();
    assert_eq!(inf, N as f64);
    // The agent's own syscalls are excluded in the kernel: no syscall series carries its name.
    // (Only syscall series: under software emulation on a busy host a loopback TCP segment of
    // the agent's own HTTP server can be retransmitted, and the TCP probe counts that.)
    let own: Vec<&str> = later
        .0
        .lines()
        .filter(|l| l.starts_with("steadfast_syscall"))
        .filter(|l| l.contains(&format!("service=\"{}\"", agent.name)))
        .collect();
    assert!(
        own.is_empty(),
        "the agent reported its own syscalls: {own:?}"
    );
}

/// A process that makes calls without leaving its CPU (SCHED_FIFO, pinned: nothing of normal
/// priority preempts it; 7 switches in 2.4 s here) still has its counts reach the agent
/// while it runs, not only when it is switched out or exits: a CPU's pending samples are
/// flushed when a call falls in another bucket (any interrupt during a call does that) and
/// once 100 ms old. Sampled every 10 ms over 1 s, the count must rise many times (61-66 per
/// second here), and after the exit it must equal the calls the workload made. This does not
/// isolate the 100 ms age flush: with it disabled the count still rose 156-172 times in 2.5 s,
/// from bucket changes alone.
#[test]
fn counts_of_a_task_that_keeps_its_cpu_arrive_while_it_runs() {
    const RUN_MS: u64 = 1000;
    const MIN_RISES: usize = 15;
    let agent = Agent::start("");
    let name = unique_name("sfhog");
    let bin = build_workload("getppid_hog", agent.dir.path(), &name);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "the workload takes one CPU whole: this test needs two"
    );
    let mut child = std::process::Command::new(&bin)
        .args([RUN_MS.to_string(), (cpus - 1).to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen: Vec<f64> = Vec::new();
    while child.try_wait().unwrap().is_none() {
        let c = count(&agent.scrape(), "getppid", &name);
        if c > 0.0 && seen.last() != Some(&c) {
            seen.push(c);
        }
        // The sampling period, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}: {}", bin.display(), out.status);
    let made: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    support::wait_until("the final count", Duration::from_secs(10), || {
        count(&agent.scrape(), "getppid", &name) == made
    });
    // The last sample may have been taken after the exit's flush.
    let during = seen.iter().filter(|&&c| c < made).count();
    eprintln!("the count rose {during} times while the task ran; {made} calls");
    assert!(
        during >= MIN_RISES,
        "the count rose {during} times while the task ran (want >= {MIN_RISES}): {seen:?} of \
         {made}"
    );
}

/// nanosleep calls of 16 ms each land in the bucket (2^-6, 2^-5] s = (15.625 ms, 31.25 ms]: a
/// sleep never ends early, and 15 ms of slack above holds on a loaded machine.
#[test]
fn nanosleep_latency_lands_around_16ms() {
    let agent = Agent::start("");
    let name = unique_name("sfns");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    run_to_end(&bin, &["0", "10", "16"]);
    let s = agent.scrape();
    let bucket = |le: &str| {
        s.value(
            &format!("{HIST}_bucket"),
            &[("syscall", "nanosleep"), ("service", &name), ("le", le)],
        )
        .unwrap_or_else(|| panic!("no bucket le={le}; agent log:\n{}", agent.log()))
    };
    assert_eq!(bucket("0.015625"), 0.0, "none faster than 15.625 ms");
    assert_eq!(bucket("0.03125"), 10.0, "all ten by 31.25 ms");
    assert_eq!(count(&s, "nanosleep", &name), 10.0);
    let sum = s
        .value(
            &format!("{HIST}_sum"),
            &[("syscall", "nanosleep"), ("service", &name)],
        )
        .unwrap();
    assert!((0.160..0.3125).contains(&sum), "sum {sum} s for 10 x 16 ms");
}

/// Calls during which the thread leaves its CPU are counted exactly, with their whole
/// duration: `cpu_hopper` makes N `sched_setaffinity` calls that each move it to another CPU
/// (the call starts on one CPU and returns on the next) and N `nanosleep` calls of 2 ms
/// (each leaves the CPU). The programs keep a call's start per CPU and move it to the
/// thread's slot when the thread is switched out: every one of the 2N calls must be found at
/// its exit, and no sleep may be measured shorter than it slept.
#[test]
fn calls_that_leave_the_cpu_are_counted_exactly() {
    const N: u64 = 1_000;
    let agent = Agent::start("");
    let name = unique_name("sfhop");
    let bin = build_workload("cpu_hopper", agent.dir.path(), &name);
    run_to_end(&bin, &[&N.to_string(), "2000"]);
    let s = agent.scrape();
    assert_eq!(
        count(&s, "sched_setaffinity", &name),
        N as f64,
        "agent log:\n{}",
        agent.log()
    );
    assert_eq!(count(&s, "nanosleep", &name), N as f64);
    // 2 ms sleeps: none at or below 2^-10 s = 0.977 ms.
    let fast = s
        .value(
            &format!("{HIST}_bucket"),
            &[
                ("syscall", "nanosleep"),
                ("service", &name),
                ("le", "0.0009765625"),
            ],
        )
        .unwrap_or_else(|| panic!("no nanosleep bucket; agent log:\n{}", agent.log()));
    assert_eq!(fast, 0.0, "a 2 ms sleep measured under 0.977 ms");
}

/// The Prometheus text exposition passes `promtool check metrics` (Debian's prometheus
/// package); a scraper asking for OpenMetrics gets OpenMetrics (promtool only reads the
/// Prometheus text format, so that one is checked by its content type and terminator).
#[test]
fn promtool_accepts_the_exposition() {
    let agent = Agent::start("");
    // Make sure there is at least one histogram series.
    let name = unique_name("sfpt");
    let bin = build_workload("getppid_loop", agent.dir.path(), &name);
    run_to_end(&bin, &["1000"]);

    let (head, body) = support::http_get_full(agent.addr, "/metrics", None).unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(body.contains(&format!("{HIST}_bucket")));
    support::promtool_check(&support::Scrape(body));

    let (head, body) = support::http_get_full(
        agent.addr,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0,text/plain;q=0.5"),
    )
    .unwrap();
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(body.contains("# UNIT steadfast_syscall_duration_seconds seconds"));
}

/// SIGTERM detaches the probes and exits 0.
#[test]
fn sigterm_exits_zero() {
    let agent = Agent::start("");
    let status = agent.stop();
    assert!(status.success(), "exit status {status}");
}

/// A thread's slot in `SYSCALL_THREADS` goes when the thread exits. Read from the agent's own
/// kernel map: none of 32 threads of this test (each blocked in a syscall, which gives it a
/// slot, then ended) and none of 32 exited processes (`/bin/true`, dead in `exit_group`) keeps
/// an entry.
#[test]
fn exited_threads_leave_no_slot() {
    use agent_common::syscall::ThreadSlot;
    let agent = Agent::start("");
    let threads = || -> aya::maps::HashMap<aya::maps::MapData, u32, ThreadSlot> {
        let map = support::kernel_map_of(agent.pid(), "SYSCALL_THREADS").expect("the map");
        aya::maps::HashMap::try_from(map).unwrap()
    };
    let mut tids: Vec<u32> = (0..32)
        .map(|_| {
            std::thread::spawn(|| {
                // SAFETY: syscalls without arguments.
                unsafe { libc::getppid() };
                // A call that leaves the CPU: its start moves to the thread's slot.
                std::thread::sleep(Duration::from_millis(1));
                unsafe { libc::gettid() as u32 }
            })
            .join()
            .unwrap()
        })
        .collect();
    for _ in 0..32 {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        tids.push(child.id());
        assert!(child.wait().unwrap().success());
    }
    // Each one had a slot while it lived: the map sees this test's live thread once it has
    // blocked in a call.
    let me = unsafe { libc::gettid() } as u32;
    std::thread::sleep(Duration::from_millis(1));
    assert!(threads().get(&me, 0).is_ok(), "no slot for a live thread");
    // A joined thread or a reaped process may have woken us a moment before its exit
    // tracepoint ran: poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let map = threads();
        let left: Vec<u32> = tids
            .iter()
            .copied()
            .filter(|t| map.get(t, 0).is_ok())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} exited threads keep a slot: {left:?}",
            left.len(),
            tids.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reused thread id records nothing bogus. `/bin/true` dies in `exit_group` (which never
/// returns) with pid T; the next process is given pid T (`ns_last_pid`, retried if another
/// fork takes it first). Its first `sys_exit` (the clone's return in the child) must not read
/// the dead thread's `exit_group` and start time: the kernel histogram has no `exit_group`
/// sample for T, whose process never returned from one.
#[test]
fn a_reused_thread_id_records_no_bogus_sample() {
    use agent_common::syscall::{Hist, HistKey};
    let agent = Agent::start("");
    let hist = || -> aya::maps::HashMap<aya::maps::MapData, HistKey, Hist> {
        let map = support::kernel_map_of(agent.pid(), "SYSCALL_HIST").expect("the map");
        aya::maps::HashMap::try_from(map).unwrap()
    };
    for attempt in 0..50 {
        let mut dead = std::process::Command::new("/bin/true").spawn().unwrap();
        let t = dead.id();
        assert!(dead.wait().unwrap().success());
        std::fs::write("/proc/sys/kernel/ns_last_pid", (t - 1).to_string()).unwrap();
        let mut reuser = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        if reuser.id() != t {
            let _ = reuser.kill();
            let _ = reuser.wait();
            eprintln!("attempt {attempt}: pid {t} was taken by another fork");
            continue;
        }
        // `sleep` runs (its exec returned: it has made syscalls since the fork) while the
        // map is read, so the agent has no reason to delete its keys.
        let key = HistKey {
            tgid: t,
            nr: libc::SYS_exit_group as u32,
        };
        let mut seen_live = false;
        for _ in 0..40 {
            if hist()
                .get(
                    &HistKey {
                        tgid: t,
                        nr: libc::SYS_execve as u32,
                    },
                    0,
                )
                .is_ok()
            {
                seen_live = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let bogus = hist().get(&key, 0).ok();
        let _ = reuser.kill();
        let _ = reuser.wait();
        assert!(seen_live, "pid {t}'s execve never reached the histogram");
        assert!(
            bogus.is_none(),
            "pid {t} reused: a bogus exit_group sample {:?}",
            bogus.map(|h| (h.buckets.iter().sum::<u64>(), h.sum_ns))
        );
        return;
    }
    panic!("pid reuse never happened in 50 attempts");
}

/// Keys the kernel's LRU evicts before any read are counted, not lost without a trace. With
/// the smallest histogram map (256 keys), 60 one-off processes (about 20 distinct syscalls
/// each, so more than 1,000 keys) run within a collection interval or two: the map cannot
/// hold their keys until the next read, and `steadfast_syscall_map_keys_evicted_total` says
/// so. With the default map the same burst fits, and nothing is counted as evicted.
#[test]
fn keys_evicted_before_any_read_are_counted() {
    const EVICTED: &str = "steadfast_syscall_map_keys_evicted_total";
    let burst = || {
        for _ in 0..60 {
            run_to_end(std::path::Path::new("/bin/true"), &[]);
        }
    };
    let small = Agent::start("probes:\n  syscalls:\n    max_histogram_keys: 256\n");
    burst();
    small.await_collections(2);
    let evicted = small.scrape().value(EVICTED, &[]).unwrap();
    println!("256-key map: {evicted} keys evicted");
    assert!(evicted > 0.0, "no eviction counted:\n{}", small.log());

    let default = Agent::start("");
    burst();
    default.await_collections(2);
    let s = default.scrape();
    println!(
        "default map: {:?} evicted, {:?} keys",
        s.value(EVICTED, &[]),
        s.value("steadfast_syscall_map_keys", &[])
    );
    assert_eq!(s.value(EVICTED, &[]), Some(0.0), "{}", default.log());
}

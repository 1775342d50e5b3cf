//! The agent as a systemd `Type=notify` service, without systemd: the test binds the unix
//! datagram socket systemd would (`$NOTIFY_SOCKET`) and reads what the real agent sends on
//! start-up, SIGHUP (valid and invalid config on disk), the watchdog (fed only while
//! collection makes progress), and SIGTERM.
//!
//! And the `service` label (issue 14 item 1): one-off commands, kernel threads, targets and
//! units, idle release and the overflow counter, against real processes. Needs root.

mod support;

use std::{
    collections::BTreeSet,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use support::{build_workload, run_to_end, unique_name, wait_for, wait_until, Agent, Scrape};

/// Reads datagrams until one contains `field`, returning it (panics after `within`).
fn expect(sock: &UnixDatagram, field: &str, within: Duration, agent: &Agent) -> String {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == field) {
                    return msg;
                }
                seen.push(msg);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!(
        "no {field:?} within {within:?}; got {seen:?}; agent log:\n{}",
        agent.log()
    );
}

/// Drains whatever is queued so the next `expect` sees only new messages.
fn drain(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    sock.set_nonblocking(false).unwrap();
    out
}

#[test]
fn notifies_ready_reloading_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A 400 ms watchdog period: the agent must ping every 200 ms.
    let mut agent = Agent::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = expect(&sock, "READY=1", Duration::from_secs(10), &agent);
    assert!(ready.contains("STATUS=probes attached"), "{ready}");
    // The listener serves once READY was sent.
    assert!(agent
        .scrape()
        .0
        .contains("steadfast_syscall_duration_seconds"));

    // Watchdog: at least 4 pings in 1.2 s (one every 200 ms). A fixed time: the ping rate is
    // what is checked.
    drain(&sock);
    std::thread::sleep(Duration::from_millis(1200));
    let pings = drain(&sock).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((4..=8).contains(&pings), "{pings} watchdog pings in 1.2 s");

    // SIGHUP with a valid, unchanged file: RELOADING=1 with a monotonic timestamp, then READY=1.
    let before = now_monotonic_usec();
    agent.signal(libc::SIGHUP);
    let reloading = expect(&sock, "RELOADING=1", Duration::from_secs(5), &agent);
    let stamp: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        stamp >= before && stamp < before + 5_000_000,
        "{stamp} vs {before}"
    );
    let ready = expect(&sock, "READY=1", Duration::from_secs(5), &agent);
    assert!(ready.contains("unchanged"), "{ready}");
    assert!(agent.is_running(), "SIGHUP must not kill the agent");

    // SIGHUP with a broken file: the agent logs every problem and keeps running.
    let config = agent.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{}probes:\n  process_events:\n    ring_buffer_bytes: 1000\n",
            good.replace("services:\n", "services:\n  max_services: 0\n")
        ),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    expect(&sock, "RELOADING=1", Duration::from_secs(5), &agent);
    let ready = expect(&sock, "READY=1", Duration::from_secs(5), &agent);
    assert!(ready.contains("rejected"), "{ready}");
    assert!(agent.is_running());
    assert!(agent
        .scrape()
        .0
        .contains("steadfast_syscall_duration_seconds"));
    let log = agent.log();
    for key in ["services.max_services", "ring_buffer_bytes", "old one"] {
        assert!(log.contains(key), "log does not mention {key}:\n{log}");
    }

    // A valid but different file: accepted; the log says what applies now and what at restart.
    std::fs::write(
        &config,
        good.replace("services:\n", "services:\n  max_services: 5\n"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let ready = expect(&sock, "READY=1", Duration::from_secs(5), &agent);
    assert!(ready.contains("restart"), "{ready}");
    assert!(agent.log().contains("other changes"));

    // SIGTERM: STOPPING=1, exit 0.
    drain(&sock);
    let status = agent.stop();
    assert!(status.success(), "{status}");
    let msgs = drain(&sock);
    assert!(msgs.iter().any(|m| m == "STOPPING=1"), "{msgs:?}");
}

/// The watchdog is fed only while collection makes progress. The collection is stalled by
/// the agent's test hook (`STEADFAST_TEST_STALL_COLLECTION_WHILE`, read once at start-up:
/// the periodic collection waits while the named file exists, holding no lock, as a hung
/// kernel map read would; a hook because nothing outside the process can make a map read
/// hang, and SIGSTOP would stop the watchdog task too). With a 400 ms watchdog the pings
/// stop within one collection interval (1 s) plus half the period of the stall starting,
/// and stay stopped (systemd would restart the agent), while the runtime still answers
/// `/metrics`; they come back once collection runs again.
#[test]
fn the_watchdog_is_fed_only_while_collection_makes_progress() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let stall = dir.path().join("stall");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let agent = Agent::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            (
                "STEADFAST_TEST_STALL_COLLECTION_WHILE",
                stall.to_str().unwrap(),
            ),
        ],
    );
    expect(&sock, "READY=1", Duration::from_secs(10), &agent);
    expect(&sock, "WATCHDOG=1", Duration::from_secs(2), &agent);
    // A collection with syscall series is published before the stall, so the scrape during
    // the stall has something to serve.
    wait_until(
        "syscall series on /metrics",
        Duration::from_secs(10),
        || {
            agent
                .scrape()
                .0
                .contains("steadfast_syscall_duration_seconds")
        },
    );

    std::fs::write(&stall, "").unwrap();
    let stalled_at = Instant::now();
    let (mut last_ping, mut pings, mut seen) = (None::<Instant>, 0, Vec::new());
    let mut buf = [0u8; 4096];
    // Read until 2 s (five watchdog periods) pass without a ping.
    while last_ping.unwrap_or(stalled_at).elapsed() < Duration::from_secs(2) {
        assert!(
            stalled_at.elapsed() < Duration::from_secs(15),
            "the pings never stopped: {pings} since the stall; agent log:\n{}",
            agent.log()
        );
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg == "WATCHDOG=1" {
                last_ping = Some(Instant::now());
                pings += 1;
            } else {
                seen.push(msg);
            }
        }
    }
    let fed_for = last_ping.map_or(Duration::ZERO, |t| t - stalled_at);
    println!("collection stalled: {pings} more pings, the last {fed_for:?} after the stall began; then none for 2 s");
    // 1 s of collection interval + 200 ms of ping interval, and a collection that was under
    // way when the file appeared (up to a few hundred ms in a debug build on a busy machine).
    assert!(
        fed_for < Duration::from_millis(2500),
        "fed for {fed_for:?} after collection stalled"
    );
    assert!(
        seen.iter().any(|m| m.contains("STATUS=collection stalled")),
        "{seen:?}"
    );
    // Only collection stopped: the runtime answers.
    assert!(agent
        .scrape()
        .0
        .contains("steadfast_syscall_duration_seconds"));
    assert!(agent.log().contains("no longer feeding"), "{}", agent.log());

    std::fs::remove_file(&stall).unwrap();
    let resumed = Instant::now();
    expect(&sock, "WATCHDOG=1", Duration::from_secs(3), &agent);
    println!("fed again {:?} after the stall ended", resumed.elapsed());
    assert!(agent.log().contains("feeding the systemd watchdog again"));
}

/// Without `$NOTIFY_SOCKET` (run by hand or by the tests) the agent runs as before and SIGHUP
/// does not kill it.
#[test]
fn sighup_without_systemd_keeps_running() {
    let mut agent = Agent::start("");
    agent.signal(libc::SIGHUP);
    // Handled (the reload logged): a SIGHUP that killed it would have done so at once.
    wait_until("the reload logged", Duration::from_secs(10), || {
        agent.log().contains("unchanged")
    });
    assert!(agent.is_running(), "log:\n{}", agent.log());
    assert!(agent.stop().success());
}

fn now_monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Distinct values of the `service` label on a scrape.
fn service_values(s: &Scrape) -> BTreeSet<String> {
    s.0.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.split("service=\"").nth(1)?.split('"').next()?.to_string()))
        .collect()
}

/// Series (sample lines) with a `service` label.
fn service_series(s: &Scrape) -> usize {
    s.0.lines()
        .filter(|l| !l.starts_with('#') && l.contains("service=\""))
        .count()
}

fn getppid_count(s: &Scrape, service: &str) -> f64 {
    s.value(
        "steadfast_syscall_duration_seconds_count",
        &[("syscall", "getppid"), ("service", service)],
    )
    .unwrap_or(0.0)
}

/// Where the unified (v2) cgroup hierarchy is mounted.
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup named like a systemd unit, removed at drop.
struct UnitCgroup(PathBuf);

impl UnitCgroup {
    fn new(unit: &str) -> Self {
        let dir = cgroup2_root().join(unit);
        std::fs::create_dir(&dir).unwrap();
        UnitCgroup(dir)
    }

    /// Runs `bin args` to its end inside the cgroup: the child moves itself in between fork
    /// and exec, so everything the program does is the unit's.
    fn run(&self, bin: &Path, args: &[&str]) {
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(
            self.0
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) on
        // memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Waits until each (service, syscall) has its expected count of calls.
fn counted(agent: &Agent, expected: &[(&str, &str, u64)]) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = agent.scrape();
        let got: Vec<_> = expected
            .iter()
            .map(|(service, syscall, _)| {
                s.value(
                    "steadfast_syscall_duration_seconds_count",
                    &[("syscall", syscall), ("service", service)],
                )
                .unwrap_or(0.0)
            })
            .collect();
        if expected
            .iter()
            .zip(&got)
            .all(|((_, _, n), g)| *n as f64 == *g)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "calls {got:?}, expected {expected:?}; where the calls are:\n{}\nservices {:?}\n{}",
            s.0.lines()
                .filter(
                    |l| l.starts_with("steadfast_syscall_duration_seconds_count")
                        && expected
                            .iter()
                            .any(|(_, syscall, _)| l.contains(&format!("syscall=\"{syscall}\"")))
                        || l.starts_with("steadfast_events_lost_total")
                        || l.starts_with("steadfast_syscall_map_keys")
                        || l.starts_with("steadfast_tracked_processes")
                )
                .collect::<Vec<_>>()
                .join("\n"),
            service_values(&s),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1,000 one-off commands with distinct names (symlinks to `true`: the comm is the link's
/// name), with the default cap and admission, between runs of two `targets` programs and two
/// programs in `*.service` cgroups (one of each runs before and after the flood, the other only
/// after; the late target many times, back to back): each is counted under its own service
/// (exact getppid and nanosleep counts), none of the one-off names gets a series, their
/// syscalls are under `short_lived`, and the number of `service` values grows by other
/// processes on the host only.
#[test]
fn one_off_commands_leave_targets_and_units_intact() {
    const N: u64 = 3_000;
    let (early, late) = (unique_name("sfte"), unique_name("sftl"));
    let units = [
        format!("{}.service", unique_name("sfue")),
        format!("{}.service", unique_name("sful")),
    ];
    let agent = Agent::start(&format!(
        "services:\n  max_services: 100\ntargets:\n  - service: {early}-svc\n    comm: {early}\n  \
         - service: {late}-svc\n    comm: {late}\n"
    ));
    let dir = agent.dir.path();
    let (early_bin, late_bin) = (
        build_workload("getppid_loop", dir, &early),
        build_workload("getppid_loop", dir, &late),
    );
    // A unit is known from procfs, which a process that ended before its exec event was read
    // no longer has: the units' program lives 250 ms (5 nanosleeps of 50 ms).
    let unit_bin = build_workload("nanosleep_mix", dir, &unique_name("sfub"));
    let unit_args = ["0", "5", "50"];
    let (early_cg, late_cg) = (UnitCgroup::new(&units[0]), UnitCgroup::new(&units[1]));
    let (early_svc, late_svc) = (format!("{early}-svc"), format!("{late}-svc"));
    let n = N.to_string();
    run_to_end(&early_bin, &[&n]);
    early_cg.run(&unit_bin, &unit_args);
    let before = counted(
        &agent,
        &[(&early_svc, "getppid", N), (&units[0], "nanosleep", 5)],
    );

    let true_bin = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let links = tempfile::tempdir().unwrap();
    let prefix = unique_name("sf1");
    let started = Instant::now();
    for i in 0..1000 {
        let link = links.path().join(format!("{prefix}-{i}"));
        std::os::unix::fs::symlink(true_bin, &link).unwrap();
        let status = Command::new(&link).status().unwrap();
        assert!(status.success());
    }
    let flood = started.elapsed();

    run_to_end(&early_bin, &[&n]);
    // The late target runs back to back, one short process after another, across at least
    // two collections: some of them start, work and end while the agent reads its maps (the
    // flood's keys make that read long), and each must still be named (it once went to
    // `unknown` when its exec event came after the ring drain and before its keys).
    let (late_started, mut late_runs) = (Instant::now(), 0u64);
    while late_started.elapsed() < Duration::from_millis(2500) {
        run_to_end(&late_bin, &[&n]);
        late_runs += 1;
    }
    early_cg.run(&unit_bin, &unit_args);
    late_cg.run(&unit_bin, &unit_args);
    let after = counted(
        &agent,
        &[
            (&early_svc, "getppid", 2 * N),
            (&units[0], "nanosleep", 10),
            (&late_svc, "getppid", late_runs * N),
            (&units[1], "nanosleep", 5),
        ],
    );
    let one_offs: Vec<_> = service_values(&after)
        .into_iter()
        .filter(|v| v.starts_with(&prefix))
        .collect();
    let short_lived: f64 = after.sum(
        "steadfast_syscall_duration_seconds_count",
        &[("service", "short_lived")],
    );
    let (series_before, series_after) = (service_series(&before), service_series(&after));
    println!(
        "1000 one-off commands in {flood:?}: series with a service label {series_before} -> \
         {series_after}; {} one-off names on /metrics; {short_lived} syscalls under short_lived; \
         overflow {:?}; kernel keys evicted {:?}",
        one_offs.len(),
        after.value("steadfast_services_overflow_total", &[]),
        after.value("steadfast_syscall_map_keys_evicted_total", &[])
    );
    assert!(
        one_offs.is_empty(),
        "one-off names got series: {one_offs:?}"
    );
    // /bin/true makes about 29 syscalls (strace -c); the exec itself may count elsewhere.
    assert!(
        short_lived >= 1000.0 * 20.0,
        "{short_lived} syscalls under short_lived"
    );
    // Not under the name of what they run either (the link's target).
    assert!(
        !service_values(&after).contains("true"),
        "{:?}",
        service_values(&after)
    );
    // Other processes on the host (builds, other tests) come and go meanwhile: tens of values
    // on a busy machine, never the hundreds the flood would make if its names leaked.
    let (values_before, values_after) =
        (service_values(&before).len(), service_values(&after).len());
    println!(
        "service values {values_before} -> {values_after}; {late_runs} runs of the late target"
    );
    assert!(
        values_after <= values_before + 50,
        "service values {values_before} -> {values_after}: {:?}",
        service_values(&after)
    );
    assert_eq!(
        after.value("steadfast_services_overflow_total", &[]),
        Some(0.0)
    );
}

/// A service whose processes have all exited keeps its series for
/// `services.idle_release_seconds`, then they disappear from /metrics; when it runs again its
/// counters start from 0.
#[test]
fn an_exited_service_is_released_after_the_idle_time() {
    const N: u64 = 5_000;
    const IDLE_SECS: u64 = 3;
    let agent = Agent::start(&format!("services:\n  idle_release_seconds: {IDLE_SECS}\n"));
    let name = unique_name("sfid");
    let bin = build_workload("getppid_loop", agent.dir.path(), &name);
    run_to_end(&bin, &[&N.to_string()]);
    let exited = Instant::now();
    let s = wait_for(10, "the workload's series", || {
        let s = agent.scrape();
        (getppid_count(&s, &name) == N as f64).then_some(s)
    });
    let series =
        s.0.lines()
            .filter(|l| l.contains(&format!("service=\"{name}\"")))
            .count();
    assert!(series > 5, "{series} series of {name}");
    wait_until(
        "the exited service's series to disappear",
        Duration::from_secs(IDLE_SECS + 10),
        || !agent.scrape().has_label_value("service", &name),
    );
    // The scrape that no longer had them started after the release.
    let lasted = exited.elapsed();
    println!("{series} series of an exited service, gone {lasted:?} after its exit");
    assert!(
        lasted >= Duration::from_secs(IDLE_SECS),
        "released after {lasted:?}, before the idle time"
    );
    let released = agent
        .scrape()
        .value("steadfast_services_released_total", &[]);
    assert!(released >= Some(1.0), "{released:?}");

    // It comes back from 0: N calls, not 2N.
    run_to_end(&bin, &[&N.to_string()]);
    wait_until("the new series", Duration::from_secs(10), || {
        getppid_count(&agent.scrape(), &name) == N as f64
    });
    // Not counted again by later collections either.
    agent.await_collections(3);
    assert_eq!(getppid_count(&agent.scrape(), &name), N as f64);
}

/// Kernel threads are one service, `kernel`: no per-CPU names (`ksoftirqd/0`, `kworker/0:1`,
/// `migration/0`, `cpuhp/0`) on /metrics, and the `kernel` task gauge counts at least the
/// kernel threads procfs shows now (PF_KTHREAD in /proc/<pid>/stat; kworkers come and go).
#[test]
fn kernel_threads_are_the_kernel_service() {
    let agent = Agent::start("services:\n  max_services: 100\n");
    let kthreads = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| {
                    let after = &t[t.rfind(')')? + 1..];
                    after.split_whitespace().nth(6)?.parse::<u64>().ok()
                })
                .is_some_and(|flags| flags & 0x0020_0000 != 0)
        })
        .count();
    assert!(kthreads > 0, "no kernel threads visible in /proc");
    let s = wait_for(10, "the kernel service's task gauge", || {
        let s = agent.scrape();
        s.value("steadfast_process_tasks", &[("service", "kernel")])
            .is_some()
            .then_some(s)
    });
    let gauge = s
        .value("steadfast_process_tasks", &[("service", "kernel")])
        .unwrap();
    let per_cpu: Vec<_> = service_values(&s)
        .into_iter()
        .filter(|v| {
            v.contains('/')
                || [
                    "ksoftirqd",
                    "kworker",
                    "migration",
                    "cpuhp",
                    "rcu_",
                    "kthreadd",
                ]
                .iter()
                .any(|k| v.starts_with(k))
        })
        .collect();
    println!(
        "{kthreads} kernel threads in /proc; steadfast_process_tasks{{service=\"kernel\"}} {gauge}; \
         {} service values",
        service_values(&s).len()
    );
    assert!(
        per_cpu.is_empty(),
        "kernel thread names as services: {per_cpu:?}"
    );
    assert!(
        gauge >= (kthreads as f64 * 0.8).floor(),
        "kernel gauge {gauge} for {kthreads} kernel threads"
    );
}

/// With a cap of 2 comm-derived names (filled at start by the host's own processes), a new
/// name is `other`: `steadfast_services_overflow_total` counts it and the log says so once.
#[test]
fn overflow_is_counted_and_logged_once() {
    const N: u64 = 2_000;
    let agent = Agent::start("services:\n  max_services: 2\n  admit_after_syscalls: 0\n");
    let overflow = |s: &Scrape| s.value("steadfast_services_overflow_total", &[]);
    let start = overflow(&agent.scrape()).expect("steadfast_services_overflow_total");
    let names: Vec<_> = (0..3).map(|_| unique_name("sfov")).collect();
    for name in &names {
        let bin = build_workload("getppid_loop", agent.dir.path(), name);
        run_to_end(&bin, &[&N.to_string()]);
    }
    let s = wait_for(10, "three overflows counted", || {
        let s = agent.scrape();
        (overflow(&s)? >= start + 3.0).then_some(s)
    });
    println!("overflow {start} at start -> {:?}", overflow(&s));
    for name in &names {
        assert!(
            !s.has_label_value("service", name),
            "{name} has its own service"
        );
    }
    assert!(getppid_count(&s, "other") >= 3.0 * N as f64);
    let log = agent.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("services.max_services comm-derived names are in use"))
        .count();
    assert_eq!(lines, 1, "{log}");
}

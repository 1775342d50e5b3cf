//! `cargo xtask vm-test`: the root integration tests that load probes, run inside Debian's own
//! kernels under QEMU, and on the running kernel.
//!
//! ```text
//! cargo xtask vm-test [--kernel NAME]... [--cpus N]... [--only TEXT]... [--memory-mib N]
//!                     [--timeout-secs N] [--report FILE]
//! ```
//!
//! - `--kernel`: a name from `scripts/vm-kernels` (5.10, 6.1, 6.12, 6.12-rt, 6.16), or `host`
//!   for a plain run on the running kernel. Default: every kernel there, then `host`.
//! - `--cpus`: vCPUs of each guest (repeat for several runs per kernel). Default: 2.
//! - `--only`: keep the tests whose `binary::test` contains TEXT (repeatable).
//! - `--memory-mib`: guest memory; default max(2048, 1024 + 48 x vCPUs).
//! - `--timeout-secs`: a guest still running after this is killed and counted as failed;
//!   default 1800.
//! - `--report`: also write the markdown table there.
//!
//! How: the test binaries are built on the host (`cargo test --no-run`, their paths read from
//! cargo's JSON messages); each kernel boots with virtme-ng (`vng --disable-kvm --force-9p`:
//! software emulation, since this machine's nested KVM cannot boot stock kernels, and the
//! host's root filesystem over 9p, read-only, with tmpfs overlays), and `scripts/vm-guest` runs
//! each binary with the tests by exact name, writing outputs, exit codes and timings into the
//! run's folder (`target/vm-test/<kernel>-<N>cpu/`, shared read-write with the guest, as is
//! the tests' Go build cache `target/tmp/go-cache`). vng's
//! own exit status means nothing here: only the files the guest wrote count. Kernels and
//! virtme-ng come from `scripts/setup --vm [NAME...]` (into `~/.cache/steadfast`).
//!
//! The report has one row per run: release, vCPUs, seconds from boot to the script, seconds
//! for the whole run, tests passed and failed, the locked map memory the agent held (the sum of
//! `memlock:` in its fdinfo, from `tests/host_size.rs`), and whether a workload had its own
//! `service` with the default config. It ends with `vm-test: N passed, N failed`.

use std::{
    collections::BTreeMap,
    env,
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cargo;

/// The tests that load probes, by test binary (`agent/Cargo.toml`'s `[[test]]` names) and exact
/// test name: syscall counts (calls that block or migrate too), thread slots freed at exit, errors, slow-call events, tasks, resident memory, naming, TCP
/// retransmits against `TcpRetransSegs`, TCP connection outcomes, HTTP requests (IPv4 and IPv6, each I/O syscall family), uprobes (malloc, goroutines), the breaker end to end,
/// and what grows with the CPU count. Left out: `nanosleep_latency_lands_around_20ms`, whose
/// bucket bounds assume a 20 ms sleep ends within 33.6 ms (under software emulation on a busy
/// host 3 of 10 did not; bucket placement does not depend on the kernel).
const TESTS: &[(&str, &[&str])] = &[
    (
        "syscall_latency",
        &[
            "getppid_count_matches_the_workload_exactly",
            "calls_that_leave_the_cpu_are_counted_exactly",
            "exited_threads_leave_no_slot",
            "sigterm_exits_zero",
        ],
    ),
    (
        "probes",
        &[
            "task_gauge_follows_a_known_thread_count",
            "syscall_errors_are_counted_by_errno",
            "exactly_the_slow_calls_become_events",
            "slow_thresholds_change_on_reload",
            "resident_memory_matches_vmrss",
            "targets_name_processes_by_executable",
        ],
    ),
    (
        "tcp_retransmits",
        &[
            "client_retransmits_match_tcp_retrans_segs",
            "server_retransmits_match_tcp_retrans_segs",
            "synack_retransmits_count_for_the_listener",
            "ipv6_retransmits_match_tcp_retrans_segs",
            "retransmits_that_fail_locally_count_as_the_kernel_counts",
        ],
    ),
    (
        "connections",
        &[
            "established_and_closed_connections_count_exactly_both_ways",
            "connects_to_a_closed_port_are_refused",
            "black_holed_connects_time_out",
            "a_reset_by_the_peer_counts_reset",
            "open_connections_gauge_follows_held_connections",
            "connect_duration_through_a_delay_lands_in_its_bucket",
            "connections_older_than_the_agent_are_not_counted",
        ],
    ),
    (
        "uprobes",
        &[
            "allocations_match_a_known_pattern",
            "goroutine_gauge_follows_a_go_program",
        ],
    ),
    (
        "breaker_e2e",
        &["kernel_latency_opens_the_breaker_within_a_second_and_it_recovers_through_probe"],
    ),
    (
        "host_size",
        &[
            "locked_map_memory_stays_within_the_bound_for_this_host",
            "a_workload_has_its_own_service_whatever_the_cpu_count",
        ],
    ),
    (
        "http",
        &[
            "python_server_and_clients_match_the_mix",
            "ipv6_requests_match_exactly",
            "go_server_and_client_match_the_mix",
            "edge_cases_match_exactly",
            "http_without_the_syscall_probe_and_without_syscall_tracepoints",
        ],
    ),
];

const HOST: &str = "host";

struct Opts {
    kernels: Vec<String>,
    cpus: Vec<u32>,
    only: Vec<String>,
    memory_mib: Option<u32>,
    timeout: Duration,
    report: Option<PathBuf>,
}

impl Opts {
    fn parse(args: &[String], known: &[String]) -> Result<Opts> {
        let mut o = Opts {
            kernels: Vec::new(),
            cpus: Vec::new(),
            only: Vec::new(),
            memory_mib: None,
            timeout: Duration::from_secs(1800),
            report: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .with_context(|| format!("{arg} needs a value"))
                    .cloned()
            };
            match arg.as_str() {
                "--kernel" => {
                    let k = value()?;
                    if k != HOST && !known.contains(&k) {
                        bail!("unknown kernel {k:?}: one of {known:?} or {HOST:?}");
                    }
                    o.kernels.push(k);
                }
                "--cpus" => {
                    let n: u32 = value()?.parse().context("--cpus")?;
                    if !(1..=255).contains(&n) {
                        bail!("--cpus {n}: 1 to 255");
                    }
                    o.cpus.push(n);
                }
                "--only" => o.only.push(value()?),
                "--memory-mib" => o.memory_mib = Some(value()?.parse().context("--memory-mib")?),
                "--timeout-secs" => {
                    o.timeout = Duration::from_secs(value()?.parse().context("--timeout-secs")?)
                }
                "--report" => o.report = Some(value()?.into()),
                _ => bail!(
                    "unknown argument {arg:?}; usage: cargo xtask vm-test [--kernel NAME]... \
                     [--cpus N]... [--only TEXT]... [--memory-mib N] [--timeout-secs N] [--report FILE]"
                ),
            }
        }
        if o.kernels.is_empty() {
            o.kernels = known.to_vec();
            o.kernels.push(HOST.into());
        }
        if o.cpus.is_empty() {
            o.cpus.push(2);
        }
        Ok(o)
    }
}

/// `$STEADFAST_CACHE`, else `~/.cache/steadfast` (where `scripts/setup --vm` puts kernels and vng).
fn cache_dir() -> PathBuf {
    env::var_os("STEADFAST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/steadfast")
        })
}

/// Kernel names in `scripts/vm-kernels`, in its order.
fn known_kernels(root: &Path) -> Result<Vec<String>> {
    let path = root.join("scripts/vm-kernels");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// What one run found.
#[derive(Default)]
struct Outcome {
    kernel: String,
    cpus: u32,
    release: String,
    boot_secs: Option<f64>,
    wall_secs: f64,
    passed: Vec<String>,
    failed: Vec<String>,
    /// Problems with the run itself (did not finish, a binary exited without a result line).
    problems: Vec<String>,
    locked_bytes: Option<u64>,
    possible_cpus: Option<u64>,
    own_service: Option<bool>,
    /// What each failed test printed (its panic, or what was running when it timed out), for
    /// the log of a run whose folder is gone (CI).
    excerpts: Vec<(String, String)>,
    /// Tests that failed, then passed when run once more.
    flaky: Vec<String>,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let known = known_kernels(root)?;
    let opts = Opts::parse(args, &known)?;
    let plan = plan(&opts.only)?;
    if plan.is_empty() {
        bail!("--only {:?} keeps no test", opts.only);
    }
    let executables = build_tests(root, plan.keys().copied())?;
    let binds = binds(root, &executables)?;
    let vng = cache_dir().join("vng/bin/vng");
    let out_root = root.join("target/vm-test");
    let host_cpus = [std::thread::available_parallelism().map_or(1, |n| n.get() as u32)];
    let mut outcomes = Vec::new();
    for kernel in &opts.kernels {
        let cpus: &[u32] = if kernel == HOST {
            &host_cpus
        } else {
            &opts.cpus
        };
        for &n in cpus {
            let label = if kernel == HOST {
                HOST.to_string()
            } else {
                format!("{kernel}-{n}cpu")
            };
            let dir = out_root.join(&label);
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::create_dir_all(&dir)?;
            let mut text = String::new();
            for (bin, tests) in &plan {
                writeln!(
                    text,
                    "{bin} {} {}",
                    executables[bin].display(),
                    tests.join(" ")
                )?;
            }
            fs::write(dir.join("plan"), text)?;
            if kernel != HOST {
                fs::write(dir.join("binds"), &binds)?;
            }
            eprintln!(
                "vm-test: {label}: {} tests",
                plan.values().map(Vec::len).sum::<usize>()
            );
            let start = Instant::now();
            let finished = if kernel == HOST {
                run_on_host(root, &dir)?
            } else {
                let kdir = cache_dir().join("kernels").join(kernel);
                let release = fs::read_to_string(kdir.join("release"))
                    .map(|r| r.trim().to_string())
                    .with_context(|| {
                        format!("kernel {kernel} is not set up: run `scripts/setup --vm {kernel}`")
                    })?;
                if !vng.exists() {
                    bail!("no {}: run `scripts/setup --vm`", vng.display());
                }
                let memory = opts.memory_mib.unwrap_or((1024 + 48 * n).max(2048));
                boot(
                    root,
                    &vng,
                    &kdir.join(format!("boot/vmlinuz-{release}")),
                    n,
                    memory,
                    &dir,
                    opts.timeout,
                )?
            };
            let mut o = collect(&dir, &plan, finished);
            o.kernel = kernel.clone();
            o.cpus = n;
            o.wall_secs = start.elapsed().as_secs_f64();
            eprintln!(
                "vm-test: {label}: {} passed, {} failed in {:.0} s{}",
                o.passed.len(),
                o.failed.len(),
                o.wall_secs,
                if o.problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.problems.join("; "))
                }
            );
            outcomes.push(o);
        }
    }
    for o in &outcomes {
        for (test, text) in &o.excerpts {
            eprintln!(
                "vm-test: {} ({} vCPUs): {test} failed{}:\n{text}\n",
                o.kernel,
                o.cpus,
                if o.flaky.contains(test) {
                    " (then passed when run once more)"
                } else {
                    ""
                }
            );
        }
    }
    let report = report(&outcomes);
    print!("{report}");
    fs::write(out_root.join("report.md"), &report)?;
    if let Some(path) = &opts.report {
        fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    let passed: usize = outcomes.iter().map(|o| o.passed.len()).sum();
    let failed: usize = outcomes.iter().map(|o| o.failed.len()).sum();
    let problems: usize = outcomes.iter().map(|o| o.problems.len()).sum();
    println!("vm-test: {passed} passed, {failed} failed");
    if failed > 0 || problems > 0 {
        bail!(
            "vm-test: {failed} failed, {problems} runs did not finish cleanly (outputs in {})",
            out_root.display()
        );
    }
    if passed == 0 {
        bail!("vm-test: no test ran");
    }
    Ok(())
}

/// Test binary -> exact test names, after `--only`.
fn plan(only: &[String]) -> Result<BTreeMap<&'static str, Vec<&'static str>>> {
    let mut plan: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (bin, tests) in TESTS {
        for test in *tests {
            let full = format!("{bin}::{test}");
            if only.is_empty() || only.iter().any(|o| full.contains(o.as_str())) {
                plan.entry(bin).or_default().push(test);
            }
        }
    }
    Ok(plan)
}

/// Builds the test binaries (and the agent they run) and returns each binary's path.
fn build_tests<'a>(
    root: &Path,
    bins: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<&'a str, PathBuf>> {
    let bins: Vec<&str> = bins.collect();
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "test",
        "--locked",
        "-p",
        "steadfast",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for b in &bins {
        cmd.args(["--test", b]);
    }
    eprintln!("xtask: {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed: {}", out.status);
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let Some(b) = bins.iter().find(|b| **b == name).filter(|_| is_test) {
            found.insert(*b, PathBuf::from(exe));
        }
    }
    for b in &bins {
        if !found.contains_key(b) {
            bail!("cargo built no test binary {b:?}");
        }
    }
    Ok(found)
}

/// `SOURCE TARGET` lines for `scripts/vm-guest`: files the guest copies into its RAM once and
/// binds over TARGET, since every program started from the 9p root (which has no page cache)
/// is read page by page under emulation. The agent goes without its debug info (244 MB with,
/// 18 MB without; the tests copy it for every agent they start); the test binaries, gcc's
/// `cc1` and Go's compiler and linker go as they are.
fn binds(root: &Path, executables: &BTreeMap<&str, PathBuf>) -> Result<String> {
    let agent = root.join("target/debug/steadfast");
    let stripped = root.join("target/vm-test/steadfast-stripped");
    fs::create_dir_all(stripped.parent().unwrap())?;
    crate::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(&agent),
    )?;
    let mut out = format!("{} {}\n", stripped.display(), agent.display());
    for exe in executables.values() {
        writeln!(out, "{} {}", exe.display(), exe.display())?;
    }
    let mut tools = Vec::new();
    if let Ok(o) = Command::new("gcc").arg("-print-prog-name=cc1").output() {
        tools.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    }
    if let Ok(o) = Command::new("go").args(["env", "GOTOOLDIR"]).output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        tools.push(dir.join("compile"));
        tools.push(dir.join("link"));
    }
    for t in tools.iter().filter(|t| t.is_absolute() && t.is_file()) {
        writeln!(out, "{} {}", t.display(), t.display())?;
    }
    Ok(out)
}

/// The plain run on the running kernel: the same runner, on the host.
fn run_on_host(root: &Path, dir: &Path) -> Result<bool> {
    let status = Command::new("bash")
        .arg(root.join("scripts/vm-guest"))
        .arg(dir)
        .stdin(Stdio::null())
        .status()
        .context("running scripts/vm-guest")?;
    Ok(status.success())
}

/// Boots `vmlinuz` with the runner; returns false if it had to be killed at the timeout.
fn boot(
    root: &Path,
    vng: &Path,
    vmlinuz: &Path,
    cpus: u32,
    memory_mib: u32,
    dir: &Path,
    timeout: Duration,
) -> Result<bool> {
    let log = fs::File::create(dir.join("vng.log"))?;
    let path = format!(
        "{}:{}",
        vng.parent().unwrap().display(),
        env::var("PATH").unwrap_or_default()
    );
    // The tests' shared Go build cache (`tests/support::go_cache`, CARGO_TARGET_TMPDIR of the
    // test binaries built above), read-write: without it every Go build in the guest starts
    // from an empty cache under software emulation (on 6.1 the two tests that build Go took
    // 88 s with it and 105 s without, 2026-12-07). CI runs `scripts/test` first, which fills it.
    let go_cache = root.join("target/tmp/go-cache");
    fs::create_dir_all(&go_cache)?;
    let mut cmd = Command::new(vng);
    cmd.args(["-v", "--disable-kvm", "--force-9p", "-r"])
        .arg(vmlinuz)
        .args(["--cpus", &cpus.to_string()])
        .args(["--memory", &format!("{memory_mib}M")])
        .arg("--rwdir")
        .arg(dir)
        .arg("--rwdir")
        .arg(&go_cache)
        // The kernel checks at boot that the timer interrupt arrives within a few ticks; under
        // software emulation on a busy host it may not ("IO-APIC + timer doesn't work!",
        // seen with 64 vCPUs at load 120), and the guest panics. The check proves nothing here.
        .args(["--append", "no_timer_check"])
        .arg("--exec")
        .arg(format!(
            "bash {} {}",
            root.join("scripts/vm-guest").display(),
            dir.display()
        ))
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // vng runs QEMU through a shell: its own process group lets a timeout end them all.
        .process_group(0);
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd.spawn().context("running vng")?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!("vm-test: the guest ran past {timeout:?}: killing it");
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            child.wait()?;
            return Ok(false);
        }
        sleep(Duration::from_millis(500));
    }
}

/// Reads what the runner wrote into `dir`.
fn collect(dir: &Path, plan: &BTreeMap<&str, Vec<&str>>, finished: bool) -> Outcome {
    let mut o = Outcome::default();
    if !finished {
        o.problems.push("killed at the timeout".into());
    } else if !dir.join("done").exists() {
        o.problems
            .push("the runner did not finish (see vng.log, guest.log)".into());
    }
    let env = fs::read_to_string(dir.join("guest.env")).unwrap_or_default();
    let field = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    o.release = field("release").unwrap_or_else(|| "?".into());
    o.boot_secs = field("boot_secs").and_then(|s| s.parse().ok());
    for (bin, tests) in plan {
        let out = fs::read_to_string(dir.join(format!("{bin}.out"))).unwrap_or_default();
        let rc = fs::read_to_string(dir.join(format!("{bin}.rc"))).ok();
        for test in tests {
            // Every verdict of the test, in order (a failed test runs once more).
            let verdicts: Vec<bool> = out
                .lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix("test ")?.strip_prefix(*test)?;
                    let verdict = rest.strip_prefix(" ... ")?;
                    Some(verdict.starts_with("ok"))
                })
                .collect();
            let result = verdicts.last().copied();
            let full = format!("{bin}::{test}");
            match result {
                Some(true) if verdicts.len() > 1 => {
                    o.excerpts.push((full.clone(), excerpt(&out, test)));
                    o.flaky.push(full.clone());
                    o.passed.push(full)
                }
                Some(true) => o.passed.push(full),
                Some(false) => {
                    o.excerpts.push((full.clone(), excerpt(&out, test)));
                    o.failed.push(full)
                }
                // Started but no verdict (a crash or the timeout), or never started.
                None => o.failed.push(format!("{full} (no result)")),
            }
        }
        if rc.is_none() && finished {
            o.problems.push(format!("{bin}: no exit status"));
        }
        for line in out.lines() {
            let Some(kv) = line.strip_prefix("xtask-vm: ") else {
                continue;
            };
            for pair in kv.split_whitespace() {
                match pair.split_once('=') {
                    Some(("locked_bytes", v)) => o.locked_bytes = v.parse().ok(),
                    Some(("possible_cpus", v)) => o.possible_cpus = v.parse().ok(),
                    _ => {}
                }
            }
        }
        if tests.contains(&"a_workload_has_its_own_service_whatever_the_cpu_count") {
            o.own_service = o
                .passed
                .iter()
                .chain(&o.failed)
                .find(|t| t.contains("a_workload_has_its_own_service"))
                .map(|t| o.passed.contains(t));
        }
    }
    o
}

/// The lines `test` left in a binary's output when it failed: libtest's `---- TEST stdout ----`
/// section (its panic and what it printed), or the runner's TIMEOUT block; at most 80 lines.
fn excerpt(out: &str, test: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    let header = format!("---- {test} stdout ----");
    let timeout = |l: &&str| {
        l.strip_prefix("test ")
            .and_then(|r| r.strip_prefix(test))
            .is_some_and(|r| r.contains("TIMEOUT"))
    };
    let (start, end_at): (usize, fn(&str) -> bool) =
        if let Some(i) = lines.iter().position(|l| *l == header) {
            (i, |l| {
                l.starts_with("---- ") || l == "failures:" || l.starts_with("test result:")
            })
        } else if let Some(i) = lines.iter().position(timeout) {
            (i, |l| l.starts_with("running ") || l.starts_with("test "))
        } else {
            return "(no output)".into();
        };
    let body: Vec<&str> = lines[start..]
        .iter()
        .enumerate()
        .take_while(|(n, l)| *n == 0 || !end_at(l))
        .map(|(_, l)| *l)
        .collect();
    let mut text = body.iter().take(80).copied().collect::<Vec<_>>().join("\n");
    if body.len() > 80 {
        text.push_str(&format!("\n... ({} more lines)", body.len() - 80));
    }
    text
}

fn report(outcomes: &[Outcome]) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "\n| kernel | release | vCPUs | boot (s) | whole run (s) | passed | failed | locked map memory | own service |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let cpus = o
            .possible_cpus
            .map_or_else(|| o.cpus.to_string(), |c| c.to_string());
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            o.kernel,
            o.release,
            cpus,
            o.boot_secs
                .filter(|_| o.kernel != HOST)
                .map_or("-".into(), |b| format!("{b:.1}")),
            o.wall_secs,
            o.passed.len(),
            o.failed.len(),
            o.locked_bytes.map_or("-".into(), |b| format!(
                "{:.1} MiB",
                b as f64 / (1 << 20) as f64
            )),
            match o.own_service {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
    for o in outcomes {
        for f in &o.failed {
            let _ = writeln!(r, "failed on {} ({} vCPUs): {f}", o.kernel, o.cpus);
        }
        for f in &o.flaky {
            let _ = writeln!(
                r,
                "flaky on {} ({} vCPUs): {f} (failed, then passed when run once more)",
                o.kernel, o.cpus
            );
        }
        for p in &o.problems {
            let _ = writeln!(r, "problem on {} ({} vCPUs): {p}", o.kernel, o.cpus);
        }
    }
    r
}

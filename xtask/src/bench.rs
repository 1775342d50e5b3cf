//! `cargo xtask bench`: what the agent costs and how much it carries, measured in one run.
//!
//! Not a test: it prints numbers (and writes them to `target/bench/last.md`); it asserts
//! nothing and never runs in CI. Needs root (it loads eBPF programs and runs bpftrace).
//!
//! 1. Overhead per syscall: C workloads (`bench/workloads/`) pinned to CPU 1 with
//!    `taskset -c 1`, timed by their own CPU time (user + sys of the loop only, from
//!    `CLOCK_PROCESS_CPUTIME_ID`: what other processes do on the CPU does not count, which
//!    matters on a shared, busy machine), bare, under steadfast (default config), under
//!    steadfast with its syscall probe off (`probes.syscalls.enabled: false`), under
//!    steadfast with its HTTP probe off (`probes.http.enabled: false`: the socket-call
//!    tracepoints' share), and under bpftrace doing the same per-syscall latency histogram. Each round runs every case
//!    in a rotating order, so slow drift of the machine hits every case alike; the report
//!    gives medians over rounds. The agent and bpftrace are started and stopped inside each
//!    round: their probes are attached to every process on the host, so the bare case must
//!    run with neither attached.
//! 2. Agent cost: the agent's CPU (utime + stime from `/proc/<pid>/stat`, cross-checked with
//!    the per-thread `schedstat` run time) while idle and while the getppid loop runs flat out
//!    (over a million syscalls/s), and its peak RSS (`VmHWM`).
//! 3. Event throughput: every `getpgid` call becomes a slow-syscall event (threshold 1 ns via
//!    `probes.syscalls.slow_ns`); a paced generator makes calls at increasing rates; received
//!    and lost events come from the agent's own counters.
//! 4. Scale: 1,000 live processes and 10,000 short-lived ones; agent memory, tracked
//!    processes, series on `/metrics`, scrape time.
//! 5. Decision latency (`bench_decision.rs`, section 4 of the report): kernel condition to a
//!    client blocked on the API, to the Go client's `Allow() == false`, and decision to the
//!    state page.
//! 6. Client cost (`bench_clients.rs`, section 6): `Allow` in the Go and Rust clients, with 1
//!    and 1,000 breakers on the page.
//! 7. HTTP keep-alive (`bench_http.rs`, section 7): `ab -k` against a Go net/http server,
//!    bare against the agent with its HTTP probe on and off; requests/s and agent CPU.
//!
//! Other tests on the machine may load probes at the same time: before and after every
//! overhead sample the bench looks for other processes holding BPF programs or links
//! (`/proc/*/fd`, systemd's own cgroup programs aside), waits for them to go (bounded), takes
//! a sample again when one came meanwhile, and leaves flagged samples out of the medians when
//! enough clean ones remain.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, run};

const BPFTRACE_PROG: &str = "BEGIN { printf(\"ready\\n\"); } \
tracepoint:raw_syscalls:sys_enter { @s[tid] = nsecs; } \
tracepoint:raw_syscalls:sys_exit /@s[tid]/ { @h[args->id] = hist(nsecs - @s[tid]); delete(@s[tid]); } \
END { clear(@s); }";

/// Empty programs on the same tracepoints: what enabling classic syscall tracepoints costs at
/// all, measured in the same run (the raw_tp floor is lower still; see docs/benchmarks.md).
const BPFTRACE_EMPTY: &str = "BEGIN { printf(\"ready\\n\"); } \
tracepoint:raw_syscalls:sys_enter { } tracepoint:raw_syscalls:sys_exit { }";

/// Names the agent runs under (its comm), so its samples and fds are recognisable.
const AGENT_NAME: &str = "sfbench-agent";

struct Opts {
    rounds: usize,
    calls: u64,
    idle_secs: u64,
    load_secs: u64,
    event_secs: f64,
    rates: Vec<u64>,
    short_lived: usize,
    live: usize,
    only: Option<BTreeSet<String>>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            rounds: 7,
            calls: 2_000_000,
            idle_secs: 30,
            load_secs: 10,
            event_secs: 3.0,
            rates: vec![100_000, 200_000, 400_000, 600_000, 800_000, 1_200_000, 0],
            short_lived: 10_000,
            live: 1_000,
            only: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().context(format!("{a} needs a value"));
            match a.as_str() {
                "--quick" => {
                    o.rounds = 3;
                    o.calls = 500_000;
                    o.idle_secs = 5;
                    o.load_secs = 3;
                    o.event_secs = 1.0;
                    o.rates = vec![100_000, 200_000, 0];
                    o.short_lived = 1_000;
                    o.live = 100;
                }
                "--rounds" => o.rounds = val()?.parse()?,
                "--calls" => o.calls = val()?.parse()?,
                "--idle-secs" => o.idle_secs = val()?.parse()?,
                "--load-secs" => o.load_secs = val()?.parse()?,
                "--event-secs" => o.event_secs = val()?.parse()?,
                "--rates" => {
                    o.rates = val()?
                        .split(',')
                        .map(|r| r.parse())
                        .collect::<Result<_, _>>()?
                }
                "--short-lived" => o.short_lived = val()?.parse()?,
                "--live" => o.live = val()?.parse()?,
                "--only" => o.only = Some(val()?.split(',').map(String::from).collect()),
                _ => bail!(
                    "unknown option {a:?}; options: --quick --rounds N --calls N --idle-secs N \
                     --load-secs N --event-secs S --rates R1,R2,..(0 = flat out) \
                     --short-lived N --live N --only overhead,agent,events,scale,decision,clients,http,series"
                ),
            }
        }
        if o.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        Ok(o)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(part))
    }
}

/// Where the binaries of one run live.
pub(crate) struct Env {
    pub(crate) dir: PathBuf,
    agent: PathBuf,
    /// `STEADFAST_BENCH_BEFORE=PATH`: another agent binary (an older build) measured in the
    /// same rounds as one more case, with its default config.
    pub(crate) before: Option<PathBuf>,
}

impl Env {
    /// Builds the release agent and compiles `workloads` (C files under `bench/workloads/`,
    /// else `tests/workloads/`) into a fresh temporary directory named after `what`. With
    /// `STEADFAST_BENCH_AGENT=PATH` in the environment, that agent binary is measured instead
    /// (nothing is built): the way to measure an older build with the same bench.
    pub(crate) fn prepare(root: &Path, what: &str, workloads: &[&str]) -> Result<Env> {
        let given = std::env::var_os("STEADFAST_BENCH_AGENT").map(PathBuf::from);
        if given.is_none() {
            run(cargo().current_dir(root).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "steadfast",
            ]))?;
        }
        let dir = std::env::temp_dir().join(format!("steadfast-{what}-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let before = std::env::var_os("STEADFAST_BENCH_BEFORE").map(|_| dir.join("sfagent-before"));
        let env = Env {
            agent: dir.join(AGENT_NAME),
            dir,
            before,
        };
        let agent = given.unwrap_or_else(|| root.join("target/release/steadfast"));
        fs::copy(&agent, &env.agent)
            .with_context(|| format!("copying the agent {}", agent.display()))?;
        if let (Some(src), Some(dst)) = (std::env::var_os("STEADFAST_BENCH_BEFORE"), &env.before) {
            fs::copy(&src, dst)
                .with_context(|| format!("copying the agent {}", Path::new(&src).display()))?;
        }
        for w in workloads {
            let bench = root.join("bench/workloads").join(format!("{w}.c"));
            let src = if bench.exists() {
                bench
            } else {
                root.join("tests/workloads").join(format!("{w}.c"))
            };
            run(Command::new("gcc")
                .args(["-O2", "-Wall", "-o"])
                .arg(env.bin(w))
                .arg(src))?;
        }
        Ok(env)
    }

    /// The agent binary under test.
    pub(crate) fn agent_bin(&self) -> PathBuf {
        self.agent.clone()
    }

    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs and runs bpftrace: run it as root");
    }
    let env = Env::prepare(
        root,
        "bench",
        &[
            "getppid_bench",
            "getppid_threads",
            "rw_mix",
            "unix_rw",
            "event_gen",
            "hold",
            "tiny",
            "many_syscalls",
        ],
    )?;
    let dir = env.dir.clone();

    let mut out = String::new();
    let started = utc_now();
    writeln!(out, "# steadfast benchmark, {started}\n")?;
    let command = format!("cargo xtask bench {}", args.join(" "));
    writeln!(out, "- command: `{}`", command.trim_end())?;
    writeln!(out, "- machine: {}", machine())?;
    writeln!(out, "- load average at start: {}", loadavg_line())?;
    let stats = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if stats.trim() == "1" {
        writeln!(
            out,
            "- WARNING: kernel.bpf_stats_enabled=1 (adds ~47 ns per program run)"
        )?;
    }
    let mut loads = vec![loadavg1()];

    let result = (|| -> Result<()> {
        if opts.wants("overhead") {
            if !Path::new("/sys/kernel/tracing/events/raw_syscalls").exists() {
                run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
                writeln!(
                    out,
                    "- tracefs was not mounted: mounted it on /sys/kernel/tracing for bpftrace (left mounted)"
                )?;
            }
            overhead(&env, &opts, &mut out, &mut loads)?;
        }
        if opts.wants("agent") {
            agent_cost(&env, &opts, &mut out)?;
            loads.push(loadavg1());
        }
        if opts.wants("events") {
            events(&env, &opts, &mut out)?;
            loads.push(loadavg1());
        }
        if opts.wants("scale") {
            scale(&env, &opts, &mut out)?;
            loads.push(loadavg1());
        }
        if opts.wants("decision") {
            crate::bench_decision::decision(&env, root, &mut out)?;
            loads.push(loadavg1());
        }
        if opts.wants("clients") {
            crate::bench_clients::clients(root, &mut out)?;
            loads.push(loadavg1());
        }
        if opts.wants("http") {
            crate::bench_http::keepalive(&env, root, opts.rounds, &mut out)?;
            loads.push(loadavg1());
        }
        if opts.wants("series") {
            crate::bench_series::series_scale(&env, &mut out)?;
            loads.push(loadavg1());
        }
        Ok(())
    })();
    loads.push(loadavg1());
    writeln!(
        out,
        "\nLoad average (1 min) seen during the run: min {:.2}, median {:.2}, max {:.2} (2 CPUs); at the end: {}",
        min(&loads),
        median(&loads),
        max(&loads),
        loadavg_line()
    )?;
    let _ = fs::remove_dir_all(&dir);
    println!("{out}");
    let report = root.join("target/bench");
    fs::create_dir_all(&report)?;
    fs::write(report.join("last.md"), &out)?;
    eprintln!(
        "xtask: report written to {}",
        report.join("last.md").display()
    );
    result
}

// ---------------------------------------------------------------------------------------
// 1. Overhead per syscall

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Bare,
    Steadfast,
    SteadfastNoSyscalls,
    SteadfastNoHttp,
    Bpftrace,
    BpftraceEmpty,
    /// The `STEADFAST_BENCH_BEFORE` build, default config (only when it is set).
    Before,
}

impl Case {
    const ALL: [Case; 7] = [
        Case::Bare,
        Case::Steadfast,
        Case::SteadfastNoSyscalls,
        Case::SteadfastNoHttp,
        Case::Bpftrace,
        Case::BpftraceEmpty,
        Case::Before,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Steadfast => "steadfast (default config)",
            Case::SteadfastNoSyscalls => "steadfast, syscall probe off",
            Case::SteadfastNoHttp => "steadfast, HTTP probe off",
            Case::Bpftrace => "bpftrace latency histogram",
            Case::BpftraceEmpty => "bpftrace, empty programs",
            Case::Before => "steadfast before (STEADFAST_BENCH_BEFORE, default config)",
        }
    }
}

struct Sample {
    case: Case,
    workload: &'static str,
    cpu_ns_per_call: f64,
    wall_ns_per_call: f64,
    clean: bool,
}

fn overhead(env: &Env, opts: &Opts, out: &mut String, loads: &mut Vec<f64>) -> Result<()> {
    // (workload, its arguments, CPUs it runs on). getppid_threads: two threads on both CPUs
    // calling getppid at once, so both hit one (process, syscall) histogram at the same time:
    // the contended case of the shared histogram map and its atomic adds.
    // unix_rw: socket I/O that the HTTP probe's socket tracepoints see but must not track.
    let workloads: [(&'static str, Vec<String>, &str); 4] = [
        ("getppid_bench", vec![opts.calls.to_string()], "1"),
        ("rw_mix", vec![(opts.calls / 4).to_string()], "1"), // 4 syscalls a round
        ("unix_rw", vec![(opts.calls / 2).to_string()], "1"), // 2 syscalls a round
        (
            "getppid_threads",
            vec![(opts.calls / 2).to_string(), "2".into()],
            "0,1",
        ),
    ];
    let mut samples = Vec::new();
    let mut foreign_seen = BTreeSet::new();
    let mut wait_budget = Duration::from_secs(300);
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| *c != Case::Before || env.before.is_some())
        .collect();
    for round in 0..opts.rounds {
        loads.push(loadavg1());
        for i in 0..cases.len() {
            let case = cases[(i + round) % cases.len()];
            let tracer: Option<Box<dyn std::any::Any>> = match case {
                Case::Bare => None,
                Case::Before => Some(Box::new(Agent::start_bin(
                    env,
                    env.before.as_deref().context("no before agent")?,
                    "",
                )?)),
                Case::Steadfast => Some(Box::new(Agent::start(env, "")?)),
                Case::SteadfastNoSyscalls => Some(Box::new(Agent::start(
                    env,
                    "probes:\n  syscalls:\n    enabled: false\n",
                )?)),
                Case::SteadfastNoHttp => Some(Box::new(Agent::start(
                    env,
                    "probes:\n  http:\n    enabled: false\n",
                )?)),
                Case::Bpftrace => Some(Box::new(Bpftrace::start(env, BPFTRACE_PROG)?)),
                Case::BpftraceEmpty => Some(Box::new(Bpftrace::start(env, BPFTRACE_EMPTY)?)),
            };
            let ours = tracer_pid(&tracer);
            for (w, args, cpus) in &workloads {
                let w = *w;
                // Another process's probes on the syscall path would be measured too: wait
                // for them to go (from a bounded budget for the whole run), and take the
                // sample again when one came and went meanwhile; past the budget, keep the
                // sample and flag it.
                let mut attempt = 0;
                let (r, clean) = loop {
                    attempt += 1;
                    let waited = Instant::now();
                    let until = waited + wait_budget.min(Duration::from_secs(60));
                    let mut before = foreign_bpf(ours);
                    while !before.is_empty() && Instant::now() < until {
                        sleep(Duration::from_millis(500));
                        before = foreign_bpf(ours);
                    }
                    wait_budget = wait_budget.saturating_sub(waited.elapsed());
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let r = run_workload_on(cpus, &env.bin(w), &args)?;
                    let after = foreign_bpf(ours);
                    let clean = before.is_empty() && after.is_empty();
                    foreign_seen.extend(before);
                    foreign_seen.extend(after);
                    if clean || attempt >= 4 {
                        break (r, clean);
                    }
                };
                eprintln!(
                    "bench: round {round} {:<30} {w:<14} cpu {:7.1} ns/call, wall {:7.1} ns/call{}",
                    case.label(),
                    r.cpu_ns_per_call(),
                    r.wall_ns_per_call(),
                    if clean { "" } else { " (other BPF users seen)" }
                );
                samples.push(Sample {
                    case,
                    workload: w,
                    cpu_ns_per_call: r.cpu_ns_per_call(),
                    wall_ns_per_call: r.wall_ns_per_call(),
                    clean,
                });
            }
            drop(tracer);
        }
    }

    writeln!(out, "\n## 1. Overhead per syscall\n")?;
    writeln!(
        out,
        "{} rounds, each running every case in a rotating order; workloads pinned to CPU 1 \
         (`taskset -c 1`); ns per call = the workload's own CPU time (user + sys) over the loop \
         divided by its syscalls; medians over rounds. getppid_bench: {} getppid calls; \
         rw_mix: {} small read/write calls (pipe 64 B, /dev/zero and /dev/null 256 B); \
         unix_rw: {} 64-byte writes and reads on a Unix stream socket pair; \
         getppid_threads: {} getppid calls from two threads of one process at once, one on \
         each CPU (`taskset -c 0,1`; CPU time of both threads).\n",
        opts.rounds,
        opts.calls,
        opts.calls / 4 * 4,
        opts.calls / 2 * 2,
        opts.calls / 2 * 2
    )?;
    let dirty = samples.iter().filter(|s| !s.clean).count();
    if !foreign_seen.is_empty() {
        writeln!(
            out,
            "Other processes held BPF programs during {dirty} of {} kept samples (each sample \
             waits up to 60 s for them to go, from a 300 s budget, and is taken again up to 4 \
             times when one appeared meanwhile): {}.\n",
            samples.len(),
            foreign_seen.into_iter().collect::<Vec<_>>().join(", ")
        )?;
    }
    for (w, _, _) in &workloads {
        let w = *w;
        let pick = |case: Case| -> (Vec<f64>, Vec<f64>, bool) {
            let all: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.case == case && s.workload == w)
                .collect();
            let clean: Vec<&Sample> = all.iter().copied().filter(|s| s.clean).collect();
            let use_clean = clean.len() >= 3.min(all.len());
            let set = if use_clean { clean } else { all };
            (
                set.iter().map(|s| s.cpu_ns_per_call).collect(),
                set.iter().map(|s| s.wall_ns_per_call).collect(),
                use_clean,
            )
        };
        let (bare_cpu, bare_wall, _) = pick(Case::Bare);
        let bare = median(&bare_cpu);
        let bpftrace_added = median(&pick(Case::Bpftrace).0) - bare;
        writeln!(out, "### {w}\n")?;
        writeln!(
            out,
            "| case | CPU ns/call (median) | min..max | added vs bare | ratio to bpftrace's added | wall ns/call (median) | samples |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|")?;
        for case in cases.iter().copied() {
            let (cpu, wall, used_clean) = pick(case);
            let m = median(&cpu);
            let added = m - bare;
            let (added_s, ratio_s) = if case == Case::Bare {
                ("-".to_string(), "-".to_string())
            } else {
                (
                    format!("{added:+.0}"),
                    format!("{:.2}", added / bpftrace_added),
                )
            };
            writeln!(
                out,
                "| {} | {m:.0} | {:.0}..{:.0} | {added_s} | {ratio_s} | {:.0} | {}{} |",
                case.label(),
                min(&cpu),
                max(&cpu),
                median(&wall),
                cpu.len(),
                if used_clean {
                    ""
                } else {
                    " (incl. samples with other BPF users)"
                }
            )?;
        }
        let _ = bare_wall;
        writeln!(out)?;
    }
    Ok(())
}

fn tracer_pid(t: &Option<Box<dyn std::any::Any>>) -> Option<u32> {
    let t = t.as_ref()?;
    if let Some(a) = t.downcast_ref::<Agent>() {
        return Some(a.pid());
    }
    t.downcast_ref::<Bpftrace>().map(|b| b.child.id())
}

struct WorkloadResult {
    calls: u64,
    cpu_ns: u64,
    wall_ns: u64,
}

impl WorkloadResult {
    fn cpu_ns_per_call(&self) -> f64 {
        self.cpu_ns as f64 / self.calls as f64
    }
    fn wall_ns_per_call(&self) -> f64 {
        self.wall_ns as f64 / self.calls as f64
    }
}

/// Runs a workload pinned to CPU 1; it prints "calls cpu_ns wall_ns".
fn run_workload(bin: &Path, args: &[&str]) -> Result<WorkloadResult> {
    run_workload_on("1", bin, args)
}

/// Runs a workload pinned to `cpus` (a `taskset -c` list); it prints "calls cpu_ns wall_ns".
fn run_workload_on(cpus: &str, bin: &Path, args: &[&str]) -> Result<WorkloadResult> {
    let o = Command::new("taskset")
        .args(["-c", cpus])
        .arg(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !o.status.success() {
        bail!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {text:?}"))?;
    match v[..] {
        [calls, cpu_ns, wall_ns] => Ok(WorkloadResult {
            calls,
            cpu_ns,
            wall_ns,
        }),
        _ => bail!("unexpected output {text:?}"),
    }
}

/// Names (comm) of processes other than `ours` and systemd that hold BPF programs or links.
fn foreign_bpf(ours: Option<u32>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == ours || pid == me {
            continue;
        }
        let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm == "systemd" {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .map(|l| {
                    let l = l.to_string_lossy();
                    l.contains("bpf-prog") || l.contains("bpf_link") || l.contains("bpf-link")
                })
                .unwrap_or(false)
        });
        if holds {
            found.insert(comm.to_string());
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Processes under test

pub(crate) struct Agent {
    child: Child,
    pub(crate) port: u16,
}

impl Agent {
    /// Starts the agent with `extra` YAML after a config that only sets the listen address;
    /// waits until `/-/healthy` answers (probes attached, metrics served).
    pub(crate) fn start(env: &Env, extra: &str) -> Result<Agent> {
        Agent::start_bin(env, &env.agent, extra)
    }

    /// [`Agent::start`] with another agent binary.
    pub(crate) fn start_bin(env: &Env, bin: &Path, extra: &str) -> Result<Agent> {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let config = env.dir.join("steadfast.yaml");
            fs::write(
                &config,
                format!("http:\n  listen_address: 127.0.0.1:{port}\n{extra}"),
            )?;
            let log = fs::File::create(env.dir.join("agent.log"))?;
            let child = Command::new(bin)
                .args(["run", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting the agent")?;
            let mut agent = Agent { child, port };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if agent.child.try_wait()?.is_some() {
                    break;
                }
                if http_get(port, "/-/healthy").is_ok() && agent.child.try_wait()?.is_none() {
                    return Ok(agent);
                }
                sleep(Duration::from_millis(50));
            }
            let log = fs::read_to_string(env.dir.join("agent.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                bail!("the agent did not start: {log}");
            }
        }
        bail!("the agent found no free port in 5 tries")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Port of its loopback listener.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn scrape(&self) -> Result<(String, Duration)> {
        let t = Instant::now();
        let body = http_get(self.port, "/metrics")?;
        Ok((body, t.elapsed()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    /// Starts bpftrace and waits for its BEGIN probe, which runs once every probe is attached.
    fn start(env: &Env, prog: &str) -> Result<Bpftrace> {
        let log = env.dir.join("bpftrace.out");
        let child = Command::new("bpftrace")
            .args(["-B", "line", "-e", prog])
            .stdout(fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let mut b = Bpftrace { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
            {
                return Ok(b);
            }
            if let Some(s) = b.child.try_wait()? {
                bail!("bpftrace exited ({s}): {}", fs::read_to_string(&log)?);
            }
            sleep(Duration::from_millis(50));
        }
        bail!("bpftrace did not attach within 60 s")
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // A background bpftrace ignores SIGINT: SIGTERM, by pid.
        terminate(&mut self.child);
    }
}

pub(crate) fn terminate(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // bpftrace was seen to miss a SIGTERM sent right after its BEGIN probe ran: repeat it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut next_signal = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_signal {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            next_signal += Duration::from_secs(1);
        }
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn http_get(port: u16, path: &str) -> Result<String> {
    let s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse()?,
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    get_on(s, path)
}

/// One HTTP/1.0 `GET` on a connected stream (TCP or the API's unix socket); the body of a 200.
pub(crate) fn get_on(mut s: impl Read + Write, path: &str) -> Result<String> {
    // One write: `write!` on an unbuffered stream writes each piece of the format on its own.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    if !head.contains(" 200 ") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

/// Sum of every sample named `name` whose labels include each of `labels` (`k="v"`).
pub(crate) fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|k| rest.contains(k)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// /proc readings

/// utime + stime in clock ticks (USER_HZ = 100), threads that exited included.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the comm's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// Run time in ns summed over the live threads (`/proc/<pid>/task/*/schedstat`).
fn schedstat_ns(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// Processes and threads created on the host since boot (`processes` in /proc/stat).
fn forks() -> u64 {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// A `/proc/<pid>/status` field in kB (VmHWM, VmRSS).
pub(crate) fn status_kb(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The agent's resident memory by mapping kind, from `/proc/<pid>/smaps` (kB): its own
/// binary, other files (shared libraries), BPF maps it mapped (ring buffers), anonymous
/// memory (the heap, thread stacks), and the total `Rss`.
#[derive(Clone, Copy, Default)]
pub(crate) struct MemSplit {
    pub(crate) binary: u64,
    pub(crate) libs: u64,
    pub(crate) bpf: u64,
    pub(crate) anon: u64,
    pub(crate) total: u64,
    pub(crate) hwm: u64,
}

impl MemSplit {
    pub(crate) fn read(pid: u32) -> MemSplit {
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut m = MemSplit {
            hwm: status_kb(pid, "VmHWM"),
            ..MemSplit::default()
        };
        let mut kind = 0u8;
        for l in smaps.lines() {
            let first = l.split_whitespace().next().unwrap_or("");
            if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                // A mapping's header: address range, perms, offset, device, inode, path.
                let path = l.split_whitespace().nth(5).unwrap_or("");
                kind = if path.is_empty() || path.starts_with("[") {
                    3
                } else if path.contains("bpf") {
                    2
                } else if path == exe.trim_end_matches(" (deleted)") {
                    0
                } else {
                    1
                };
            } else if let Some(v) = l.strip_prefix("Rss:") {
                let kb: u64 = v
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                m.total += kb;
                match kind {
                    0 => m.binary += kb,
                    1 => m.libs += kb,
                    2 => m.bpf += kb,
                    _ => m.anon += kb,
                }
            }
        }
        m
    }

    /// `total (binary + libraries + BPF maps + anonymous)` in MiB, and the peak so far.
    pub(crate) fn describe(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "{:.1} MiB ({:.1} binary + {:.1} libraries + {:.1} BPF maps + {:.1} anonymous); VmHWM {:.1}",
            mib(self.total),
            mib(self.binary),
            mib(self.libs),
            mib(self.bpf),
            mib(self.anon),
            mib(self.hwm)
        )
    }
}

pub(crate) struct CpuWindow {
    ticks: u64,
    sched_ns: u64,
    at: Instant,
}

impl CpuWindow {
    pub(crate) fn open(pid: u32) -> Result<CpuWindow> {
        Ok(CpuWindow {
            ticks: cpu_ticks(pid)?,
            sched_ns: schedstat_ns(pid),
            at: Instant::now(),
        })
    }

    /// (% of one core from ticks, % of one core from schedstat, seconds).
    pub(crate) fn close(self, pid: u32) -> Result<(f64, f64, f64)> {
        let secs = self.at.elapsed().as_secs_f64();
        let ticks = cpu_ticks(pid)? - self.ticks;
        let sched = schedstat_ns(pid).saturating_sub(self.sched_ns);
        Ok((
            ticks as f64 / 100.0 / secs * 100.0,
            sched as f64 / 1e9 / secs * 100.0,
            secs,
        ))
    }
}

// ---------------------------------------------------------------------------------------
// 2. Agent cost

fn agent_cost(env: &Env, opts: &Opts, out: &mut String) -> Result<()> {
    // Idle: the agent's own cost when the benchmark runs nothing. The host is not idle (other
    // processes run), and the agent's work grows with the processes started on the host, so
    // the fork rate of the window is reported with it. Variants with one probe off say where
    // the idle cost goes.
    let variants: [(&str, &str); 4] = [
        ("default config", ""),
        (
            "memory probe off",
            "probes:\n  memory:\n    enabled: false\n",
        ),
        (
            "syscall probe off",
            "probes:\n  syscalls:\n    enabled: false\n",
        ),
        ("TCP probe off", "probes:\n  tcp:\n    enabled: false\n"),
    ];
    let mut idle_rows = Vec::new();
    for (label, extra) in variants {
        let agent = Agent::start(env, extra)?;
        let pid = agent.pid();
        sleep(Duration::from_secs(2)); // start-up work (first procfs walk) is not idle time
        let forks0 = forks();
        let w = CpuWindow::open(pid)?;
        sleep(Duration::from_secs(opts.idle_secs));
        let (ticks, sched, secs) = w.close(pid)?;
        let fork_rate = (forks() - forks0) as f64 / secs;
        eprintln!("bench: idle {label}: {ticks:.3}% ({sched:.3}%), host forks {fork_rate:.1}/s");
        idle_rows.push((label, ticks, sched, secs, fork_rate));
    }
    let agent = Agent::start(env, "")?;
    let pid = agent.pid();
    sleep(Duration::from_secs(2));
    let rss_idle = status_kb(pid, "VmRSS");

    // The getppid loop flat out for about load_secs: size it from a short calibration run.
    let cal = run_workload(&env.bin("getppid_bench"), &["200000"])?;
    let n = (opts.load_secs as f64 * 1e9 / cal.wall_ns_per_call()) as u64;
    let (m0, _) = agent.scrape()?;
    let forks0 = forks();
    let w = CpuWindow::open(pid)?;
    let r = run_workload(&env.bin("getppid_bench"), &[&n.to_string()])?;
    let (load_ticks, load_sched, load_secs) = w.close(pid)?;
    let load_forks = (forks() - forks0) as f64 / load_secs;
    let (m1, _) = agent.scrape()?;
    let rate = r.calls as f64 / (r.wall_ns as f64 / 1e9);
    let exported_cpu = metric(&m1, "steadfast_agent_cpu_seconds_total", &[])
        - metric(&m0, "steadfast_agent_cpu_seconds_total", &[]);
    let hwm = status_kb(pid, "VmHWM");
    let rss = status_kb(pid, "VmRSS");
    let exported_rss = metric(&m1, "steadfast_agent_resident_memory_bytes", &[]);
    let locked = locked_bpf_bytes(pid);
    drop(agent);

    writeln!(out, "\n## 2. Agent cost (default config)\n")?;
    writeln!(
        out,
        "CPU as % of one core: utime+stime from /proc/<pid>/stat (10 ms ticks, includes exited \
         threads), and the run time of the live threads from /proc/<pid>/task/*/schedstat (ns).\n"
    )?;
    writeln!(out, "| figure | value | target |")?;
    writeln!(out, "|---|---|---|")?;
    for (label, ticks, sched, secs, fork_rate) in idle_rows {
        writeln!(
            out,
            "| agent CPU, idle, {label} ({secs:.0} s; host forks {fork_rate:.1}/s) | {ticks:.3}% (schedstat {sched:.3}%) | < 0.2% |"
        )?;
    }
    writeln!(
        out,
        "| agent CPU, getppid loop at {:.2} M syscalls/s{} ({load_secs:.1} s; host forks {load_forks:.1}/s) | {load_ticks:.3}% (schedstat {load_sched:.3}%; exported counter {:.3}%) | < 2% |",
        rate / 1e6,
        if rate < 1e6 {
            " (below 1 M/s: CPU 1 was shared)"
        } else {
            ""
        },
        exported_cpu / load_secs * 100.0
    )?;
    writeln!(
        out,
        "| agent peak RSS (VmHWM) | {:.1} MiB (VmRSS idle {:.1} MiB, after load {:.1} MiB; exported {:.1} MiB) | < 40 MiB |",
        hwm as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss as f64 / 1024.0,
        exported_rss / 1048576.0
    )?;
    let cpus = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    writeln!(
        out,
        "| kernel memory locked by the agent's maps and programs (sum of `memlock:` in /proc/<pid>/fdinfo; possible CPUs {}) | {:.1} MiB | <= 64 MiB up to 64 CPUs |",
        cpus.trim(),
        locked as f64 / 1048576.0
    )?;
    Ok(())
}

/// Sum of `memlock:` over a process's BPF map and program descriptors (/proc/<pid>/fdinfo).
fn locked_bpf_bytes(pid: u32) -> u64 {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| fs::read_to_string(fd.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// 3. Event throughput

fn events(env: &Env, opts: &Opts, out: &mut String) -> Result<()> {
    let configs: [(&str, u32, u32); 5] = [
        (
            "ring 256 KiB, wakeup on every event (the old default)",
            262_144,
            0,
        ),
        ("ring 1 MiB, wakeup on every event", 1_048_576, 0),
        (
            "ring 1 MiB, wakeup_min_bytes 64 KiB (default)",
            1_048_576,
            65_536,
        ),
        ("ring 4 MiB, wakeup on every event", 4_194_304, 0),
        ("ring 4 MiB, wakeup_min_bytes 256 KiB", 4_194_304, 262_144),
    ];
    writeln!(out, "\n## 3. Event throughput (slow-syscall events)\n")?;
    writeln!(
        out,
        "Every getpgid call is an event (`probes.syscalls.slow_ns: {{getpgid: 1}}`, 64-byte \
         records); one generator thread on CPU 1 paced in 1 ms steps for {} s per rate (rate 0 \
         = flat out); received and lost = deltas of `steadfast_events_received_total` and \
         `steadfast_events_lost_total` for `source=\"slow_syscall\"`, read 1.5 s after the \
         generator ends.\n",
        opts.event_secs
    )?;
    writeln!(
        out,
        "| config | asked rate/s | made rate/s | events made | received | lost | loss % |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    let mut summary = Vec::new();
    for (label, ring, wakeup) in configs {
        let agent = Agent::start(
            env,
            &format!(
                "probes:\n  syscalls:\n    wakeup_min_bytes: {wakeup}\n    events_ring_buffer_bytes: {ring}\n    slow_ns:\n      getpgid: 1\n"
            ),
        )?;
        // Rates are tried in the order given (ascending): zero loss at every rate before the
        // first loss, and the first loss.
        let mut clean_up_to = 0.0f64;
        let mut first_loss: Option<(f64, f64)> = None;
        for &rate in &opts.rates {
            let (m0, _) = agent.scrape()?;
            let o = Command::new("taskset")
                .args(["-c", "1"])
                .arg(env.bin("event_gen"))
                .args([rate.to_string(), opts.event_secs.to_string()])
                .output()?;
            let text = String::from_utf8_lossy(&o.stdout);
            let v: Vec<u64> = text
                .split_whitespace()
                .map(|x| x.parse())
                .collect::<Result<_, _>>()
                .with_context(|| format!("event_gen said {text:?}"))?;
            let (made, wall_ns) = (v[0], v[1]);
            sleep(Duration::from_millis(1500));
            let (m1, _) = agent.scrape()?;
            let src = "source=\"slow_syscall\"";
            let received = metric(&m1, "steadfast_events_received_total", &[src])
                - metric(&m0, "steadfast_events_received_total", &[src]);
            let lost = metric(&m1, "steadfast_events_lost_total", &[src])
                - metric(&m0, "steadfast_events_lost_total", &[src]);
            let made_rate = made as f64 / (wall_ns as f64 / 1e9);
            if first_loss.is_none() {
                if lost == 0.0 && received >= made as f64 {
                    clean_up_to = clean_up_to.max(made_rate);
                } else {
                    first_loss = Some((made_rate, (made as f64 - received) / made as f64 * 100.0));
                }
            }
            eprintln!(
                "bench: events {label}: asked {rate}/s made {made_rate:.0}/s: {made} made, {received} received, {lost} lost"
            );
            writeln!(
                out,
                "| {label} | {} | {made_rate:.0} | {made} | {received:.0} | {lost:.0} | {:.2} |",
                if rate == 0 {
                    "flat out".to_string()
                } else {
                    rate.to_string()
                },
                lost / made as f64 * 100.0
            )?;
        }
        summary.push((label, clean_up_to, first_loss));
    }
    writeln!(out)?;
    writeln!(
        out,
        "| config | zero loss at every rate up to | first rate with loss (share not received) | target |"
    )?;
    writeln!(out, "|---|---|---|---|")?;
    for (label, clean, loss) in summary {
        writeln!(
            out,
            "| {label} | {clean:.0}/s | {} | >= 200,000/s without loss |",
            loss.map(|(r, pct)| format!("{r:.0}/s ({pct:.2}%)"))
                .unwrap_or_else(|| "none up to the highest rate made".into())
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Scale

/// Kills the live processes it holds when dropped.
struct Live(Vec<Child>);

impl Drop for Live {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn scale(env: &Env, opts: &Opts, out: &mut String) -> Result<()> {
    // Process names come from the exec'd file name: symlinks give distinct names (services).
    let names = |prefix: &str, target: &str, n: usize| -> Result<Vec<PathBuf>> {
        (0..n)
            .map(|i| {
                let p = env.dir.join(format!("{prefix}{i}"));
                let _ = fs::remove_file(&p);
                std::os::unix::fs::symlink(env.bin(target), &p)?;
                Ok(p)
            })
            .collect()
    };
    let live_names = names("sfhold", "hold", 10)?;
    let short_names = names("sfshort", "tiny", 200)?;
    let agent = Agent::start(env, "")?;
    let pid = agent.pid();
    sleep(Duration::from_secs(2));
    let (m0, _) = agent.scrape()?;
    let series0 = series(&m0);
    let hwm0 = status_kb(pid, "VmHWM");
    let mem0 = MemSplit::read(pid);

    let w = CpuWindow::open(pid)?;
    let t = Instant::now();
    let mut live = Live(Vec::new());
    for i in 0..opts.live {
        live.0.push(
            Command::new(&live_names[i % live_names.len()])
                .stdin(Stdio::null())
                .spawn()?,
        );
    }
    let mut inflight: std::collections::VecDeque<Child> = Default::default();
    for i in 0..opts.short_lived {
        if inflight.len() >= 8 {
            inflight.pop_front().unwrap().wait()?;
        }
        inflight.push_back(Command::new(&short_names[i % short_names.len()]).spawn()?);
    }
    for mut c in inflight {
        c.wait()?;
    }
    let spawn_secs = t.elapsed().as_secs_f64();
    sleep(Duration::from_secs(3)); // two collections
    let (cpu_ticks_pct, _, window) = w.close(pid)?;
    let mut scrapes = Vec::new();
    let mut m1 = String::new();
    for _ in 0..5 {
        let (m, d) = agent.scrape()?;
        scrapes.push(d.as_secs_f64() * 1000.0);
        m1 = m;
    }
    let series1 = series(&m1);
    let services1 = services(&m1);
    let tracked1 = metric(&m1, "steadfast_tracked_processes", &[]);
    let evicted = metric(&m1, "steadfast_syscall_map_keys_evicted_total", &[]);
    let keys1 = metric(&m1, "steadfast_syscall_map_keys", &[]);
    let lost_proc = metric(&m1, "steadfast_events_lost_total", &["source=\"process\""]);
    let hwm1 = status_kb(pid, "VmHWM");
    let rss1 = status_kb(pid, "VmRSS");
    let mem1 = MemSplit::read(pid);
    eprintln!(
        "bench: scale: memory with the processes: {}",
        mem1.describe()
    );
    drop(live);
    sleep(Duration::from_secs(4));
    let (m2, d2) = agent.scrape()?;
    let tracked2 = metric(&m2, "steadfast_tracked_processes", &[]);
    let rss2 = status_kb(pid, "VmRSS");
    let hwm2 = status_kb(pid, "VmHWM");
    drop(agent);

    writeln!(
        out,
        "\n## 5. Scale (default config, `services.max_services: 100`)\n"
    )?;
    writeln!(
        out,
        "{} live processes (`pause()`, 10 names) held, then {} short-lived ones (exit at once; \
         200 names, 8 in flight) spawned in {spawn_secs:.1} s.\n",
        opts.live, opts.short_lived
    )?;
    writeln!(
        out,
        "| figure | before | with the processes | after the live ones exit |"
    )?;
    writeln!(out, "|---|---|---|---|")?;
    writeln!(
        out,
        "| agent peak RSS (VmHWM) | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
        hwm0 as f64 / 1024.0,
        hwm1 as f64 / 1024.0,
        hwm2 as f64 / 1024.0
    )?;
    writeln!(
        out,
        "| agent RSS (VmRSS) | | {:.1} MiB | {:.1} MiB |",
        rss1 as f64 / 1024.0,
        rss2 as f64 / 1024.0
    )?;
    writeln!(
        out,
        "| series on /metrics (lines not starting with #) | {series0} | {series1} | {} |",
        series(&m2)
    )?;
    writeln!(
        out,
        "| distinct `service` label values | {} | {services1} | {} |",
        services(&m0),
        services(&m2)
    )?;
    writeln!(
        out,
        "| steadfast_tracked_processes | {} | {tracked1} | {tracked2} |",
        metric(&m0, "steadfast_tracked_processes", &[])
    )?;
    writeln!(
        out,
        "| scrape time (median of 5; after: one) | | {:.1} ms | {:.1} ms |",
        median(&scrapes),
        d2.as_secs_f64() * 1000.0
    )?;
    writeln!(
        out,
        "\nResident memory by mapping (`/proc/<pid>/smaps`): before, {}; with the processes, {}.",
        mem0.describe(),
        mem1.describe()
    )?;
    writeln!(
        out,
        "\nSyscall map keys in the kernel: {keys1}; evicted by the LRU before their last read: \
         {evicted}; process events lost: {lost_proc}. Agent CPU over the spawn phase \
         ({window:.1} s): {cpu_ticks_pct:.2}% of one core."
    )?;
    Ok(())
}

pub(crate) fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

fn services(text: &str) -> usize {
    text.lines()
        .filter_map(|l| {
            let i = l.find("service=\"")? + 9;
            let rest = &l[i..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect::<BTreeSet<_>>()
        .len()
}

// ---------------------------------------------------------------------------------------
// Machine and statistics

pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let ncpu = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let bpftrace = Command::new("bpftrace")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "bpftrace missing".into());
    format!(
        "{ncpu} CPUs ({model}), {:.1} GiB RAM, kernel {}, {bpftrace}",
        mem as f64 / 1048576.0,
        kernel.trim()
    )
}

pub(crate) fn loadavg_line() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn loadavg1() -> f64 {
    loadavg_line()
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `get_on` sends one GET and gives the body of a 200, and an error with the status line
    /// otherwise (over a unix socket pair, as the series bench uses it on the API socket).
    #[test]
    fn get_on_gives_the_body_of_a_200_only() {
        for (answer, want) in [
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nbody",
                Ok("body"),
            ),
            (
                "HTTP/1.0 503 Service Unavailable\r\n\r\nno",
                Err("GET /x: HTTP/1.0 503"),
            ),
        ] {
            let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            let server = std::thread::spawn(move || {
                // The whole head, however many reads it takes.
                let (mut req, mut buf) = (Vec::new(), [0u8; 256]);
                while !req.ends_with(b"\r\n\r\n") {
                    let n = b.read(&mut buf).unwrap();
                    assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&req));
                    req.extend_from_slice(&buf[..n]);
                }
                b.write_all(answer.as_bytes()).unwrap();
                String::from_utf8(req).unwrap()
            });
            let got = get_on(a, "/x");
            assert!(server.join().unwrap().starts_with("GET /x HTTP/1.0\r\n"));
            match want {
                Ok(body) => assert_eq!(got.unwrap(), body),
                Err(head) => assert!(got.unwrap_err().to_string().starts_with(head)),
            }
        }
    }

    #[test]
    fn medians_and_metric_sums() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let text = "# HELP x\nsteadfast_events_lost_total{source=\"slow_syscall\"} 3\n\
                    steadfast_events_lost_total{source=\"process\"} 4\nsteadfast_tracked_processes 7\n";
        assert_eq!(
            metric(
                text,
                "steadfast_events_lost_total",
                &["source=\"slow_syscall\""]
            ),
            3.0
        );
        assert_eq!(metric(text, "steadfast_events_lost_total", &[]), 7.0);
        assert_eq!(metric(text, "steadfast_tracked_processes", &[]), 7.0);
        assert_eq!(series(text), 3);
    }
}

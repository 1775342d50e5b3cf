//! Section 8 of the benchmark (`--only series`): the agent with about 30,000 series and a
//! 100 ms rule interval, while 1,000 clients hold blocking queries on the local API.
//!
//! 34 processes under 34 names (`many_syscalls.c`: 12 syscalls each after libc's start-up
//! calls, about 35 distinct syscalls, then `pause()`) give about 30,000 series. A rule group at 100 ms reads every syscall series (a
//! recording rule, an alert with `histogram_quantile`, a breaker and a signal over all of
//! them). `control.host_protection` is off so that the snapshot index only moves with the
//! rules' own decisions, which stay put here: the 1,000 held queries stay held (counted at
//! the end). Then, at once for about 15 s: one fresh `GET /v1/signals` on the unix socket every
//! 20 ms (its time to the whole answer), and one `/metrics` scrape every 250 ms on the loopback
//! listener. Agent CPU per rule tick: the agent's CPU over a 20 s window with the rules,
//! minus the same window without a rules directory, over the ticks (200). Peak RSS is
//! `VmHWM`. With `STEADFAST_BENCH_BEFORE` the older build runs the same steps.

use std::{
    fmt::Write as _,
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench::{series, status_kb, Agent, CpuWindow, Env, MemSplit};

const PROCESSES: usize = 34;
const HOLDERS: usize = 1000;
const RULE_INTERVAL_MS: u64 = 100;
const CPU_WINDOW: Duration = Duration::from_secs(20);
const LOAD_WINDOW: Duration = Duration::from_secs(15);

const RULES: &str = r#"groups:
  - name: series
    interval: 100ms
    rules:
      - record: service:steadfast_syscalls:rate10s
        expr: sum by (service) (rate(steadfast_syscall_duration_seconds_count[10s]))
      - alert: BenchSlowSyscalls
        expr: histogram_quantile(0.99, sum by (le, service) (rate(steadfast_syscall_duration_seconds_bucket[10s]))) > 100
    breakers:
      - name: bench-breaker
        slow_ratio: 1 - sum(increase(steadfast_syscall_duration_seconds_bucket{le="0.015625"}[10s])) / sum(increase(steadfast_syscall_duration_seconds_count[10s]))
        volume: sum(increase(steadfast_syscall_duration_seconds_count[10s]))
        min_volume: 1000000000
    signals:
      - name: bench-signal
        expr: sum(rate(steadfast_syscall_duration_seconds_count[10s])) * 0
        scaling: 0.5
        saturation: 1
"#;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Figures {
    series: usize,
    /// Bytes of one text scrape once the series count is steady.
    text_bytes: usize,
    api_ms: Vec<f64>,
    scrape_ms: Vec<f64>,
    held_at_end: usize,
    cpu_rules_pct: f64,
    cpu_idle_pct: f64,
    hwm_kb: u64,
    rss_kb: u64,
    /// Resident memory by mapping: without rules, with rules before the held queries, once
    /// they are held, and at the end of the load.
    mem: [(&'static str, MemSplit); 4],
}

pub(crate) fn series_scale(env: &Env, out: &mut String) -> Result<()> {
    let names: Vec<PathBuf> = (0..PROCESSES)
        .map(|i| {
            let p = env.dir.join(format!("sfser{i}"));
            let _ = fs::remove_file(&p);
            std::os::unix::fs::symlink(env.bin("many_syscalls"), &p)?;
            Ok(p)
        })
        .collect::<Result<_>>()?;
    let mut cases: Vec<(&str, PathBuf)> = vec![("now", env.agent_bin())];
    if let Some(b) = &env.before {
        cases.push(("before (STEADFAST_BENCH_BEFORE)", b.clone()));
    }
    let mut results = Vec::new();
    for (label, bin) in &cases {
        let f = run_case(env, bin, &names)?;
        eprintln!(
            "bench: series {label}: {} series ({} KiB of text), API p99 {:.1} ms, scrape p99 {:.1} ms, CPU {:.2}% / {:.2}%",
            f.series,
            f.text_bytes / 1024,
            percentile(&f.api_ms, 0.99),
            percentile(&f.scrape_ms, 0.99),
            f.cpu_rules_pct,
            f.cpu_idle_pct
        );
        for (when, m) in &f.mem {
            eprintln!("bench: series {label}: memory {when}: {}", m.describe());
        }
        results.push((*label, f));
    }

    writeln!(
        out,
        "\n## 8. Series scale: ~30,000 series, 100 ms rules, 1,000 held blocking queries\n"
    )?;
    writeln!(
        out,
        "{PROCESSES} processes under {PROCESSES} names (12 syscalls each, then `pause()`); one rule \
         group at {RULE_INTERVAL_MS} ms reading every syscall series (a recording rule, an alert \
         with `histogram_quantile`, a breaker, a signal); {HOLDERS} connections on the API socket \
         holding `GET /v1/signals?index=N&wait=300s`. For {} s at once: a fresh `GET /v1/signals` \
         on the socket every 20 ms and a `/metrics` scrape (text) every 250 ms. CPU per tick: \
         agent CPU over {} s with the rules minus the same without rules, over {} ticks.\n",
        LOAD_WINDOW.as_secs(),
        CPU_WINDOW.as_secs(),
        CPU_WINDOW.as_millis() as u64 / RULE_INTERVAL_MS
    )?;
    writeln!(
        out,
        "| build | series on /metrics (text) | API p50 / p99 / max (ms) | scrape p50 / p99 / max (ms) | held queries still held | agent CPU with rules / without (% of one core) | CPU per rule tick | peak RSS (VmHWM) | RSS |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    let ticks = CPU_WINDOW.as_millis() as f64 / RULE_INTERVAL_MS as f64;
    for (label, f) in &results {
        let per_tick_ms =
            (f.cpu_rules_pct - f.cpu_idle_pct) / 100.0 * CPU_WINDOW.as_secs_f64() * 1000.0 / ticks;
        writeln!(
            out,
            "| {label} | {} ({} KiB) | {:.1} / {:.1} / {:.1} ({} requests) | {:.1} / {:.1} / {:.1} ({} scrapes) | {} of {HOLDERS} | {:.2} / {:.2} | {:.2} ms | {:.1} MiB | {:.1} MiB |",
            f.series,
            f.text_bytes / 1024,
            percentile(&f.api_ms, 0.5),
            percentile(&f.api_ms, 0.99),
            percentile(&f.api_ms, 1.0),
            f.api_ms.len(),
            percentile(&f.scrape_ms, 0.5),
            percentile(&f.scrape_ms, 0.99),
            percentile(&f.scrape_ms, 1.0),
            f.scrape_ms.len(),
            f.held_at_end,
            f.cpu_rules_pct,
            f.cpu_idle_pct,
            per_tick_ms,
            f.hwm_kb as f64 / 1024.0,
            f.rss_kb as f64 / 1024.0,
        )?;
    }
    writeln!(
        out,
        "\nResident memory by mapping (`/proc/<pid>/smaps`: the agent's binary, other files, \
         BPF maps it mapped, anonymous):\n"
    )?;
    for (label, f) in &results {
        for (when, m) in &f.mem {
            writeln!(out, "- {label}, {when}: {}", m.describe())?;
        }
    }
    Ok(())
}

fn run_case(env: &Env, bin: &Path, names: &[PathBuf]) -> Result<Figures> {
    let rules_dir = env.dir.join("series-rules");
    let _ = fs::remove_dir_all(&rules_dir);
    fs::create_dir_all(&rules_dir)?;
    let socket = env.dir.join("series-api.sock");
    let control = |rules: bool| {
        let mut c = format!(
            "services:\n  max_services: 150\ncontrol:\n  api_socket: {}\n  state_page: {}\n  \
             state_dir: {}\n  signals_dir: {}\n  host_protection:\n    enabled: false\n",
            socket.display(),
            env.dir.join("series-state.page").display(),
            env.dir.join("series-state").display(),
            env.dir.join("series-signals").display(),
        );
        if rules {
            c.push_str(&format!(
                "rules:\n  directory: {}\n  state_dir: {}\n  evaluation_interval_ms: {RULE_INTERVAL_MS}\n",
                rules_dir.display(),
                env.dir.join("series-rules-state").display()
            ));
        }
        c
    };
    let _ = fs::remove_dir_all(env.dir.join("series-state"));

    // Without rules: the same processes, the agent's CPU over the window.
    let cpu_idle_pct = {
        let agent = Agent::start_bin(env, bin, &control(false))?;
        let _procs = spawn(names)?;
        wait_series(&agent)?;
        let w = CpuWindow::open(agent.pid())?;
        sleep(CPU_WINDOW);
        (w.close(agent.pid())?.0, MemSplit::read(agent.pid()))
    };
    let (cpu_idle_pct, mem_idle) = cpu_idle_pct;

    fs::write(rules_dir.join("series.yaml"), RULES)?;
    let agent = Agent::start_bin(env, bin, &control(true))?;
    let _procs = spawn(names)?;
    let (series, text_bytes) = wait_series(&agent)?;
    let w = CpuWindow::open(agent.pid())?;
    sleep(CPU_WINDOW);
    let cpu_rules_pct = w.close(agent.pid())?.0;
    let mem_rules = MemSplit::read(agent.pid());

    let index = snapshot_index(&socket)?;
    let fds_before = open_fds(agent.pid());
    let mut holders = Vec::with_capacity(HOLDERS);
    for _ in 0..HOLDERS {
        let mut s = UnixStream::connect(&socket).context("a held query's connection")?;
        write!(
            s,
            "GET /v1/signals?index={index}&wait=300s HTTP/1.1\r\nHost: local\r\n\r\n"
        )?;
        s.set_nonblocking(true)?;
        holders.push(s);
    }
    // The agent has accepted every held connection before the measurement starts (each is
    // one more descriptor of its own).
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(agent.pid()) < fds_before + HOLDERS {
        if Instant::now() > deadline {
            bail!("the agent did not accept the {HOLDERS} held queries' connections in 30 s");
        }
        sleep(Duration::from_millis(20));
    }
    let mem_held = MemSplit::read(agent.pid());

    let port = agent.port();
    let scraper = std::thread::spawn(move || -> Result<Vec<f64>> {
        let mut v = Vec::new();
        let end = Instant::now() + LOAD_WINDOW;
        while Instant::now() < end {
            let t = Instant::now();
            crate::bench::http_get(port, "/metrics")?;
            v.push(t.elapsed().as_secs_f64() * 1000.0);
            sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
        }
        Ok(v)
    });
    let mut api_ms = Vec::new();
    let end = Instant::now() + LOAD_WINDOW;
    while Instant::now() < end {
        let t = Instant::now();
        api_get(&socket, "/v1/signals")?;
        api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        sleep(Duration::from_millis(20).saturating_sub(t.elapsed()));
    }
    let scrape_ms = scraper.join().expect("the scraper thread")?;
    let mut held_at_end = 0;
    for s in &mut holders {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held_at_end += 1,
            _ => {}
        }
    }
    let (hwm_kb, rss_kb) = (
        status_kb(agent.pid(), "VmHWM"),
        status_kb(agent.pid(), "VmRSS"),
    );
    let mem_end = MemSplit::read(agent.pid());
    drop(holders);
    drop(agent);
    Ok(Figures {
        series,
        text_bytes,
        api_ms,
        scrape_ms,
        held_at_end,
        cpu_rules_pct,
        cpu_idle_pct,
        hwm_kb,
        rss_kb,
        mem: [
            ("without rules, after the CPU window", mem_idle),
            ("with rules, after the CPU window", mem_rules),
            ("with the held queries accepted", mem_held),
            ("after the load", mem_end),
        ],
    })
}

fn spawn(names: &[PathBuf]) -> Result<Procs> {
    let mut p = Procs(Vec::new());
    for n in names {
        p.0.push(
            Command::new(n)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", n.display()))?,
        );
    }
    Ok(p)
}

/// Waits until the series count stops growing (three equal scrapes 1 s apart, at most 60 s):
/// the count and the last scrape's length in bytes.
fn wait_series(agent: &Agent) -> Result<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, 0, 0);
    while Instant::now() < deadline {
        let (m, _) = agent.scrape()?;
        let n = series(&m);
        last = if n == last.0 {
            (n, last.1 + 1, m.len())
        } else {
            (n, 0, m.len())
        };
        if last.1 >= 2 {
            break;
        }
        sleep(Duration::from_secs(1));
    }
    Ok((last.0, last.2))
}

/// GET on the API socket; the body of a 200.
fn api_get(socket: &Path, path: &str) -> Result<String> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    crate::bench::get_on(s, path)
}

/// Descriptors the process holds now.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn snapshot_index(socket: &Path) -> Result<u64> {
    let body = api_get(socket, "/v1/snapshot")?;
    let v: serde_json::Value = serde_json::from_str(&body).context("the snapshot's JSON")?;
    v["index"].as_u64().context("no index in the snapshot")
}

/// The value at `q` (0..=1) of the sorted samples (nearest rank).
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

//! `cargo xtask soak`: the agent under mixed load for a long time (an hour by default), with
//! periodic rule reloads and exporter outages, sampling its resident memory, open file
//! descriptors, threads and CPU over time. A benchmark, not a test: it prints a report
//! (`target/bench/soak.md`, samples in `target/bench/soak.csv`; `--report NAME` for another
//! stem) and asserts nothing.
//!
//! - Load, every 10 s: a `getpgid` event stream (every call a slow-syscall event, so spans
//!   flow to the exporter without a pause), a burst of read/write syscalls, 200 short-lived
//!   processes, slow `nanosleep` calls that feed an SLO and a breaker, and a process that
//!   makes 22,000 libc allocations under the allocation probes.
//! - Clients: `/metrics` scraped every 5 s; a client blocked on the signal API
//!   (`?index=N&wait=20s`) the whole time.
//! - Rules: the packaged host rules plus a soak file with an alert that fires and resolves
//!   every two minutes (so Alertmanager notifications flow), an SLO, a breaker and a signal.
//!   Every minute the soak file is rewritten with another threshold and the agent gets a
//!   SIGHUP; every fifth reload is an invalid file (rejected; the next one restores it).
//! - Exporters: one fake receiver serves OTLP/HTTP (`/v1/traces`, `/v1/metrics`) and the
//!   Alertmanager API (`/api/v2/alerts`). In every 10-minute block it is up for 7 minutes
//!   and out for 3: down (port closed), slow (accepts and reads, never answers) or erroring
//!   (503 to OTLP, 500 to Alertmanager), in turn.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::{self, sleep},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench::{
    cpu_ticks, http_get, loadavg_line, machine, metric, series, status_kb, terminate, utc_now,
    Agent, Env,
};

struct Opts {
    minutes: f64,
    sample_secs: u64,
    reload_secs: u64,
    block_mins: f64,
    outage_mins: f64,
    /// `services.max_services` for the agent (its default when absent): a small cap holds
    /// the series count still, so memory growth with new series and a leak can be told apart.
    max_services: Option<usize>,
    /// Report file stem under `target/bench/`, so two soaks can run side by side.
    report: String,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            minutes: 60.0,
            sample_secs: 30,
            reload_secs: 60,
            block_mins: 10.0,
            outage_mins: 3.0,
            max_services: None,
            report: "soak".into(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().context(format!("{a} needs a value"));
            match a.as_str() {
                "--minutes" => o.minutes = val()?.parse()?,
                "--sample-secs" => o.sample_secs = val()?.parse()?,
                "--reload-secs" => o.reload_secs = val()?.parse()?,
                "--block-mins" => o.block_mins = val()?.parse()?,
                "--outage-mins" => o.outage_mins = val()?.parse()?,
                "--max-services" => o.max_services = Some(val()?.parse()?),
                "--report" => o.report = val()?.clone(),
                _ => bail!(
                    "unknown option {a:?}; options: --minutes M --sample-secs S --reload-secs S \
                     --block-mins M --outage-mins M --max-services N --report NAME"
                ),
            }
        }
        if o.outage_mins >= o.block_mins || o.sample_secs == 0 || o.reload_secs == 0 {
            bail!("need --outage-mins < --block-mins and non-zero intervals");
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// The fake receiver

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    Up = 0,
    Down = 1,
    Slow = 2,
    Erroring = 3,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Down,
            2 => Mode::Slow,
            3 => Mode::Erroring,
            _ => Mode::Up,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::Slow => "slow",
            Mode::Erroring => "erroring",
        }
    }
}

/// OTLP/HTTP and Alertmanager on one port, whose behaviour the soak switches.
struct Receiver {
    port: u16,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// (path, answer) -> requests.
    counts: Arc<Mutex<BTreeMap<(String, &'static str), u64>>>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        let r = Receiver {
            port,
            mode: Arc::new(AtomicU8::new(Mode::Up as u8)),
            stop: Arc::new(AtomicBool::new(false)),
            counts: Arc::default(),
        };
        let (mode, stop, counts) = (r.mode.clone(), r.stop.clone(), r.counts.clone());
        thread::spawn(move || accept_loop(port, &mode, &stop, &counts));
        Ok(r)
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Relaxed);
    }

    fn count(&self, path: &str, answer: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, a), _)| p == path && *a == answer)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

type Counts = Mutex<BTreeMap<(String, &'static str), u64>>;

fn accept_loop(port: u16, mode: &Arc<AtomicU8>, stop: &AtomicBool, counts: &Arc<Counts>) {
    while !stop.load(Relaxed) {
        if Mode::from_u8(mode.load(Relaxed)) == Mode::Down {
            sleep(Duration::from_millis(50));
            continue;
        }
        // Listening only while not down, so the agent sees "connection refused".
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            sleep(Duration::from_millis(200));
            continue;
        };
        let _ = listener.set_nonblocking(true);
        while !stop.load(Relaxed) && Mode::from_u8(mode.load(Relaxed)) != Mode::Down {
            match listener.accept() {
                Ok((s, _)) => {
                    let (mode, counts) = (mode.clone(), counts.clone());
                    thread::spawn(move || serve(s, &mode, &counts));
                }
                Err(_) => sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// One keep-alive connection: reads requests and answers each as the mode says.
fn serve(stream: TcpStream, mode: &AtomicU8, counts: &Counts) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => {
                // Idle keep-alive: close it when the receiver goes down.
                if Mode::from_u8(mode.load(Relaxed)) == Mode::Down {
                    let _ = out.shutdown(Shutdown::Both);
                    return;
                }
                continue;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let m = Mode::from_u8(mode.load(Relaxed));
        let answer: &'static str = match m {
            Mode::Up => "200",
            Mode::Erroring if path.starts_with("/v1/") => "503",
            Mode::Erroring => "500",
            Mode::Slow | Mode::Down => "none",
        };
        *counts
            .lock()
            .unwrap()
            .entry((path.clone(), answer))
            .or_default() += 1;
        if answer == "none" {
            // Never answer: hold the connection until the mode changes, then drop it.
            while Mode::from_u8(mode.load(Relaxed)) == m {
                sleep(Duration::from_millis(100));
            }
            return;
        }
        let reason = match answer {
            "200" => "OK",
            "503" => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let ctype = if path.starts_with("/v1/") {
            "application/x-protobuf"
        } else {
            "application/json"
        };
        if write!(
            out,
            "HTTP/1.1 {answer} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: 0\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rules

fn soak_rules(variant: u64) -> String {
    // The threshold moves with every reload; the alert flips every two minutes.
    let threshold = 0.3 + (variant % 5) as f64 * 0.1;
    let sel = "service=\"sfsoak-sleep\",syscall=\"nanosleep\"";
    format!(
        r#"groups:
  - name: soak
    interval: 1s
    rules:
      - alert: SoakFlap
        expr: vector(time() % 120) < 60
        labels:
          severity: ticket
          variant: "{variant}"
      - alert: SoakSlowSleeps
        expr: sum(rate(steadfast_syscall_slow_total{{{sel}}}[1m])) > {threshold}
        for: 30s
    slos:
      - name: soak-sleep
        objective: 99
        period: 1d
        sli:
          latency:
            histogram: steadfast_syscall_duration_seconds{{{sel}}}
            threshold_seconds: 0.01
        min_events: 10
        alerting:
          name: SoakSleepBudgetBurn
    breakers:
      - name: soak-sleep
        slow_ratio: 1 - sum(increase(steadfast_syscall_duration_seconds_bucket{{{sel},le="0.015625"}}[30s])) / sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[30s]))
        volume: sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[30s]))
        min_volume: 20
        open_slow_ratio: {threshold}
        close_slow_ratio: 0.01
    signals:
      - name: soak-churn
        expr: sum(rate(steadfast_process_tasks_created_total[1m]))
        scaling: 5
        saturation: 50
"#
    )
}

// ---------------------------------------------------------------------------------------
// Load and clients

/// Starts the periodic load on its own thread; it runs until `stop` is set.
fn load(env: &Env, stop: Arc<AtomicBool>) -> Result<thread::JoinHandle<()>> {
    let bin = |name: &str, comm: &str| -> Result<std::path::PathBuf> {
        let to = env.bin(comm);
        fs::copy(env.bin(name), &to)?;
        Ok(to)
    };
    let events = bin("event_gen", "sfsoak-events")?;
    let rw = bin("rw_mix", "sfsoak-rw")?;
    let churn = bin("spawn_churn", "sfsoak-churn")?;
    let sleeper = bin("nanosleep_mix", "sfsoak-sleep")?;
    let alloc = bin("alloc_pattern", "sfsoak-alloc")?;
    Ok(thread::spawn(move || {
        let mut stream: Option<Child> = None;
        while !stop.load(Relaxed) {
            let tick = Instant::now();
            // A steady 300 slow-syscall events per second, restarted if it ends.
            if stream
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some())
            {
                stream = Command::new(&events)
                    .args(["300", "600"])
                    .stdout(Stdio::null())
                    .spawn()
                    .ok();
            }
            let quiet = |bin: &Path, args: &[&str]| {
                let _ = Command::new(bin)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            quiet(&rw, &["200000"]);
            quiet(&churn, &["200", "4"]);
            quiet(&sleeper, &["200", "5", "15"]);
            // Lives for a second before allocating, so its uprobes are attached by then.
            if let Ok(mut c) = Command::new(&alloc)
                .arg("20000")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
            {
                sleep(Duration::from_secs(1));
                if let Some(mut stdin) = c.stdin.take() {
                    let _ = stdin.write_all(b"go\ngo\n");
                }
                let _ = c.wait();
            }
            sleep(Duration::from_secs(10).saturating_sub(tick.elapsed()));
        }
        if let Some(c) = stream.as_mut() {
            terminate(c);
        }
    }))
}

/// A client blocked on the signal API, over and over; counts answers and failures.
fn api_client(port: u16, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>, failed: Arc<AtomicU64>) {
    thread::spawn(move || {
        let mut index = 0u64;
        while !stop.load(Relaxed) {
            match http_get(port, &format!("/v1/signals?index={index}&wait=20s")) {
                Ok(body) => {
                    ok.fetch_add(1, Relaxed);
                    index = body
                        .split("\"index\":")
                        .nth(1)
                        .and_then(|r| r.split([',', '}']).next()?.trim().parse().ok())
                        .unwrap_or(index);
                }
                Err(_) => {
                    failed.fetch_add(1, Relaxed);
                    sleep(Duration::from_secs(1));
                }
            }
        }
    });
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// ---------------------------------------------------------------------------------------
// The run

struct Row {
    at_secs: f64,
    mode: Mode,
    rss_kib: u64,
    fds: usize,
    threads: u64,
    cpu_pct: f64,
    series: usize,
    store_series: f64,
    scrape_max_ms: f64,
    spans_exported: f64,
    spans_dropped: f64,
    alerts_sent: f64,
    alerts_failed: f64,
    reloads: u64,
    reloads_failed: f64,
    events_lost: f64,
}

impl Row {
    const HEADER: [&'static str; 16] = [
        "min",
        "receiver",
        "RSS MiB",
        "fds",
        "threads",
        "CPU %",
        "series",
        "store series",
        "max scrape ms",
        "spans exported",
        "spans dropped",
        "alerts sent",
        "alerts failed",
        "reloads",
        "rejected",
        "events lost",
    ];

    /// The sample's values in [`Row::HEADER`]'s order, for the table and the CSV alike.
    fn cells(&self) -> [String; 16] {
        [
            format!("{:.1}", self.at_secs / 60.0),
            self.mode.name().to_string(),
            format!("{:.1}", self.rss_kib as f64 / 1024.0),
            self.fds.to_string(),
            self.threads.to_string(),
            format!("{:.2}", self.cpu_pct),
            self.series.to_string(),
            self.store_series.to_string(),
            format!("{:.0}", self.scrape_max_ms),
            self.spans_exported.to_string(),
            self.spans_dropped.to_string(),
            self.alerts_sent.to_string(),
            self.alerts_failed.to_string(),
            self.reloads.to_string(),
            self.reloads_failed.to_string(),
            self.events_lost.to_string(),
        ]
    }
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    if !crate::is_root() {
        bail!("the soak loads eBPF programs: run it as root");
    }
    let env = Env::prepare(
        root,
        "soak",
        &[
            "event_gen",
            "rw_mix",
            "spawn_churn",
            "nanosleep_mix",
            "alloc_pattern",
        ],
    )?;
    let d = env.dir.display().to_string();
    let rules = env.dir.join("rules.d");
    fs::create_dir_all(&rules)?;
    fs::copy(
        root.join("packaging/rules.d/host.yaml"),
        rules.join("host.yaml"),
    )?;
    fs::write(rules.join("soak.yaml"), soak_rules(0))?;
    let receiver = Receiver::start()?;
    let port = receiver.port;
    let services = opts
        .max_services
        .map(|n| format!("services:\n  max_services: {n}\n"))
        .unwrap_or_default();
    let agent = Agent::start(
        &env,
        &format!(
            "probes:\n  syscalls:\n    slow_ns:\n      getpgid: 1\n    slow_ms:\n      nanosleep: 10\n\
             targets:\n  - service: sfsoak-alloc\n    comm: sfsoak-alloc\n    allocations: true\n\
             otlp:\n  endpoint: http://127.0.0.1:{port}\n  protocol: http_protobuf\n  metrics_interval_secs: 10\n  timeout_secs: 2\n  retry_max_backoff_secs: 5\n\
             alertmanager:\n  url: http://127.0.0.1:{port}\n  resend_interval_secs: 60\n  timeout_secs: 2\n\
             rules:\n  directory: {d}/rules.d\n  state_dir: {d}/state\n\
             control:\n  api_socket: {d}/api.sock\n  signals_dir: {d}/signals\n  state_dir: {d}/state\n  state_page: {d}/state.page\n{services}"
        ),
    )?;
    let pid = agent.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(&env, stop.clone())?;
    let (api_ok, api_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    api_client(agent.port, stop.clone(), api_ok.clone(), api_failed.clone());

    let started_at = utc_now();
    let start = Instant::now();
    let total = Duration::from_secs_f64(opts.minutes * 60.0);
    let block = Duration::from_secs_f64(opts.block_mins * 60.0);
    let outage = Duration::from_secs_f64(opts.outage_mins * 60.0);
    let (mut next_sample, mut next_reload, mut next_scrape) = (
        Duration::ZERO,
        Duration::from_secs(opts.reload_secs),
        Duration::ZERO,
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut reloads = 0u64;
    let mut scrape_max = Duration::ZERO;
    let mut scrape_failures = 0u64;
    let mut last_ticks = cpu_ticks(pid)?;
    let mut last_at = Instant::now();
    let mut outages: Vec<(Mode, f64)> = Vec::new();
    let mut mode = Mode::Up;
    eprintln!(
        "xtask: soaking for {} min (agent pid {pid}, receiver port {port}, samples every {} s)",
        opts.minutes, opts.sample_secs
    );
    while start.elapsed() < total {
        let now = start.elapsed();
        // Outage schedule: the last `outage` of every block, cycling down, slow, erroring.
        let in_block = Duration::from_secs_f64(now.as_secs_f64() % block.as_secs_f64());
        let block_no = (now.as_secs_f64() / block.as_secs_f64()) as usize;
        let want = if in_block >= block - outage {
            [Mode::Down, Mode::Slow, Mode::Erroring][block_no % 3]
        } else {
            Mode::Up
        };
        if want != mode {
            mode = want;
            receiver.set(mode);
            if mode != Mode::Up {
                outages.push((mode, now.as_secs_f64() / 60.0));
            }
            eprintln!(
                "xtask: {:.1} min: receiver {}",
                now.as_secs_f64() / 60.0,
                mode.name()
            );
        }
        if now >= next_reload {
            next_reload += Duration::from_secs(opts.reload_secs);
            reloads += 1;
            let text = if reloads.is_multiple_of(5) {
                "groups:\n  - name: soak\n    rules:\n      - alert: Broken\n        expr: sum(rate(\n"
                    .to_string()
            } else {
                soak_rules(reloads)
            };
            fs::write(rules.join("soak.yaml"), text)?;
            crate::run(Command::new("kill").args(["-HUP", &pid.to_string()]))?;
        }
        if now >= next_scrape {
            next_scrape += Duration::from_secs(5);
            let t = Instant::now();
            match http_get(agent.port, "/metrics") {
                Ok(_) => scrape_max = scrape_max.max(t.elapsed()),
                Err(_) => scrape_failures += 1,
            }
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(opts.sample_secs);
            let (text, took) = agent.scrape()?;
            scrape_max = scrape_max.max(took);
            let ticks = cpu_ticks(pid)?;
            // The first sample's window is the agent's start-up, not its steady work.
            let window = last_at.elapsed().as_secs_f64();
            let cpu_pct = if rows.is_empty() {
                0.0
            } else {
                (ticks - last_ticks) as f64 / 100.0 / window * 100.0
            };
            (last_ticks, last_at) = (ticks, Instant::now());
            rows.push(Row {
                at_secs: now.as_secs_f64(),
                mode,
                rss_kib: status_kb(pid, "VmRSS"),
                fds: open_fds(pid),
                threads: status_kb(pid, "Threads"),
                cpu_pct,
                series: series(&text),
                store_series: metric(&text, "steadfast_store_series", &[]),
                scrape_max_ms: scrape_max.as_secs_f64() * 1e3,
                spans_exported: metric(
                    &text,
                    "steadfast_export_spans_total",
                    &["outcome=\"exported\""],
                ),
                spans_dropped: metric(
                    &text,
                    "steadfast_export_spans_total",
                    &["outcome=\"dropped"],
                ),
                alerts_sent: metric(&text, "steadfast_alertmanager_notifications_total", &[]),
                alerts_failed: metric(
                    &text,
                    "steadfast_alertmanager_notifications_failed_total",
                    &[],
                ) + metric(
                    &text,
                    "steadfast_alertmanager_notifications_dropped_total",
                    &[],
                ),
                reloads,
                reloads_failed: metric(&text, "steadfast_rules_reloads_failed_total", &[]),
                events_lost: metric(&text, "steadfast_events_lost_total", &[]),
            });
            scrape_max = Duration::ZERO;
            let r = rows.last().expect("just pushed");
            eprintln!(
                "xtask: {:5.1} min  rss {:6} KiB  fds {:3}  threads {:2}  cpu {:5.2}%  receiver {}",
                r.at_secs / 60.0,
                r.rss_kib,
                r.fds,
                r.threads,
                r.cpu_pct,
                r.mode.name()
            );
        }
        sleep(Duration::from_millis(200));
    }
    receiver.set(Mode::Up);
    stop.store(true, Relaxed);
    let _ = loader.join();
    let alive = status_kb(pid, "VmRSS") > 0;
    drop(agent);
    let log = fs::read_to_string(env.dir.join("agent.log")).unwrap_or_default();

    let mut out = String::new();
    writeln!(out, "# steadfast soak, {started_at}\n")?;
    writeln!(out, "- command: `cargo xtask soak {}`", args.join(" "))?;
    writeln!(out, "- machine: {}", machine())?;
    writeln!(out, "- load average at the end: {}", loadavg_line())?;
    writeln!(
        out,
        "- duration {:.1} min; {} reloads ({} invalid, rejected); outages: {}",
        start.elapsed().as_secs_f64() / 60.0,
        reloads,
        reloads / 5,
        outages
            .iter()
            .map(|(m, at)| format!("{} at {at:.0} min", m.name()))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    summary(&mut out, &rows)?;
    writeln!(
        out,
        "- signal API: {} blocking answers, {} failures; /metrics scrapes failed: {scrape_failures}; agent alive at the end: {alive}; panics in the log: {}",
        api_ok.load(Relaxed),
        api_failed.load(Relaxed),
        log.matches("panicked").count()
    )?;
    writeln!(
        out,
        "- receiver saw: traces {} answered 200, {} 503, {} unanswered; metrics {} / {} / {}; alerts {} answered 200, {} 500, {} unanswered",
        receiver.count("/v1/traces", "200"),
        receiver.count("/v1/traces", "503"),
        receiver.count("/v1/traces", "none"),
        receiver.count("/v1/metrics", "200"),
        receiver.count("/v1/metrics", "503"),
        receiver.count("/v1/metrics", "none"),
        receiver.count("/api/v2/alerts", "200"),
        receiver.count("/api/v2/alerts", "500"),
        receiver.count("/api/v2/alerts", "none"),
    )?;
    blocks(&mut out, &rows, opts.block_mins * 60.0)?;
    writeln!(out, "\n| {} |", Row::HEADER.join(" | "))?;
    writeln!(out, "|{}", "---|".repeat(Row::HEADER.len()))?;
    let every = (300 / opts.sample_secs).max(1) as usize;
    for (i, r) in rows.iter().enumerate() {
        if i % every == 0 || i + 1 == rows.len() {
            writeln!(out, "| {} |", r.cells().join(" | "))?;
        }
    }
    let mut csv = format!("{}\n", Row::HEADER.join(","));
    for r in &rows {
        writeln!(csv, "{}", r.cells().join(","))?;
    }
    println!("{out}");
    let report = root.join("target/bench");
    fs::create_dir_all(&report)?;
    let name = &opts.report;
    fs::write(report.join(format!("{name}.md")), &out)?;
    fs::write(report.join(format!("{name}.csv")), csv)?;
    fs::write(report.join(format!("{name}-agent.log")), &log)?;
    let _ = fs::remove_dir_all(&env.dir);
    eprintln!(
        "xtask: report written to {}",
        report.join(format!("{name}.md")).display()
    );
    Ok(())
}

/// One line per outage block: RSS low, median while the receiver is up, and high; the series
/// count at its start and end; descriptors and threads. A level that keeps rising from block
/// to block while the series count stands still is a leak.
fn blocks(out: &mut String, rows: &[Row], block_secs: f64) -> Result<()> {
    writeln!(
        out,
        "\n| minutes | RSS min MiB | RSS median while up MiB | RSS max MiB | series | open fds | threads |\n|---|---|---|---|---|---|---|"
    )?;
    let mut start = 0.0;
    while let Some(first) = rows.iter().position(|r| r.at_secs >= start) {
        let block: Vec<&Row> = rows[first..]
            .iter()
            .take_while(|r| r.at_secs < start + block_secs)
            .collect();
        let (Some(a), Some(z)) = (block.first(), block.last()) else {
            break;
        };
        let mib = |r: &&Row| r.rss_kib as f64 / 1024.0;
        let up: Vec<f64> = block
            .iter()
            .filter(|r| r.mode == Mode::Up)
            .map(mib)
            .collect();
        let range = |v: Vec<u64>| {
            format!(
                "{}-{}",
                v.iter().min().unwrap_or(&0),
                v.iter().max().unwrap_or(&0)
            )
        };
        // Minutes to a tenth, without a trailing `.0`.
        let minutes = |secs: f64| format!("{}", (secs / 6.0).round() / 10.0);
        writeln!(
            out,
            "| {}-{} | {:.1} | {:.1} | {:.1} | {} -> {} | {} | {} |",
            minutes(start),
            minutes(start + block_secs),
            block.iter().map(mib).fold(f64::MAX, f64::min),
            crate::bench::median(&up),
            block.iter().map(mib).fold(0.0, f64::max),
            a.series,
            z.series,
            range(block.iter().map(|r| r.fds as u64).collect()),
            range(block.iter().map(|r| r.threads).collect()),
        )?;
        start += block_secs;
    }
    Ok(())
}

/// Flatness: RSS and fds over the run after a warm-up (the first sixth), with the slope of a
/// least-squares line through RSS.
fn summary(out: &mut String, rows: &[Row]) -> Result<()> {
    let warm = rows.len() / 6;
    let tail = &rows[warm.min(rows.len().saturating_sub(1))..];
    if tail.len() < 2 {
        return Ok(());
    }
    let rss: Vec<f64> = tail.iter().map(|r| r.rss_kib as f64 / 1024.0).collect();
    let (lo, hi) = rss
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let xs: Vec<f64> = tail.iter().map(|r| r.at_secs / 3600.0).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, rss.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&rss).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let fds: Vec<usize> = tail.iter().map(|r| r.fds).collect();
    let threads: Vec<u64> = tail.iter().map(|r| r.threads).collect();
    let cpu: Vec<f64> = rows.iter().map(|r| r.cpu_pct).collect();
    writeln!(
        out,
        "- after the warm-up ({:.0} min): RSS {lo:.1} to {hi:.1} MiB, least-squares slope {:+.2} MiB/hour; open fds {} to {}; threads {} to {}; peak RSS over the whole run {:.1} MiB",
        tail[0].at_secs / 60.0,
        if var > 0.0 { cov / var } else { 0.0 },
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0),
        threads.iter().min().unwrap_or(&0),
        threads.iter().max().unwrap_or(&0),
        rows.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
    )?;
    writeln!(
        out,
        "- agent CPU per sample window: median {:.2}% of a core, max {:.2}%; events lost (ring full) {}",
        crate::bench::median(&cpu),
        cpu.iter().cloned().fold(0.0, f64::max),
        rows.last().map_or(0.0, |r| r.events_lost)
    )?;
    Ok(())
}

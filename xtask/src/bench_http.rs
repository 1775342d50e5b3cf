//! `cargo xtask bench --only http`: a loopback HTTP/1.1 keep-alive benchmark with real
//! programs, bare against the agent (issue 15, "Cost"): Debian's Go net/http server
//! (`tests/workloads/http_mix.go`, `/ok` answers 64 bytes) pinned to CPU 1 and `ab -k`
//! (apache2-utils) pinned to CPU 0, each round running every case in a rotating order:
//! bare, the agent with its default config (HTTP probe on), and the agent with
//! `probes.http.enabled: false`. Reported: requests/s (medians over rounds) and their loss
//! against bare, and the agent's CPU (utime + stime from `/proc/<pid>/stat`, schedstat run
//! time beside it) over each run, also scaled linearly to 20,000 requests/s (the agent's HTTP
//! work is per event, so per request). And the CPU time the server and `ab` spend per request
//! (utime + stime, which holds the BPF programs that run in their syscalls): unlike requests/s,
//! it does not move with what other processes do on the machine.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench::{cpu_ticks, median, metric, terminate, Agent, CpuWindow, Env};

/// Requests per `ab` run and its concurrency (keep-alive connections).
const REQUESTS: u32 = 100_000;
const CONCURRENCY: u32 = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Bare,
    Steadfast,
    NoHttp,
    /// The default config with the HTTP ring at [`OTHER_RING_BYTES`].
    OtherRing,
    /// The `STEADFAST_BENCH_BEFORE` build, default config (only when it is set).
    Before,
}

/// The HTTP event ring of [`Case::OtherRing`]: the default until 2026-12-07 (4 MiB), beside
/// today's 1 MiB, for what the ring's size does to loss.
const OTHER_RING_BYTES: u32 = 4 << 20;

impl Case {
    const ALL: [Case; 5] = [
        Case::Bare,
        Case::Steadfast,
        Case::NoHttp,
        Case::OtherRing,
        Case::Before,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Steadfast => "steadfast (default config, HTTP probe on)",
            Case::NoHttp => "steadfast, HTTP probe off",
            Case::OtherRing => "steadfast, `probes.http.ring_buffer_bytes: 4194304`",
            Case::Before => "steadfast before (STEADFAST_BENCH_BEFORE)",
        }
    }
}

/// What the agent counted of one `ab` run, read from its `/metrics` once the server side
/// reached the requests made (or after [`COUNT_WAIT`]).
#[derive(Clone, Copy)]
struct Counted {
    /// `_count` of the Go server's request histogram (service `http_server`).
    server: f64,
    /// `_count` of `ab`'s client request histogram (service `ab`).
    client: f64,
    /// `steadfast_events_lost_total{source="http"}`.
    lost: f64,
}

/// How long the agent gets to drain its ring after a run.
const COUNT_WAIT: Duration = Duration::from_secs(5);

fn counted(agent: &Agent) -> Result<Counted> {
    let deadline = Instant::now() + COUNT_WAIT;
    loop {
        let (text, _) = agent.scrape()?;
        let c = Counted {
            server: metric(
                &text,
                "steadfast_http_server_request_duration_seconds_count",
                &["service=\"http_server\""],
            ),
            client: metric(
                &text,
                "steadfast_http_client_request_duration_seconds_count",
                &["service=\"ab\""],
            ),
            lost: metric(&text, "steadfast_events_lost_total", &["source=\"http\""]),
        };
        let done = c.server >= f64::from(REQUESTS) && c.client >= f64::from(REQUESTS);
        if done || Instant::now() > deadline {
            return Ok(c);
        }
        sleep(Duration::from_millis(100));
    }
}

struct Sample {
    case: Case,
    rps: f64,
    /// CPU time of the server plus `ab` per request, µs.
    cpu_us_per_req: f64,
    /// Agent CPU over the run, % of one core (ticks, schedstat).
    cpu: Option<(f64, f64)>,
    /// What the agent counted (cases with the HTTP probe on).
    seen: Option<Counted>,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

pub(crate) fn keepalive(env: &Env, root: &Path, rounds: usize, out: &mut String) -> Result<()> {
    if Command::new("ab").arg("-V").output().is_err() {
        bail!("ab is missing: apt-get install apache2-utils (scripts/setup --test installs it)");
    }
    let server_bin = env.bin("http_server");
    let home = env.dir.join("gohome");
    crate::run(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&server_bin)
            .arg(root.join("tests/workloads/http_mix.go"))
            .env("HOME", &home)
            .env("GOCACHE", home.join("cache"))
            .env("GOPATH", home.join("path"))
            .env("GOFLAGS", ""),
    )?;
    let port_file = env.dir.join("http_port");
    let _ = fs::remove_file(&port_file);
    let server = Server(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(&server_bin)
            .arg("server")
            .arg(&port_file)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the Go server")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let port: u16 = loop {
        if let Some(p) = fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        if Instant::now() > deadline {
            bail!("the Go server did not write its port");
        }
        sleep(Duration::from_millis(50));
    };
    let url = format!("http://127.0.0.1:{port}/ok");
    // Warm-up: connections, the Go runtime's heap.
    ab(&url, REQUESTS / 10)?;

    let mut samples = Vec::new();
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| *c != Case::Before || env.before.is_some())
        .collect();
    for round in 0..rounds {
        for i in 0..cases.len() {
            let case = cases[(i + round) % cases.len()];
            let agent = match case {
                Case::Bare => None,
                Case::Before => Some(Agent::start_bin(
                    env,
                    env.before.as_deref().context("no before agent")?,
                    "",
                )?),
                Case::Steadfast => Some(Agent::start(env, "")?),
                Case::NoHttp => Some(Agent::start(env, "probes:\n  http:\n    enabled: false\n")?),
                Case::OtherRing => Some(Agent::start(
                    env,
                    &format!("probes:\n  http:\n    ring_buffer_bytes: {OTHER_RING_BYTES}\n"),
                )?),
            };
            let window = agent
                .as_ref()
                .map(|a| CpuWindow::open(a.pid()))
                .transpose()?;
            let (server0, ab0) = (cpu_ticks(server.0.id())?, children_ticks()?);
            let rps = ab(&url, REQUESTS)?;
            let (server1, ab1) = (cpu_ticks(server.0.id())?, children_ticks()?);
            // Ticks are 10 ms.
            let cpu_us_per_req =
                ((server1 - server0) + (ab1 - ab0)) as f64 * 10_000.0 / f64::from(REQUESTS);
            let cpu = match (window, &agent) {
                (Some(w), Some(a)) => {
                    let (ticks, sched, _) = w.close(a.pid())?;
                    Some((ticks, sched))
                }
                _ => None,
            };
            let seen = match (&agent, case) {
                (Some(a), Case::Steadfast | Case::OtherRing | Case::Before) => Some(counted(a)?),
                _ => None,
            };
            eprintln!(
                "bench: http round {round} {:<42} {rps:9.0} req/s, {cpu_us_per_req:5.2} us CPU/req{}",
                case.label(),
                cpu.map(|(t, s)| format!(", agent CPU {t:.1}% ({s:.1}%)"))
                    .unwrap_or_default()
                    + &seen
                        .map(|c| format!(
                            ", counted {:.0} server / {:.0} client, {:.0} events lost",
                            c.server, c.client, c.lost
                        ))
                        .unwrap_or_default()
            );
            samples.push(Sample {
                case,
                rps,
                cpu_us_per_req,
                cpu,
                seen,
            });
            drop(agent);
        }
    }
    drop(server);

    writeln!(out, "\n## 7. HTTP keep-alive loopback (`ab -k`)\n")?;
    writeln!(
        out,
        "{rounds} rounds, each running every case in a rotating order; Go net/http server \
         (`tests/workloads/http_mix.go`, `GET /ok`, 64-byte body) pinned to CPU 1, `ab -k -n \
         {REQUESTS} -c {CONCURRENCY}` pinned to CPU 0; medians over rounds. Agent CPU: utime + \
         stime over the `ab` run (schedstat run time in brackets), % of one core; scaled to \
         20,000 requests/s linearly. CPU per request: utime + stime of the server and of `ab` \
         over the run (10 ms ticks) divided by the requests; it holds the BPF programs run in \
         their syscalls, and unlike requests/s it does not move with other load on the \
         machine. Counted: the `_count` of the server's (`http_server`) and the client's \
         (`ab`) request histograms after each run, summed over rounds, against the requests \
         `ab` made; lost: `steadfast_events_lost_total{{source=\"http\"}}`, summed.\n"
    )?;
    writeln!(
        out,
        "| case | requests/s (median) | min..max | vs bare | server + ab CPU µs/request (median) | min..max | vs bare | agent CPU % (median) | agent CPU % at 20,000 req/s | counted server / client of made | HTTP events lost |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    let bare_cpu = median(
        &samples
            .iter()
            .filter(|s| s.case == Case::Bare)
            .map(|s| s.cpu_us_per_req)
            .collect::<Vec<_>>(),
    );
    let bare = median(
        &samples
            .iter()
            .filter(|s| s.case == Case::Bare)
            .map(|s| s.rps)
            .collect::<Vec<_>>(),
    );
    for case in cases.iter().copied() {
        let set: Vec<&Sample> = samples.iter().filter(|s| s.case == case).collect();
        let rps: Vec<f64> = set.iter().map(|s| s.rps).collect();
        let m = median(&rps);
        let lo = rps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rps.iter().copied().fold(0.0, f64::max);
        let per_req: Vec<f64> = set.iter().map(|s| s.cpu_us_per_req).collect();
        let c = median(&per_req);
        let c_lo = per_req.iter().copied().fold(f64::INFINITY, f64::min);
        let c_hi = per_req.iter().copied().fold(0.0, f64::max);
        let (vs, c_vs) = if case == Case::Bare {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:+.1}%", (m / bare - 1.0) * 100.0),
                format!("{:+.1}%", (c / bare_cpu - 1.0) * 100.0),
            )
        };
        let (cpu, scaled) = if case == Case::Bare {
            ("-".to_string(), "-".to_string())
        } else {
            let ticks: Vec<f64> = set.iter().filter_map(|s| s.cpu.map(|c| c.0)).collect();
            let sched: Vec<f64> = set.iter().filter_map(|s| s.cpu.map(|c| c.1)).collect();
            let per_req: Vec<f64> = set
                .iter()
                .filter_map(|s| s.cpu.map(|c| c.0 / s.rps * 20_000.0))
                .collect();
            (
                format!("{:.2} ({:.2})", median(&ticks), median(&sched)),
                format!("{:.2}", median(&per_req)),
            )
        };
        let seen: Vec<Counted> = set.iter().filter_map(|s| s.seen).collect();
        let (counts, lost) = if seen.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let sum = |f: fn(&Counted) -> f64| seen.iter().map(f).sum::<f64>();
            (
                format!(
                    "{:.0} / {:.0} of {}",
                    sum(|c| c.server),
                    sum(|c| c.client),
                    u64::from(REQUESTS) * seen.len() as u64
                ),
                format!("{:.0}", sum(|c| c.lost)),
            )
        };
        writeln!(
            out,
            "| {} | {m:.0} | {lo:.0}..{hi:.0} | {vs} | {c:.2} | {c_lo:.2}..{c_hi:.2} | {c_vs} | {cpu} | {scaled} | {counts} | {lost} |",
            case.label()
        )?;
    }
    Ok(())
}

/// utime + stime of this process's waited-for children (`ab` among them), in 10 ms ticks.
fn children_ticks() -> Result<u64> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    // After the comm: cutime is field 16, cstime 17.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[13].parse::<u64>()? + f[14].parse::<u64>()?)
}

/// Runs `ab -k` against `url` on CPU 0; returns its requests per second. Fails on any
/// failed request or non-2xx answer.
fn ab(url: &str, n: u32) -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", "0", "ab", "-k", "-q", "-n"])
        .arg(n.to_string())
        .arg("-c")
        .arg(CONCURRENCY.to_string())
        .arg(url)
        .output()
        .context("running ab")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("ab failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |name: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
    };
    if field("Failed requests:") != Some("0") || text.contains("Non-2xx responses:") {
        bail!("ab saw failures: {text}");
    }
    field("Requests per second:")
        .context("no requests per second in ab's output")?
        .parse()
        .context("ab's requests per second")
}

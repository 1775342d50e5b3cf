//! `cargo xtask bench --only http`: a loopback HTTP/1.1 keep-alive benchmark with real
//! programs, bare against the agent (issue 15, "Cost"): Debian's Go net/http server
//! (`tests/workloads/http_mix.go`, `/ok` answers 64 bytes) pinned to CPU 1 and `ab -k`
//! (apache2-utils) pinned to CPU 0, each round running every case in a rotating order:
//! bare, the agent with its default config (HTTP probe on), and the agent with
//! `probes.http.enabled: false`. Reported: requests/s (medians over rounds) and their loss
//! against bare, and the agent's CPU (utime + stime from `/proc/<pid>/stat`, schedstat run
//! time beside it) over each run, also scaled linearly to 20,000 requests/s (the agent's HTTP
//! work is per event, so per request).

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench::{median, terminate, Agent, CpuWindow, Env};

/// Requests per `ab` run and its concurrency (keep-alive connections).
const REQUESTS: u32 = 100_000;
const CONCURRENCY: u32 = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Bare,
    Steadfast,
    NoHttp,
}

impl Case {
    const ALL: [Case; 3] = [Case::Bare, Case::Steadfast, Case::NoHttp];

    fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Steadfast => "steadfast (default config, HTTP probe on)",
            Case::NoHttp => "steadfast, HTTP probe off",
        }
    }
}

struct Sample {
    case: Case,
    rps: f64,
    /// Agent CPU over the run, % of one core (ticks, schedstat).
    cpu: Option<(f64, f64)>,
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
    for round in 0..rounds {
        for i in 0..Case::ALL.len() {
            let case = Case::ALL[(i + round) % Case::ALL.len()];
            let agent = match case {
                Case::Bare => None,
                Case::Steadfast => Some(Agent::start(env, "")?),
                Case::NoHttp => Some(Agent::start(env, "probes:\n  http:\n    enabled: false\n")?),
            };
            let window = agent
                .as_ref()
                .map(|a| CpuWindow::open(a.pid()))
                .transpose()?;
            let rps = ab(&url, REQUESTS)?;
            let cpu = match (window, &agent) {
                (Some(w), Some(a)) => {
                    let (ticks, sched, _) = w.close(a.pid())?;
                    Some((ticks, sched))
                }
                _ => None,
            };
            eprintln!(
                "bench: http round {round} {:<42} {rps:9.0} req/s{}",
                case.label(),
                cpu.map(|(t, s)| format!(", agent CPU {t:.1}% ({s:.1}%)"))
                    .unwrap_or_default()
            );
            samples.push(Sample { case, rps, cpu });
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
         20,000 requests/s linearly.\n"
    )?;
    writeln!(
        out,
        "| case | requests/s (median) | min..max | vs bare | agent CPU % (median) | agent CPU % at 20,000 req/s |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let bare = median(
        &samples
            .iter()
            .filter(|s| s.case == Case::Bare)
            .map(|s| s.rps)
            .collect::<Vec<_>>(),
    );
    for case in Case::ALL {
        let set: Vec<&Sample> = samples.iter().filter(|s| s.case == case).collect();
        let rps: Vec<f64> = set.iter().map(|s| s.rps).collect();
        let m = median(&rps);
        let lo = rps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rps.iter().copied().fold(0.0, f64::max);
        let vs = if case == Case::Bare {
            "-".to_string()
        } else {
            format!("{:+.1}%", (m / bare - 1.0) * 100.0)
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
        writeln!(
            out,
            "| {} | {m:.0} | {lo:.0}..{hi:.0} | {vs} | {cpu} | {scaled} |",
            case.label()
        )?;
    }
    Ok(())
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

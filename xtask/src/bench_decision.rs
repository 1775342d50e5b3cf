//! Item 4 of the benchmark: decision latency. A workload's `nanosleep` latency steps up in the
//! kernel; a rule-file breaker judges the slow-call ratio every rule interval. Three readers:
//!
//! - a client blocked on the local API (`GET /v1/breakers?index=N&wait=...`);
//! - the Go client (`clients/go/cmd/steadfast-page follow`, polling `Breaker`/`Allow` every
//!   millisecond), whose `Allow()` returns false from the line it prints on Shed;
//! - the Rust client in this process, polling the state page every 100 µs, for the time from
//!   the engine's decision (the breaker's `since`, in milliseconds) to the page showing it.
//!
//! The first two figures run from the condition becoming true (the workload's second slow call
//! completing: `min_volume: 2`, after a quiet spell that emptied the 2 s window) to the reader
//! seeing Shed. Repeated over many trials for a 1 s and a 100 ms rule interval; p50 and p99
//! (nearest rank).

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::bench::{Agent, Env};

const TRIALS: usize = 15;

fn rules(interval_ms: u64) -> String {
    let sel = "service=\"sfdecision\",syscall=\"nanosleep\"";
    format!(
        "groups:\n  - name: decision\n    interval: {interval_ms}ms\n    breakers:\n      - name: decision\n        slow_ratio: 1 - sum(increase(steadfast_syscall_duration_seconds_bucket{{{sel},le=\"0.015625\"}}[2s])) / sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[2s]))\n        volume: sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[2s]))\n        min_volume: 2\n        open_slow_ratio: 0.5\n        close_slow_ratio: 0.2\n        wait_base: 60s\n        wait_max: 60s\n        jitter: 0\n"
    )
}

fn request(port: u16, method: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    if !head.contains(" 200 ") {
        bail!("{method} {path}: {head}");
    }
    Ok(body.to_string())
}

/// A POST on the API's unix socket (changes are made there).
fn post_unix(socket: &Path, path: &str) -> Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    if !raw.starts_with("HTTP/1.0 200") && !raw.starts_with("HTTP/1.1 200") {
        bail!("POST {path}: {raw}");
    }
    Ok(())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (index, state) of the breaker.
fn breaker(port: u16, index: u64, wait: &str) -> Result<(u64, String)> {
    let body = request(
        port,
        "GET",
        &format!("/v1/breakers?index={index}&wait={wait}"),
    )?;
    let index = body
        .split("\"index\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .context("no index")?;
    let state = ["admit", "probe", "shed"]
        .into_iter()
        .find(|s| body.contains(&format!("\"state\":\"{s}\"")))
        .unwrap_or("absent");
    Ok((index, state.to_string()))
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A line of `steadfast-page follow`: (arrival, state).
type GoLine = (Instant, String);

/// The Go client following the breaker, one line per change.
fn go_follower(tool: &Path, page: &Path) -> Result<(KillOnDrop, mpsc::Receiver<GoLine>)> {
    let mut child = Command::new(tool)
        .args(["follow", "-breaker", "decision", "-poll", "1ms", "-page"])
        .arg(page)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the Go client")?;
    let out = BufReader::new(child.stdout.take().context("stdout")?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let at = Instant::now();
            let state = l
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("state="))
                .unwrap_or("")
                .to_string();
            if tx.send((at, state)).is_err() {
                return;
            }
        }
    });
    Ok((KillOnDrop(child), rx))
}

/// The Rust client polling the page every 100 µs: on each Shed it sends (when the page showed
/// it, unix ns; the engine's decision time, unix ns).
fn page_watcher(page: &Path, stop: Arc<AtomicBool>) -> Result<mpsc::Receiver<(u64, u64)>> {
    let client = steadfast_client::Client::open(steadfast_client::Options {
        page_path: page.to_path_buf(),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut was_shed = false;
        while !stop.load(Ordering::Relaxed) {
            let b = client.breaker("decision");
            let shed = b
                .as_ref()
                .is_some_and(|b| b.state == steadfast_client::State::Shed);
            if shed && !was_shed {
                let seen = unix_ns();
                let since = b.map_or(0, |b| b.since_unix_ns);
                if tx.send((seen, since)).is_err() {
                    return;
                }
            }
            was_shed = shed;
            sleep(Duration::from_micros(100));
        }
    });
    Ok(rx)
}

pub fn decision(env: &Env, root: &std::path::Path, out: &mut String) -> Result<()> {
    let workload = env.bin("sfdecision");
    crate::run(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&workload)
            .arg(root.join("tests/workloads/nanosleep_phases.c")),
    )?;
    let tool = env.bin("steadfast-page");
    crate::run(
        crate::go(root)
            .args(["build", "-o"])
            .arg(&tool)
            .arg("./cmd/steadfast-page"),
    )?;
    writeln!(out, "\n## 4. Decision latency\n")?;
    writeln!(
        out,
        "From the condition becoming true in the kernel to a client blocked on the API seeing Shed, and to the Go client's `Allow()` returning false (it polls the state page every millisecond); and from the engine's decision (the breaker's `since`, whole milliseconds: up to 1 ms too early) to the state page showing it (read every 100 µs). {TRIALS} trials per rule interval; p50 / p99 / max.\n"
    )?;
    writeln!(
        out,
        "| rule interval | API client | Go `Allow() == false` | decision -> page | target |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (interval_ms, target) in [
        (1000u64, "p99 < 1 s; page < 10 ms"),
        (100, "p99 < 200 ms; page < 10 ms"),
    ] {
        let dir = env.dir.join(format!("decision-{interval_ms}"));
        fs::create_dir_all(dir.join("rules.d"))?;
        fs::write(dir.join("rules.d/decision.yaml"), rules(interval_ms))?;
        let d = dir.display();
        let socket = dir.join("api.sock");
        let page = dir.join("state.page");
        let agent = Agent::start(
            env,
            &format!(
                "rules:\n  directory: {d}/rules.d\n  evaluation_interval_ms: {interval_ms}\n  state_dir: {d}/state\ncontrol:\n  api_socket: {d}/api.sock\n  signals_dir: null\n  state_dir: {d}/state\n  state_page: {d}/state.page\n"
            ),
        )?;
        let (_go, go_lines) = go_follower(&tool, &page)?;
        let stop = Arc::new(AtomicBool::new(false));
        let page_seen = page_watcher(&page, stop.clone())?;
        let mut w = Command::new(&workload)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdin = w.stdin.take().context("stdin")?;
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(w.stdout.take().context("stdout")?);
        std::thread::spawn(move || {
            for l in stdout.lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), l));
            }
        });
        let mut say = |cmd: &str| -> Result<()> {
            writeln!(stdin, "{cmd}")?;
            loop {
                let (_, l) = lines.recv_timeout(Duration::from_secs(10))?;
                if l == "ok" {
                    return Ok(());
                }
            }
        };
        let (mut api, mut go, mut to_page) = (Vec::new(), Vec::new(), Vec::new());
        say("fast")?;
        sleep(Duration::from_millis(1500));
        for _ in 0..TRIALS {
            say("idle")?;
            sleep(Duration::from_millis(2400));
            post_unix(&socket, "/v1/breakers/decision/reset")?;
            let (index, state) = breaker(agent.port, 0, "0s")?;
            if state != "admit" {
                bail!("breaker {state} before a trial");
            }
            // The Go client has seen the reset (or never saw a Shed) when its last line says so.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut go_state = String::from("admit");
            while let Ok((_, s)) = go_lines.try_recv() {
                go_state = s;
            }
            while go_state == "shed" {
                let left = deadline.saturating_duration_since(Instant::now());
                go_state = go_lines.recv_timeout(left)?.1;
            }
            while page_seen.try_recv().is_ok() {}
            let port = agent.port;
            let client = std::thread::spawn(move || -> Result<Instant> {
                let mut index = index;
                loop {
                    let (i, state) = breaker(port, index, "10s")?;
                    if state == "shed" {
                        return Ok(Instant::now());
                    }
                    if i == index {
                        bail!("no change within 10 s");
                    }
                    index = i;
                }
            });
            say("slow 30")?;
            let (cond, l) = lines.recv_timeout(Duration::from_secs(10))?;
            if l != "cond" {
                bail!("workload said {l:?}");
            }
            let seen = client
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??;
            api.push(seen.saturating_duration_since(cond).as_secs_f64() * 1e3);
            let go_seen = loop {
                let (at, s) = go_lines.recv_timeout(Duration::from_secs(10))?;
                if s == "shed" {
                    break at;
                }
            };
            go.push(go_seen.saturating_duration_since(cond).as_secs_f64() * 1e3);
            let (on_page, since) = page_seen.recv_timeout(Duration::from_secs(10))?;
            to_page.push(on_page.saturating_sub(since) as f64 / 1e6);
        }
        stop.store(true, Ordering::Relaxed);
        writeln!(stdin, "quit")?;
        let _ = w.wait();
        drop(agent);
        let fmt = |v: &[f64]| {
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                percentile(v, 0.5),
                percentile(v, 0.99),
                percentile(v, 1.0)
            )
        };
        let fine = |v: &[f64]| {
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                percentile(v, 0.5),
                percentile(v, 0.99),
                percentile(v, 1.0)
            )
        };
        writeln!(
            out,
            "| {interval_ms} ms | {} | {} | {} | {target} |",
            fmt(&api),
            fmt(&go),
            fine(&to_page)
        )?;
    }
    Ok(())
}

//! Item 4 of the benchmark: decision latency. A workload's `nanosleep` latency steps up in the
//! kernel; a rule-file breaker judges the slow-call ratio every rule interval; a client is
//! blocked on the local API (`GET /v1/breakers?index=N&wait=...`). The figure is the time from
//! the condition becoming true (the workload's second slow call completing: `min_volume: 2`,
//! after a quiet spell that emptied the 2 s window) to the client seeing Shed. Repeated over
//! many trials for a 1 s and a 100 ms rule interval; p50 and p99 (nearest rank).

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    sync::mpsc,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench::{Agent, Env};

const TRIALS: usize = 15;

fn rules(interval_ms: u64) -> String {
    let sel = "service=\"sfdecision\",syscall=\"nanosleep\"";
    format!(
        "groups:\n  - name: decision\n    interval: {interval_ms}ms\n    breakers:\n      - name: decision\n        slow_ratio: 1 - sum(increase(steadfast_syscall_duration_seconds_bucket{{{sel},le=\"0.016777216\"}}[2s])) / sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[2s]))\n        volume: sum(increase(steadfast_syscall_duration_seconds_count{{{sel}}}[2s]))\n        min_volume: 2\n        open_slow_ratio: 0.5\n        close_slow_ratio: 0.2\n        wait_base: 60s\n        wait_max: 60s\n        jitter: 0\n"
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

pub fn decision(env: &Env, root: &std::path::Path, out: &mut String) -> Result<()> {
    let workload = env.bin("sfdecision");
    crate::run(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&workload)
            .arg(root.join("tests/workloads/nanosleep_phases.c")),
    )?;
    writeln!(out, "\n## 4. Decision latency\n")?;
    writeln!(
        out,
        "From the condition becoming true in the kernel to a client blocked on the API seeing Shed; {TRIALS} trials per rule interval.\n"
    )?;
    writeln!(out, "| rule interval | p50 | p99 | max | target |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (interval_ms, target) in [(1000u64, "p99 < 1 s"), (100, "p99 < 200 ms")] {
        let dir = env.dir.join(format!("decision-{interval_ms}"));
        fs::create_dir_all(dir.join("rules.d"))?;
        fs::write(dir.join("rules.d/decision.yaml"), rules(interval_ms))?;
        let d = dir.display();
        let agent = Agent::start(
            env,
            &format!(
                "rules:\n  directory: {d}/rules.d\n  evaluation_interval_ms: {interval_ms}\n  state_dir: {d}/state\ncontrol:\n  api_socket: null\n  signals_dir: null\n  state_dir: {d}/state\n"
            ),
        )?;
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
        let mut latencies = Vec::new();
        say("fast")?;
        sleep(Duration::from_millis(1500));
        for _ in 0..TRIALS {
            say("idle")?;
            sleep(Duration::from_millis(2400));
            request(agent.port, "POST", "/v1/breakers/decision/reset")?;
            let (index, state) = breaker(agent.port, 0, "0s")?;
            if state != "admit" {
                bail!("breaker {state} before a trial");
            }
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
            latencies.push(seen.saturating_duration_since(cond).as_secs_f64() * 1e3);
        }
        writeln!(stdin, "quit")?;
        let _ = w.wait();
        drop(agent);
        writeln!(
            out,
            "| {interval_ms} ms | {:.0} ms | {:.0} ms | {:.0} ms | {target} |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        )?;
    }
    Ok(())
}

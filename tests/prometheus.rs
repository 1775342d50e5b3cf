//! A real Prometheus (Debian's `prometheus`) scrapes the agent; its query API must show what a
//! known workload did. Needs root.

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{build_workload, free_port, http_get, run_to_end, unique_name, Agent};

struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\nscrape_configs:\n  - job_name: steadfast\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/setup --test installs Debian's prometheus)");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/-/ready", None).is_err() {
        assert!(Instant::now() < deadline, "prometheus not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    Prometheus {
        child,
        addr,
        _dir: dir,
    }
}

/// An instant query's single value, if there is one.
fn query(p: &Prometheus, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(p.addr, &format!("/api/v1/query?query={enc}"), None).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    let value = result.first()?["value"][1].as_str()?;
    value.parse().ok()
}

fn wait_for_value(p: &Prometheus, q: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = query(p, q);
        if got == Some(want) || Instant::now() > deadline {
            return got.unwrap_or(f64::NAN);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prometheus scrapes the agent (negotiating OpenMetrics); after a workload of exactly N
/// getppid calls, the stored count for its service is N, the scrape is healthy, and the
/// series carries the `syscall` and `service` labels.
#[test]
fn prometheus_sees_the_exact_workload() {
    const N: u64 = 123_456;
    let agent = Agent::start("");
    let prom = start_prometheus(agent.addr);
    // Two scrapes before the workload.
    assert_eq!(wait_for_value(&prom, "up{job=\"steadfast\"}", 1.0), 1.0);
    std::thread::sleep(Duration::from_millis(4200));

    let name = unique_name("sfpm");
    let bin = build_workload("getppid_loop", agent.dir.path(), &name);
    run_to_end(&bin, &[&N.to_string()]);
    let q = format!(
        "steadfast_syscall_duration_seconds_count{{syscall=\"getppid\",service=\"{name}\"}}"
    );
    assert_eq!(
        wait_for_value(&prom, &q, N as f64),
        N as f64,
        "{}",
        agent.log()
    );
    // The largest value over the last minute is N too: no scrape ever saw more.
    assert_eq!(
        wait_for_value(&prom, &format!("max_over_time({q}[1m])"), N as f64),
        N as f64
    );
    assert_eq!(
        query(&prom, "scrape_samples_scraped{job=\"steadfast\"} > 0").map(|v| v > 0.0),
        Some(true)
    );
}

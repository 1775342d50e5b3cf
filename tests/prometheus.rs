//! A real Prometheus (Debian's `prometheus`) scrapes the agent; its query API must show what a
//! known workload did. Needs root.

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{build_workload, free_port, http_get, run_to_end, unique_name, wait_until, Agent};

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
    start_prometheus_with(target, "2s", None, &[])
}

/// Prometheus scraping `target` every `interval` (and evaluating rules as often), with
/// `rules` as its rule file.
fn start_prometheus_with(
    target: std::net::SocketAddr,
    interval: &str,
    rules: Option<&std::path::Path>,
    features: &[&str],
) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let rule_files = rules.map_or(String::new(), |r| {
        format!("rule_files:\n  - {}\n", r.display())
    });
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n{rule_files}scrape_configs:\n  - job_name: steadfast\n    static_configs:\n      - targets: ['{target}']\n"
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
        .args(features.iter().map(|f| format!("--enable-feature={f}")))
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
    // Scrapes before the workload (three, as a fixed 4.2 s at 2 s gave).
    assert_eq!(wait_for_value(&prom, "up{job=\"steadfast\"}", 1.0), 1.0);
    wait_until("three scrapes", Duration::from_secs(30), || {
        query(&prom, "count_over_time(up{job=\"steadfast\"}[5m])").is_some_and(|n| n >= 3.0)
    });

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

/// Prometheus with native histograms asks for the protobuf format and gets each syscall
/// histogram as one native histogram: its `histogram_count` for a workload of exactly N
/// getppid calls is N, as the text format's `_count` says; 16 ms sleeps sit in the native
/// bucket (2^-6, 2^-5] s as in the classic bucket `le="0.03125"`; and the classic series are
/// not stored (the scrape was protobuf).
#[test]
fn prometheus_with_native_histograms_counts_exactly() {
    const N: u64 = 54_321;
    let agent = Agent::start("");
    let prom = start_prometheus_with(agent.addr, "1s", None, &["native-histograms"]);
    assert_eq!(wait_for_value(&prom, "up{job=\"steadfast\"}", 1.0), 1.0);

    let name = unique_name("sfnh");
    let bin = build_workload("getppid_loop", agent.dir.path(), &name);
    run_to_end(&bin, &[&N.to_string()]);
    let sel = format!("{{syscall=\"getppid\",service=\"{name}\"}}");
    let q = format!("histogram_count(steadfast_syscall_duration_seconds{sel})");
    assert_eq!(
        wait_for_value(&prom, &q, N as f64),
        N as f64,
        "{}",
        agent.log()
    );
    let text = agent.scrape();
    assert_eq!(
        text.value(
            "steadfast_syscall_duration_seconds_count",
            &[("syscall", "getppid"), ("service", &name)]
        ),
        Some(N as f64),
        "the text format's _count"
    );
    assert_eq!(
        query(
            &prom,
            &format!("steadfast_syscall_duration_seconds_count{sel}")
        ),
        None,
        "classic series stored: the scrape was not protobuf"
    );

    // Ten 16 ms sleeps: every quantile lies in (2^-6, 2^-5] s.
    let sleeper = unique_name("sfnz");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &sleeper);
    run_to_end(&bin, &["0", "10", "16"]);
    let sel = format!("{{syscall=\"nanosleep\",service=\"{sleeper}\"}}");
    assert_eq!(
        wait_for_value(
            &prom,
            &format!("histogram_count(steadfast_syscall_duration_seconds{sel})"),
            10.0
        ),
        10.0
    );
    for q in ["0.01", "0.5", "0.99"] {
        let v = query(
            &prom,
            &format!("histogram_quantile({q}, steadfast_syscall_duration_seconds{sel})"),
        )
        .unwrap();
        assert!(v > 0.015625 && v <= 0.03125, "quantile {q}: {v}");
    }
    let text = agent.scrape();
    let bucket = |le: &str| {
        text.value(
            "steadfast_syscall_duration_seconds_bucket",
            &[("syscall", "nanosleep"), ("service", &sleeper), ("le", le)],
        )
    };
    assert_eq!(
        (bucket("0.015625"), bucket("0.03125")),
        (Some(0.0), Some(10.0))
    );
}

/// The SLO exported by `steadfast rules export --format prometheus` passes `promtool check
/// rules`, and a real Prometheus evaluating it over its scrapes of the agent computes the same
/// burn rate as the agent itself: a steady workload with a quarter of its nanosleep calls over
/// the threshold burns a 1% budget at 25x, and the two agree within 1% at the same time.
#[test]
fn exported_slo_rules_in_prometheus_match_the_agents_burn_rate() {
    let service = unique_name("sfflt");
    let slo = format!("fleet-{service}");
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("slo.yaml"),
        format!(
            r#"groups:
  - name: fleet
    interval: 1s
    slos:
      - name: {slo}
        objective: 99
        period: 30d
        window_scale: 0.016666666666666666
        labels: {{service: {service}}}
        sli:
          latency:
            histogram: steadfast_syscall_duration_seconds{{syscall="nanosleep",service="{service}"}}
            threshold_seconds: 0.01
"#
        ),
    )
    .unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  state_dir: @AGENT_DIR@/state\n  evaluation_interval_ms: 1000\nservices:\n  max_services: 100000\ntargets:\n  - service: {service}\n    comm: {service}\n",
        rules.path().display()
    ));
    let exported = agent.dir.path().join("exported.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["rules", "export", "--format", "prometheus"])
        .arg(rules.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&exported, &out.stdout).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool refused the export: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let prom = start_prometheus_with(agent.addr, "1s", Some(&exported), &[]);
    assert_eq!(wait_for_value(&prom, "up{job=\"steadfast\"}", 1.0), 1.0);

    let bin = build_workload("nanosleep_steady", agent.dir.path(), &service);
    let mut work = Command::new(&bin).args(["3", "20", "120"]).spawn().unwrap();
    // The 30 s window (the second page pair's short window, scaled) must be full of the
    // workload in both systems before they are compared: Prometheus's first sample of the
    // workload's series is over 32 s old (the agent's rule store sees the series within a
    // second of Prometheus: both read the same collections, each once a second).
    let calls = format!(
        "steadfast_syscall_duration_seconds_count{{syscall=\"nanosleep\",service=\"{service}\"}}"
    );
    wait_until(
        "a 30 s window full of the workload",
        Duration::from_secs(90),
        || {
            query(&prom, &format!("count_over_time({calls}[1m] offset 32s)"))
                .is_some_and(|n| n > 0.0)
        },
    );
    let q = format!("slo:burn_rate:ratio_rate30s{{slo=\"{slo}\"}}");
    let mut compared = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while compared < 3 {
        let theirs = query(&prom, &q);
        let ours = agent.scrape().value(
            "steadfast_slo_burn_rate",
            &[("slo", slo.as_str()), ("window", "30s")],
        );
        assert!(
            Instant::now() < deadline,
            "no burn rate in both (Prometheus {theirs:?}, agent {ours:?}; Prometheus SLI {:?}; calls {:?}): {}",
            query(&prom, &format!("slo:sli_error:ratio_rate30s{{slo=\"{slo}\"}}")),
            agent.scrape().value(
                "steadfast_syscall_duration_seconds_count",
                &[("service", service.as_str()), ("syscall", "nanosleep")]
            ),
            agent.log()
        );
        if let (Some(theirs), Some(ours)) = (theirs, ours) {
            assert!(
                (20.0..30.0).contains(&ours),
                "the agent's burn rate {ours} is not about 25"
            );
            assert!(
                (theirs - ours).abs() <= 0.01 * ours,
                "Prometheus {theirs} vs agent {ours}"
            );
            eprintln!("burn rate over 30 s: Prometheus {theirs:.4}, agent {ours:.4}");
            compared += 1;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    let _ = work.kill();
    let _ = work.wait();
}

//! OTLP export checked by a receiver built from the official protobuf definitions
//! (opentelemetry-proto's generated gRPC services, and the same messages over HTTP): spans for
//! slow syscalls with their attributes, metrics, and delivery through a receiver outage with
//! backoff and jitter. Needs root.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::{
    build_workload, free_port,
    otlp_receiver::{
        attr, otlp_config, overflow_in_phases, spans_by_outcome, Answer, Attr, Point, Receiver,
        Signal, EXECUTABLE, SMALL_CATALOGUE,
    },
    run_to_end, unique_name, wait_until, Agent,
};

/// Ten slow nanosleeps of a known process become exactly ten spans with the semantic
/// attributes, over both protocols, and the metric catalogue arrives.
fn slow_syscalls_arrive_as_spans(protocol: &str) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let receiver = Receiver::start(protocol, addr, Answer::Accept);
    let agent = Agent::start(&otlp_config(&format!("http://{addr}"), protocol, ""));
    let name = unique_name("sfot");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let child = std::process::Command::new(&bin)
        .args(["100", "10", "20"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());

    let r = &receiver;
    wait_until("10 spans", Duration::from_secs(15), || {
        r.spans_of(&name).len() >= 10
    });
    // A fixed time: that no eleventh span comes is what is checked (the exporter holds a
    // batch for up to 1 s before sending it).
    std::thread::sleep(Duration::from_millis(1500));
    let spans = r.spans_of(&name);
    assert_eq!(
        spans.len(),
        10,
        "exactly the slow calls; log:\n{}",
        agent.log()
    );
    for s in &spans {
        assert_eq!(s.name, "syscall nanosleep");
        assert_eq!(
            attr(&s.attributes, "process.pid"),
            Some(Attr::Int(pid.into()))
        );
        assert_eq!(
            attr(&s.attributes, "process.executable.name"),
            Some(Attr::Str(name.clone()))
        );
        assert_eq!(
            attr(&s.attributes, "steadfast.syscall.name"),
            Some(Attr::Str("nanosleep".into()))
        );
        let dur = s.end_time_unix_nano - s.start_time_unix_nano;
        assert!(
            (20_000_000..100_000_000).contains(&dur),
            "duration {dur} ns"
        );
        assert!(
            s.start_time_unix_nano >= started - 1_000_000_000,
            "dated in wall-clock time"
        );
        assert_eq!(s.trace_id.len(), 16);
    }
    wait_until("metrics", Duration::from_secs(10), || {
        r.metric_names()
            .iter()
            .any(|n| n == "steadfast_syscall_duration_seconds")
    });
}

#[test]
fn slow_syscalls_arrive_as_spans_over_grpc() {
    slow_syscalls_arrive_as_spans("grpc");
}

#[test]
fn slow_syscalls_arrive_as_spans_over_http() {
    slow_syscalls_arrive_as_spans("http_protobuf");
}

/// The receiver is down while slow syscalls keep coming: the agent keeps serving, the queue
/// stays bounded and overflow is counted, retries back off exponentially with full jitter up
/// to the cap; when the receiver comes up, delivery resumes.
#[test]
fn receiver_outage_backs_off_drops_bounded_and_recovers() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = Agent::start(&otlp_config(
        &format!("http://{addr}"),
        "grpc",
        &format!("  queue_size: 32\n  batch_size: 8\n  retry_initial_backoff_ms: 50\n  retry_max_backoff_secs: 1\n  timeout_secs: 1\nlog:\n  format: json\n  level: \"info,steadfast::export::otlp=debug\"\n{SMALL_CATALOGUE}"),
    ));
    let name = unique_name("sfou");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    // Nothing listens: the queue stays bounded, overflow is counted, RSS stays flat.
    overflow_in_phases(&agent, &bin, |_| {});

    // Retries so far: ceilings double from 50 ms to the 1 s cap, waits are jittered below them.
    let retries: Vec<(u64, u64)> = agent
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["signal"] == "traces" && v["ceiling_ms"].is_u64())
        .map(|v| {
            (
                v["ceiling_ms"].as_u64().unwrap(),
                v["delay_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(retries.len() >= 5, "retries: {retries:?}");
    let ceilings: Vec<u64> = retries.iter().map(|r| r.0).collect();
    assert_eq!(&ceilings[..5], &[50, 100, 200, 400, 800], "{retries:?}");
    assert!(ceilings.iter().all(|&c| c <= 1000));
    assert!(retries.iter().all(|(c, d)| d <= c));
    let mut delays: Vec<u64> = retries.iter().map(|r| r.1).collect();
    delays.sort();
    delays.dedup();
    assert!(
        delays.len() >= retries.len() / 2,
        "jittered waits differ: {retries:?}"
    );

    // The receiver comes back: queued spans and new ones are delivered.
    let receiver = Receiver::grpc(addr);
    run_to_end(&bin, &["0", "5", "11"]);
    wait_until("delivery after the outage", Duration::from_secs(10), || {
        receiver.spans_with(EXECUTABLE, &name).len() >= 5
    });
    assert!(spans_by_outcome(&agent.scrape(), "exported") >= 5.0);
}

/// The kernel's histograms arrive as exponential histograms of scale 0 (the default) whose
/// counts equal the scrape's `_count` for a workload of exactly N getppid calls, every call in
/// a bucket; with `otlp.histograms: explicit` the same count arrives as an explicit histogram.
#[test]
fn syscall_histograms_arrive_exponential_with_the_scrapes_counts() {
    const N: u64 = 4_321;
    for (extra, scale) in [("", Some(0)), ("  histograms: explicit\n", None)] {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let receiver = Receiver::grpc(addr);
        let agent = Agent::start(&otlp_config(&format!("http://{addr}"), "grpc", extra));
        let name = unique_name("sfox");
        let bin = build_workload("getppid_loop", agent.dir.path(), &name);
        run_to_end(&bin, &[&N.to_string()]);
        let scraped = agent
            .scrape()
            .value(
                "steadfast_syscall_duration_seconds_count",
                &[("syscall", "getppid"), ("service", &name)],
            )
            .unwrap();
        assert_eq!(scraped, N as f64, "the scrape's count");
        let attrs = [("syscall", "getppid"), ("service", name.as_str())];
        wait_until(
            "the workload's histogram point",
            Duration::from_secs(15),
            || {
                receiver
                    .last_histogram("steadfast_syscall_duration_seconds", &attrs)
                    .is_some_and(|h| h.count == N)
            },
        );
        let h = receiver
            .last_histogram("steadfast_syscall_duration_seconds", &attrs)
            .unwrap();
        assert_eq!(h.exponential_scale, scale, "{extra:?}: {h:?}");
        assert_eq!(h.in_buckets, N, "every call in a bucket: {h:?}");
    }
}

/// A catalogue larger than `otlp.metrics_batch_size` goes out in several requests, none of
/// more points than the batch, which together hold every cumulative series (every counter
/// and histogram) of a scrape taken before them.
#[test]
fn a_large_catalogue_arrives_in_requests_of_bounded_size() {
    const BATCH: usize = 10;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let receiver = Receiver::grpc(addr);
    let agent = Agent::start(&otlp_config(
        &format!("http://{addr}"),
        "grpc",
        &format!("  metrics_batch_size: {BATCH}\n"),
    ));
    wait_until("the first metrics", Duration::from_secs(15), || {
        !receiver.metric_names().is_empty()
    });
    let scrape = agent.scrape();
    let after = std::time::Instant::now();
    let expected = cumulative_series(&scrape.0);
    assert!(
        expected.len() > 2 * BATCH,
        "a catalogue of {} cumulative series is too small to need splitting",
        expected.len()
    );
    // Within three intervals at least two whole rounds start after the scrape: wait (at
    // most that) until every series has arrived in requests sent after it.
    let after_scrape = || -> Vec<_> {
        receiver
            .requests()
            .into_iter()
            .filter(|r| r.signal == Signal::Metrics && r.at >= after)
            .collect()
    };
    let deadline = after + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let got: BTreeSet<Point> = after_scrape()
            .iter()
            .flat_map(|r| r.points.clone())
            .collect();
        if expected.is_subset(&got) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let requests = after_scrape();
    let sizes: Vec<usize> = requests.iter().map(|r| r.points.len()).collect();
    assert!(
        sizes.iter().all(|&n| (1..=BATCH).contains(&n)),
        "request sizes {sizes:?}"
    );
    let got: BTreeSet<Point> = requests.iter().flat_map(|r| r.points.clone()).collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} series never arrived, e.g. {missing:?}",
        expected.difference(&got).count(),
        expected.len()
    );
    eprintln!(
        "{} cumulative series arrived in {} requests of at most {BATCH} points",
        expected.len(),
        requests.len()
    );
}

/// The counters and histograms of a Prometheus text scrape as OTLP points would name them:
/// a counter family without `_total`, a histogram point by its `_count` sample's labels.
/// Parsed here, independently of the agent's exposition reader.
fn cumulative_series(text: &str) -> BTreeSet<Point> {
    let mut kinds = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            kinds.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let family = if kinds.get(name).map(String::as_str) == Some("counter") {
            name.strip_suffix("_total").unwrap_or(name)
        } else if let Some(base) = name
            .strip_suffix("_count")
            .filter(|b| kinds.get(*b).map(String::as_str) == Some("histogram"))
        {
            base
        } else {
            continue;
        };
        out.insert((family.to_string(), label_pairs(labels)));
    }
    out
}

/// `a="x",b="y\"z"}` as a map.
fn label_pairs(mut s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while let Some((key, rest)) = s.split_once("=\"") {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("unterminated escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').to_string(), value);
        s = &rest[end + 1..];
    }
    out
}

/// Configured only by the OpenTelemetry environment variables (no `otlp:` in the file), the
/// agent delivers spans and metrics to a real receiver, with the resource attributes and
/// service name the variables give; for each protocol.
fn configured_by_environment(protocol: &str, env_protocol: &str) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let receiver = Receiver::start(protocol, addr, Answer::Accept);
    let endpoint = format!("http://{addr}");
    let agent = Agent::start_with_env(
        "probes:\n  syscalls:\n    slow_ms:\n      nanosleep: 10\n",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", env_protocol),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.node.name=node-a,team=sre%20core",
            ),
            ("OTEL_SERVICE_NAME", "steadfast-env"),
        ],
    );
    let name = unique_name("sfoe");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    let out = std::process::Command::new(&bin)
        .args(["100", "10", "20"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = &receiver;
    wait_until("10 spans", Duration::from_secs(15), || {
        r.spans_of(&name).len() >= 10
    });
    wait_until("metrics", Duration::from_secs(10), || {
        r.metric_names()
            .iter()
            .any(|n| n == "steadfast_syscall_duration_seconds")
    });
    assert_eq!(r.spans_of(&name).len(), 10, "log:\n{}", agent.log());
    for signal in [Signal::Traces, Signal::Metrics] {
        let req = r
            .requests()
            .into_iter()
            .find(|q| q.signal == signal && q.answer == Answer::Accept)
            .unwrap();
        assert_eq!(req.resource["service.name"], "steadfast-env", "{signal:?}");
        assert_eq!(req.resource["k8s.node.name"], "node-a", "{signal:?}");
        assert_eq!(req.resource["team"], "sre core", "{signal:?}");
        assert!(!req.resource["host.name"].is_empty(), "{signal:?}");
    }
}

#[test]
fn configured_by_environment_over_grpc() {
    configured_by_environment("grpc", "grpc");
}

#[test]
fn configured_by_environment_over_http() {
    configured_by_environment("http_protobuf", "http/protobuf");
}

/// HTTP requests slower than `probes.http.slow_ms`, and every 5xx, arrive as spans of the
/// right kind with the semantic-convention attributes, on both sides; fast 2xx requests do
/// not; the duration histograms arrive under their semantic-convention names. Ground truth:
/// a Python `http.server` (tests/workloads/http_mix.py: `/slow` answers 202 after 300 ms,
/// `/fail` 503) and curl, each on fresh connections.
#[test]
fn slow_and_failed_http_requests_arrive_as_spans() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let receiver = Receiver::start("grpc", addr, Answer::Accept);
    let agent = Agent::start(&format!(
        "probes:\n  http:\n    slow_ms: 200\notlp:\n  endpoint: http://{addr}\n  protocol: grpc\n  metrics_interval_secs: 1\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let srv = unique_name("spansrv");
    let crl = unique_name("spancurl");
    let link = |target: &str, name: &str| {
        let p = dir.path().join(name);
        std::os::unix::fs::symlink(target, &p).unwrap();
        p
    };
    let port_file = dir.path().join("port");
    let mut server = std::process::Command::new(link("/usr/bin/python3", &srv))
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/http_mix.py"),
        )
        .arg("server")
        .arg(&port_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut port = 0u16;
    wait_until("the server to listen", Duration::from_secs(20), || {
        port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        port != 0
    });
    let curl = link("/usr/bin/curl", &crl);
    let (n_ok, n_fail, n_slow) = (5, 2, 3);
    for (path, n) in [("/ok", n_ok), ("/fail", n_fail), ("/slow", n_slow)] {
        for _ in 0..n {
            let out = std::process::Command::new(&curl)
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    &format!("http://127.0.0.1:{port}{path}"),
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
    let r = &receiver;
    let want = n_fail + n_slow;
    wait_until("the spans of both sides", Duration::from_secs(20), || {
        r.spans_of(&srv).len() >= want && r.spans_of(&crl).len() >= want
    });
    // One more export interval: nothing else may come. A fixed time: nothing happening is
    // what is checked (the exporter holds a batch for up to 1 s before sending it).
    std::thread::sleep(Duration::from_millis(2500));
    for (service, kind, peer_key) in [
        (&srv, SpanKind::Server, "client.address"),
        (&crl, SpanKind::Client, "server.address"),
    ] {
        let spans = r.spans_of(service);
        assert_eq!(spans.len(), want, "{service}: {spans:#?}\n{}", agent.log());
        let mut by_status = BTreeMap::new();
        for s in &spans {
            assert_eq!(s.kind, kind as i32, "{s:?}");
            assert_eq!(s.name, "GET");
            assert_eq!(
                attr(&s.attributes, "http.request.method"),
                Some(Attr::Str("GET".into()))
            );
            assert_eq!(
                attr(&s.attributes, peer_key),
                Some(Attr::Str("127.0.0.1".into())),
                "{s:?}"
            );
            let Some(Attr::Int(status)) = attr(&s.attributes, "http.response.status_code") else {
                panic!("no status: {s:?}");
            };
            let Some(Attr::Str(path)) = attr(&s.attributes, "url.path") else {
                panic!("no path: {s:?}");
            };
            let dur = s.end_time_unix_nano - s.start_time_unix_nano;
            match status {
                503 => {
                    assert_eq!(path, "/fail");
                    assert_eq!(s.status.as_ref().map(|st| st.code), Some(2), "error: {s:?}");
                }
                202 => {
                    assert_eq!(path, "/slow");
                    assert!((300_000_000..2_000_000_000).contains(&dur), "{dur} ns");
                }
                other => panic!("a {other} request became a span: {s:?}"),
            }
            *by_status.entry(status).or_insert(0) += 1;
        }
        assert_eq!(by_status, BTreeMap::from([(202, n_slow), (503, n_fail)]));
    }
    if let Some(Attr::Int(p)) = attr(&r.spans_of(&crl)[0].attributes, "server.port") {
        assert_eq!(p, i64::from(port));
    } else {
        panic!("no server.port");
    }
    wait_until("the semconv metric names", Duration::from_secs(10), || {
        let names = r.metric_names();
        names.iter().any(|n| n == "http.server.request.duration")
            && names.iter().any(|n| n == "http.client.request.duration")
    });
    let _ = server.kill();
    let _ = server.wait();
}

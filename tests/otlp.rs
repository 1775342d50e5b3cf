//! OTLP export checked by a receiver built from the official protobuf definitions
//! (opentelemetry-proto's generated gRPC services, and the same messages over HTTP): spans for
//! slow syscalls with their attributes, metrics, and delivery through a receiver outage with
//! backoff and jitter. Needs root.

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    },
    common::v1::{any_value, KeyValue},
    trace::v1::Span,
};
use prost::Message;
use support::{build_workload, free_port, run_to_end, unique_name, Agent};

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn add_traces(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    fn add_metrics(&self, req: ExportMetricsServiceRequest) {
        let mut names = self.metric_names.lock().unwrap();
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                names.extend(sm.metrics.into_iter().map(|m| m.name));
            }
        }
    }
    /// Spans whose `steadfast.service` attribute is `service`.
    fn spans_of(&self, service: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| attr(&s.attributes, "steadfast.service") == Some(Attr::Str(service.into())))
            .cloned()
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[derive(Debug, PartialEq)]
enum Attr {
    Str(String),
    Int(i64),
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<Attr> {
    let v = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    match v {
        any_value::Value::StringValue(s) => Some(Attr::Str(s.clone())),
        any_value::Value::IntValue(i) => Some(Attr::Int(*i)),
        _ => None,
    }
}

/// A receiver on its own thread and runtime, for the rest of the test process.
struct Receiver {
    received: Received,
}

fn serve_in_background(f: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    });
}

fn grpc_receiver(addr: SocketAddr) -> Receiver {
    let received = Received::default();
    let r = received.clone();
    serve_in_background(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r.clone()))
            .add_service(MetricsServiceServer::new(r))
            .serve(addr)
            .await
            .unwrap();
    });
    wait_listening(addr);
    Receiver { received }
}

fn http_receiver(addr: SocketAddr) -> Receiver {
    use axum::{body::Bytes, extract::State, routing::post, Router};
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.add_traces(ExportTraceServiceRequest::decode(body).unwrap());
                ExportTraceServiceResponse::default().encode_to_vec()
            }),
        )
        .route(
            "/v1/metrics",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.add_metrics(ExportMetricsServiceRequest::decode(body).unwrap());
                ExportMetricsServiceResponse::default().encode_to_vec()
            }),
        )
        .with_state(received.clone());
    serve_in_background(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    wait_listening(addr);
    Receiver { received }
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "receiver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn otlp_config(endpoint: &str, protocol: &str, extra: &str) -> String {
    format!(
        "probes:\n  syscalls:\n    slow_ms:\n      nanosleep: 10\notlp:\n  endpoint: {endpoint}\n  protocol: {protocol}\n  metrics_interval_secs: 1\n{extra}"
    )
}

/// Ten slow nanosleeps of a known process become exactly ten spans with the semantic
/// attributes, over both protocols, and the metric catalogue arrives.
fn slow_syscalls_arrive_as_spans(protocol: &str) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let receiver = match protocol {
        "grpc" => grpc_receiver(addr),
        _ => http_receiver(addr),
    };
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

    let r = &receiver.received;
    wait_for("10 spans", Duration::from_secs(15), || {
        r.spans_of(&name).len() >= 10
    });
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
    wait_for("metrics", Duration::from_secs(10), || {
        r.metric_names
            .lock()
            .unwrap()
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

fn agent_rss_kib(agent: &Agent) -> u64 {
    support::vm_rss_kib(agent.pid())
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
        "  queue_size: 32\n  batch_size: 8\n  retry_initial_backoff_ms: 50\n  retry_max_backoff_secs: 1\n  timeout_secs: 1\nlog:\n  format: json\n",
    ));
    let name = unique_name("sfou");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &name);
    // Three equal phases of 150 slow calls of 11 ms while nothing listens: the first warms up
    // the allocator; a queue or buffer that grew with the backlog would grow again in the
    // third.
    run_to_end(&bin, &["0", "150", "11"]);
    run_to_end(&bin, &["0", "150", "11"]);
    let rss_first = agent_rss_kib(&agent);
    run_to_end(&bin, &["0", "150", "11"]);
    let rss_second = agent_rss_kib(&agent);
    let s = agent.scrape();
    let dropped = s
        .value(
            "steadfast_export_spans_total",
            &[("outcome", "dropped_queue_full")],
        )
        .unwrap();
    assert!(
        dropped >= 450.0 - 32.0 - 8.0,
        "dropped {dropped}: the queue holds 32, a batch 8"
    );
    let queue = s.value("steadfast_export_queue_length", &[]).unwrap();
    assert!(queue <= 32.0);
    assert!(
        rss_second < rss_first + 4 * 1024 && rss_second < 96 * 1024,
        "RSS went from {rss_first} KiB to {rss_second} KiB over the third phase"
    );

    // Retries so far: ceilings double from 50 ms to the 1 s cap, waits are jittered below them.
    let retries: Vec<(u64, u64)> = agent
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["signal"] == "traces")
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
    let receiver = grpc_receiver(addr);
    run_to_end(&bin, &["0", "5", "11"]);
    wait_for("delivery after the outage", Duration::from_secs(10), || {
        receiver.received.spans_of(&name).len() >= 5
    });
    let exported = agent
        .scrape()
        .value("steadfast_export_spans_total", &[("outcome", "exported")])
        .unwrap();
    assert!(exported >= 5.0);
}

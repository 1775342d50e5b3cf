//! OTLP receivers for the tests, built from the official protobuf definitions
//! (opentelemetry-proto's generated gRPC services, and the same messages over HTTP). A
//! [`Receiver`] records every request with the answer it gave, and can be told to answer
//! with a retryable or a permanent error instead of accepting; a [`BlackHole`] accepts
//! connections and never answers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
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
    metrics::v1::metric::Data,
    trace::v1::Span,
};
use prost::Message;

use super::{run_to_end, vm_rss_kib, Agent, Scrape};

/// How the receiver answers export requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Success: the data is kept.
    Accept,
    /// gRPC `UNAVAILABLE`, HTTP 503 (with `Retry-After: <secs>` when given).
    Retryable { retry_after_secs: Option<u64> },
    /// gRPC `INVALID_ARGUMENT`, HTTP 400.
    Permanent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

/// One export request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub signal: Signal,
    pub answer: Answer,
    pub at: Instant,
    /// The spans of a traces request.
    pub spans: Vec<Span>,
    /// The data points of a metrics request: metric name and string attributes.
    pub points: Vec<Point>,
    /// The string attributes of the request's (first) resource.
    pub resource: BTreeMap<String, String>,
    /// The histogram points of a metrics request: name, attributes, kind and count.
    pub histograms: Vec<HistogramPoint>,
}

/// A histogram data point: its metric, attributes, whether it was exponential (else explicit)
/// with its scale, and its count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramPoint {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    /// `Some(scale)` for an exponential histogram.
    pub exponential_scale: Option<i32>,
    pub count: u64,
    /// Zero bucket plus every bucket: equals `count` unless observations fell in none.
    pub in_buckets: u64,
}

/// A metric data point as the receiver saw it: its metric's name and its attributes.
pub type Point = (String, BTreeMap<String, String>);

/// A receiver on its own thread and runtime, for the rest of the test process. Clones share
/// the answer and the record.
#[derive(Clone)]
pub struct Receiver {
    answer: Arc<Mutex<Answer>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    /// A receiver speaking `protocol` (`grpc` or `http_protobuf`, as in the agent's config)
    /// on `addr`, answering `answer` until told otherwise; returns once it listens.
    pub fn start(protocol: &str, addr: SocketAddr, answer: Answer) -> Receiver {
        let receiver = Receiver {
            answer: Arc::new(Mutex::new(answer)),
            requests: Arc::default(),
        };
        match protocol {
            "grpc" => serve_grpc(addr, receiver.clone()),
            "http_protobuf" => serve_http(addr, receiver.clone()),
            other => panic!("unknown OTLP protocol {other}"),
        };
        wait_listening(addr);
        receiver
    }

    /// An accepting gRPC receiver.
    pub fn grpc(addr: SocketAddr) -> Receiver {
        Receiver::start("grpc", addr, Answer::Accept)
    }

    /// How the next requests are answered.
    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Records a request and returns the answer it gets.
    fn record(
        &self,
        signal: Signal,
        spans: Vec<Span>,
        points: Vec<Point>,
        resource: BTreeMap<String, String>,
        histograms: Vec<HistogramPoint>,
    ) -> Answer {
        let answer = *self.answer.lock().unwrap();
        self.requests.lock().unwrap().push(Request {
            signal,
            answer,
            at: Instant::now(),
            spans,
            points,
            resource,
            histograms,
        });
        answer
    }

    fn record_traces(&self, req: ExportTraceServiceRequest) -> Answer {
        let resource = string_attributes(
            req.resource_spans
                .first()
                .and_then(|r| r.resource.as_ref())
                .map_or(&[][..], |r| &r.attributes),
        );
        let spans = req
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect();
        self.record(Signal::Traces, spans, Vec::new(), resource, Vec::new())
    }

    fn record_metrics(&self, req: ExportMetricsServiceRequest) -> Answer {
        let resource = string_attributes(
            req.resource_metrics
                .first()
                .and_then(|r| r.resource.as_ref())
                .map_or(&[][..], |r| &r.attributes),
        );
        let mut points = Vec::new();
        let mut histograms = Vec::new();
        for m in req
            .resource_metrics
            .into_iter()
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
        {
            let attributes: Vec<Vec<KeyValue>> = match m.data {
                Some(Data::Sum(s)) => s.data_points.into_iter().map(|p| p.attributes).collect(),
                Some(Data::Gauge(g)) => g.data_points.into_iter().map(|p| p.attributes).collect(),
                Some(Data::Histogram(h)) => h
                    .data_points
                    .into_iter()
                    .map(|p| {
                        histograms.push(HistogramPoint {
                            name: m.name.clone(),
                            attributes: string_attributes(&p.attributes),
                            exponential_scale: None,
                            count: p.count,
                            in_buckets: p.bucket_counts.iter().sum(),
                        });
                        p.attributes
                    })
                    .collect(),
                Some(Data::ExponentialHistogram(h)) => h
                    .data_points
                    .into_iter()
                    .map(|p| {
                        histograms.push(HistogramPoint {
                            name: m.name.clone(),
                            attributes: string_attributes(&p.attributes),
                            exponential_scale: Some(p.scale),
                            count: p.count,
                            in_buckets: p.zero_count
                                + p.positive
                                    .as_ref()
                                    .map_or(0, |b| b.bucket_counts.iter().sum())
                                + p.negative
                                    .as_ref()
                                    .map_or(0, |b| b.bucket_counts.iter().sum()),
                        });
                        p.attributes
                    })
                    .collect(),
                other => panic!("the agent sent {other:?}"),
            };
            for a in attributes {
                let labels = a
                    .iter()
                    .map(|kv| match attr(&a, &kv.key) {
                        Some(Attr::Str(v)) => (kv.key.clone(), v),
                        // The semantic conventions' integers (`http.response.status_code`).
                        Some(Attr::Int(v)) => (kv.key.clone(), v.to_string()),
                        None => panic!("a metric attribute of another type: {kv:?}"),
                    })
                    .collect();
                points.push((m.name.clone(), labels));
            }
        }
        self.record(Signal::Metrics, Vec::new(), points, resource, histograms)
    }

    /// The last histogram point of metric `name` whose attributes include `attrs`.
    pub fn last_histogram(&self, name: &str, attrs: &[(&str, &str)]) -> Option<HistogramPoint> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .flat_map(|r| r.histograms.iter().rev())
            .find(|h| {
                h.name == name
                    && attrs
                        .iter()
                        .all(|(k, v)| h.attributes.get(*k).map(String::as_str) == Some(*v))
            })
            .cloned()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests of `signal` answered like `answer`.
    pub fn count(&self, signal: Signal, answer: Answer) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.signal == signal && r.answer == answer)
            .count()
    }

    /// Accepted spans whose string attribute `key` is `value`.
    pub fn spans_with(&self, key: &str, value: &str) -> Vec<Span> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.answer == Answer::Accept)
            .flat_map(|r| r.spans.iter())
            .filter(|s| has_attr(s, key, value))
            .cloned()
            .collect()
    }

    /// Accepted spans whose `steadfast.service` attribute is `service`.
    pub fn spans_of(&self, service: &str) -> Vec<Span> {
        self.spans_with(SERVICE, service)
    }

    /// Names of the accepted metrics.
    pub fn metric_names(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.answer == Answer::Accept)
            .flat_map(|r| r.points.iter().map(|(name, _)| name.clone()))
            .collect()
    }
}

/// The span attribute naming the service.
pub const SERVICE: &str = "steadfast.service";
/// The span attribute naming the process's executable (its comm).
pub const EXECUTABLE: &str = "process.executable.name";

/// Whether the span's string attribute `key` is `value`.
pub fn has_attr(span: &Span, key: &str, value: &str) -> bool {
    attr(&span.attributes, key) == Some(Attr::Str(value.into()))
}

fn grpc_result<T: Default>(answer: Answer) -> Result<tonic::Response<T>, tonic::Status> {
    match answer {
        Answer::Accept => Ok(tonic::Response::new(T::default())),
        Answer::Retryable { .. } => Err(tonic::Status::unavailable("test: down for a while")),
        Answer::Permanent => Err(tonic::Status::invalid_argument("test: never accepted")),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        grpc_result(self.record_traces(request.into_inner()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        grpc_result(self.record_metrics(request.into_inner()))
    }
}

fn serve_grpc(addr: SocketAddr, receiver: Receiver) {
    serve_in_background(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver))
            .serve(addr)
            .await
            .unwrap();
    });
}

fn http_response(answer: Answer, ok_body: Vec<u8>) -> axum::response::Response {
    use axum::{http::StatusCode, response::IntoResponse};
    match answer {
        Answer::Accept => ok_body.into_response(),
        Answer::Retryable { retry_after_secs } => {
            let mut r = StatusCode::SERVICE_UNAVAILABLE.into_response();
            if let Some(secs) = retry_after_secs {
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            r
        }
        Answer::Permanent => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn serve_http(addr: SocketAddr, receiver: Receiver) {
    use axum::{body::Bytes, extract::State, routing::post, Router};
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Receiver>, body: Bytes| async move {
                let answer = r.record_traces(ExportTraceServiceRequest::decode(body).unwrap());
                http_response(
                    answer,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }),
        )
        .route(
            "/v1/metrics",
            post(|State(r): State<Receiver>, body: Bytes| async move {
                let answer = r.record_metrics(ExportMetricsServiceRequest::decode(body).unwrap());
                http_response(
                    answer,
                    ExportMetricsServiceResponse::default().encode_to_vec(),
                )
            }),
        )
        .with_state(receiver);
    serve_in_background(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// Runs `f` on its own thread and current-thread runtime.
pub fn serve_in_background(
    f: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
}

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "receiver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listener that accepts every connection, reads and discards what comes, and never
/// answers: a receiver that hangs.
pub struct BlackHole {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl BlackHole {
    /// Listens on `addr`; returns once it does.
    pub fn bind(addr: SocketAddr) -> BlackHole {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (a, o, b) = (accepted.clone(), open.clone(), bytes.clone());
        let thread = serve_in_background(async move {
            use tokio::io::AsyncReadExt;
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    c = listener.accept() => {
                        let Ok((mut socket, _)) = c else { continue };
                        a.fetch_add(1, Ordering::Relaxed);
                        o.fetch_add(1, Ordering::Relaxed);
                        let (o, b) = (o.clone(), b.clone());
                        connections.spawn(async move {
                            let mut buf = [0u8; 4096];
                            while let Ok(n @ 1..) = socket.read(&mut buf).await {
                                b.fetch_add(n, Ordering::Relaxed);
                            }
                            // The client closed it.
                            o.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
            // Dropping the listener and the tasks closes every socket.
            connections.shutdown().await;
        });
        wait_listening(addr);
        BlackHole {
            stop: Some(stop),
            thread: Some(thread),
            accepted,
            open,
            bytes,
        }
    }

    /// Connections accepted so far (the test's own readiness probe is one).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections the clients have not closed.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Closes the listener and every connection; returns once the port is free.
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.shut();
    }
}

#[derive(Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
}

pub fn attr(attrs: &[KeyValue], key: &str) -> Option<Attr> {
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

/// Agent config that keeps three services by name and counts the rest of the host as
/// `other` (find a workload's spans by [`EXECUTABLE`] then). With the ~70 services of this
/// shared host the exposition was 0.9 to 2.1 MiB, growing as other builds ran, and every
/// rule evaluation, scrape and metrics export handles all of it: with OTLP on, the agent's
/// RSS followed that growth (42 to 55 MiB over a minute, with or without a receiver fault;
/// flat without OTLP), and encoding it in a debug build slowed the API's answers. Small and
/// steady, the catalogue leaves an exporter fault's own effect to measure.
pub const SMALL_CATALOGUE: &str = "services:\n  max_services: 3\n";

/// Agent config: nanosleep calls of 10 ms or more become spans, exported to `endpoint` over
/// `protocol` with the metrics every second, plus `extra` (more `otlp:` keys, indented, and
/// then other sections). The HTTP probe is off: its spans (slow or failed requests of any
/// process on the host, other tests' included) would share the bounded queues these tests
/// measure.
pub fn otlp_config(endpoint: &str, protocol: &str, extra: &str) -> String {
    format!(
        "probes:\n  http:\n    enabled: false\n  syscalls:\n    slow_ms:\n      nanosleep: 10\notlp:\n  endpoint: {endpoint}\n  protocol: {protocol}\n  metrics_interval_secs: 1\n{extra}"
    )
}

/// The string-valued attributes of a list.
fn string_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| match attr(attributes, &kv.key) {
            Some(Attr::Str(v)) => Some((kv.key.clone(), v)),
            _ => None,
        })
        .collect()
}

/// `steadfast_export_spans_total{outcome}` in a scrape.
pub fn spans_by_outcome(s: &Scrape, outcome: &str) -> f64 {
    s.value("steadfast_export_spans_total", &[("outcome", outcome)])
        .unwrap()
}

/// `steadfast_export_requests_failed_total{signal}` in a scrape (`traces`, `metrics`).
pub fn failed_requests(s: &Scrape, signal: &str) -> f64 {
    s.value(
        "steadfast_export_requests_failed_total",
        &[("signal", signal)],
    )
    .unwrap()
}

/// What [`overflow_in_phases`] measured.
pub struct Overflow {
    /// The agent's RSS (KiB) after the second, third and fourth phases.
    pub rss: [u64; 3],
    /// Spans counted as dropped because the queue was full.
    pub dropped: f64,
    /// The queue's length at the end.
    pub queue: f64,
}

/// Four equal phases of 150 slow calls of 11 ms (`bin` is the nanosleep_mix workload) while
/// the receiver takes nothing, with `after(phase)` called after each (0 to 3). With
/// `otlp.queue_size` 32 and `otlp.batch_size` 8, all but the 40 spans those hold must have
/// been dropped and counted, and the queue stayed within its size. The first phase warms
/// up; a queue or buffer that grew with the backlog would grow in each of the last two, so
/// the agent's RSS must grow by less than 4 MiB over one of them at least (and stay under
/// 96 MiB). One of them may see a one-off step: about 5 MiB, at a random phase, in about
/// one run in four of the outage test (with one malloc arena as well), the heap settling
/// rather than growing with the backlog. The agent should run with [`SMALL_CATALOGUE`].
pub fn overflow_in_phases(agent: &Agent, bin: &Path, mut after: impl FnMut(usize)) -> Overflow {
    let mut rss = [0; 3];
    for phase in 0..4 {
        run_to_end(bin, &["0", "150", "11"]);
        after(phase);
        if phase > 0 {
            rss[phase - 1] = vm_rss_kib(agent.pid());
        }
    }
    let s = agent.scrape();
    let dropped = spans_by_outcome(&s, "dropped_queue_full");
    let queue = s.value("steadfast_export_queue_length", &[]).unwrap();
    eprintln!(
        "overflow: RSS after phases 2 to 4 {rss:?} KiB, {dropped} spans dropped, queue {queue}"
    );
    assert!(
        dropped >= 600.0 - 32.0 - 8.0,
        "dropped {dropped}: the queue holds 32, a batch 8"
    );
    assert!(queue <= 32.0, "queue length {queue}");
    let least = (rss[1].saturating_sub(rss[0])).min(rss[2].saturating_sub(rss[1]));
    assert!(
        least < 4 * 1024 && rss[2] < 96 * 1024,
        "RSS after phases 2 to 4: {rss:?} KiB"
    );
    Overflow {
        rss,
        dropped,
        queue,
    }
}

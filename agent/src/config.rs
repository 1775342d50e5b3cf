//! The agent's configuration file (YAML): strict parsing (unknown keys are errors naming the
//! key, file, line and column), defaults from `const fn`, and a validation pass that reports
//! every problem at once. Nothing here touches the kernel.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path};

use serde::Deserialize;

mod connections;
mod host_protection;
mod otel_env;

pub use connections::ConnectionsProbeConfig;
pub use host_protection::{HostProtectionConfig, Scaled};

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub services: ServicesConfig,
    #[serde(default)]
    pub probes: ProbesConfig,
    /// Processes to watch in detail and the service name they get.
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub otlp: OtlpConfig,
    #[serde(default)]
    pub control: ControlConfig,
    /// The rule engine (rule files, series store, SLO state).
    #[serde(default)]
    pub rules: RulesConfig,
    /// Where alerts are sent (Alertmanager API v2); no URL: nowhere.
    #[serde(default)]
    pub alertmanager: AlertmanagerConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of rule files (`*.yaml`, `*.yml`); missing: no rules.
    #[serde(default = "default_rules_directory")]
    pub directory: std::path::PathBuf,
    /// How often the store is fed and due groups are evaluated (the shortest group interval
    /// that makes sense; 100 ms at least).
    #[serde(default = "default_evaluation_interval_ms")]
    pub evaluation_interval_ms: u64,
    /// Series the store keeps at most (samples of further series are refused and counted).
    #[serde(default = "default_rules_max_series")]
    pub max_series: usize,
    /// Alerts held at most, over every rule and SLO; new ones beyond are refused and counted.
    #[serde(default = "default_rules_max_alerts")]
    pub max_alerts: usize,
    /// Longest history the store keeps, whatever the rules ask for.
    #[serde(default = "default_rules_max_retention_secs")]
    pub max_retention_secs: u64,
    /// Where state that survives restarts (SLO error budgets) is written.
    #[serde(default = "default_state_dir")]
    pub state_dir: std::path::PathBuf,
}

fn default_rules_directory() -> std::path::PathBuf {
    "/etc/steadfast/rules.d".into()
}
const fn default_evaluation_interval_ms() -> u64 {
    1000
}
const fn default_rules_max_series() -> usize {
    2000
}
const fn default_rules_max_alerts() -> usize {
    10_000
}
const fn default_rules_max_retention_secs() -> u64 {
    3 * 86_400 + 600
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            directory: default_rules_directory(),
            evaluation_interval_ms: default_evaluation_interval_ms(),
            max_series: default_rules_max_series(),
            max_alerts: default_rules_max_alerts(),
            max_retention_secs: default_rules_max_retention_secs(),
            state_dir: default_state_dir(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093` (plain HTTP); alerts go to `<url>/api/v2/alerts`.
    #[serde(default)]
    pub url: Option<String>,
    /// Firing alerts are re-sent this often.
    #[serde(default = "default_resend_interval_secs")]
    pub resend_interval_secs: u64,
    /// Timeout of one request.
    #[serde(default = "default_am_timeout_secs")]
    pub timeout_secs: u64,
}

const fn default_resend_interval_secs() -> u64 {
    60
}
const fn default_am_timeout_secs() -> u64 {
    10
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            url: None,
            resend_interval_secs: default_resend_interval_secs(),
            timeout_secs: default_am_timeout_secs(),
        }
    }
}

/// Local control: where applications read breakers and signals, and the built-in
/// host-protection signal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The local API's unix socket (mode 0660); `null` turns it off. The same API is also
    /// served on `http.listen_address`.
    #[serde(default = "default_api_socket")]
    pub api_socket: Option<std::path::PathBuf>,
    /// Group owning the socket: its members may use the API.
    #[serde(default = "default_api_socket_group")]
    pub api_socket_group: Option<String>,
    /// One file per signal and breaker, a number in [0, 1]; `null` turns them off.
    #[serde(default = "default_signals_dir")]
    pub signals_dir: Option<std::path::PathBuf>,
    /// Where state that survives restarts lives (breaker overrides, the snapshot index).
    #[serde(default = "default_state_dir")]
    pub state_dir: std::path::PathBuf,
    /// The memory-mapped state page (mode 0640, group `api_socket_group`); `null` turns it
    /// off. Layout: docs/state-page.md.
    #[serde(default = "default_state_page")]
    pub state_page: Option<std::path::PathBuf>,
    /// How often time-driven changes and the host-protection signal are evaluated.
    #[serde(default = "default_control_interval_ms")]
    pub interval_ms: u64,
    #[serde(default)]
    pub host_protection: HostProtectionConfig,
}

fn default_api_socket() -> Option<std::path::PathBuf> {
    Some("/run/steadfast/api.sock".into())
}
fn default_api_socket_group() -> Option<String> {
    Some("steadfast".into())
}
fn default_signals_dir() -> Option<std::path::PathBuf> {
    Some("/run/steadfast/signals".into())
}
fn default_state_page() -> Option<std::path::PathBuf> {
    Some("/run/steadfast/state.page".into())
}
fn default_state_dir() -> std::path::PathBuf {
    "/var/lib/steadfast".into()
}
const fn default_control_interval_ms() -> u64 {
    1000
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            api_socket: default_api_socket(),
            api_socket_group: default_api_socket_group(),
            signals_dir: default_signals_dir(),
            state_dir: default_state_dir(),
            state_page: default_state_page(),
            interval_ms: default_control_interval_ms(),
            host_protection: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318): `/v1/traces`, `/v1/metrics`.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The name the OpenTelemetry environment variables use.
    pub fn label(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// OpenTelemetry export. Off unless an endpoint is set (here or by `OTEL_EXPORTER_OTLP_*`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// e.g. `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318` (HTTP/protobuf).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Traces go here instead (used as given: for HTTP, the whole URL with its path).
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// Metrics go here instead (used as given: for HTTP, the whole URL with its path).
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// The protocol for traces, when it differs from `protocol`.
    #[serde(default)]
    pub traces_protocol: Option<OtlpProtocol>,
    /// The protocol for metrics, when it differs from `protocol`.
    #[serde(default)]
    pub metrics_protocol: Option<OtlpProtocol>,
    /// Extra request headers (gRPC metadata), e.g. an API key.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra resource attributes of every export (`service.name` replaces `steadfast`).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Spans per export request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Spans waiting for export; more are dropped and counted.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// How often the metric catalogue is pushed.
    #[serde(default = "default_metrics_interval_secs")]
    pub metrics_interval_secs: u64,
    /// Data points per metrics request (a histogram point counts once): the catalogue goes
    /// out in as many requests as it needs.
    #[serde(default = "default_metrics_batch_size")]
    pub metrics_batch_size: usize,
    /// How the kernel's power-of-two histograms go out (the others are always explicit).
    #[serde(default)]
    pub histograms: OtlpHistograms,
    /// Head sampling: the share of spans kept, in [0, 1].
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// At most this many spans per second are queued (0: no limit).
    #[serde(default = "default_max_spans_per_sec")]
    pub max_spans_per_sec: u64,
    /// First retry wait; each retry doubles the ceiling, with full jitter.
    #[serde(default = "default_retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    #[serde(default = "default_retry_max_backoff_secs")]
    pub retry_max_backoff_secs: u64,
    /// How long shutdown waits for the last flush.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

/// `otlp.histograms`: how histograms with power-of-two buckets (syscall latency, Go GC pauses)
/// go out over OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpHistograms {
    /// Exponential histograms of scale 0: the kernel's buckets as they are.
    #[default]
    Exponential,
    /// Explicit bounds, as the Prometheus text format has them.
    Explicit,
}

const fn default_batch_size() -> usize {
    512
}
const fn default_queue_size() -> usize {
    4096
}
const fn default_timeout_secs() -> u64 {
    10
}
const fn default_metrics_interval_secs() -> u64 {
    15
}
const fn default_metrics_batch_size() -> usize {
    2000
}
const fn default_sampling_ratio() -> f64 {
    1.0
}
const fn default_max_spans_per_sec() -> u64 {
    1000
}
const fn default_retry_initial_backoff_ms() -> u64 {
    500
}
const fn default_retry_max_backoff_secs() -> u64 {
    30
}
const fn default_shutdown_timeout_secs() -> u64 {
    5
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            traces_protocol: None,
            metrics_protocol: None,
            protocol: OtlpProtocol::default(),
            headers: BTreeMap::new(),
            resource_attributes: BTreeMap::new(),
            batch_size: default_batch_size(),
            queue_size: default_queue_size(),
            timeout_secs: default_timeout_secs(),
            metrics_interval_secs: default_metrics_interval_secs(),
            metrics_batch_size: default_metrics_batch_size(),
            histograms: OtlpHistograms::default(),
            sampling_ratio: default_sampling_ratio(),
            max_spans_per_sec: default_max_spans_per_sec(),
            retry_initial_backoff_ms: default_retry_initial_backoff_ms(),
            retry_max_backoff_secs: default_retry_max_backoff_secs(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
        }
    }
}

/// The two kinds of OTLP data the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl OtlpConfig {
    /// Where `signal` goes and how: the signal's own endpoint as given, else `endpoint` (with
    /// `/v1/traces` or `/v1/metrics` added for HTTP); `None` when export is off.
    pub fn signal_target(&self, signal: Signal) -> Option<(OtlpProtocol, String)> {
        let (own, own_protocol, path) = match signal {
            Signal::Traces => (&self.traces_endpoint, self.traces_protocol, "/v1/traces"),
            Signal::Metrics => (&self.metrics_endpoint, self.metrics_protocol, "/v1/metrics"),
        };
        let protocol = own_protocol.unwrap_or(self.protocol);
        if let Some(url) = own {
            return Some((protocol, url.clone()));
        }
        let base = self.endpoint.as_ref()?;
        Some(match protocol {
            OtlpProtocol::Grpc => (protocol, base.clone()),
            OtlpProtocol::HttpProtobuf => {
                (protocol, format!("{}{path}", base.trim_end_matches('/')))
            }
        })
    }

    /// Whether anything is exported at all.
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some() || self.traces_endpoint.is_some() || self.metrics_endpoint.is_some()
    }
}

/// A set of processes, matched by any of its criteria that are given (all given ones must
/// match), and the service name they are reported under.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The `service` label value for matching processes.
    pub service: String,
    /// Process name (`comm`, first 15 bytes of the executable's name), exact.
    #[serde(default)]
    pub comm: Option<String>,
    /// Absolute path of the executable (`/proc/<pid>/exe`), exact.
    #[serde(default)]
    pub exe: Option<String>,
    /// Cgroup v2 path prefix, e.g. `/system.slice/nginx.service`.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// systemd unit, e.g. `nginx.service`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Count libc `malloc`/`calloc`/`realloc`/`free` of matching processes with uprobes
    /// (~1.7 µs per call, plus a uretprobe on the allocating calls): opt-in.
    #[serde(default)]
    pub allocations: bool,
    /// Count goroutines of matching processes that are Go programs (uprobes on the Go
    /// runtime, only paid when goroutines start or end); does nothing for other programs.
    #[serde(default = "yes")]
    pub goroutines: bool,
    /// Name of the container the process runs in (Docker's or Podman's name, the Kubernetes
    /// container name), exact.
    #[serde(default)]
    pub container: Option<String>,
    /// Kubernetes pod: its name, or its workload's (`checkout` for `checkout-7d9f8b6c5d-x2x4z`).
    #[serde(default)]
    pub pod: Option<String>,
    /// Kubernetes namespace of the pod, exact.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl Target {
    /// A target that only names processes (no uprobe opt-ins beyond the defaults).
    pub fn named(service: &str) -> Self {
        Self {
            service: service.into(),
            comm: None,
            exe: None,
            cgroup: None,
            unit: None,
            allocations: false,
            goroutines: true,
            container: None,
            pod: None,
            namespace: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `steadfast=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the metrics endpoint (`GET /metrics`).
    #[serde(default = "default_listen_address")]
    pub listen_address: SocketAddr,
}

const fn default_listen_address() -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9477,
    ))
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen_address: default_listen_address(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    /// Distinct `service` label values; processes beyond the cap are reported as `other`.
    #[serde(default = "default_max_services")]
    pub max_services: usize,
    /// A service with no live process for this long is released: its series go, and come back
    /// from 0 if it runs again.
    #[serde(default = "default_idle_release_seconds")]
    pub idle_release_seconds: u64,
    /// A comm-derived name is admitted once its process made this many syscalls or lived
    /// `admit_after_seconds`; one that exits before is `short_lived`. 0: at once.
    #[serde(default = "default_admit_after_syscalls")]
    pub admit_after_syscalls: u64,
    #[serde(default = "default_admit_after_seconds")]
    pub admit_after_seconds: u64,
    /// Where the container runtimes' files (`run/containerd`, `run/containers`,
    /// `var/lib/docker`, `var/lib/containers`) are read from to name containers: `/` on the
    /// host, `/proc/1/root` for an agent in a container sharing the host's PID namespace.
    #[serde(default = "default_container_metadata_root")]
    pub container_metadata_root: std::path::PathBuf,
}

fn default_container_metadata_root() -> std::path::PathBuf {
    "/".into()
}

const fn default_max_services() -> usize {
    100
}

const fn default_idle_release_seconds() -> u64 {
    600
}

const fn default_admit_after_syscalls() -> u64 {
    1000
}

const fn default_admit_after_seconds() -> u64 {
    10
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            max_services: default_max_services(),
            idle_release_seconds: default_idle_release_seconds(),
            admit_after_syscalls: default_admit_after_syscalls(),
            admit_after_seconds: default_admit_after_seconds(),
            container_metadata_root: default_container_metadata_root(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProbesConfig {
    #[serde(default)]
    pub syscalls: SyscallProbeConfig,
    #[serde(default)]
    pub process_events: ProcessEventsConfig,
    #[serde(default)]
    pub tasks: TasksProbeConfig,
    #[serde(default)]
    pub memory: MemoryProbeConfig,
    #[serde(default)]
    pub tcp: TcpProbeConfig,
    #[serde(default)]
    pub uprobes: UprobesConfig,
    #[serde(default)]
    pub go: GoProbeConfig,
    #[serde(default)]
    pub http: HttpProbeConfig,
    #[serde(default)]
    pub connections: ConnectionsProbeConfig,
    /// The process lifecycle ring wakes the agent only once this many bytes wait (0: on every
    /// event, so that a process is named from procfs while it still runs); the agent drains
    /// it every second anyway. The other rings have their own threshold.
    #[serde(default)]
    pub wakeup_min_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksProbeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Thread groups whose task counters are kept in the kernel (LRU).
    #[serde(default = "default_max_processes")]
    pub max_processes: u32,
}

const fn default_max_processes() -> u32 {
    32_768
}

impl Default for TasksProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_processes: default_max_processes(),
        }
    }
}

/// Which Go processes get the goroutine and GC probes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoProbeConfig {
    /// Every Go process on the host, not only the `targets` that opt in (a target with
    /// `goroutines: false` stays out). Off by default: the probes cost ~1.4 µs of CPU per
    /// goroutine started and ended (docs/benchmarks.md, section 8), 14% of a core for a
    /// program that starts 100,000 a second.
    #[serde(default)]
    pub all_processes: bool,
    /// The GC probes alone on every Go process that has no goroutine probes (a target with
    /// `goroutines: false` stays out): `steadfast_go_gc_cycles_total` and
    /// `steadfast_go_gc_pause_seconds` for all of them. Off by default: they fire a few times
    /// per GC cycle (docs/benchmarks.md, section 8), but each new Go executable on the host is
    /// parsed and attached on the collection path, which stalls it.
    #[serde(default)]
    pub gc_all_processes: bool,
}

/// Bounds of the uprobe-based probes (allocations, goroutines), which act on `targets` only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UprobesConfig {
    /// Attachments at once: one per (process, probe), or one per Go executable file.
    #[serde(default = "default_max_attachments")]
    pub max_attachments: u32,
    /// Processes with allocation or goroutine counters in the kernel (LRU).
    #[serde(default = "default_uprobe_max_processes")]
    pub max_processes: u32,
    /// Live allocations whose size is remembered for outstanding bytes (LRU).
    #[serde(default = "default_max_pointers")]
    pub max_pointers: u32,
    /// Threads inside an allocation call at once (LRU).
    #[serde(default = "default_uprobe_max_threads")]
    pub max_threads: u32,
}

const fn default_max_attachments() -> u32 {
    64
}
const fn default_uprobe_max_processes() -> u32 {
    4096
}
const fn default_max_pointers() -> u32 {
    262_144
}
const fn default_uprobe_max_threads() -> u32 {
    16_384
}

impl Default for UprobesConfig {
    fn default() -> Self {
        Self {
            max_attachments: default_max_attachments(),
            max_processes: default_uprobe_max_processes(),
            max_pointers: default_max_pointers(),
            max_threads: default_uprobe_max_threads(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryProbeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often resident memory is read (from `/proc/<pid>/statm`, the kernel's RSS counters).
    #[serde(default = "default_memory_interval_secs")]
    pub interval_secs: u64,
}

const fn default_memory_interval_secs() -> u64 {
    5
}

impl Default for MemoryProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: default_memory_interval_secs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallProbeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Threads whose in-flight syscall start is tracked (LRU).
    #[serde(default = "default_max_threads")]
    pub max_threads: u32,
    /// (process, syscall) histogram keys kept in the kernel (LRU).
    #[serde(default = "default_max_histogram_keys")]
    pub max_histogram_keys: u32,
    /// (process, syscall, errno) error counters kept in the kernel (LRU).
    #[serde(default = "default_max_histogram_keys")]
    pub max_error_keys: u32,
    /// Threshold for a slow-syscall event, for syscalls not in `slow_ms` (0: none).
    #[serde(default)]
    pub slow_default_ms: u64,
    /// Per-syscall thresholds for slow-syscall events, by syscall name (0: none).
    #[serde(default = "default_slow_ms")]
    pub slow_ms: BTreeMap<String, u64>,
    /// Per-syscall thresholds in nanoseconds, by syscall name; a syscall listed here ignores
    /// its `slow_ms` entry (0: none). For sub-millisecond thresholds, e.g. benchmarks that need
    /// many events per second from cheap syscalls.
    #[serde(default)]
    pub slow_ns: BTreeMap<String, u64>,
    /// Size of the slow-syscall event ring buffer: a power of two, at least one page.
    #[serde(default = "default_syscall_ring_buffer_bytes")]
    pub events_ring_buffer_bytes: u32,
    /// Unread bytes in that ring at which the kernel wakes the reader; below it events wait
    /// for the next collection (at most a second). 0 wakes on every event; more than the ring
    /// holds: only the collection drains it.
    #[serde(default = "default_tcp_wakeup_min_bytes")]
    pub wakeup_min_bytes: u32,
}

/// 1 MiB: with batched wakeups it holds 2 M slow-syscall events/s here without a loss
/// (docs/benchmarks.md, section 3); 256 KiB with a wakeup per event lost some at 200,000/s.
const fn default_syscall_ring_buffer_bytes() -> u32 {
    1024 * 1024
}

fn default_slow_ms() -> BTreeMap<String, u64> {
    [("fsync", 100), ("fdatasync", 100)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl SyscallProbeConfig {
    /// Threshold in ns for every syscall number, 0 where there is none.
    pub fn slow_thresholds_ns(&self) -> Vec<u64> {
        let mut out =
            vec![self.slow_default_ms * 1_000_000; agent_common::syscall::MAX_SYSCALL_NR as usize];
        for (name, ms) in &self.slow_ms {
            if let Some(nr) = crate::syscalls::number(name) {
                out[nr as usize] = ms * 1_000_000;
            }
        }
        for (name, ns) in &self.slow_ns {
            if let Some(nr) = crate::syscalls::number(name) {
                out[nr as usize] = *ns;
            }
        }
        out
    }
}

const fn yes() -> bool {
    true
}
const fn default_max_threads() -> u32 {
    65_536
}
const fn default_max_histogram_keys() -> u32 {
    16_384
}

impl Default for SyscallProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_threads: default_max_threads(),
            max_histogram_keys: default_max_histogram_keys(),
            max_error_keys: default_max_histogram_keys(),
            slow_default_ms: 0,
            slow_ms: default_slow_ms(),
            slow_ns: BTreeMap::new(),
            events_ring_buffer_bytes: default_syscall_ring_buffer_bytes(),
            wakeup_min_bytes: default_tcp_wakeup_min_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessEventsConfig {
    /// Size of the process lifecycle ring buffer: a power of two, at least one page.
    #[serde(default = "default_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
}

const fn default_ring_buffer_bytes() -> u32 {
    256 * 1024
}

impl Default for ProcessEventsConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: default_ring_buffer_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Size of the retransmit event ring buffer: a power of two, at least one page.
    #[serde(default = "default_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    /// Unread bytes in the ring buffer at which the kernel wakes the reader; below it events
    /// wait for the next collection (at most a second). 0 wakes on every event.
    #[serde(default = "default_tcp_wakeup_min_bytes")]
    pub wakeup_min_bytes: u32,
    /// Sockets whose owning process is remembered (LRU).
    #[serde(default = "default_tcp_max_sockets")]
    pub max_sockets: u32,
    /// Remote addresses with their own `steadfast_tcp_retransmits_by_peer_total` series
    /// (the first ones seen; the rest are `other`). 0 turns that family off.
    #[serde(default)]
    pub top_peers: u32,
}

const fn default_tcp_wakeup_min_bytes() -> u32 {
    64 * 1024
}
const fn default_tcp_max_sockets() -> u32 {
    65_536
}

impl Default for TcpProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ring_buffer_bytes: default_ring_buffer_bytes(),
            wakeup_min_bytes: default_tcp_wakeup_min_bytes(),
            max_sockets: default_tcp_max_sockets(),
            top_peers: 0,
        }
    }
}

/// HTTP/1.x requests from socket syscalls (`probes.http`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Size of the socket I/O event ring buffer: a power of two, at least one page.
    #[serde(default = "default_http_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    /// Unread bytes at which the kernel wakes the reader, once (not again until the reader
    /// has read); below it events wait for the next collection (at most a second).
    /// Durations are timed in the kernel either way.
    #[serde(default = "default_tcp_wakeup_min_bytes")]
    pub wakeup_min_bytes: u32,
    /// Connections tracked at once (LRU in the kernel; the same bound on their states in the
    /// agent, whose evictions are counted).
    #[serde(default = "default_tcp_max_sockets")]
    pub max_connections: u32,
    /// Threads that can be in a socket read or write at once (LRU).
    #[serde(default = "default_tcp_max_sockets")]
    pub max_threads: u32,
    /// Peers (`address:port`) with their own client-side series; the rest are `other`.
    #[serde(default = "default_http_max_peers")]
    pub max_peers: u32,
    /// Requests at least this slow go out as OTLP spans (0: every request), through
    /// `otlp.spans`' sampling and rate limit.
    #[serde(default = "default_http_slow_ms")]
    pub slow_ms: u64,
    /// Requests answered with a 5xx go out as spans too, however fast.
    #[serde(default = "yes")]
    pub spans_for_5xx: bool,
}

/// 1 MiB, like the slow-syscall ring: with the reader woken at `wakeup_min_bytes` it lost
/// nothing at 180,000 events/s (`ab -k`, docs/benchmarks.md), and every page of a ring is
/// resident and locked from the start (4 MiB until 2026-12-07: 3 MiB more of both).
const fn default_http_ring_buffer_bytes() -> u32 {
    1 << 20
}
const fn default_http_max_peers() -> u32 {
    64
}
const fn default_http_slow_ms() -> u64 {
    500
}

impl Default for HttpProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ring_buffer_bytes: default_http_ring_buffer_bytes(),
            wakeup_min_bytes: default_tcp_wakeup_min_bytes(),
            max_connections: default_tcp_max_sockets(),
            max_threads: default_tcp_max_sockets(),
            max_peers: default_http_max_peers(),
            slow_ms: default_http_slow_ms(),
            spans_for_5xx: true,
        }
    }
}

/// Longest `rules.max_retention_secs`: 366 days.
const MAX_RETENTION_SECS: u64 = 366 * 86_400;
/// Longest slow-syscall threshold in ms (a day; thresholds are kept in ns in a u64).
const MAX_SLOW_MS: u64 = 86_400_000;

/// Configuration files larger than this are refused (the default one is about 6 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: crate::input::ReadError,
    },
    /// Syntax, unknown key or wrong type: serde's message, with line and column.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

/// One semantic problem: the key path and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text =
            crate::input::read_text(path, MAX_FILE_BYTES).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
        Self::parse_with_env(&text, &shown, |name| std::env::var(name).ok())
    }

    /// Parses and validates YAML text; `origin` names it in errors. The process environment
    /// is not read.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, origin, |_| None)
    }

    /// Like [`Config::parse`], then fills in what the file leaves out from the OpenTelemetry
    /// variables `env` gives (see `otel_env`: the file wins where both are set).
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parse_error = |e: crate::yaml::Error| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        };
        // An empty file (or one of comments only) is the default configuration.
        let document = crate::yaml::Document::parse(text).map_err(parse_error)?;
        let mut config: Config = if document.is_empty() {
            Config::default()
        } else {
            document.decode().map_err(parse_error)?
        };
        let mut problems = otel_env::apply(&mut config.otlp, &document, env);
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems,
            })
        }
    }

    /// Every semantic problem, all at once.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key, message: String| out.push(Problem { key, message });
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad("log.level", format!("not a valid filter: {e}"));
        }
        if self.http.listen_address.port() == 0 {
            bad("http.listen_address", "port 0 is not allowed".into());
        }
        if self.services.max_services == 0 {
            bad("services.max_services", "must be at least 1".into());
        }
        if self.services.idle_release_seconds == 0 {
            bad(
                "services.idle_release_seconds",
                "must be at least 1 (a series must live to be scraped)".into(),
            );
        }
        let s = &self.probes.syscalls;
        if !(1024..=1 << 22).contains(&s.max_threads) {
            bad(
                "probes.syscalls.max_threads",
                "must be in 1024..=4194304".into(),
            );
        }
        if !(256..=1 << 20).contains(&s.max_histogram_keys) {
            bad(
                "probes.syscalls.max_histogram_keys",
                "must be in 256..=1048576".into(),
            );
        }
        if !(256..=1 << 20).contains(&s.max_error_keys) {
            bad(
                "probes.syscalls.max_error_keys",
                "must be in 256..=1048576".into(),
            );
        }
        if s.slow_default_ms > MAX_SLOW_MS {
            bad(
                "probes.syscalls.slow_default_ms",
                format!("must be at most {MAX_SLOW_MS} (a day)"),
            );
        }
        for (name, ms) in &s.slow_ms {
            if crate::syscalls::number(name).is_none() {
                bad(
                    "probes.syscalls.slow_ms",
                    format!("{name:?} is not an x86_64 syscall name"),
                );
            }
            if *ms > MAX_SLOW_MS {
                bad(
                    "probes.syscalls.slow_ms",
                    format!("{name}: must be at most {MAX_SLOW_MS} (a day)"),
                );
            }
        }
        for name in s.slow_ns.keys() {
            if crate::syscalls::number(name).is_none() {
                bad(
                    "probes.syscalls.slow_ns",
                    format!("{name:?} is not an x86_64 syscall name"),
                );
            }
        }
        for (key, rb) in [
            (
                "probes.process_events.ring_buffer_bytes",
                self.probes.process_events.ring_buffer_bytes,
            ),
            (
                "probes.syscalls.events_ring_buffer_bytes",
                s.events_ring_buffer_bytes,
            ),
        ] {
            if !rb.is_power_of_two() || rb < 4096 {
                bad(key, format!("{rb} is not a power of two of at least 4096"));
            }
        }
        if !(256..=1 << 22).contains(&self.probes.tasks.max_processes) {
            bad(
                "probes.tasks.max_processes",
                "must be in 256..=4194304".into(),
            );
        }
        let u = &self.probes.uprobes;
        for (key, value, range) in [
            (
                "probes.uprobes.max_attachments",
                u.max_attachments,
                1..=4096,
            ),
            (
                "probes.uprobes.max_processes",
                u.max_processes,
                256..=1 << 20,
            ),
            (
                "probes.uprobes.max_pointers",
                u.max_pointers,
                1024..=1 << 24,
            ),
            ("probes.uprobes.max_threads", u.max_threads, 256..=1 << 22),
        ] {
            if !range.contains(&value) {
                bad(
                    key,
                    format!("must be in {}..={}", range.start(), range.end()),
                );
            }
        }
        if self.probes.memory.interval_secs == 0 {
            bad("probes.memory.interval_secs", "must be at least 1".into());
        }
        if !(50..=60_000).contains(&self.control.interval_ms) {
            bad("control.interval_ms", "must be in 50..=60000".into());
        }
        for p in self.control.host_protection.problems() {
            bad("control.host_protection", p);
        }
        let o = &self.otlp;
        for (key, endpoint) in [
            ("otlp.endpoint", &o.endpoint),
            ("otlp.traces_endpoint", &o.traces_endpoint),
            ("otlp.metrics_endpoint", &o.metrics_endpoint),
        ] {
            if let Some(e) = endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    bad(key, format!("{e:?} is not an http:// or https:// URL"));
                }
            }
        }
        if !(1..=1 << 16).contains(&o.batch_size) {
            bad("otlp.batch_size", "must be in 1..=65536".into());
        }
        if !(1..=1 << 16).contains(&o.metrics_batch_size) {
            bad("otlp.metrics_batch_size", "must be in 1..=65536".into());
        }
        if !(1..=1 << 20).contains(&o.queue_size) {
            bad("otlp.queue_size", "must be in 1..=1048576".into());
        }
        if !(0.0..=1.0).contains(&o.sampling_ratio) {
            bad("otlp.sampling_ratio", "must be in [0, 1]".into());
        }
        for (key, v) in [
            ("otlp.timeout_secs", o.timeout_secs),
            ("otlp.metrics_interval_secs", o.metrics_interval_secs),
            ("otlp.retry_initial_backoff_ms", o.retry_initial_backoff_ms),
            ("otlp.retry_max_backoff_secs", o.retry_max_backoff_secs),
        ] {
            if v == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.service.trim().is_empty() {
                bad("targets", format!("target {i}: service must not be empty"));
            }
            if t.comm.is_none()
                && t.exe.is_none()
                && t.cgroup.is_none()
                && t.unit.is_none()
                && t.container.is_none()
                && t.pod.is_none()
                && t.namespace.is_none()
            {
                bad(
                    "targets",
                    format!(
                        "target {i} ({}): give at least one of comm, exe, cgroup, unit, \
                         container, pod, namespace",
                        t.service
                    ),
                );
            }
            if t.comm.as_ref().is_some_and(|c| c.len() > 15) {
                bad(
                    "targets",
                    format!("target {i} ({}): comm is at most 15 bytes", t.service),
                );
            }
        }
        let r = &self.rules;
        if !(100..=3_600_000).contains(&r.evaluation_interval_ms) {
            bad(
                "rules.evaluation_interval_ms",
                "must be in 100..=3600000".into(),
            );
        }
        if !(1..=1_000_000).contains(&r.max_series) {
            bad("rules.max_series", "must be in 1..=1000000".into());
        }
        if !(1..=1_000_000).contains(&r.max_alerts) {
            bad("rules.max_alerts", "must be in 1..=1000000".into());
        }
        // Upper bounds keep every conversion to milliseconds (i64) exact.
        if !(600..=MAX_RETENTION_SECS).contains(&r.max_retention_secs) {
            bad(
                "rules.max_retention_secs",
                format!("must be in 600..={MAX_RETENTION_SECS} (366 days)"),
            );
        }
        let am = &self.alertmanager;
        if let Some(url) = &am.url {
            if !url.starts_with("http://") || url.parse::<hyper::Uri>().is_err() {
                bad(
                    "alertmanager.url",
                    format!("{url:?} is not a plain http:// URL"),
                );
            }
        }
        if !(1..=86_400).contains(&am.resend_interval_secs) {
            bad(
                "alertmanager.resend_interval_secs",
                "must be in 1..=86400".into(),
            );
        }
        if am.timeout_secs == 0 {
            bad("alertmanager.timeout_secs", "must be at least 1".into());
        }
        let tcp = &self.probes.tcp;
        if !tcp.ring_buffer_bytes.is_power_of_two() || tcp.ring_buffer_bytes < 4096 {
            bad(
                "probes.tcp.ring_buffer_bytes",
                format!(
                    "{} is not a power of two of at least 4096",
                    tcp.ring_buffer_bytes
                ),
            );
        }
        if tcp.wakeup_min_bytes > tcp.ring_buffer_bytes {
            bad(
                "probes.tcp.wakeup_min_bytes",
                format!(
                    "{} is larger than probes.tcp.ring_buffer_bytes ({}): the reader would only be woken by its timer",
                    tcp.wakeup_min_bytes, tcp.ring_buffer_bytes
                ),
            );
        }
        if !(1024..=1 << 22).contains(&tcp.max_sockets) {
            bad("probes.tcp.max_sockets", "must be in 1024..=4194304".into());
        }
        if tcp.top_peers > 1000 {
            bad("probes.tcp.top_peers", "must be at most 1000".into());
        }
        let http = &self.probes.http;
        if !http.ring_buffer_bytes.is_power_of_two() || http.ring_buffer_bytes < 4096 {
            bad(
                "probes.http.ring_buffer_bytes",
                format!(
                    "{} is not a power of two of at least 4096",
                    http.ring_buffer_bytes
                ),
            );
        }
        if http.wakeup_min_bytes > http.ring_buffer_bytes {
            bad(
                "probes.http.wakeup_min_bytes",
                format!(
                    "{} is larger than probes.http.ring_buffer_bytes ({})",
                    http.wakeup_min_bytes, http.ring_buffer_bytes
                ),
            );
        }
        if !(1024..=1 << 22).contains(&http.max_connections) {
            bad(
                "probes.http.max_connections",
                "must be in 1024..=4194304".into(),
            );
        }
        if !(1024..=1 << 22).contains(&http.max_threads) {
            bad(
                "probes.http.max_threads",
                "must be in 1024..=4194304".into(),
            );
        }
        if http.max_peers > 1000 {
            bad("probes.http.max_peers", "must be at most 1000".into());
        }
        if http.slow_ms > MAX_SLOW_MS {
            bad(
                "probes.http.slow_ms",
                format!("must be at most {MAX_SLOW_MS} (a day)"),
            );
        }
        out.extend(self.probes.connections.problems());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of the semantic problems of `text`, which must be valid YAML of the right shape.
    fn problem_keys(text: &str) -> Vec<&'static str> {
        match Config::parse(text, "c.yaml") {
            Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(|p| p.key).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", "t.yaml").unwrap(), Config::default());
        assert_eq!(
            Config::default().http.listen_address.to_string(),
            "127.0.0.1:9477"
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse(
            "http:\n  listen_address: 127.0.0.1:1\n  colour: red\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("c.yaml"), "{err}");
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn wrong_type_and_bad_address_are_parse_errors() {
        let err = Config::parse("services:\n  max_services: many\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_services") && err.contains("line 2"),
            "{err}"
        );
        let err = Config::parse("http:\n  listen_address: nowhere\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn packaged_config_is_the_default() {
        let text = include_str!("../../packaging/steadfast.yaml");
        assert_eq!(
            Config::parse(text, "steadfast.yaml").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn tcp_probe_keys_are_validated() {
        let ok = Config::parse(
            "probes:\n  tcp:\n    enabled: false\n    ring_buffer_bytes: 8192\n    wakeup_min_bytes: 0\n    max_sockets: 2048\n    top_peers: 10\n",
            "c.yaml",
        )
        .unwrap();
        assert!(!ok.probes.tcp.enabled);
        assert_eq!(ok.probes.tcp.top_peers, 10);
        assert_eq!(Config::default().probes.tcp.ring_buffer_bytes, 262_144);
        let text = "probes:\n  tcp:\n    ring_buffer_bytes: 4096\n    wakeup_min_bytes: 8192\n    max_sockets: 1\n    top_peers: 5000\n";
        assert_eq!(
            problem_keys(text),
            [
                "probes.tcp.wakeup_min_bytes",
                "probes.tcp.max_sockets",
                "probes.tcp.top_peers"
            ]
        );
        let err = Config::parse("probes:\n  tcp:\n    ring_bufer_bytes: 4096\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `ring_bufer_bytes`"), "{err}");
        let err = Config::parse("probes:\n  tcp:\n    ring_buffer_bytes: 5000\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("probes.tcp.ring_buffer_bytes"), "{err}");
    }

    #[test]
    fn http_probe_keys_are_validated() {
        let ok = Config::parse(
            "probes:\n  http:\n    enabled: false\n    ring_buffer_bytes: 8192\n    wakeup_min_bytes: 0\n    max_connections: 2048\n    max_threads: 4096\n    max_peers: 3\n",
            "c.yaml",
        )
        .unwrap();
        assert!(!ok.probes.http.enabled);
        assert_eq!(ok.probes.http.max_peers, 3);
        assert_eq!(ok.probes.http.max_connections, 2048);
        assert!(Config::default().probes.http.enabled);
        let text = "probes:\n  http:\n    ring_buffer_bytes: 5000\n    max_connections: 1\n    max_threads: 10\n    max_peers: 5000\n";
        assert_eq!(
            problem_keys(text),
            [
                "probes.http.ring_buffer_bytes",
                "probes.http.wakeup_min_bytes",
                "probes.http.max_connections",
                "probes.http.max_threads",
                "probes.http.max_peers"
            ]
        );
        let err = Config::parse("probes:\n  http:\n    max_conections: 4096\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `max_conections`"), "{err}");
    }

    #[test]
    fn target_opt_ins_default_and_parse() {
        let c = Config::parse(
            "targets:\n  - service: a\n    comm: a\n  - service: b\n    exe: /bin/b\n    allocations: true\n    goroutines: false\n",
            "c.yaml",
        )
        .unwrap();
        assert!(!c.targets[0].allocations && c.targets[0].goroutines);
        assert!(c.targets[1].allocations && !c.targets[1].goroutines);
        let err = Config::parse(
            "targets:\n  - service: a\n    comm: a\n    allocs: true\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `allocs`"), "{err}");
        assert_eq!(
            problem_keys("probes:\n  uprobes:\n    max_attachments: 0\n"),
            ["probes.uprobes.max_attachments"]
        );
    }

    #[test]
    fn slow_ns_overrides_slow_ms_and_names_are_checked() {
        let c = Config::parse(
            "probes:\n  syscalls:\n    slow_default_ms: 2\n    slow_ms:\n      getpgid: 5\n      read: 7\n    slow_ns:\n      getpgid: 1\n      nanosleep: 1500\n",
            "c.yaml",
        )
        .unwrap();
        let t = c.probes.syscalls.slow_thresholds_ns();
        let nr = |n: &str| crate::syscalls::number(n).unwrap() as usize;
        assert_eq!(t[nr("getpgid")], 1);
        assert_eq!(t[nr("nanosleep")], 1500);
        assert_eq!(t[nr("read")], 7_000_000);
        assert_eq!(t[nr("write")], 2_000_000);
        assert!(Config::default().probes.syscalls.slow_ns.is_empty());
        assert_eq!(
            problem_keys("probes:\n  syscalls:\n    slow_ns:\n      getppidd: 1\n"),
            ["probes.syscalls.slow_ns"]
        );
    }

    /// Values whose conversion to ms or ns overflowed (a panic at start-up, or a negative
    /// retention that kept no samples) are refused.
    #[test]
    fn durations_that_would_overflow_are_refused() {
        let text = "rules:\n  max_retention_secs: 18446744073709551615\nalertmanager:\n  resend_interval_secs: 9223372036854775807\nprobes:\n  syscalls:\n    slow_default_ms: 18446744073709551615\n    slow_ms: {fsync: 18446744073709551}\n";
        assert_eq!(
            problem_keys(text),
            [
                "probes.syscalls.slow_default_ms",
                "probes.syscalls.slow_ms",
                "rules.max_retention_secs",
                "alertmanager.resend_interval_secs"
            ]
        );
        let c = Config::parse(
            "rules:\n  max_retention_secs: 31622400\nprobes:\n  syscalls:\n    slow_default_ms: 86400000\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            c.probes.syscalls.slow_thresholds_ns()[0],
            86_400_000_000_000
        );
    }

    #[test]
    fn all_semantic_problems_reported_at_once() {
        let text = "services:\n  max_services: 0\nprobes:\n  process_events:\n    ring_buffer_bytes: 1000\nlog:\n  level: \"[\"\n";
        assert_eq!(
            problem_keys(text),
            [
                "log.level",
                "services.max_services",
                "probes.process_events.ring_buffer_bytes"
            ]
        );
    }
}

//! The agent's configuration file (YAML): strict parsing (unknown keys are errors naming the
//! key, file, line and column), defaults from `const fn`, and a validation pass that reports
//! every problem at once. Nothing here touches the kernel.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path};

use serde::Deserialize;

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
}

const fn default_max_services() -> usize {
    100
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            max_services: default_max_services(),
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
    pub uprobes: UprobesConfig,
    /// Ring buffers wake the agent only once this many bytes wait (0: on every event); the
    /// agent drains them every second anyway.
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
    /// Size of the slow-syscall event ring buffer: a power of two, at least one page.
    #[serde(default = "default_ring_buffer_bytes")]
    pub events_ring_buffer_bytes: u32,
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
            events_ring_buffer_bytes: default_ring_buffer_bytes(),
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

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file is the default configuration.
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                message: e.to_string(),
            })?
        };
        let problems = config.problems();
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
        for name in s.slow_ms.keys() {
            if crate::syscalls::number(name).is_none() {
                bad(
                    "probes.syscalls.slow_ms",
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
        for (i, t) in self.targets.iter().enumerate() {
            if t.service.trim().is_empty() {
                bad("targets", format!("target {i}: service must not be empty"));
            }
            if t.comm.is_none() && t.exe.is_none() && t.cgroup.is_none() && t.unit.is_none() {
                bad(
                    "targets",
                    format!(
                        "target {i} ({}): give at least one of comm, exe, cgroup, unit",
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        match Config::parse("probes:\n  uprobes:\n    max_attachments: 0\n", "c.yaml") {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert_eq!(problems[0].key, "probes.uprobes.max_attachments")
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn all_semantic_problems_reported_at_once() {
        let text = "services:\n  max_services: 0\nprobes:\n  process_events:\n    ring_buffer_bytes: 1000\nlog:\n  level: \"[\"\n";
        match Config::parse(text, "c.yaml") {
            Err(ConfigError::Invalid { problems, .. }) => {
                let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
                assert_eq!(
                    keys,
                    [
                        "log.level",
                        "services.max_services",
                        "probes.process_events.ring_buffer_bytes"
                    ]
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

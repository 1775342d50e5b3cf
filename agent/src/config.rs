//! The agent's configuration file (YAML): strict parsing (unknown keys are errors naming the
//! key, file, line and column), defaults from `const fn`, and a validation pass that reports
//! every problem at once. Nothing here touches the kernel.

use std::{fmt, net::SocketAddr, path::Path};

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
    pub tcp: TcpProbeConfig,
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
        let rb = self.probes.process_events.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            bad(
                "probes.process_events.ring_buffer_bytes",
                format!("{rb} is not a power of two of at least 4096"),
            );
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
        match Config::parse(text, "c.yaml") {
            Err(ConfigError::Invalid { problems, .. }) => {
                let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
                assert_eq!(
                    keys,
                    [
                        "probes.tcp.wakeup_min_bytes",
                        "probes.tcp.max_sockets",
                        "probes.tcp.top_peers"
                    ]
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
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

//! `probes.connections`: TCP connections (L4) of every process, from `inet_sock_set_state`.

use serde::Deserialize;

use super::Problem;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsProbeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Connections followed at once from their first state to their end (LRU in the kernel:
    /// a connection evicted while open is never counted as ended).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Size of the connection event ring buffer: a power of two, at least one page.
    #[serde(default = "default_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    /// Unread bytes at which the kernel wakes the reader; below it events wait for the next
    /// collection (at most a second). Connect durations are timed in the kernel either way.
    #[serde(default = "default_wakeup_min_bytes")]
    pub wakeup_min_bytes: u32,
    /// `peer` label values (`address:port`) with their own series, the first ones seen; the
    /// rest are `other`.
    #[serde(default = "default_max_peers")]
    pub max_peers: u32,
    /// Only connections to these remote ports (outbound) or on these local ports (inbound) are
    /// counted; empty: every port.
    #[serde(default)]
    pub ports: Vec<u16>,
}

const fn yes() -> bool {
    true
}
const fn default_max_connections() -> u32 {
    65_536
}
const fn default_ring_buffer_bytes() -> u32 {
    256 * 1024
}
const fn default_wakeup_min_bytes() -> u32 {
    64 * 1024
}
const fn default_max_peers() -> u32 {
    128
}

impl Default for ConnectionsProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_connections: default_max_connections(),
            ring_buffer_bytes: default_ring_buffer_bytes(),
            wakeup_min_bytes: default_wakeup_min_bytes(),
            max_peers: default_max_peers(),
            ports: Vec::new(),
        }
    }
}

impl ConnectionsProbeConfig {
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key, message: String| out.push(Problem { key, message });
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < 4096 {
            bad(
                "probes.connections.ring_buffer_bytes",
                format!(
                    "{} is not a power of two of at least 4096",
                    self.ring_buffer_bytes
                ),
            );
        }
        if self.wakeup_min_bytes > self.ring_buffer_bytes {
            bad(
                "probes.connections.wakeup_min_bytes",
                format!(
                    "{} is larger than probes.connections.ring_buffer_bytes ({})",
                    self.wakeup_min_bytes, self.ring_buffer_bytes
                ),
            );
        }
        if !(1024..=1 << 22).contains(&self.max_connections) {
            bad(
                "probes.connections.max_connections",
                "must be in 1024..=4194304".into(),
            );
        }
        if self.max_peers > 10_000 {
            bad(
                "probes.connections.max_peers",
                "must be at most 10000".into(),
            );
        }
        if self.ports.len() > 1024 {
            bad("probes.connections.ports", "at most 1024 ports".into());
        }
        if self.ports.contains(&0) {
            bad("probes.connections.ports", "port 0 is not a port".into());
        }
        out
    }

    /// Whether a connection on `port` (remote for outbound, local for inbound) is counted.
    pub fn counts_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn connections_keys_are_validated() {
        let ok = Config::parse(
            "probes:\n  connections:\n    enabled: false\n    max_connections: 2048\n    ring_buffer_bytes: 8192\n    wakeup_min_bytes: 0\n    max_peers: 10\n    ports: [80, 443]\n",
            "c.yaml",
        )
        .unwrap();
        let c = &ok.probes.connections;
        assert!(!c.enabled);
        assert_eq!(c.max_peers, 10);
        assert!(c.counts_port(443) && !c.counts_port(8080));
        let d = Config::default().probes.connections;
        assert!(d.enabled && d.counts_port(8080));
        assert_eq!(d.max_peers, 128);
        let err = Config::parse(
            "probes:\n  connections:\n    ring_buffer_bytes: 5000\n    wakeup_min_bytes: 8192\n    max_connections: 1\n    max_peers: 20000\n    ports: [0]\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "ring_buffer_bytes",
            "wakeup_min_bytes",
            "max_connections",
            "max_peers",
            "ports",
        ] {
            assert!(err.contains(&format!("probes.connections.{key}")), "{err}");
        }
        let err = Config::parse("probes:\n  connections:\n    max_peer: 3\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_peer"), "{err}");
    }
}

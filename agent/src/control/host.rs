//! The built-in host-protection signal, in the spirit of Sentinel's system adaptive
//! protection: one level in [0, 1], the highest of the scaled levels of CPU and memory
//! pressure (PSI `some avg10`, percent) and of the run queue (runnable tasks per CPU).

use crate::config::HostProtectionConfig;

/// Name of the built-in signal.
pub const HOST_PROTECTION: &str = "host_protection";

/// What the kernel says about the host now; `None` where it does not say (no PSI).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostFacts {
    pub cpu_pressure_percent: Option<f64>,
    pub memory_pressure_percent: Option<f64>,
    pub run_queue_per_cpu: Option<f64>,
}

impl HostFacts {
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let running = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("procs_running "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        Self {
            cpu_pressure_percent: psi_some_avg10("/proc/pressure/cpu"),
            memory_pressure_percent: psi_some_avg10("/proc/pressure/memory"),
            // The reader itself is running: do not count it.
            run_queue_per_cpu: running.map(|r| (r - 1.0).max(0.0) / cpus),
        }
    }
}

fn psi_some_avg10(path: &str) -> Option<f64> {
    parse_psi(&std::fs::read_to_string(path).ok()?)
}

/// `some avg10=1.23 avg60=... total=...` -> 1.23
pub fn parse_psi(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("some "))?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?
        .parse()
        .ok()
}

impl HostProtectionConfig {
    /// The level, and which input set it.
    pub fn level(&self, facts: &HostFacts) -> (f64, &'static str) {
        [
            (
                "cpu_pressure",
                facts.cpu_pressure_percent,
                &self.cpu_pressure_percent,
            ),
            (
                "memory_pressure",
                facts.memory_pressure_percent,
                &self.memory_pressure_percent,
            ),
            (
                "run_queue",
                facts.run_queue_per_cpu,
                &self.run_queue_per_cpu,
            ),
        ]
        .into_iter()
        .filter_map(|(name, v, s)| v.map(|v| (s.level(v), name)))
        .fold(
            (0.0, "none"),
            |best, cur| if cur.0 > best.0 { cur } else { best },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_lines_and_the_highest_input_wins() {
        let text = "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi(text), Some(12.5));
        assert_eq!(parse_psi("garbage"), None);
        let c = HostProtectionConfig::default();
        let facts = HostFacts {
            cpu_pressure_percent: Some(65.0),
            memory_pressure_percent: Some(20.0),
            run_queue_per_cpu: None,
        };
        assert_eq!(c.level(&facts), (0.5, "cpu_pressure"));
        assert_eq!(c.level(&HostFacts::default()), (0.0, "none"));
        assert!(c.problems().is_empty());
    }

    #[test]
    fn this_host_can_be_read() {
        let facts = HostFacts::read();
        assert!(
            facts.run_queue_per_cpu.is_some(),
            "/proc/stat has procs_running"
        );
    }
}

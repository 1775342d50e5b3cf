//! The agent's own health: events received and lost per source, map occupancy.

use agent_common::loss::{self, SOURCES};

#[derive(Debug, Default, Clone)]
pub struct Telemetry {
    /// Events read from ring buffers, per loss source index.
    pub received: [u64; SOURCES as usize],
    /// Events the kernel could not reserve ring-buffer space for, per source.
    pub kernel_lost: [u64; SOURCES as usize],
    /// Events dropped in userspace (malformed records), per source.
    pub user_lost: [u64; SOURCES as usize],
    /// Bytes waiting in each source's ring buffer at its last event.
    pub ring_fill: [u64; SOURCES as usize],
    pub tracked_processes: u64,
    pub syscall_hist_keys: u64,
    pub syscall_hist_evicted: u64,
    /// Each probe the config turns on, and whether it is attached: the TCP and HTTP probes
    /// turn themselves off on a kernel that cannot run them instead of stopping the agent.
    pub probes_attached: Vec<(&'static str, bool)>,
    /// (program, runs the kernel skipped) of each tracepoint program, by name.
    pub runs_missed: Vec<(String, u64)>,
}

impl Telemetry {
    pub fn set_kernel_lost(&mut self, source: u32, value: u64) {
        if let Some(v) = self.kernel_lost.get_mut(source as usize) {
            *v = value;
        }
    }

    pub fn add_received(&mut self, source: u32, ok: u64, malformed: u64) {
        if let Some(v) = self.received.get_mut(source as usize) {
            *v += ok;
        }
        if let Some(v) = self.user_lost.get_mut(source as usize) {
            *v += malformed;
        }
    }

    /// (source name, received, lost, ring fill) for each source in use.
    pub fn per_source(&self) -> impl Iterator<Item = (&'static str, u64, u64, u64)> + '_ {
        (0..SOURCES)
            .filter(|&s| loss::source_name(s) != "unknown")
            .map(|s| {
                let i = s as usize;
                (
                    loss::source_name(s),
                    self.received[i],
                    self.kernel_lost[i] + self.user_lost[i],
                    self.ring_fill[i],
                )
            })
    }
}

/// The agent's own resource use, from procfs.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct OwnProcess {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
}

pub fn own_process() -> OwnProcess {
    let ticks = crate::ebpf::clock_ticks_per_sec() as f64;
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised comm: utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let resident_bytes = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * crate::ebpf::page_size());
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    OwnProcess {
        cpu_seconds,
        resident_bytes,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_measured() {
        let busy = std::time::Instant::now();
        let mut x = 0u64;
        while busy.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let own = own_process();
        assert!(own.cpu_seconds > 0.0);
        assert!(own.resident_bytes > 1 << 20);
        assert!(own.open_fds >= 3);
    }
}

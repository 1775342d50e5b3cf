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
    pub tracked_processes: u64,
    pub syscall_hist_keys: u64,
    pub syscall_hist_evicted: u64,
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

    /// (source name, received, lost) for each source in use.
    pub fn per_source(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        (0..SOURCES)
            .filter(|&s| loss::source_name(s) != "unknown")
            .map(|s| {
                let i = s as usize;
                (
                    loss::source_name(s),
                    self.received[i],
                    self.kernel_lost[i] + self.user_lost[i],
                )
            })
    }
}

//! Reader of the in-kernel syscall latency histograms (`SYSCALL_HIST`).

use agent_common::syscall::{Hist, HistKey};
use aya::maps::{Map, MapData, PerCpuHashMap};

use super::ProbeError;

/// One key's histogram, summed over CPUs.
pub type HistSnapshot = (HistKey, Hist);

pub struct SyscallHistMap {
    map: PerCpuHashMap<MapData, HistKey, Hist>,
}

impl SyscallHistMap {
    pub(super) fn new(map: Map) -> Result<Self, ProbeError> {
        let map = PerCpuHashMap::try_from(map).map_err(|source| ProbeError::Map {
            name: "SYSCALL_HIST",
            source,
        })?;
        Ok(Self { map })
    }

    /// Every key with its per-CPU values summed. Keys that vanish while we iterate (LRU
    /// eviction) are skipped; the caller notices them by their absence.
    pub fn snapshot(&self, out: &mut Vec<HistSnapshot>) {
        out.clear();
        for item in self.map.iter() {
            let Ok((key, per_cpu)) = item else { continue };
            let mut total = Hist::default();
            for h in per_cpu.iter() {
                for (t, b) in total.buckets.iter_mut().zip(h.buckets.iter()) {
                    *t += b;
                }
                total.sum_ns += h.sum_ns;
            }
            out.push((key, total));
        }
    }

    /// Deletes a key (its process has exited and its last counts were read).
    pub fn remove(&mut self, key: &HistKey) {
        let _ = self.map.remove(key);
    }
}

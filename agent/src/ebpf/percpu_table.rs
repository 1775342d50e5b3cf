//! Reader of an in-kernel per-CPU hash of counters: snapshots sum each key over CPUs, and keys
//! of exited processes can be deleted. Used for the syscall histograms, error counts and task
//! counters alike.

use std::marker::PhantomData;

use agent_common::{
    syscall::{ErrKey, Hist, HistKey},
    task::TaskCounts,
};
use aya::{
    maps::{Map, MapData, PerCpuHashMap},
    Pod,
};

use super::ProbeError;

/// A value that can be summed over CPUs.
pub trait PerCpuSum: Pod + Default {
    fn add(&mut self, other: &Self);
}

impl PerCpuSum for u64 {
    fn add(&mut self, other: &Self) {
        *self += other;
    }
}

impl PerCpuSum for Hist {
    fn add(&mut self, other: &Self) {
        for (t, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *t += b;
        }
        self.sum_ns += other.sum_ns;
    }
}

impl PerCpuSum for TaskCounts {
    fn add(&mut self, other: &Self) {
        self.created += other.created;
        self.threads_started += other.threads_started;
        self.exited += other.exited;
    }
}

pub struct PerCpuTable<K: Pod, V: Pod> {
    map: PerCpuHashMap<MapData, K, V>,
    _kv: PhantomData<(K, V)>,
}

/// The tables the agent reads.
pub type SyscallHistMap = PerCpuTable<HistKey, Hist>;
pub type SyscallErrorMap = PerCpuTable<ErrKey, u64>;
pub type TaskCountMap = PerCpuTable<u32, TaskCounts>;

impl<K: Pod, V: PerCpuSum> PerCpuTable<K, V> {
    pub(super) fn new(map: Map, name: &'static str) -> Result<Self, ProbeError> {
        let map =
            PerCpuHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        Ok(Self {
            map,
            _kv: PhantomData,
        })
    }

    /// Every key with its per-CPU values summed. Keys that vanish while we iterate (LRU
    /// eviction) are skipped; the caller notices them by their absence.
    pub fn snapshot(&self, out: &mut Vec<(K, V)>) {
        out.clear();
        for item in self.map.iter() {
            let Ok((key, per_cpu)) = item else { continue };
            let mut total = V::default();
            for v in per_cpu.iter() {
                total.add(v);
            }
            out.push((key, total));
        }
    }

    /// Deletes a key (its process has exited and its last counts were read).
    pub fn remove(&mut self, key: &K) {
        let _ = self.map.remove(key);
    }
}

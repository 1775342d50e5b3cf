//! Readers of in-kernel hashes of counters keyed by process: a per-CPU hash (snapshots sum
//! each key over CPUs; the TCP and uprobe counters) and a shared hash the programs add to
//! atomically (the syscall histograms, error counts and task counters). Keys of exited
//! processes can be deleted.

use std::marker::PhantomData;

use agent_common::{
    syscall::{ErrKey, Hist, HistKey},
    task::TaskCounts,
};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    Pod,
};

use super::ProbeError;

/// A value that can be summed over CPUs.
pub trait PerCpuSum: Pod + Default {
    fn add(&mut self, other: &Self);
}

pub struct PerCpuTable<K: Pod, V: Pod> {
    map: PerCpuHashMap<MapData, K, V>,
    _kv: PhantomData<(K, V)>,
}

/// The shared tables the agent reads.
pub type SyscallHistMap = SharedTable<HistKey, Hist>;
pub type SyscallErrorMap = SharedTable<ErrKey, u64>;
pub type TaskCountMap = SharedTable<u32, TaskCounts>;

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

    /// One key's values summed over CPUs (None: no such key).
    pub fn get(&self, key: &K) -> Option<V> {
        let per_cpu = self.map.get(key, 0).ok()?;
        let mut total = V::default();
        for v in per_cpu.iter() {
            total.add(v);
        }
        Some(total)
    }

    /// Deletes a key (its process has exited and its last counts were read).
    pub fn remove(&mut self, key: &K) {
        let _ = self.map.remove(key);
    }
}

/// A hash with one value per key for all CPUs (the programs add to it atomically).
pub struct SharedTable<K: Pod, V: Pod> {
    map: HashMap<MapData, K, V>,
}

impl<K: Pod, V: Pod> SharedTable<K, V> {
    pub(super) fn new(map: Map, name: &'static str) -> Result<Self, ProbeError> {
        let map = HashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        Ok(Self { map })
    }

    /// Every key with its value. Keys that vanish while we iterate (LRU eviction) are
    /// skipped; the caller notices them by their absence. A value is copied while programs
    /// may add to it, so one of its fields can be a call ahead of another: the next snapshot
    /// has both (every field only grows).
    pub fn snapshot(&self, out: &mut Vec<(K, V)>) {
        out.clear();
        out.extend(self.map.iter().filter_map(Result::ok));
    }

    /// One key's value now (None if absent).
    pub fn get(&self, key: &K) -> Option<V> {
        self.map.get(key, 0).ok()
    }

    /// Deletes a key (its process has exited and its last counts were read); true if it was
    /// there (false: the LRU evicted it first).
    pub fn remove(&mut self, key: &K) -> bool {
        self.map.remove(key).is_ok()
    }
}

/// A per-CPU count of the keys the programs inserted into a shared table (one slot).
pub struct KeyInserts {
    map: PerCpuArray<MapData, u64>,
}

impl KeyInserts {
    pub(super) fn new(map: Map, name: &'static str) -> Result<Self, ProbeError> {
        let map = PerCpuArray::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        Ok(Self { map })
    }

    /// Keys inserted since the probes were loaded, over every CPU.
    pub fn total(&self) -> u64 {
        self.map.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

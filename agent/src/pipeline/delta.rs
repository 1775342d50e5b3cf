//! Cumulative kernel counters to exact increments: remember each key's last value and hand on
//! only what it gained since, so repeated reads never count anything twice.

use std::{collections::HashMap, hash::Hash};

use agent_common::{syscall::Hist, task::TaskCounts, tcp::TcpCounts};

/// A cumulative value read from the kernel.
pub trait Cumulative: Copy + Default {
    /// `self - prev`, or `None` if any part went backwards (the key was evicted and created
    /// again: then everything it holds is new).
    fn since(&self, prev: &Self) -> Option<Self>;
    fn is_zero(&self) -> bool;
}

impl Cumulative for u64 {
    fn since(&self, prev: &Self) -> Option<Self> {
        self.checked_sub(*prev)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl Cumulative for Hist {
    fn since(&self, prev: &Self) -> Option<Self> {
        let mut d = *self;
        for (b, p) in d.buckets.iter_mut().zip(&prev.buckets) {
            *b = b.checked_sub(*p)?;
        }
        d.sum_ns = self.sum_ns.saturating_sub(prev.sum_ns);
        Some(d)
    }
    fn is_zero(&self) -> bool {
        self.buckets.iter().all(|&b| b == 0)
    }
}

impl Cumulative for TaskCounts {
    fn since(&self, prev: &Self) -> Option<Self> {
        Some(TaskCounts {
            created: self.created.checked_sub(prev.created)?,
            threads_started: self.threads_started.checked_sub(prev.threads_started)?,
            exited: self.exited.checked_sub(prev.exited)?,
        })
    }
    fn is_zero(&self) -> bool {
        self.created == 0 && self.threads_started == 0 && self.exited == 0
    }
}

impl Cumulative for TcpCounts {
    fn since(&self, prev: &Self) -> Option<Self> {
        Some(TcpCounts {
            data_segs: self.data_segs.checked_sub(prev.data_segs)?,
            synack: self.synack.checked_sub(prev.synack)?,
            failed: self.failed.checked_sub(prev.failed)?,
        })
    }
    fn is_zero(&self) -> bool {
        *self == TcpCounts::default()
    }
}

#[derive(Debug)]
pub struct Deltas<K, V> {
    last: HashMap<K, V>,
    /// Keys that vanished from the kernel map without `forget` (LRU eviction): whatever they
    /// counted since the previous read is lost.
    vanished: u64,
}

impl<K, V> Default for Deltas<K, V> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
            vanished: 0,
        }
    }
}

impl<K: Copy + Eq + Hash, V: Cumulative> Deltas<K, V> {
    /// Calls `sink(key, increment)` for every key that gained something since the last fold.
    pub fn fold(&mut self, snapshot: &[(K, V)], mut sink: impl FnMut(&K, &V)) {
        let mut seen = std::collections::HashSet::with_capacity(snapshot.len());
        for (key, now) in snapshot {
            seen.insert(*key);
            let delta = match self.last.get(key) {
                Some(prev) => now.since(prev).unwrap_or(*now),
                None => *now,
            };
            self.last.insert(*key, *now);
            if !delta.is_zero() {
                sink(key, &delta);
            }
        }
        let before = self.last.len();
        self.last.retain(|k, _| seen.contains(k));
        self.vanished += (before - self.last.len()) as u64;
    }

    /// The last value read for `key`.
    pub fn last(&self, key: &K) -> Option<&V> {
        self.last.get(key)
    }

    /// Keys seen in the last fold that satisfy `pred`.
    pub fn keys_where(&self, pred: impl Fn(&K) -> bool) -> Vec<K> {
        self.last.keys().filter(|k| pred(k)).copied().collect()
    }

    /// We deleted `key` from the kernel map: it is gone on purpose, not evicted.
    pub fn forget(&mut self, key: &K) {
        self.last.remove(key);
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    pub fn vanished(&self) -> u64 {
        self.vanished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(counts: &[(usize, u64)], sum: u64) -> Hist {
        let mut h = Hist::default();
        for &(b, c) in counts {
            h.buckets[b] = c;
        }
        h.sum_ns = sum;
        h
    }

    fn fold<V: Cumulative>(d: &mut Deltas<u32, V>, snap: &[(u32, V)]) -> Vec<(u32, V)> {
        let mut out = Vec::new();
        d.fold(snap, |k, v| out.push((*k, *v)));
        out
    }

    #[test]
    fn repeated_snapshots_count_once() {
        let mut d = Deltas::default();
        assert_eq!(
            fold(&mut d, &[(1, hist(&[(7, 10)], 1000))]),
            [(1, hist(&[(7, 10)], 1000))]
        );
        assert!(fold(&mut d, &[(1, hist(&[(7, 10)], 1000))]).is_empty());
        assert_eq!(
            fold(&mut d, &[(1, hist(&[(7, 15), (8, 1)], 1800))]),
            [(1, hist(&[(7, 5), (8, 1)], 800))]
        );
    }

    #[test]
    fn recreated_key_counts_from_zero_and_vanished_keys_are_counted() {
        let mut d = Deltas::default();
        fold(&mut d, &[(1u32, 50u64), (2, 5)]);
        assert_eq!(fold(&mut d, &[(1, 3), (2, 5)]), [(1, 3)]);
        d.forget(&2);
        fold(&mut d, &[(1, 3)]);
        assert_eq!(d.vanished(), 0, "2 was forgotten on purpose");
        fold(&mut d, &[]);
        assert_eq!(d.vanished(), 1, "1 vanished without forget");
        assert!(d.is_empty());
    }
}

//! Turns snapshots of the in-kernel histograms (cumulative per (tgid, syscall) key) into
//! cumulative histograms per (service, syscall), counting every call exactly once: each key's
//! last-seen value is remembered and only the difference is added.

use std::collections::{BTreeMap, HashMap, HashSet};

use agent_common::syscall::{Hist, HistKey};

use super::services::ServiceId;

#[derive(Debug, Default)]
pub struct SyscallStats {
    last: HashMap<HistKey, Hist>,
    totals: BTreeMap<(ServiceId, u32), Hist>,
    /// Keys that vanished from the kernel map without us deleting them (LRU eviction):
    /// whatever they counted since the previous read is lost.
    evicted_keys: u64,
}

fn count(h: &Hist) -> u64 {
    h.buckets.iter().sum()
}

impl SyscallStats {
    /// Adds what each key gained since the last snapshot to its service's totals.
    pub fn fold(
        &mut self,
        snapshot: &[(HistKey, Hist)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let mut seen = HashSet::with_capacity(snapshot.len());
        for (key, now) in snapshot {
            seen.insert(*key);
            let delta = match self.last.get(key) {
                // A key that went backwards was evicted and re-created: all it has is new.
                Some(prev) if now.buckets.iter().zip(&prev.buckets).all(|(n, p)| n >= p) => {
                    let mut d = *now;
                    for (b, p) in d.buckets.iter_mut().zip(&prev.buckets) {
                        *b -= p;
                    }
                    d.sum_ns = now.sum_ns.saturating_sub(prev.sum_ns);
                    d
                }
                _ => *now,
            };
            self.last.insert(*key, *now);
            if count(&delta) == 0 {
                continue;
            }
            let total = self
                .totals
                .entry((service_of(key.tgid), key.nr))
                .or_default();
            for (t, d) in total.buckets.iter_mut().zip(&delta.buckets) {
                *t += d;
            }
            total.sum_ns += delta.sum_ns;
        }
        let before = self.last.len();
        self.last.retain(|k, _| seen.contains(k));
        self.evicted_keys += (before - self.last.len()) as u64;
    }

    /// Keys of `tgid` we have seen (to delete them from the kernel map).
    pub fn keys_of(&self, tgid: u32) -> Vec<HistKey> {
        self.last
            .keys()
            .filter(|k| k.tgid == tgid)
            .copied()
            .collect()
    }

    /// We deleted `key` from the kernel map: it is gone on purpose, not evicted.
    pub fn forget(&mut self, key: &HistKey) {
        self.last.remove(key);
    }

    /// Cumulative histograms per (service, syscall nr).
    pub fn totals(&self) -> &BTreeMap<(ServiceId, u32), Hist> {
        &self.totals
    }

    pub fn evicted_keys(&self) -> u64 {
        self.evicted_keys
    }

    pub fn tracked_keys(&self) -> usize {
        self.last.len()
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

    #[test]
    fn repeated_snapshots_count_once() {
        let mut s = SyscallStats::default();
        let k = HistKey { tgid: 5, nr: 110 };
        s.fold(&[(k, hist(&[(7, 10)], 1000))], |_| 3);
        s.fold(&[(k, hist(&[(7, 10)], 1000))], |_| 3);
        s.fold(&[(k, hist(&[(7, 15), (8, 1)], 1800))], |_| 3);
        let t = s.totals()[&(3, 110)];
        assert_eq!(t.buckets[7], 15);
        assert_eq!(t.buckets[8], 1);
        assert_eq!(t.sum_ns, 1800);
    }

    #[test]
    fn processes_of_one_service_add_up_and_deleted_keys_are_not_evictions() {
        let mut s = SyscallStats::default();
        let a = HistKey { tgid: 1, nr: 0 };
        let b = HistKey { tgid: 2, nr: 0 };
        s.fold(&[(a, hist(&[(3, 4)], 40)), (b, hist(&[(3, 6)], 60))], |_| 9);
        assert_eq!(s.totals()[&(9, 0)].buckets[3], 10);
        assert_eq!(s.keys_of(1), vec![a]);
        s.forget(&a);
        s.fold(&[(b, hist(&[(3, 6)], 60))], |_| 9);
        assert_eq!(s.evicted_keys(), 0);
        s.fold(&[], |_| 9);
        assert_eq!(s.evicted_keys(), 1, "b vanished without forget");
        assert_eq!(s.totals()[&(9, 0)].buckets[3], 10, "totals never go down");
    }

    #[test]
    fn recreated_key_counts_from_zero() {
        let mut s = SyscallStats::default();
        let k = HistKey { tgid: 1, nr: 1 };
        s.fold(&[(k, hist(&[(2, 50)], 500))], |_| 4);
        s.fold(&[(k, hist(&[(2, 3)], 30))], |_| 4);
        assert_eq!(s.totals()[&(4, 1)].buckets[2], 53);
    }
}

//! Allocation and goroutine series per service, folded from the kernel's per-tgid counters by
//! difference (like the task counters).
//!
//! - Counters (calls by kind, bytes, untracked frees, goroutines created) only grow: an exited
//!   process's counts stay in its service's totals.
//! - The Go GC's completed cycles and its pause histogram are counters too.
//! - Gauges (outstanding bytes, live goroutines) are sums over the *live* processes of the
//!   service: when a process exits, its outstanding bytes and goroutines are gone with it.

use std::collections::{BTreeMap, HashMap};

use agent_common::{
    syscall::Hist,
    uprobe::{AllocCounts, GoCounts, GoGc, CALL_KINDS},
};

use super::{
    delta::{Cumulative, Deltas},
    services::ServiceId,
};

impl Cumulative for AllocCounts {
    fn since(&self, prev: &Self) -> Option<Self> {
        let mut calls = [0; CALL_KINDS];
        for (i, c) in calls.iter_mut().enumerate() {
            *c = self.calls[i].checked_sub(prev.calls[i])?;
        }
        Some(AllocCounts {
            calls,
            bytes: self.bytes.checked_sub(prev.bytes)?,
            tracked_bytes: self.tracked_bytes.checked_sub(prev.tracked_bytes)?,
            freed_bytes: self.freed_bytes.checked_sub(prev.freed_bytes)?,
            untracked_frees: self.untracked_frees.checked_sub(prev.untracked_frees)?,
        })
    }
    fn is_zero(&self) -> bool {
        *self == AllocCounts::default()
    }
}

impl Cumulative for GoCounts {
    fn since(&self, prev: &Self) -> Option<Self> {
        Some(GoCounts {
            created: self.created.checked_sub(prev.created)?,
            exited: self.exited.checked_sub(prev.exited)?,
        })
    }
    fn is_zero(&self) -> bool {
        self.created == 0 && self.exited == 0
    }
}

/// Only the counters: the stop state is not cumulative and is left zero in increments.
impl Cumulative for GoGc {
    fn since(&self, prev: &Self) -> Option<Self> {
        Some(GoGc {
            cycles: self.cycles.checked_sub(prev.cycles)?,
            pauses: self.pauses.since(&prev.pauses)?,
            stw_start_ns: 0,
            stw_other: 0,
        })
    }
    fn is_zero(&self) -> bool {
        self.cycles == 0 && self.pauses.is_zero()
    }
}

#[derive(Debug, Default)]
pub struct AllocStats {
    pub counts: Deltas<u32, AllocCounts>,
    calls: BTreeMap<(ServiceId, u32), u64>,
    bytes: BTreeMap<ServiceId, u64>,
    untracked_frees: BTreeMap<ServiceId, u64>,
    outstanding: BTreeMap<ServiceId, i64>,
}

impl AllocStats {
    pub fn fold(
        &mut self,
        snapshot: &[(u32, AllocCounts)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let (calls, bytes, untracked) =
            (&mut self.calls, &mut self.bytes, &mut self.untracked_frees);
        self.counts.fold(snapshot, |&tgid, d| {
            let s = service_of(tgid);
            for (kind, &n) in d.calls.iter().enumerate() {
                if n != 0 {
                    *calls.entry((s, kind as u32)).or_default() += n;
                }
            }
            *bytes.entry(s).or_default() += d.bytes;
            *untracked.entry(s).or_default() += d.untracked_frees;
        });
    }

    /// Outstanding bytes of the live processes: recorded allocations not freed yet.
    pub fn update_live(&mut self, live: impl Iterator<Item = (u32, ServiceId)>) {
        self.outstanding.clear();
        for (tgid, service) in live {
            if let Some(c) = self.counts.last(&tgid) {
                let o = c.tracked_bytes as i64 - c.freed_bytes as i64;
                *self.outstanding.entry(service).or_default() += o.max(0);
            }
        }
    }

    pub fn forget(&mut self, tgid: u32) {
        self.counts.forget(&tgid);
    }

    /// Drops every series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.calls.retain(|k, _| k.0 != service);
        self.bytes.remove(&service);
        self.untracked_frees.remove(&service);
        self.outstanding.remove(&service);
    }

    /// Calls by (service, kind).
    pub fn calls(&self) -> &BTreeMap<(ServiceId, u32), u64> {
        &self.calls
    }
    pub fn bytes(&self) -> &BTreeMap<ServiceId, u64> {
        &self.bytes
    }
    pub fn untracked_frees(&self) -> &BTreeMap<ServiceId, u64> {
        &self.untracked_frees
    }
    pub fn outstanding(&self) -> &BTreeMap<ServiceId, i64> {
        &self.outstanding
    }
}

#[derive(Debug, Default)]
pub struct GoStats {
    pub counts: Deltas<u32, GoCounts>,
    pub gc: Deltas<u32, GoGc>,
    created: BTreeMap<ServiceId, u64>,
    live: BTreeMap<ServiceId, i64>,
    gc_cycles: BTreeMap<ServiceId, u64>,
    gc_pauses: BTreeMap<ServiceId, Hist>,
    /// Per process probed after it started and seeded from its memory: what to add to
    /// created minus exited (`go_seed::Seed::offset`).
    seeds: HashMap<u32, i64>,
    pub seeder: super::go_seed::Seeder,
}

impl GoStats {
    pub fn fold(
        &mut self,
        snapshot: &[(u32, GoCounts)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let created = &mut self.created;
        self.counts.fold(snapshot, |&tgid, d| {
            *created.entry(service_of(tgid)).or_default() += d.created;
        });
    }

    /// Folds the GC counters of a snapshot of `GO_GC`. A process's cycles and pauses are
    /// counted from the attach of the probes, which for an `exe` target is its first
    /// instruction.
    pub fn fold_gc(
        &mut self,
        snapshot: &[(u32, GoGc)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let (cycles, pauses) = (&mut self.gc_cycles, &mut self.gc_pauses);
        self.gc.fold(snapshot, |&tgid, d| {
            let s = service_of(tgid);
            if d.cycles != 0 {
                *cycles.entry(s).or_default() += d.cycles;
            }
            if !d.pauses.is_zero() {
                let total = pauses.entry(s).or_default();
                for (t, b) in total.buckets.iter_mut().zip(&d.pauses.buckets) {
                    *t += b;
                }
                total.sum_ns += d.pauses.sum_ns;
            }
        });
    }

    /// Live goroutines of the live processes: created minus exited since the probes were
    /// attached, plus the process's seed if it has one (at least 0 per process: one probed
    /// mid-life and not seeded may see more exits).
    pub fn update_live(&mut self, live: impl Iterator<Item = (u32, ServiceId)>) {
        self.live.clear();
        for (tgid, service) in live {
            let seed = self.seeds.get(&tgid).copied();
            let c = match (self.counts.last(&tgid), seed) {
                (Some(c), _) => *c,
                (None, Some(_)) => GoCounts::default(),
                (None, None) => continue,
            };
            let n = c.created as i64 - c.exited as i64 + seed.unwrap_or(0);
            *self.live.entry(service).or_default() += n.max(0);
        }
    }

    /// The process's goroutines were read from its memory: `offset` is added to its created
    /// minus exited from now on.
    pub fn seed(&mut self, tgid: u32, offset: i64) {
        self.seeds.insert(tgid, offset);
    }

    /// The process exec'd (or exited): its seed belonged to the old image.
    pub fn unseed(&mut self, tgid: u32) {
        self.seeds.remove(&tgid);
    }

    pub fn forget(&mut self, tgid: u32) {
        self.counts.forget(&tgid);
        self.gc.forget(&tgid);
        self.seeds.remove(&tgid);
    }

    /// Drops every series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.created.remove(&service);
        self.live.remove(&service);
        self.gc_cycles.remove(&service);
        self.gc_pauses.remove(&service);
    }

    /// Completed GC cycles by service.
    pub fn gc_cycles(&self) -> &BTreeMap<ServiceId, u64> {
        &self.gc_cycles
    }
    /// The GC's stop-the-world pauses by service (log2 ns buckets).
    pub fn gc_pauses(&self) -> &BTreeMap<ServiceId, Hist> {
        &self.gc_pauses
    }

    pub fn created(&self) -> &BTreeMap<ServiceId, u64> {
        &self.created
    }
    pub fn live(&self) -> &BTreeMap<ServiceId, i64> {
        &self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_fold_and_outstanding_follows_live_processes() {
        let mut a = AllocStats::default();
        let c = |malloc, free, tracked, freed| AllocCounts {
            calls: [malloc, 0, 0, free],
            bytes: tracked,
            tracked_bytes: tracked,
            freed_bytes: freed,
            untracked_frees: 0,
        };
        a.fold(&[(7, c(10, 5, 1000, 400))], |_| 1);
        a.fold(&[(7, c(10, 5, 1000, 400))], |_| 1);
        a.update_live([(7, 1)].into_iter());
        assert_eq!(a.calls()[&(1, 0)], 10);
        assert_eq!(a.calls()[&(1, 3)], 5);
        assert_eq!(a.bytes()[&1], 1000);
        assert_eq!(a.outstanding()[&1], 600);
        // The process exits: its counts stay, its outstanding bytes go.
        a.update_live(std::iter::empty());
        assert!(a.outstanding().is_empty());
        assert_eq!(a.bytes()[&1], 1000);
    }

    #[test]
    fn gc_cycles_and_pauses_fold_by_difference_ignoring_stop_state() {
        let mut g = GoStats::default();
        let v = |cycles, pauses: &[(usize, u64)], start| {
            let mut gc = GoGc {
                cycles,
                stw_start_ns: start,
                ..GoGc::default()
            };
            for &(b, n) in pauses {
                gc.pauses.buckets[b] = n;
                gc.pauses.sum_ns += n << b;
            }
            gc
        };
        g.fold_gc(&[(7, v(2, &[(14, 4)], 0))], |_| 1);
        // A stop in progress changes nothing counted.
        g.fold_gc(&[(7, v(2, &[(14, 4)], 99))], |_| 1);
        assert_eq!(g.gc_cycles()[&1], 2);
        assert_eq!(g.gc_pauses()[&1].buckets[14], 4);
        g.fold_gc(
            &[(7, v(5, &[(14, 4), (20, 6)], 0)), (8, v(1, &[(10, 2)], 0))],
            |_| 1,
        );
        assert_eq!(g.gc_cycles()[&1], 6);
        let h = &g.gc_pauses()[&1];
        assert_eq!((h.buckets[10], h.buckets[14], h.buckets[20]), (2, 4, 6));
        assert_eq!(h.sum_ns, (2 << 10) + (4 << 14) + (6 << 20));
        g.release(1);
        assert!(g.gc_cycles().is_empty() && g.gc_pauses().is_empty());
    }

    #[test]
    fn goroutines_gauge_is_created_minus_exited() {
        let mut g = GoStats::default();
        g.fold(
            &[(
                7,
                GoCounts {
                    created: 1007,
                    exited: 0,
                },
            )],
            |_| 2,
        );
        g.update_live([(7, 2)].into_iter());
        assert_eq!(g.live()[&2], 1007);
        g.fold(
            &[(
                7,
                GoCounts {
                    created: 1007,
                    exited: 1000,
                },
            )],
            |_| 2,
        );
        g.update_live([(7, 2)].into_iter());
        assert_eq!(g.live()[&2], 7);
        assert_eq!(g.created()[&2], 1007);
        // Attached mid-life: more exits than creations seen, clamped.
        g.fold(
            &[(
                8,
                GoCounts {
                    created: 1,
                    exited: 5,
                },
            )],
            |_| 3,
        );
        g.update_live([(8, 3)].into_iter());
        assert_eq!(g.live()[&3], 0);
        // Seeded: 1000 live when the probes had counted 1 created and 5 exited.
        g.seed(8, 1000 - (1 - 5));
        g.update_live([(8, 3)].into_iter());
        assert_eq!(g.live()[&3], 1000);
        g.fold(
            &[(
                8,
                GoCounts {
                    created: 3,
                    exited: 505,
                },
            )],
            |_| 3,
        );
        g.update_live([(8, 3)].into_iter());
        assert_eq!(g.live()[&3], 1000 + 2 - 500);
        // Seeded before any event: the seed alone.
        g.seed(9, 12);
        g.update_live([(9, 3)].into_iter());
        assert_eq!(g.live()[&3], 12);
        g.forget(9);
        g.update_live([(9, 3)].into_iter());
        assert!(g.live().is_empty());
    }
}

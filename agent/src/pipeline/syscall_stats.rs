//! Syscall series per service: latency histograms and error counts folded from the kernel's
//! per-process counters by difference, and slow-syscall events.

use std::collections::{BTreeMap, VecDeque};

use agent_common::syscall::{ErrKey, Hist, HistKey, SlowSyscallEvent};

use super::{delta::Deltas, services::ServiceId};

/// How many recent slow-syscall events are kept for consumers (exporters, debugging).
pub const RECENT_EVENTS: usize = 1024;

/// A slow syscall with its service resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowSyscall {
    pub service: ServiceId,
    pub event: SlowSyscallEvent,
}

#[derive(Debug, Default)]
pub struct SyscallStats {
    pub hist: Deltas<HistKey, Hist>,
    pub errors: Deltas<ErrKey, u64>,
    /// (service, nr) -> cumulative latency histogram.
    latency: BTreeMap<(ServiceId, u32), Hist>,
    /// (service, nr, errno) -> failed calls.
    failures: BTreeMap<(ServiceId, u32, u32), u64>,
    /// (service, nr) -> slow-syscall events received.
    slow: BTreeMap<(ServiceId, u32), u64>,
    recent: VecDeque<SlowSyscall>,
}

impl SyscallStats {
    pub fn fold_latency(
        &mut self,
        snapshot: &[(HistKey, Hist)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let latency = &mut self.latency;
        self.hist.fold(snapshot, |key, delta| {
            let total = latency.entry((service_of(key.tgid), key.nr)).or_default();
            for (t, d) in total.buckets.iter_mut().zip(&delta.buckets) {
                *t += d;
            }
            total.sum_ns += delta.sum_ns;
        });
    }

    pub fn fold_errors(
        &mut self,
        snapshot: &[(ErrKey, u64)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let failures = &mut self.failures;
        self.errors.fold(snapshot, |key, delta| {
            *failures
                .entry((service_of(key.tgid), key.nr, key.errno))
                .or_default() += delta;
        });
    }

    pub fn on_slow(&mut self, service: ServiceId, event: SlowSyscallEvent) {
        *self.slow.entry((service, event.nr)).or_default() += 1;
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(SlowSyscall { service, event });
    }

    /// Forgets every kernel key of an exited process (after deleting them from the maps).
    pub fn keys_of(&self, tgid: u32) -> (Vec<HistKey>, Vec<ErrKey>) {
        (
            self.hist.keys_where(|k| k.tgid == tgid),
            self.errors.keys_where(|k| k.tgid == tgid),
        )
    }

    /// Drops every series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.latency.retain(|k, _| k.0 != service);
        self.failures.retain(|k, _| k.0 != service);
        self.slow.retain(|k, _| k.0 != service);
        self.recent.retain(|e| e.service != service);
    }

    pub fn latency(&self) -> &BTreeMap<(ServiceId, u32), Hist> {
        &self.latency
    }

    pub fn failures(&self) -> &BTreeMap<(ServiceId, u32, u32), u64> {
        &self.failures
    }

    pub fn slow(&self) -> &BTreeMap<(ServiceId, u32), u64> {
        &self.slow
    }

    pub fn recent_slow(&self) -> impl Iterator<Item = &SlowSyscall> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_of_one_service_add_up_and_totals_never_go_down() {
        let mut s = SyscallStats::default();
        let mut h = Hist::default();
        h.buckets[3] = 4;
        let a = HistKey { tgid: 1, nr: 0 };
        let b = HistKey { tgid: 2, nr: 0 };
        s.fold_latency(&[(a, h), (b, h)], |_| 9);
        assert_eq!(s.latency()[&(9, 0)].buckets[3], 8);
        s.hist.forget(&a);
        s.fold_latency(&[(b, h)], |_| 9);
        assert_eq!(s.latency()[&(9, 0)].buckets[3], 8, "no double count");

        let e = ErrKey {
            tgid: 1,
            nr: 2,
            errno: 2,
            _pad: 0,
        };
        s.fold_errors(&[(e, 3)], |_| 9);
        s.fold_errors(&[(e, 5)], |_| 9);
        assert_eq!(s.failures()[&(9, 2, 2)], 5);
    }

    #[test]
    fn recent_slow_events_are_bounded() {
        let mut s = SyscallStats::default();
        for i in 0..RECENT_EVENTS as u32 + 10 {
            s.on_slow(
                4,
                SlowSyscallEvent {
                    nr: 74,
                    tid: i,
                    ..Default::default()
                },
            );
        }
        assert_eq!(s.recent_slow().count(), RECENT_EVENTS);
        assert_eq!(s.recent_slow().next().unwrap().event.tid, 10);
        assert_eq!(s.slow()[&(4, 74)], RECENT_EVENTS as u64 + 10);
    }
}

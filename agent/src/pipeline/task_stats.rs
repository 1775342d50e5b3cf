//! Tasks per service: created and exited counters folded from the kernel by difference, and
//! the live-thread gauge. The kernel counts each thread group's thread starts and exits since
//! the probe was attached; the gauge anchors that to `/proc/<pid>/status` once per process
//! (`Threads:` minus what the kernel had counted at that moment), so it is exact for processes
//! started after the agent and as exact as one procfs read for those started before.

use std::collections::{BTreeMap, HashMap};

use agent_common::task::TaskCounts;

use super::{delta::Deltas, services::ServiceId};

#[derive(Debug, Default)]
pub struct TaskStats {
    pub counts: Deltas<u32, TaskCounts>,
    /// tgid -> live threads not seen by the kernel counters (procfs anchor).
    anchors: HashMap<u32, i64>,
    created: BTreeMap<ServiceId, u64>,
    exited: BTreeMap<ServiceId, u64>,
    live: BTreeMap<ServiceId, i64>,
}

/// Live threads the kernel counted for a process since attach (may be negative for one
/// started before).
fn counted(c: Option<&TaskCounts>) -> i64 {
    c.map_or(0, |c| c.threads_started as i64 - c.exited as i64)
}

impl TaskStats {
    pub fn fold(
        &mut self,
        snapshot: &[(u32, TaskCounts)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let (created, exited) = (&mut self.created, &mut self.exited);
        self.counts.fold(snapshot, |&tgid, d| {
            let s = service_of(tgid);
            *created.entry(s).or_default() += d.created;
            *exited.entry(s).or_default() += d.exited;
        });
    }

    /// Recomputes the live-thread gauge from the live processes. `threads_of` reads
    /// `Threads:` from procfs (None if the process has gone); `kernel_now` reads one process's
    /// kernel counters at this moment.
    ///
    /// A new process's anchor is `Threads:` minus the kernel's count *at the same moment*: the
    /// count is read before and after procfs and the anchor kept only when both agree (threads
    /// started between the collection's snapshot and the procfs read would otherwise be
    /// counted twice). When they disagree (the process is starting threads right now), the
    /// process is anchored at a later collection, and shown meanwhile from the last read.
    pub fn update_live(
        &mut self,
        live: impl Iterator<Item = (u32, ServiceId)>,
        mut threads_of: impl FnMut(u32) -> Option<i64>,
        mut kernel_now: impl FnMut(u32) -> Option<TaskCounts>,
    ) {
        self.live.clear();
        for (tgid, service) in live {
            let kernel = counted(self.counts.last(&tgid));
            let anchor = match self.anchors.get(&tgid) {
                Some(&a) => a,
                None => {
                    let before = counted(kernel_now(tgid).as_ref());
                    let Some(t) = threads_of(tgid) else { continue };
                    let after = counted(kernel_now(tgid).as_ref());
                    let anchor = t - after;
                    if before == after {
                        self.anchors.insert(tgid, anchor);
                        anchor
                    } else {
                        // Shown as procfs says now, anchored later.
                        t - kernel
                    }
                }
            };
            *self.live.entry(service).or_default() += (anchor + kernel).max(0);
        }
    }

    pub fn forget(&mut self, tgid: u32) {
        self.counts.forget(&tgid);
        self.anchors.remove(&tgid);
    }

    /// Drops every series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.created.remove(&service);
        self.exited.remove(&service);
        self.live.remove(&service);
    }

    pub fn created(&self) -> &BTreeMap<ServiceId, u64> {
        &self.created
    }
    pub fn exited(&self) -> &BTreeMap<ServiceId, u64> {
        &self.exited
    }
    pub fn live(&self) -> &BTreeMap<ServiceId, i64> {
        &self.live
    }
}

/// `Threads:` of `/proc/<tgid>/status`.
pub fn procfs_threads(tgid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(created: u64, threads: u64, exited: u64) -> TaskCounts {
        TaskCounts {
            created,
            threads_started: threads,
            exited,
        }
    }

    #[test]
    fn gauge_is_anchored_once_then_follows_the_kernel() {
        let mut t = TaskStats::default();
        let now = |c: TaskCounts| move |_| Some(c);
        // A process started after the agent with 50 threads: kernel counted 50, procfs 51.
        t.fold(&[(7, tc(50, 50, 0))], |_| 1);
        t.update_live([(7, 1)].into_iter(), |_| Some(51), now(tc(50, 50, 0)));
        assert_eq!(t.live()[&1], 51);
        // The threads end: the kernel counts 50 exits; procfs is not read again.
        t.fold(&[(7, tc(50, 50, 50))], |_| 1);
        t.update_live(
            [(7, 1)].into_iter(),
            |_| panic!("anchored already"),
            |_| panic!("anchored already"),
        );
        assert_eq!(t.live()[&1], 1);
        assert_eq!(t.created()[&1], 50);
        assert_eq!(t.exited()[&1], 50);
        // A process with no kernel counts yet (single-threaded, started before the agent).
        t.update_live([(7, 1), (8, 2)].into_iter(), |_| Some(1), |_| None);
        assert_eq!(t.live()[&2], 1);
        // Gone before it could be anchored: not counted.
        t.update_live([(9, 3)].into_iter(), |_| None, |_| None);
        assert!(!t.live().contains_key(&3));
    }

    /// The race seen on 6.1 under QEMU (67 threads shown for 65): the collection's snapshot
    /// saw 10 thread starts, then the process started 2 more before procfs was read.
    #[test]
    fn threads_started_between_snapshot_and_procfs_are_not_counted_twice() {
        let mut t = TaskStats::default();
        t.fold(&[(7, tc(10, 10, 0))], |_| 1);
        // The kernel says 12 both before and after the procfs read (13 = 12 + main thread).
        t.update_live([(7, 1)].into_iter(), |_| Some(13), |_| Some(tc(12, 12, 0)));
        // Shown from the snapshot's 10: anchor 1 + 10 (the 2 new ones come with the next fold).
        assert_eq!(t.live()[&1], 11);
        t.fold(&[(7, tc(12, 12, 0))], |_| 1);
        t.update_live(
            [(7, 1)].into_iter(),
            |_| panic!("anchored"),
            |_| panic!("anchored"),
        );
        assert_eq!(t.live()[&1], 13);
    }

    /// Threads start during the procfs read itself: no anchor is kept from it.
    #[test]
    fn a_process_starting_threads_during_the_read_is_anchored_later() {
        let mut t = TaskStats::default();
        t.fold(&[(7, tc(10, 10, 0))], |_| 1);
        let mut reads = [tc(11, 11, 0), tc(12, 12, 0)].into_iter();
        t.update_live([(7, 1)].into_iter(), |_| Some(13), |_| reads.next());
        assert_eq!(t.live()[&1], 13, "procfs as read");
        t.fold(&[(7, tc(12, 12, 0))], |_| 1);
        t.update_live([(7, 1)].into_iter(), |_| Some(13), |_| Some(tc(12, 12, 0)));
        assert_eq!(t.live()[&1], 13);
        t.fold(&[(7, tc(12, 12, 12))], |_| 1);
        t.update_live(
            [(7, 1)].into_iter(),
            |_| panic!("anchored"),
            |_| panic!("anchored"),
        );
        assert_eq!(t.live()[&1], 1);
    }

    #[test]
    fn procfs_threads_of_this_process() {
        assert!(procfs_threads(std::process::id()).unwrap() >= 1);
    }
}

//! Which service each process (thread group) belongs to, kept from its exec (or first sight)
//! until shortly after its exit, so samples of processes that lived less than a collection
//! interval are still attributed to the right service.

use std::collections::HashMap;

use agent_common::process::{ProcEvent, PROC_EXEC, PROC_EXIT};

use super::services::{Naming, ProcessFacts, ServiceId, ServiceNames, UNKNOWN};

#[derive(Debug, Clone, Copy)]
struct Entry {
    service: ServiceId,
    /// Collection generation during which the exit event arrived.
    exited_in: Option<u64>,
}

/// How a process is named: from procfs while it lives, else from what an event carried.
pub trait Resolver {
    /// The name of a live process, `None` if it has gone.
    fn resolve(&mut self, tgid: u32) -> Option<String>;
    /// The name of a process known only by its comm.
    fn name_by_comm(&mut self, comm: &str) -> String;
}

impl Resolver for Naming {
    fn resolve(&mut self, tgid: u32) -> Option<String> {
        ProcessFacts::from_procfs(tgid).map(|f| self.name(&f))
    }
    fn name_by_comm(&mut self, comm: &str) -> String {
        self.name(&ProcessFacts {
            comm: comm.to_string(),
            ..Default::default()
        })
    }
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: HashMap<u32, Entry>,
}

impl ProcessTable {
    /// Applies one lifecycle event. `generation` is the current collection generation.
    pub fn on_event(
        &mut self,
        ev: &ProcEvent,
        generation: u64,
        names: &mut ServiceNames,
        resolver: &mut impl Resolver,
    ) {
        let comm = String::from_utf8_lossy(ev.comm_bytes());
        match ev.kind {
            PROC_EXEC => {
                // Right after exec the process is alive: procfs tells its cgroup and exe.
                let name = resolver
                    .resolve(ev.tgid)
                    .unwrap_or_else(|| resolver.name_by_comm(&comm));
                let service = names.intern(&name);
                self.entries.insert(
                    ev.tgid,
                    Entry {
                        service,
                        exited_in: None,
                    },
                );
            }
            PROC_EXIT => {
                let entry = self.entries.entry(ev.tgid).or_insert_with(|| Entry {
                    // Never seen alive: the exiting task's comm is the best name left.
                    service: names.intern(&resolver.name_by_comm(&comm)),
                    exited_in: None,
                });
                entry.exited_in = Some(generation);
            }
            _ => {}
        }
    }

    /// The service of `tgid`, resolving (and remembering) it if nothing named it yet.
    pub fn service_of(
        &mut self,
        tgid: u32,
        names: &mut ServiceNames,
        resolver: &mut impl Resolver,
    ) -> ServiceId {
        if let Some(e) = self.entries.get(&tgid) {
            return e.service;
        }
        let service = resolver
            .resolve(tgid)
            .map_or(UNKNOWN, |name| names.intern(&name));
        self.entries.insert(
            tgid,
            Entry {
                service,
                exited_in: None,
            },
        );
        service
    }

    /// Processes that have not exited (as far as events tell), with their service.
    pub fn live(&self) -> impl Iterator<Item = (u32, ServiceId)> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.exited_in.is_none())
            .map(|(&tgid, e)| (tgid, e.service))
    }

    /// Processes whose exit arrived in a generation before `generation`: their last counts
    /// have been read at least once since, so their kernel keys can go.
    pub fn exited_before(&self, generation: u64) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|(_, e)| e.exited_in.is_some_and(|g| g < generation))
            .map(|(&tgid, _)| tgid)
            .collect()
    }

    pub fn remove(&mut self, tgid: u32) {
        self.entries.remove(&tgid);
    }

    /// Drops entries of processes that are gone without an exit event (lost events), so the
    /// table stays bounded by the live processes.
    pub fn sweep(&mut self, alive: impl Fn(u32) -> bool) {
        self.entries
            .retain(|&tgid, e| e.exited_in.is_some() || alive(tgid));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Thread group ids of every process in `/proc`.
pub fn procfs_tgids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::process::COMM_LEN;

    struct Fixed(Option<&'static str>);
    impl Resolver for Fixed {
        fn resolve(&mut self, _: u32) -> Option<String> {
            self.0.map(String::from)
        }
        fn name_by_comm(&mut self, comm: &str) -> String {
            comm.to_string()
        }
    }

    fn ev(kind: u32, tgid: u32, comm: &str) -> ProcEvent {
        let mut c = [0u8; COMM_LEN];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        ProcEvent {
            kind,
            tgid,
            pid: tgid,
            _pad: 0,
            cgroup_id: 0,
            comm: c,
        }
    }

    #[test]
    fn exec_names_from_procfs_or_comm_and_exit_marks() {
        let mut names = ServiceNames::new(10);
        let mut t = ProcessTable::default();
        t.on_event(&ev(PROC_EXEC, 7, "worker"), 1, &mut names, &mut Fixed(None));
        let s = t.service_of(7, &mut names, &mut Fixed(Some("ignored")));
        assert_eq!(names.name(s), "worker");
        t.on_event(
            &ev(PROC_EXEC, 8, "x"),
            1,
            &mut names,
            &mut Fixed(Some("db.service")),
        );
        let s8 = t.service_of(8, &mut names, &mut Fixed(None));
        assert_eq!(names.name(s8), "db.service");
        assert_eq!(t.live().count(), 2);

        t.on_event(&ev(PROC_EXIT, 7, "worker"), 3, &mut names, &mut Fixed(None));
        assert_eq!(t.live().collect::<Vec<_>>(), vec![(8, s8)]);
        assert!(t.exited_before(3).is_empty(), "not read since the exit yet");
        assert_eq!(t.exited_before(4), vec![7]);
        t.remove(7);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn unknown_when_gone_without_events_and_sweep() {
        let mut names = ServiceNames::new(10);
        let mut t = ProcessTable::default();
        assert_eq!(t.service_of(9, &mut names, &mut Fixed(None)), UNKNOWN);
        t.on_event(&ev(PROC_EXIT, 10, "short"), 1, &mut names, &mut Fixed(None));
        let s = t.service_of(10, &mut names, &mut Fixed(None));
        assert_eq!(names.name(s), "short");
        t.sweep(|_| false);
        assert_eq!(t.len(), 1, "exited entries wait for their final read");
    }

    #[test]
    fn procfs_lists_this_process() {
        assert!(procfs_tgids().contains(&std::process::id()));
    }
}

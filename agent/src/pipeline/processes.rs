//! Which service each process (thread group) belongs to, kept from its exec until shortly
//! after its exit, so syscalls of processes that lived less than a collection interval are
//! still attributed to the right service.

use std::collections::HashMap;

use agent_common::process::{ProcEvent, PROC_EXEC, PROC_EXIT};

use super::services::{resolve_from_procfs, ServiceId, ServiceNames, UNKNOWN};

#[derive(Debug, Clone, Copy)]
struct Entry {
    service: ServiceId,
    /// Collection generation during which the exit event arrived.
    exited_in: Option<u64>,
}

/// How a process is named when no event told us: read procfs (live), or give up.
pub trait Resolver {
    fn resolve(&mut self, tgid: u32) -> Option<String>;
}

/// The real resolver: procfs.
pub struct Procfs;

impl Resolver for Procfs {
    fn resolve(&mut self, tgid: u32) -> Option<String> {
        resolve_from_procfs(tgid)
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
        match ev.kind {
            PROC_EXEC => {
                // Right after exec the process is alive: its cgroup says if it is a unit.
                let name = resolver
                    .resolve(ev.tgid)
                    .unwrap_or_else(|| String::from_utf8_lossy(ev.comm_bytes()).into_owned());
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
                    // Never seen exec (started before the agent, or forked without exec): the
                    // exiting task's comm is the best name left.
                    service: names.intern(&String::from_utf8_lossy(ev.comm_bytes())),
                    exited_in: None,
                });
                entry.exited_in = Some(generation);
            }
            _ => {}
        }
    }

    /// The service of `tgid`, resolving (and remembering) it if no event named it yet.
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

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::process::COMM_LEN;

    struct Fixed(Option<&'static str>);
    impl Resolver for Fixed {
        fn resolve(&mut self, _: u32) -> Option<String> {
            self.0.map(String::from)
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

        t.on_event(&ev(PROC_EXIT, 7, "worker"), 3, &mut names, &mut Fixed(None));
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
}

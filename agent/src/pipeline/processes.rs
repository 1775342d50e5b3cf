//! Which service each process (thread group) belongs to, kept from its exec (or first sight)
//! until shortly after its exit, so samples of processes that lived less than a collection
//! interval are still attributed to the right service.
//!
//! Admission of comm-derived names: a process whose name is neither a kernel thread, a target,
//! a systemd unit, nor an already admitted comm is *pending* until it has made
//! `services.admit_after_syscalls` syscalls, lived `services.admit_after_seconds`, or made a
//! slow syscall (an event: counted at once, never held); then its comm is admitted (a slot,
//! within the cap). If it exits before any of these, it is `short_lived`. While pending its
//! kernel counters are held where they are (the pipeline leaves its keys out of the folds) and
//! it is in no gauge, so when the decision comes everything it did lands under one name, never
//! split between `short_lived` and its own.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::process::{ProcEvent, PROC_EXEC, PROC_EXIT};

use super::{
    containers::Identity,
    services::{
        Named, Naming, Origin, ProcessFacts, ServiceId, ServiceNames, SHORT_LIVED, UNKNOWN,
    },
};

/// When a comm-derived name is admitted (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// 0: every name at once (the cap still applies).
    pub after_syscalls: u64,
    pub after: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            after_syscalls: 0,
            after: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    name: Arc<str>,
    /// When it will have lived long enough.
    admit_at: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    service: ServiceId,
    /// Collection generation during which the exit event arrived.
    exited_in: Option<u64>,
    pending: Option<Pending>,
    /// The container it runs in.
    container: Option<Arc<Identity>>,
}

/// How a process is named: from procfs while it lives, else from what an event carried.
pub trait Resolver {
    /// The name of a live process, `None` if it has gone.
    fn resolve(&mut self, tgid: u32) -> Option<Named>;
    /// The name of a process known only by its comm.
    fn name_by_comm(&mut self, comm: &str) -> Named;
    /// The name of a process that has gone, by what its event carried (comm, cgroup id).
    fn name_gone(&mut self, comm: &str, _cgroup_id: u64) -> Named {
        self.name_by_comm(comm)
    }
}

impl Resolver for Naming {
    fn resolve(&mut self, tgid: u32) -> Option<Named> {
        ProcessFacts::from_procfs(tgid).map(|f| self.name_live(&f))
    }
    fn name_by_comm(&mut self, comm: &str) -> Named {
        self.name(&ProcessFacts {
            comm: comm.to_string(),
            ..Default::default()
        })
    }
    fn name_gone(&mut self, comm: &str, cgroup_id: u64) -> Named {
        Naming::name_gone(self, comm, cgroup_id)
    }
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: HashMap<u32, Entry>,
    admission: Admission,
}

impl ProcessTable {
    pub fn new(admission: Admission) -> Self {
        Self {
            entries: HashMap::new(),
            admission,
        }
    }

    /// The entry of a newly named process: admitted at once, or pending.
    fn place(&self, named: Named, names: &mut ServiceNames, now: Instant) -> Entry {
        let container = named.container.clone();
        let admitted = |service| Entry {
            service,
            exited_in: None,
            pending: None,
            container: container.clone(),
        };
        if named.origin != Origin::Comm {
            return admitted(names.intern(&named.name, named.origin, now));
        }
        if let Some(id) = names.lookup(&named.name) {
            return admitted(id);
        }
        let age = named.age.unwrap_or_default();
        if self.admission.after_syscalls == 0 || age >= self.admission.after {
            return admitted(names.intern(&named.name, Origin::Comm, now));
        }
        Entry {
            service: SHORT_LIVED,
            exited_in: None,
            pending: Some(Pending {
                name: named.name.into(),
                admit_at: now + (self.admission.after - age),
            }),
            container,
        }
    }

    /// Applies one lifecycle event. `generation` is the current collection generation.
    pub fn on_event(
        &mut self,
        ev: &ProcEvent,
        generation: u64,
        now: Instant,
        names: &mut ServiceNames,
        resolver: &mut impl Resolver,
    ) {
        let comm = String::from_utf8_lossy(ev.comm_bytes());
        match ev.kind {
            PROC_EXEC => {
                // Right after exec the process is alive: procfs tells its cgroup and exe.
                let named = resolver
                    .resolve(ev.tgid)
                    .unwrap_or_else(|| resolver.name_gone(&comm, ev.cgroup_id));
                let entry = self.place(named, names, now);
                self.entries.insert(ev.tgid, entry);
            }
            PROC_EXIT => {
                if !self.entries.contains_key(&ev.tgid) {
                    // Never seen alive: the exiting task's cgroup (a container's, if a live
                    // process taught it) or comm is the best name left.
                    let named = resolver.name_gone(&comm, ev.cgroup_id);
                    let entry = self.place(named, names, now);
                    self.entries.insert(ev.tgid, entry);
                }
                if let Some(e) = self.entries.get_mut(&ev.tgid) {
                    e.exited_in = Some(generation);
                }
            }
            _ => {}
        }
    }

    /// The service of `tgid`, resolving (and remembering) it if nothing named it yet
    /// ([`SHORT_LIVED`] while it is pending).
    pub fn service_of(
        &mut self,
        tgid: u32,
        now: Instant,
        names: &mut ServiceNames,
        resolver: &mut impl Resolver,
    ) -> ServiceId {
        if let Some(e) = self.entries.get(&tgid) {
            return e.service;
        }
        let entry = match resolver.resolve(tgid) {
            Some(named) => self.place(named, names, now),
            None => Entry {
                service: UNKNOWN,
                exited_in: None,
                pending: None,
                container: None,
            },
        };
        let service = entry.service;
        self.entries.insert(tgid, entry);
        service
    }

    /// The container `tgid` runs in, if the table knows it and it runs in one.
    pub fn container_of(&self, tgid: u32) -> Option<Arc<Identity>> {
        self.entries.get(&tgid).and_then(|e| e.container.clone())
    }

    pub fn is_pending(&self, tgid: u32) -> bool {
        self.entries.get(&tgid).is_some_and(|e| e.pending.is_some())
    }

    /// Processes whose name is not decided yet.
    pub fn pending(&self) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|(_, e)| e.pending.is_some())
            .map(|(&t, _)| t)
            .collect()
    }

    /// Decides a pending process that has made `syscalls` syscalls so far: admitted if it
    /// worked or lived enough (or its name was admitted meanwhile), `short_lived` if it has
    /// exited, else still pending (`None`).
    pub fn decide(
        &mut self,
        tgid: u32,
        syscalls: u64,
        now: Instant,
        names: &mut ServiceNames,
    ) -> Option<ServiceId> {
        let entry = self.entries.get_mut(&tgid)?;
        let p = entry.pending.as_ref()?;
        let service = if let Some(id) = names.lookup(&p.name) {
            id
        } else if syscalls >= self.admission.after_syscalls || now >= p.admit_at {
            names.intern(&p.name, Origin::Comm, now)
        } else if entry.exited_in.is_some() {
            SHORT_LIVED
        } else {
            return None;
        };
        entry.service = service;
        entry.pending = None;
        Some(service)
    }

    /// Admits a pending process now (it made a slow syscall); `None` if it was not pending.
    pub fn admit(
        &mut self,
        tgid: u32,
        now: Instant,
        names: &mut ServiceNames,
    ) -> Option<ServiceId> {
        let entry = self.entries.get_mut(&tgid)?;
        let p = entry.pending.take()?;
        entry.service = names.intern(&p.name, Origin::Comm, now);
        Some(entry.service)
    }

    /// Processes that have not exited (as far as events tell) and are decided, with their
    /// service: pending ones are in no gauge until decided.
    pub fn live(&self) -> impl Iterator<Item = (u32, ServiceId)> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.exited_in.is_none() && e.pending.is_none())
            .map(|(&tgid, e)| (tgid, e.service))
    }

    /// (service, container) of every decided process the table knows that runs in a
    /// container, once each: the rows of `steadfast_service_info`.
    pub fn containers(&self) -> Vec<(ServiceId, Arc<Identity>)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for e in self.entries.values() {
            if let (Some(c), None) = (&e.container, &e.pending) {
                if seen.insert((e.service, c.id.as_str())) {
                    out.push((e.service, c.clone()));
                }
            }
        }
        out
    }

    /// Ids of the containers of every process the table knows (decided or pending, alive or
    /// exited and not read yet).
    pub fn container_ids(&self) -> HashSet<&str> {
        self.entries
            .values()
            .filter_map(|e| e.container.as_deref())
            .map(|c| c.id.as_str())
            .collect()
    }

    /// Services that some process the table knows (alive, or exited and not read yet) has.
    pub fn services_in_use(&self) -> HashSet<ServiceId> {
        self.entries.values().map(|e| e.service).collect()
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

    /// Names every live process `live_name` (None: gone), and by comm as comm.
    struct Fixed(Option<(&'static str, Origin, Duration)>);
    impl Resolver for Fixed {
        fn resolve(&mut self, _: u32) -> Option<Named> {
            self.0.map(|(name, origin, age)| Named {
                name: name.into(),
                origin,
                age: Some(age),
                container: None,
            })
        }
        fn name_by_comm(&mut self, comm: &str) -> Named {
            Named {
                name: comm.into(),
                origin: Origin::Comm,
                age: None,
                container: None,
            }
        }
    }

    fn comm(name: &'static str) -> Fixed {
        Fixed(Some((name, Origin::Comm, Duration::ZERO)))
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

    fn names() -> ServiceNames {
        ServiceNames::new(10, Duration::from_secs(60))
    }

    #[test]
    fn exec_names_from_procfs_or_comm_and_exit_marks() {
        let now = Instant::now();
        let mut names = names();
        let mut t = ProcessTable::default();
        t.on_event(
            &ev(PROC_EXEC, 7, "worker"),
            1,
            now,
            &mut names,
            &mut Fixed(None),
        );
        let s = t.service_of(7, now, &mut names, &mut comm("ignored"));
        assert_eq!(names.name(s), "worker");
        let unit = Fixed(Some(("db.service", Origin::Unit, Duration::ZERO)));
        t.on_event(&ev(PROC_EXEC, 8, "x"), 1, now, &mut names, &mut { unit });
        let s8 = t.service_of(8, now, &mut names, &mut Fixed(None));
        assert_eq!(names.name(s8), "db.service");
        assert_eq!(t.live().count(), 2);

        t.on_event(
            &ev(PROC_EXIT, 7, "worker"),
            3,
            now,
            &mut names,
            &mut Fixed(None),
        );
        assert_eq!(t.live().collect::<Vec<_>>(), vec![(8, s8)]);
        assert!(t.exited_before(3).is_empty(), "not read since the exit yet");
        assert_eq!(t.exited_before(4), vec![7]);
        t.remove(7);
        assert_eq!(t.len(), 1);
        assert_eq!(t.services_in_use(), [s8].into());
    }

    #[test]
    fn unknown_when_gone_without_events_and_sweep() {
        let now = Instant::now();
        let mut names = names();
        let mut t = ProcessTable::default();
        assert_eq!(t.service_of(9, now, &mut names, &mut Fixed(None)), UNKNOWN);
        t.on_event(
            &ev(PROC_EXIT, 10, "short"),
            1,
            now,
            &mut names,
            &mut Fixed(None),
        );
        let s = t.service_of(10, now, &mut names, &mut Fixed(None));
        assert_eq!(names.name(s), "short");
        t.sweep(|_| false);
        assert_eq!(t.len(), 1, "exited entries wait for their final read");
    }

    #[test]
    fn comm_names_wait_for_work_or_age_and_short_ones_share_a_value() {
        let t0 = Instant::now();
        let mut names = names();
        let mut t = ProcessTable::new(Admission {
            after_syscalls: 1000,
            after: Duration::from_secs(10),
        });
        // A one-off command: pending, then short_lived at its exit.
        t.on_event(
            &ev(PROC_EXEC, 1, "date"),
            1,
            t0,
            &mut names,
            &mut comm("date"),
        );
        assert!(t.is_pending(1));
        assert_eq!(t.live().count(), 0, "pending processes are in no gauge");
        assert_eq!(t.decide(1, 118, t0, &mut names), None);
        t.on_event(
            &ev(PROC_EXIT, 1, "date"),
            1,
            t0,
            &mut names,
            &mut Fixed(None),
        );
        assert_eq!(t.decide(1, 118, t0, &mut names), Some(SHORT_LIVED));
        assert_eq!(names.lookup("date"), None, "no slot taken");
        // Worked enough: admitted, even after its exit.
        t.on_event(
            &ev(PROC_EXEC, 2, "busy"),
            1,
            t0,
            &mut names,
            &mut comm("busy"),
        );
        t.on_event(
            &ev(PROC_EXIT, 2, "busy"),
            1,
            t0,
            &mut names,
            &mut Fixed(None),
        );
        let busy = t.decide(2, 1000, t0, &mut names).unwrap();
        assert_eq!(names.name(busy), "busy");
        // Lived enough: admitted while quiet; the next process of that name joins at once.
        t.on_event(
            &ev(PROC_EXEC, 3, "idle"),
            1,
            t0,
            &mut names,
            &mut comm("idle"),
        );
        assert_eq!(
            t.decide(3, 0, t0 + Duration::from_secs(9), &mut names),
            None
        );
        let idle = t
            .decide(3, 0, t0 + Duration::from_secs(10), &mut names)
            .unwrap();
        assert_eq!(names.name(idle), "idle");
        assert_eq!(t.service_of(4, t0, &mut names, &mut comm("idle")), idle);
        assert!(!t.is_pending(4));
        // Started long before (found by discovery): admitted at first sight.
        let old = Fixed(Some(("sshd", Origin::Comm, Duration::from_secs(3600))));
        let s = t.service_of(5, t0, &mut names, &mut { old });
        assert_eq!(names.name(s), "sshd");
        // Units, targets and kernel threads never wait.
        let unit = Fixed(Some(("cron.service", Origin::Unit, Duration::ZERO)));
        assert_ne!(t.service_of(6, t0, &mut names, &mut { unit }), SHORT_LIVED);
        let kthread = Fixed(Some(("kernel", Origin::Kernel, Duration::ZERO)));
        assert_eq!(
            t.service_of(7, t0, &mut names, &mut { kthread }),
            super::super::services::KERNEL
        );
        assert_eq!(t.pending(), Vec::<u32>::new());
        // A slow syscall admits at once.
        t.on_event(
            &ev(PROC_EXEC, 8, "fsyncer"),
            1,
            t0,
            &mut names,
            &mut comm("fsyncer"),
        );
        assert!(t.is_pending(8));
        let s = t.admit(8, t0, &mut names).unwrap();
        assert_eq!(names.name(s), "fsyncer");
        assert_eq!(t.admit(8, t0, &mut names), None, "decided already");
    }

    #[test]
    fn procfs_lists_this_process() {
        assert!(procfs_tgids().contains(&std::process::id()));
    }
}

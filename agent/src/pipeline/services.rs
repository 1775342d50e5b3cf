//! Service names: the `kernel` for kernel threads, the first matching `targets` entry, the
//! container's name when a process runs in a container (see [`super::containers`]), the
//! systemd unit when a process runs in a `*.service` cgroup, else its comm.
//!
//! How the `service` label stays bounded (README, "Services"):
//! - four built-in values never take a slot: `other` (past the cap), `unknown` (gone before
//!   anything named it), `kernel` (every kernel thread) and `short_lived` (processes whose
//!   comm was not admitted, see `ProcessTable`);
//! - `targets` services and systemd units always get their own value and do not count against
//!   `services.max_services`: the cap is for comm-derived names only; past it, processes are
//!   `other`, counted by `steadfast_services_overflow_total`, and logged once;
//! - container-derived names have a cap of their own, of the same size (a host's own commands
//!   cannot starve its containers of names, nor the reverse);
//! - a name with no live process for `services.idle_release_seconds` is released: the pipeline
//!   drops every series of its id first, and ids are never reused, so no series can carry an
//!   old meaning; if the name comes back it gets a new id and its counters start from 0.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use super::containers::{
    cgroup_path_of_id, container_cgroup_id, parse_cgroup_file, parse_path, ContainerRef,
    Containers, Identity, CACHE_CAPACITY,
};
use crate::config::Target;

/// Index of a service name in [`ServiceNames`]. Never reused for another name.
pub type ServiceId = u32;

/// Label for comm-derived names past the cap.
pub const OTHER: ServiceId = 0;
/// Label for processes that were gone before anything named them.
pub const UNKNOWN: ServiceId = 1;
/// Label for every kernel thread.
pub const KERNEL: ServiceId = 2;
/// Label for processes whose comm-derived name was not admitted (they exited before they had
/// lived or worked enough).
pub const SHORT_LIVED: ServiceId = 3;

const BUILTIN: [&str; 4] = ["other", "unknown", "kernel", "short_lived"];

/// Where a name came from: comm- and container-derived names count against the cap (each
/// against its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Kernel,
    Target,
    Unit,
    Comm,
    Container,
}

/// A process's name and what decides how it is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub origin: Origin,
    /// How long the process has lived, when procfs told.
    pub age: Option<Duration>,
    /// The container it runs in (whatever named it).
    pub container: Option<Arc<Identity>>,
}

#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    origin: Origin,
    /// When a live process last had this name.
    last_live: Instant,
}

/// Interned service names: built-ins, then admitted names, each until it is idle long enough.
#[derive(Debug)]
pub struct ServiceNames {
    cap: usize,
    idle_release: Duration,
    ids: HashMap<Arc<str>, ServiceId>,
    slots: HashMap<ServiceId, Slot>,
    next: ServiceId,
    /// Comm-derived names admitted now.
    comm_names: usize,
    /// Container-derived names admitted now.
    container_names: usize,
    overflow: u64,
    released: u64,
    warned: bool,
    warned_containers: bool,
}

impl ServiceNames {
    /// `cap` comm-derived names at once; a name is released after `idle_release` without a
    /// live process.
    pub fn new(cap: usize, idle_release: Duration) -> Self {
        let mut s = Self {
            cap,
            idle_release,
            ids: HashMap::new(),
            slots: HashMap::new(),
            next: BUILTIN.len() as ServiceId,
            comm_names: 0,
            container_names: 0,
            overflow: 0,
            released: 0,
            warned: false,
            warned_containers: false,
        };
        for (id, name) in BUILTIN.iter().enumerate() {
            s.ids.insert((*name).into(), id as ServiceId);
        }
        s
    }

    /// The id of an admitted (or built-in) name.
    pub fn lookup(&self, name: &str) -> Option<ServiceId> {
        self.ids.get(name).copied()
    }

    /// The id of `name`, admitting it; a comm-derived name past the cap is [`OTHER`] (counted
    /// and logged once). `kernel` is always [`KERNEL`].
    pub fn intern(&mut self, name: &str, origin: Origin, now: Instant) -> ServiceId {
        if origin == Origin::Kernel {
            return KERNEL;
        }
        if let Some(id) = self.lookup(name) {
            return id;
        }
        let full = match origin {
            Origin::Comm => self.comm_names >= self.cap,
            Origin::Container => self.container_names >= self.cap,
            _ => false,
        };
        if full {
            self.overflow += 1;
            if origin == Origin::Comm && !self.warned {
                self.warned = true;
                tracing::warn!(
                    cap = self.cap,
                    first = name,
                    "services.max_services comm-derived names are in use: processes with new \
                     names are reported as service=\"other\" until names are released \
                     (steadfast_services_overflow_total counts them; this is logged once)"
                );
            }
            if origin == Origin::Container && !self.warned_containers {
                self.warned_containers = true;
                tracing::warn!(
                    cap = self.cap,
                    first = name,
                    "services.max_services container-derived names are in use: processes of \
                     containers with new names are reported as service=\"other\" until names \
                     are released (steadfast_services_overflow_total counts them; this is \
                     logged once)"
                );
            }
            return OTHER;
        }
        let id = self.next;
        self.next = self.next.checked_add(1).expect("2^32 service names");
        let name: Arc<str> = name.into();
        self.ids.insert(name.clone(), id);
        self.slots.insert(
            id,
            Slot {
                name,
                origin,
                last_live: now,
            },
        );
        match origin {
            Origin::Comm => self.comm_names += 1,
            Origin::Container => self.container_names += 1,
            _ => {}
        }
        id
    }

    pub fn name(&self, id: ServiceId) -> &str {
        match BUILTIN.get(id as usize) {
            Some(n) => n,
            None => self.slots.get(&id).map_or("unknown", |s| &s.name),
        }
    }

    /// Releases the names that had no live process (none in `live`) for the idle time, and
    /// returns their ids: the caller drops their series.
    pub fn release_idle(&mut self, live: &HashSet<ServiceId>, now: Instant) -> Vec<ServiceId> {
        let mut gone = Vec::new();
        for (&id, slot) in &mut self.slots {
            if live.contains(&id) {
                slot.last_live = now;
            } else if now.saturating_duration_since(slot.last_live) >= self.idle_release {
                gone.push(id);
            }
        }
        for id in &gone {
            if let Some(slot) = self.slots.remove(id) {
                self.ids.remove(&slot.name);
                match slot.origin {
                    Origin::Comm => self.comm_names -= 1,
                    Origin::Container => self.container_names -= 1,
                    _ => {}
                }
                self.released += 1;
            }
        }
        gone
    }

    /// Processes reported as `other` because the cap was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// How long a name is kept without a live process.
    pub fn idle_release(&self) -> Duration {
        self.idle_release
    }

    /// Names released after their idle time.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Names admitted now (built-ins excluded).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The cgroup path in a `/proc/<pid>/cgroup` file, preferring the unified (v2) hierarchy and
/// falling back to the v1 `name=systemd` one.
pub fn cgroup_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            text.lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })
        .map(str::trim)
}

/// The innermost `*.service` unit of a cgroup path.
pub fn innermost_unit(path: &str) -> Option<&str> {
    path.rsplit('/')
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
}

/// The innermost `*.service` unit in a `/proc/<pid>/cgroup` file.
pub fn unit_from_cgroup_file(text: &str) -> Option<&str> {
    cgroup_path(text).and_then(innermost_unit)
}

/// What is known about a process when naming it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub comm: String,
    /// `/proc/<pid>/exe`, when the process is alive and readable.
    pub exe: Option<String>,
    /// Cgroup v2 path (or the v1 `name=systemd` one).
    pub cgroup: Option<String>,
    /// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags.
    pub kernel_thread: bool,
    /// Time since the process started, from `/proc/<pid>/stat`.
    pub age: Option<Duration>,
    /// The container its cgroup names, if any.
    pub container: Option<ContainerRef>,
    /// The kernel's id of its v2 cgroup when that is the container's (see
    /// [`container_cgroup_id`]).
    pub container_cgroup: Option<u64>,
}

/// `PF_KTHREAD` (include/linux/sched.h): the task is a kernel thread. Stable since 2.6.
const PF_KTHREAD: u64 = 0x0020_0000;

/// (kernel thread, start time in clock ticks since boot) from a `/proc/<pid>/stat` line. The
/// comm (field 2) may hold spaces and parentheses: fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<(bool, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]: flags is field 9, starttime field 22.
    let flags: u64 = fields.get(6)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some((flags & PF_KTHREAD != 0, start))
}

/// Time since boot (CLOCK_BOOTTIME, the clock of `/proc/<pid>/stat`'s start time).
fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME exists since 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

impl ProcessFacts {
    /// Reads a live process from procfs; `None` if it has gone.
    pub fn from_procfs(tgid: u32) -> Option<Self> {
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok()?;
        let cgroup_file = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok();
        let cgroup = cgroup_file
            .as_deref()
            .and_then(|t| cgroup_path(t).map(str::to_string));
        let container = cgroup_file.as_deref().and_then(parse_cgroup_file);
        let container_cgroup = container
            .as_ref()
            .and(cgroup_file.as_deref())
            .and_then(container_cgroup_id);
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t));
        let age = stat.map(|(_, start)| {
            let ticks = clock_ticks();
            let started = Duration::from_secs(start / ticks)
                + Duration::from_nanos((start % ticks) * 1_000_000_000 / ticks);
            since_boot().saturating_sub(started)
        });
        Some(Self {
            comm: comm.trim_end_matches('\n').to_string(),
            exe,
            cgroup,
            // kthreadd (pid 2) and its children; the flag says it for all of them.
            kernel_thread: stat.is_some_and(|(k, _)| k) || tgid == 2,
            age,
            container,
            container_cgroup,
        })
    }

    pub fn unit(&self) -> Option<&str> {
        self.cgroup.as_deref().and_then(innermost_unit)
    }
}

/// Names processes: the first matching target's service, else the container's name, else the
/// systemd unit, else comm.
#[derive(Debug, Default, Clone)]
pub struct Naming {
    targets: Vec<Target>,
    containers: Containers,
    /// Containers by the kernel id of their cgroup, learnt from live processes, to name a
    /// process that was gone before its exec event was read (events carry the cgroup id).
    /// Bounded: past [`CACHE_CAPACITY`], ids whose container no process holds are dropped,
    /// and if none can be the new one is not kept.
    by_cgroup: HashMap<u64, Arc<Identity>>,
    /// Cgroup ids known to be no container's.
    not_containers: HashSet<u64>,
}

impl Naming {
    pub fn new(targets: Vec<Target>) -> Self {
        Self {
            targets,
            containers: Containers::default(),
            by_cgroup: HashMap::new(),
            not_containers: HashSet::new(),
        }
    }

    /// Remembers the container of a cgroup id.
    fn learn_cgroup(&mut self, id: u64, identity: &Arc<Identity>) {
        if self.by_cgroup.contains_key(&id) {
            return;
        }
        self.not_containers.remove(&id);
        if self.by_cgroup.len() >= CACHE_CAPACITY {
            // Held by this map and the container cache only: no process has it.
            self.by_cgroup.retain(|_, i| Arc::strong_count(i) > 2);
        }
        if self.by_cgroup.len() < CACHE_CAPACITY {
            self.by_cgroup.insert(id, identity.clone());
        }
    }

    /// Names a process that has gone, from what its event carried: the container of its
    /// cgroup (taught by a live process, else found from the cgroup id once), else its comm.
    pub fn name_gone(&mut self, comm: &str, cgroup_id: u64) -> Named {
        let facts = ProcessFacts {
            comm: comm.to_string(),
            ..Default::default()
        };
        let container = self.container_of_cgroup(cgroup_id);
        self.name_in(&facts, container)
    }

    /// The container whose cgroup has kernel id `id`: learnt from live processes, else looked
    /// up once by the id (`open_by_handle_at`); ids that are no container's are remembered
    /// too (bounded, forgotten all at once when full).
    fn container_of_cgroup(&mut self, id: u64) -> Option<Arc<Identity>> {
        if id == 0 || self.not_containers.contains(&id) {
            return None;
        }
        if let Some(c) = self.by_cgroup.get(&id) {
            return Some(c.clone());
        }
        let found = cgroup_path_of_id(id).and_then(|p| parse_path(&p));
        match found {
            Some(r) => {
                let c = self.containers.identify(&r);
                self.learn_cgroup(id, &c);
                Some(c)
            }
            None => {
                if self.not_containers.len() >= CACHE_CAPACITY {
                    self.not_containers.clear();
                }
                self.not_containers.insert(id);
                None
            }
        }
    }

    /// Names containers from the runtimes' files under another root.
    pub fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = containers;
        self
    }

    pub fn containers(&self) -> &Containers {
        &self.containers
    }

    /// Forgets the containers that no process (none in `held`, by container id) has had for
    /// `idle`, with their cgroup ids (see [`Containers::release_idle`]); returns how many.
    pub fn release_idle(&mut self, held: &HashSet<&str>, now: Instant, idle: Duration) -> usize {
        let gone = self.containers.release_idle(held, now, idle);
        let containers = &self.containers;
        self.by_cgroup
            .retain(|_, i| held.contains(i.id.as_str()) || containers.contains(&i.id));
        gone
    }

    /// Cgroup ids whose container is known.
    pub fn cgroups_known(&self) -> usize {
        self.by_cgroup.len()
    }

    /// Names a live process, identifying its container (from the cache, or the runtime's
    /// files at its first process).
    pub fn name_live(&mut self, facts: &ProcessFacts) -> Named {
        let container = facts
            .container
            .as_ref()
            .map(|r| self.containers.identify(r));
        if let (Some(id), Some(c)) = (facts.container_cgroup, &container) {
            self.learn_cgroup(id, c);
        }
        self.name_in(facts, container)
    }

    /// The first target a process matches, with its index in the configured list.
    pub fn target_of(&mut self, facts: &ProcessFacts) -> Option<(usize, &Target)> {
        let container = facts
            .container
            .as_ref()
            .map(|r| self.containers.identify(r));
        self.targets
            .iter()
            .enumerate()
            .find(|(_, t)| matches(t, facts, container.as_deref()))
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Kernel threads are `kernel` (before targets: a target's `cgroup: /` would match them);
    /// a process known only by its comm is a kernel thread if the comm has a `/` (`kworker/0:1`,
    /// `ksoftirqd/3`): a program's comm is a file name, which cannot.
    pub fn name(&self, facts: &ProcessFacts) -> Named {
        self.name_in(facts, None)
    }

    /// [`Self::name`] for a process in `container`: a container's processes never take
    /// comm-derived (nor unit) names.
    pub fn name_in(&self, facts: &ProcessFacts, container: Option<Arc<Identity>>) -> Named {
        let known_only_by_comm = facts.exe.is_none() && facts.cgroup.is_none();
        let (name, origin) =
            if facts.kernel_thread || (known_only_by_comm && facts.comm.contains('/')) {
                ("kernel".to_string(), Origin::Kernel)
            } else if let Some(t) = self
                .targets
                .iter()
                .find(|t| matches(t, facts, container.as_deref()))
            {
                (t.service.clone(), Origin::Target)
            } else if let Some(c) = &container {
                (c.service(), Origin::Container)
            } else if let Some(unit) = facts.unit() {
                (unit.to_string(), Origin::Unit)
            } else {
                (facts.comm.clone(), Origin::Comm)
            };
        Named {
            name,
            origin,
            age: facts.age,
            container,
        }
    }
}

/// Every criterion the target gives must match; a fact that is unknown does not match.
fn matches(t: &Target, f: &ProcessFacts, container: Option<&Identity>) -> bool {
    let named = |want: &Option<String>, got: fn(&Identity) -> Option<&str>| {
        want.as_deref()
            .is_none_or(|w| container.and_then(got).is_some_and(|g| g == w))
    };
    t.comm.as_ref().is_none_or(|c| *c == f.comm)
        && t.exe.as_ref().is_none_or(|e| f.exe.as_ref() == Some(e))
        && t.cgroup.as_ref().is_none_or(|c| {
            f.cgroup.as_deref().is_some_and(|p| {
                p == c || (p.starts_with(c.as_str()) && p.as_bytes().get(c.len()) == Some(&b'/'))
            })
        })
        && t.unit.as_ref().is_none_or(|u| f.unit() == Some(u))
        && named(&t.container, |i| i.container.as_deref())
        && named(&t.namespace, |i| i.namespace.as_deref())
        && t.pod.as_deref().is_none_or(|w| {
            container
                .and_then(|i| i.pod.as_deref())
                .is_some_and(|p| p == w || super::containers::workload_of(p) == w)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_counts_comm_names_only_and_sends_the_rest_to_other() {
        let now = Instant::now();
        let mut s = ServiceNames::new(2, Duration::from_secs(60));
        let a = s.intern("a", Origin::Comm, now);
        let b = s.intern("b", Origin::Comm, now);
        assert_ne!(a, b);
        assert_eq!(s.intern("c", Origin::Comm, now), OTHER);
        assert_eq!(s.intern("d", Origin::Comm, now), OTHER);
        assert_eq!(s.overflow(), 2);
        let unit = s.intern("db.service", Origin::Unit, now);
        let target = s.intern("api", Origin::Target, now);
        assert!(![OTHER, a, b].contains(&unit) && ![OTHER, a, b, unit].contains(&target));
        assert_eq!(s.intern("ksoftirqd/0", Origin::Kernel, now), KERNEL);
        assert_eq!(s.intern("a", Origin::Comm, now), a);
        assert_eq!(s.name(a), "a");
        assert_eq!(s.name(unit), "db.service");
        for (id, name) in [
            (OTHER, "other"),
            (UNKNOWN, "unknown"),
            (KERNEL, "kernel"),
            (SHORT_LIVED, "short_lived"),
        ] {
            assert_eq!(s.name(id), name);
        }
    }

    #[test]
    fn idle_names_are_released_and_ids_never_reused() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let mut s = ServiceNames::new(1, idle);
        let a = s.intern("a", Origin::Comm, t0);
        let u = s.intern("u.service", Origin::Unit, t0);
        let live: HashSet<_> = [u].into();
        assert!(s.release_idle(&live, t0 + idle / 2).is_empty());
        assert_eq!(s.release_idle(&live, t0 + idle), vec![a]);
        assert_eq!(s.released(), 1);
        assert_eq!(s.lookup("a"), None);
        // The slot is free again, under a new id.
        let b = s.intern("b", Origin::Comm, t0 + idle);
        assert!(b != a && b != u && b != OTHER);
        assert_eq!(s.name(a), "unknown", "a released id names nothing");
        // The unit was live until t0 + idle: released one idle time later.
        assert!(s
            .release_idle(&HashSet::new(), t0 + idle * 2 - Duration::from_millis(1))
            .is_empty());
        let mut gone = s.release_idle(&HashSet::new(), t0 + idle * 2);
        gone.sort();
        assert_eq!(gone, vec![u, b]);
        assert!(s.is_empty());
        for id in BUILTIN.iter().filter_map(|n| s.lookup(n)) {
            assert_eq!(
                s.name(id),
                BUILTIN[id as usize],
                "built-ins are never released"
            );
        }
    }

    #[test]
    fn stat_flags_and_start_time() {
        // A comm with a space and a parenthesis, then the fields of a kernel thread.
        let line = "7 (a b) c) S 2 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        assert_eq!(parse_stat(line), Some((true, 42)));
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (kthread, start) = parse_stat(&me).unwrap();
        assert!(!kthread && start > 0);
        let f = ProcessFacts::from_procfs(std::process::id()).unwrap();
        assert!(!f.kernel_thread);
        assert!(f.age.unwrap() < Duration::from_secs(3600));
        let kthreadd = ProcessFacts::from_procfs(2).unwrap();
        assert!(kthreadd.kernel_thread, "{kthreadd:?}");
        let naming = Naming::default();
        assert_eq!(naming.name(&kthreadd).origin, Origin::Kernel);
        let by_comm = |comm: &str| {
            naming
                .name(&ProcessFacts {
                    comm: comm.into(),
                    ..Default::default()
                })
                .origin
        };
        assert_eq!(by_comm("kworker/0:1"), Origin::Kernel);
        assert_eq!(by_comm("date"), Origin::Comm);
    }

    #[test]
    fn targets_win_over_units_and_comm() {
        let target =
            |service: &str, comm: Option<&str>, exe: Option<&str>, cgroup: Option<&str>| Target {
                service: service.into(),
                comm: comm.map(Into::into),
                exe: exe.map(Into::into),
                cgroup: cgroup.map(Into::into),
                ..Target::named(service)
            };
        let naming_ = Naming::new(vec![
            target("api", Some("api-bin"), Some("/usr/bin/api-bin"), None),
            target("batch", None, None, Some("/system.slice/batch")),
        ]);
        let facts = |comm: &str, exe: Option<&str>, cgroup: Option<&str>| ProcessFacts {
            comm: comm.into(),
            exe: exe.map(Into::into),
            cgroup: cgroup.map(Into::into),
            ..Default::default()
        };
        let naming = |n: &Naming, f: &ProcessFacts| {
            let named = n.name(f);
            assert_eq!(named.age, None);
            named.name
        };
        assert_eq!(
            naming(&naming_, &facts("api-bin", Some("/usr/bin/api-bin"), None)),
            "api"
        );
        assert_eq!(
            naming(&naming_, &facts("api-bin", Some("/opt/api-bin"), None)),
            "api-bin",
            "every given criterion must match"
        );
        assert_eq!(
            naming(
                &naming_,
                &facts("x", None, Some("/system.slice/batch/job.service"))
            ),
            "batch"
        );
        assert_eq!(
            naming(
                &naming_,
                &facts("x", None, Some("/system.slice/batchy.service"))
            ),
            "batchy.service",
            "a prefix matches whole path components only"
        );
        assert_eq!(
            naming(&naming_, &facts("sh", None, Some("/user.slice"))),
            "sh"
        );
    }

    #[test]
    fn containers_are_named_by_target_else_container_never_by_comm_or_unit() {
        use super::super::containers::{parse_cgroup_file, Runtime};
        let id = "3f4e2c1b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
        let path = format!("/machine.slice/libpod-{id}.scope/system.slice/app.service");
        let facts = |comm: &str| ProcessFacts {
            comm: comm.into(),
            cgroup: Some(path.clone()),
            container: parse_cgroup_file(&format!("0::{path}\n")),
            ..Default::default()
        };
        assert_eq!(facts("server").container.unwrap().runtime, Runtime::Podman);
        let target = Target {
            comm: Some("special".into()),
            ..Target::named("picked")
        };
        let mut naming = Naming::new(vec![target])
            .with_containers(Containers::new("/nonexistent-metadata-root", 8));
        let server = naming.name_live(&facts("server"));
        assert_eq!(
            (server.name.as_str(), server.origin),
            ("container-3f4e2c1b0a9d", Origin::Container),
            "a unit inside the container does not name it"
        );
        assert_eq!(server.container.as_ref().unwrap().id, id);
        let other_comm = naming.name_live(&facts("worker"));
        assert_eq!(other_comm.name, server.name, "one container, one service");
        let picked = naming.name_live(&facts("special"));
        assert_eq!(
            (picked.name.as_str(), picked.origin),
            ("picked", Origin::Target)
        );
        assert!(
            picked.container.is_some(),
            "still known to be in the container"
        );
        assert_eq!(naming.containers().stats().lookups, 1, "cached");
        // Gone before anything read it: by its cgroup's container when a live process taught
        // it (none here: this host's cgroup ids are not in these facts), else by comm.
        let gone = naming.name_gone("server", 12345);
        assert_eq!((gone.name.as_str(), gone.origin), ("server", Origin::Comm));
        naming.learn_cgroup(12345, server.container.as_ref().unwrap());
        let gone = naming.name_gone("server", 12345);
        assert_eq!(
            (gone.name.as_str(), gone.origin),
            ("container-3f4e2c1b0a9d", Origin::Container)
        );

        // Container names have a cap of their own.
        let now = Instant::now();
        let mut names = ServiceNames::new(1, Duration::from_secs(60));
        let c = names.intern("shop/checkout", Origin::Container, now);
        let comm = names.intern("sshd", Origin::Comm, now);
        assert!(![OTHER, c].contains(&comm));
        assert_eq!(names.intern("pay/ledger", Origin::Container, now), OTHER);
        assert_eq!(names.overflow(), 1);
    }

    #[test]
    fn stopped_containers_are_forgotten_after_the_idle_time() {
        use super::super::containers::Runtime;
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let id = |n: u8| format!("{n:064x}");
        let facts = |n: u8| {
            let path = format!("/system.slice/docker-{}.scope", id(n));
            ProcessFacts {
                comm: "server".into(),
                cgroup: Some(path.clone()),
                container: parse_cgroup_file(&format!("0::{path}\n")),
                container_cgroup: Some((1 << 40) + u64::from(n)),
                ..Default::default()
            }
        };
        let mut naming =
            Naming::default().with_containers(Containers::new("/nonexistent-metadata-root", 8));
        for n in 0..5 {
            let named = naming.name_live(&facts(n));
            assert_eq!(named.container.unwrap().runtime, Runtime::Docker);
        }
        assert_eq!((naming.containers().len(), naming.cgroups_known()), (5, 5));
        // Containers 0 and 1 still have a process; the others stopped.
        let (a, b) = (id(0), id(1));
        let held: HashSet<&str> = [a.as_str(), b.as_str()].into();
        assert_eq!(naming.release_idle(&held, t0 + idle / 2, idle), 0);
        assert_eq!(naming.containers().len(), 5, "not idle long enough");
        assert_eq!(naming.release_idle(&held, t0 + idle * 2, idle), 3);
        assert_eq!((naming.containers().len(), naming.cgroups_known()), (2, 2));
        assert!(naming.containers().contains(&a) && !naming.containers().contains(&id(2)));
        // A forgotten container's one-off is not named from its cgroup id any more (the
        // cgroup is gone with the container), and a new process of it reads its files again.
        assert_eq!(
            naming.name_gone("server", (1 << 40) + 2).origin,
            Origin::Comm
        );
        let lookups = naming.containers().stats().lookups;
        naming.name_live(&facts(2));
        assert_eq!(naming.containers().stats().lookups, lookups + 1);
        // Container 2 was read again at about t0 (the real clock), idle since; the held ones
        // were seen at t0 + 2 idle: kept until one idle time after that.
        let none = HashSet::new();
        let almost = t0 + idle * 3 - Duration::from_millis(1);
        assert_eq!(naming.release_idle(&none, almost, idle), 1);
        assert!(!naming.containers().contains(&id(2)));
        assert_eq!(naming.release_idle(&none, t0 + idle * 3, idle), 2);
        assert!(naming.containers().is_empty());
        assert_eq!(naming.cgroups_known(), 0);
    }

    #[test]
    fn targets_match_container_pod_and_namespace() {
        use super::super::containers::Runtime;
        let pod = |ns: &str, pod: &str, container: &str| Identity {
            id: "0".repeat(64),
            runtime: Runtime::Containerd,
            pod_uid: None,
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            container: Some(container.into()),
        };
        let naming = Naming::new(vec![
            Target {
                namespace: Some("shop".into()),
                pod: Some("checkout".into()),
                container: Some("proxy".into()),
                ..Target::named("checkout-proxy")
            },
            Target {
                pod: Some("db-0".into()),
                ..Target::named("primary")
            },
            Target {
                namespace: Some("batch".into()),
                ..Target::named("batch")
            },
        ]);
        let f = ProcessFacts {
            comm: "envoy".into(),
            ..Default::default()
        };
        let name = |i: Option<Identity>| naming.name_in(&f, i.map(Arc::new)).name;
        assert_eq!(
            name(Some(pod("shop", "checkout-7d9f8b6c5d-x2x4z", "proxy"))),
            "checkout-proxy",
            "the pod by its workload's name"
        );
        assert_eq!(
            name(Some(pod("shop", "checkout-7d9f8b6c5d-x2x4z", "server"))),
            "shop/checkout",
            "every criterion must match"
        );
        assert_eq!(name(Some(pod("data", "db-0", "postgres"))), "primary");
        assert_eq!(name(Some(pod("data", "db-1", "postgres"))), "data/db");
        assert_eq!(name(Some(pod("batch", "x-28912345-b2c4d", "job"))), "batch");
        assert_eq!(
            name(None),
            "envoy",
            "no container: container criteria never match"
        );
    }

    #[test]
    fn units_from_cgroup_files() {
        assert_eq!(
            unit_from_cgroup_file("0::/system.slice/nginx.service\n"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_from_cgroup_file(
                "0::/user.slice/user-0.slice/user@0.service/app.slice/x.service\n"
            ),
            Some("x.service")
        );
        assert_eq!(
            unit_from_cgroup_file("12:cpu:/\n1:name=systemd:/system.slice/cron.service\n0::/\n"),
            None,
            "the unified line wins when present"
        );
        assert_eq!(
            unit_from_cgroup_file("1:name=systemd:/system.slice/cron.service\n"),
            Some("cron.service")
        );
        assert_eq!(
            unit_from_cgroup_file("0::/user.slice/session-1.scope\n"),
            None
        );
        assert_eq!(unit_from_cgroup_file(""), None);
    }
}

//! Which processes get uprobes: targets that opt in (`allocations: true`; `goroutines: true`,
//! the default, for Go programs). The pipeline calls this on every exec, exit and discovered
//! process; an [`Attacher`] (the eBPF module in the daemon, a fake in tests) acts.
//!
//! - Allocations: attached per process (pid-scoped, so only that process pays for the traps),
//!   as soon as its exec event is read. Calls made before that are not seen.
//! - Goroutines: a target that names an `exe` which is a Go program gets the probes on the
//!   *file* at start-up (or when the file first shows up running): every process of that
//!   binary started afterwards is counted from its first instruction, so its gauge is exact.
//!   Other matches get a pid-scoped attachment when seen, and count from then on. A file is
//!   known by device and inode, not path: a binary replaced at the same path (a redeploy) is
//!   another file and gets its own attachment; the old one is detached once no process runs
//!   it and its path names another file.
//! - With `probes.go.all_processes`, every Go process that no target claims gets the
//!   goroutine probes too, on its file (by device and inode, like an `exe` target).
//! - With `probes.go.gc_all_processes` (off by default), every Go process that no target claims
//!   and that has no goroutine probes gets the GC probes alone, on its file. A file has the GC
//!   probes once: goroutine probes attached later to a file (or a process of it) that has
//!   them already are the goroutine half only, so no GC cycle is counted twice.
//! - A process the goroutine probes reach after it started (running before the agent, or
//!   matched other than by `exe`) is queued to be seeded from its memory
//!   ([`UprobeTargets::take_seeds`], `go_seed`); one started after its file's probes were
//!   attached is counted from its first instruction and needs none.
//! - At most `max_attachments` attachments at once; failures (limit included) are counted per
//!   probe and logged once per target and probe, never fatal. Pid-scoped attachments are
//!   detached when their process exits or execs another program.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{go_elf::is_go_binary, services::ProcessFacts};
use crate::{config::Target, ebpf::GoSet};

/// The probe sets, as `probe` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    Allocations,
    Goroutines,
    /// The GC probes alone (`probes.go.gc_all_processes`).
    Gc,
}

impl Probe {
    pub const fn label(self) -> &'static str {
        match self {
            Probe::Allocations => "allocations",
            Probe::Goroutines => "goroutines",
            Probe::Gc => "gc",
        }
    }
}

/// What attaches the probes (the eBPF module in the daemon).
pub trait Attacher {
    type Links;
    fn attach_allocations(&mut self, pid: u32) -> Result<Self::Links, String>;
    /// The Go probes `set` on `exe`; `pid` None: every process running it.
    fn attach_go(
        &mut self,
        exe: &Path,
        pid: Option<u32>,
        set: GoSet,
    ) -> Result<Self::Links, String>;
    fn detach(&mut self, links: Self::Links);
}

impl Attacher for crate::ebpf::Uprobes {
    type Links = crate::ebpf::LinkSet;
    fn attach_allocations(&mut self, pid: u32) -> Result<Self::Links, String> {
        crate::ebpf::Uprobes::attach_allocations(self, pid).map_err(|e| e.to_string())
    }
    fn attach_go(
        &mut self,
        exe: &Path,
        pid: Option<u32>,
        set: GoSet,
    ) -> Result<Self::Links, String> {
        crate::ebpf::Uprobes::attach_go(self, exe, pid, set).map_err(|e| e.to_string())
    }
    fn detach(&mut self, links: Self::Links) {
        crate::ebpf::Uprobes::detach(self, links)
    }
}

/// Is this executable a Go program? (procfs and ELF in the daemon, a fake in tests.)
pub type GoCheck = fn(&Path) -> bool;

pub fn go_check(path: &Path) -> bool {
    is_go_binary(path).unwrap_or(false)
}

/// Identity of a file: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Now on the boot-time clock, in the clock ticks procfs gives start times in.
fn boot_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec, which lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    (ns as u128 * hz as u128 / 1_000_000_000) as u64
}

/// A process's start time (field 22 of `/proc/<pid>/stat`, after the parenthesised comm).
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[derive(Debug)]
pub struct UprobeTargets<L> {
    max_attachments: usize,
    /// Go executables with file-wide goroutine probes, with the target's path.
    files: HashMap<FileId, (PathBuf, L)>,
    /// When each file's probes were attached (boot-time clock ticks, as procfs' start times).
    attached_at: HashMap<FileId, u64>,
    /// Every Go process, not only targets (`probes.go.all_processes`).
    all_processes: bool,
    /// The GC probes on every Go process (`probes.go.gc_all_processes`).
    gc_all_processes: bool,
    /// Go executables with file-wide GC probes alone, with the path they were found by.
    gc_files: HashMap<FileId, (PathBuf, L)>,
    /// Processes probed after they started, to be seeded.
    to_seed: Vec<u32>,
    /// Pid-scoped attachments.
    processes: HashMap<(u32, Probe), L>,
    /// Processes already considered (until they exit or exec).
    seen: HashSet<u32>,
    failures: BTreeMap<Probe, u64>,
    /// (target index, probe) whose failure was logged.
    logged: HashSet<(usize, Probe)>,
    is_go: GoCheck,
    /// procfs (a directory of `<tgid>/exe` links in tests).
    proc: PathBuf,
}

impl<L> UprobeTargets<L> {
    pub fn new(
        max_attachments: u32,
        is_go: GoCheck,
        all_processes: bool,
        gc_all_processes: bool,
    ) -> Self {
        Self {
            max_attachments: max_attachments as usize,
            files: HashMap::new(),
            attached_at: HashMap::new(),
            all_processes,
            gc_all_processes,
            gc_files: HashMap::new(),
            to_seed: Vec::new(),
            processes: HashMap::new(),
            seen: HashSet::new(),
            failures: BTreeMap::new(),
            logged: HashSet::new(),
            is_go,
            proc: PathBuf::from("/proc"),
        }
    }

    #[cfg(test)]
    fn with_proc(mut self, proc: &Path) -> Self {
        self.proc = proc.to_path_buf();
        self
    }

    /// A process's executable: procfs' link reaches the file it runs even inside another
    /// mount namespace, or when its path now names another file.
    fn exe_link(&self, tgid: u32) -> PathBuf {
        self.proc.join(tgid.to_string()).join("exe")
    }

    /// At start-up: file-wide goroutine probes on every target `exe` that is a Go program.
    pub fn start<A: Attacher<Links = L>>(&mut self, targets: &[Target], a: &mut A) {
        for (i, t) in targets.iter().enumerate() {
            let Some(exe) = t.exe.as_deref().filter(|_| t.goroutines) else {
                continue;
            };
            let path = Path::new(exe);
            if let Some(id) = file_id(path).filter(|_| (self.is_go)(path)) {
                self.attach_file(Some((i, t)), id, path, exe, a);
            }
        }
    }

    /// A process matching `target` (index `i`; None: no target) was seen alive: attach what
    /// it opts in to (or, with `all_processes`, the goroutine probes if it is Go). Each
    /// process is considered once until it exits or execs.
    pub fn on_process<A: Attacher<Links = L>>(
        &mut self,
        tgid: u32,
        facts: &ProcessFacts,
        target: Option<(usize, &Target)>,
        a: &mut A,
    ) {
        if !self.seen.insert(tgid) {
            return;
        }
        if let Some((i, t)) = target {
            tracing::debug!(tgid, service = %t.service, "target process seen");
            if t.allocations && !self.processes.contains_key(&(tgid, Probe::Allocations)) {
                let r = self.reserve().and_then(|()| a.attach_allocations(tgid));
                self.record(Some((i, t)), Probe::Allocations, r, |s, l| {
                    s.processes.insert((tgid, Probe::Allocations), l);
                });
            }
        }
        let wanted = match target {
            Some((_, t)) => t.goroutines,
            None => self.all_processes,
        };
        let gc_only = !wanted && target.is_none() && self.gc_all_processes;
        if !wanted && !gc_only {
            return;
        }
        let link = self.exe_link(tgid);
        let Some(id) = file_id(&link) else { return };
        if let Some(&at) = self.attached_at.get(&id) {
            // Covered by the file-wide probes: from its first instruction if it started after
            // they were attached.
            if wanted && self.started_by(tgid, at) {
                self.to_seed.push(tgid);
            }
            return;
        }
        if (gc_only && self.gc_files.contains_key(&id)) || !(self.is_go)(&link) {
            return;
        }
        let path = || {
            facts
                .exe
                .as_deref()
                .map_or_else(|| link.clone(), PathBuf::from)
                .to_string_lossy()
                .into_owned()
        };
        if gc_only || self.gc_all_processes {
            // The GC probes of this file, once (goroutine probes below are then the goroutine
            // half only).
            self.attach_gc_file(id, &link, &path(), a);
        }
        if gc_only {
            return;
        }
        match (target, facts.exe.as_deref()) {
            // The target names this file's path: probe the file (through the link, which
            // reaches this very file) for this and every later process of it.
            (Some((i, t)), Some(e)) if t.exe.as_deref() == Some(e) => {
                self.attach_file(Some((i, t)), id, &link, e, a);
                self.to_seed.push(tgid);
            }
            // Any Go process: its file too (known by the path it was started from, or while a
            // process runs it).
            (None, _) => {
                self.attach_file(None, id, &link, &path(), a);
                self.to_seed.push(tgid);
            }
            (Some((i, t)), _) => {
                let set = self.go_set(id);
                let r = self
                    .reserve()
                    .and_then(|()| a.attach_go(&link, Some(tgid), set));
                let ok = r.is_ok();
                self.record(Some((i, t)), Probe::Goroutines, r, |s, l| {
                    s.processes.insert((tgid, Probe::Goroutines), l);
                });
                if ok {
                    self.to_seed.push(tgid);
                }
            }
        }
    }

    /// Processes probed after they started (and while they run): seed them, once each.
    pub fn take_seeds(&mut self) -> Vec<u32> {
        let mut out = std::mem::take(&mut self.to_seed);
        out.retain(|&t| {
            self.seen.contains(&t)
                && (self.processes.contains_key(&(t, Probe::Goroutines))
                    || file_id(&self.exe_link(t)).is_some_and(|id| self.files.contains_key(&id)))
        });
        out
    }

    /// Did process `tgid` start by boot-time tick `at` (or is its start unknown)? Then it may
    /// have goroutines the probes did not see start.
    fn started_by(&self, tgid: u32, at: u64) -> bool {
        std::fs::read_to_string(self.proc.join(tgid.to_string()).join("stat"))
            .ok()
            .and_then(|stat| start_ticks(&stat))
            .is_none_or(|start| start <= at)
    }

    /// Was this process considered already (and has not exited or exec'd since)?
    pub fn is_seen(&self, tgid: u32) -> bool {
        self.seen.contains(&tgid)
    }

    /// The process exited or replaced its image: detach its pid-scoped probes.
    pub fn on_exit<A: Attacher<Links = L>>(&mut self, tgid: u32, a: &mut A) {
        self.seen.remove(&tgid);
        for p in [Probe::Allocations, Probe::Goroutines] {
            if let Some(l) = self.processes.remove(&(tgid, p)) {
                tracing::debug!(tgid, probe = p.label(), "uprobes detached");
                a.detach(l);
            }
        }
    }

    /// Forgets processes that are gone without an exit event, and detaches file-wide probes
    /// of replaced executables that no process runs any more.
    pub fn sweep<A: Attacher<Links = L>>(&mut self, alive: impl Fn(u32) -> bool, a: &mut A) {
        let gone: Vec<u32> = self.seen.iter().copied().filter(|&t| !alive(t)).collect();
        for tgid in gone {
            self.on_exit(tgid, a);
        }
        let stale_in = |m: &HashMap<FileId, (PathBuf, L)>| -> Vec<FileId> {
            m.iter()
                .filter(|(id, (path, _))| file_id(path) != Some(**id))
                .map(|(id, _)| *id)
                .collect()
        };
        let stale = stale_in(&self.files);
        let stale_gc = stale_in(&self.gc_files);
        if stale.is_empty() && stale_gc.is_empty() {
            return;
        }
        let running: HashSet<FileId> = self
            .seen
            .iter()
            .filter_map(|&t| file_id(&self.exe_link(t)))
            .collect();
        for id in stale.into_iter().filter(|id| !running.contains(id)) {
            self.attached_at.remove(&id);
            if let Some((path, l)) = self.files.remove(&id) {
                tracing::debug!(path = %path.display(), "replaced executable: goroutine probes detached");
                a.detach(l);
            }
        }
        for id in stale_gc.into_iter().filter(|id| !running.contains(id)) {
            if let Some((path, l)) = self.gc_files.remove(&id) {
                tracing::debug!(path = %path.display(), "replaced executable: GC probes detached");
                a.detach(l);
            }
        }
    }

    /// The Go probes to attach to (a process of) file `id`: the goroutine half when the
    /// file has the GC probes already, else both.
    fn go_set(&self, id: FileId) -> GoSet {
        if self.gc_files.contains_key(&id) {
            GoSet::Goroutines
        } else {
            GoSet::All
        }
    }

    /// Attaches the GC probes alone to the file `id` (reached through `link`, found at
    /// `path`), for every process of it, unless it has them.
    fn attach_gc_file<A: Attacher<Links = L>>(
        &mut self,
        id: FileId,
        link: &Path,
        path: &str,
        a: &mut A,
    ) {
        if self.gc_files.contains_key(&id) || self.files.contains_key(&id) {
            return;
        }
        let r = self
            .reserve()
            .and_then(|()| a.attach_go(link, None, GoSet::Gc));
        self.record(None, Probe::Gc, r, |s, l| {
            s.gc_files.insert(id, (PathBuf::from(path), l));
        });
    }

    /// Attaches file-wide probes to the file `id`, reached through `path`; `target_path` is
    /// the path the target names (to notice when it names another file).
    fn attach_file<A: Attacher<Links = L>>(
        &mut self,
        target: Option<(usize, &Target)>,
        id: FileId,
        path: &Path,
        target_path: &str,
        a: &mut A,
    ) {
        if self.files.contains_key(&id) {
            return;
        }
        let set = self.go_set(id);
        let r = self.reserve().and_then(|()| a.attach_go(path, None, set));
        self.record(target, Probe::Goroutines, r, |s, l| {
            s.files.insert(id, (PathBuf::from(target_path), l));
            s.attached_at.insert(id, boot_ticks());
        });
    }

    fn reserve(&self) -> Result<(), String> {
        if self.files.len() + self.gc_files.len() + self.processes.len() >= self.max_attachments {
            Err(format!(
                "probes.uprobes.max_attachments ({}) reached",
                self.max_attachments
            ))
        } else {
            Ok(())
        }
    }

    fn record(
        &mut self,
        target: Option<(usize, &Target)>,
        probe: Probe,
        r: Result<L, String>,
        keep: impl FnOnce(&mut Self, L),
    ) {
        match r {
            Ok(l) => {
                let service = target.map_or("(all Go processes)", |(_, t)| t.service.as_str());
                tracing::debug!(service, probe = probe.label(), "uprobes attached");
                keep(self, l)
            }
            Err(e) => {
                *self.failures.entry(probe).or_default() += 1;
                // Processes of no target: logged once for all of them.
                let (i, service) = target.map_or((usize::MAX, "(all Go processes)"), |(i, t)| {
                    (i, t.service.as_str())
                });
                if self.logged.insert((i, probe)) {
                    tracing::warn!(
                        target_service = %service,
                        probe = probe.label(),
                        error = %e,
                        "cannot attach uprobes (logged once per target and probe)"
                    );
                }
            }
        }
    }

    /// Attachments now, by probe and scope (`process` or `file`).
    pub fn attachments(&self) -> BTreeMap<(Probe, &'static str), u64> {
        let mut out: BTreeMap<_, u64> = [
            ((Probe::Allocations, "process"), 0),
            ((Probe::Goroutines, "process"), 0),
        ]
        .into();
        for &(_, p) in self.processes.keys() {
            *out.entry((p, "process")).or_default() += 1;
        }
        *out.entry((Probe::Goroutines, "file")).or_default() += self.files.len() as u64;
        *out.entry((Probe::Gc, "file")).or_default() += self.gc_files.len() as u64;
        out
    }

    pub fn failures(&self) -> &BTreeMap<Probe, u64> {
        &self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what was attached; fails where told to.
    #[derive(Default)]
    struct Fake {
        next: u32,
        live: HashSet<u32>,
        calls: Vec<String>,
        fail_alloc: bool,
    }
    impl Attacher for Fake {
        type Links = u32;
        fn attach_allocations(&mut self, pid: u32) -> Result<u32, String> {
            if self.fail_alloc {
                return Err("no libc".into());
            }
            self.calls.push(format!("alloc {pid}"));
            self.next += 1;
            self.live.insert(self.next);
            Ok(self.next)
        }
        fn attach_go(&mut self, exe: &Path, pid: Option<u32>, set: GoSet) -> Result<u32, String> {
            let what = match set {
                GoSet::All => "go",
                GoSet::Gc => "gc",
                GoSet::Goroutines => "goroutines",
            };
            self.calls.push(format!("{what} {} {pid:?}", exe.display()));
            self.next += 1;
            self.live.insert(self.next);
            Ok(self.next)
        }
        fn detach(&mut self, l: u32) {
            assert!(self.live.remove(&l), "detached twice");
        }
    }

    fn target(exe: Option<&str>, allocations: bool) -> Target {
        Target {
            exe: exe.map(Into::into),
            comm: Some("x".into()),
            allocations,
            ..Target::named("svc")
        }
    }

    fn facts(exe: &str) -> ProcessFacts {
        ProcessFacts {
            comm: "x".into(),
            exe: Some(exe.into()),
            cgroup: None,
            ..Default::default()
        }
    }

    #[test]
    fn allocations_per_process_detached_at_exit() {
        let mut u = UprobeTargets::new(8, |_| false, false, false);
        let mut a = Fake::default();
        let t = target(None, true);
        u.on_process(10, &facts("/bin/c"), Some((0, &t)), &mut a);
        u.on_process(10, &facts("/bin/c"), Some((0, &t)), &mut a);
        u.on_process(11, &facts("/bin/c"), None, &mut a);
        assert_eq!(
            a.calls,
            ["alloc 10"],
            "once per process, targets only; not Go"
        );
        assert_eq!(u.attachments()[&(Probe::Allocations, "process")], 1);
        u.on_exit(10, &mut a);
        assert!(a.live.is_empty());
        assert_eq!(u.attachments()[&(Probe::Allocations, "process")], 0);
    }

    /// A fake procfs: `<tgid>/exe` links to files in `dir`.
    fn run(proc: &Path, tgid: u32, exe: &Path) {
        let d = proc.join(tgid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
    }

    #[test]
    fn go_exe_targets_are_probed_by_file_others_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        let bin = dir.path().join("app");
        let other = dir.path().join("other");
        std::fs::write(&bin, b"v1").unwrap();
        std::fs::write(&other, b"x").unwrap();
        let mut u = UprobeTargets::new(8, |_| true, false, false).with_proc(&proc);
        let mut a = Fake::default();
        let by_exe = target(Some(bin.to_str().unwrap()), false);
        u.start(std::slice::from_ref(&by_exe), &mut a);
        assert_eq!(a.calls, [format!("go {} None", bin.display())]);
        // A process of that file is covered already.
        run(&proc, 20, &bin);
        u.on_process(
            20,
            &facts(bin.to_str().unwrap()),
            Some((0, &by_exe)),
            &mut a,
        );
        assert_eq!(a.calls.len(), 1);
        // A Go process matched by comm only: pid-scoped, through its exe link.
        let by_comm = target(None, false);
        run(&proc, 21, &other);
        u.on_process(21, &facts("/opt/other"), Some((1, &by_comm)), &mut a);
        assert_eq!(a.calls[1], format!("go {}/21/exe Some(21)", proc.display()));
        u.on_exit(21, &mut a);
        assert_eq!(a.live.len(), 1, "the file-wide attachment stays");

        // A redeploy: a new file at the same path is another file, probed on its own; the old
        // one is detached once its last process is gone.
        // (The old file stays open, as it stays mapped by its running process in real life,
        // so its inode number is not reused.)
        let _old = std::fs::File::open(&bin).unwrap();
        let new = dir.path().join("app.new");
        std::fs::write(&new, b"v2").unwrap();
        std::fs::rename(&new, &bin).unwrap();
        run(&proc, 22, &bin);
        u.on_process(
            22,
            &facts(bin.to_str().unwrap()),
            Some((0, &by_exe)),
            &mut a,
        );
        assert_eq!(a.calls[2], format!("go {}/22/exe None", proc.display()));
        assert_eq!(u.attachments()[&(Probe::Goroutines, "file")], 2);
        u.sweep(|t| t != 20, &mut a);
        assert_eq!(u.attachments()[&(Probe::Goroutines, "file")], 1);
        assert_eq!(a.live.len(), 1);
    }

    #[test]
    fn the_cap_and_failures_are_counted_not_fatal() {
        let mut u = UprobeTargets::new(1, |_| false, false, false);
        let mut a = Fake::default();
        let t = target(None, true);
        u.on_process(1, &facts("/bin/c"), Some((0, &t)), &mut a);
        u.on_process(2, &facts("/bin/c"), Some((0, &t)), &mut a);
        assert_eq!(a.calls, ["alloc 1"]);
        assert_eq!(u.failures()[&Probe::Allocations], 1);
        a.fail_alloc = true;
        u.on_exit(1, &mut a);
        u.on_process(3, &facts("/bin/c"), Some((0, &t)), &mut a);
        assert_eq!(u.failures()[&Probe::Allocations], 2);
        u.sweep(|_| false, &mut a);
        assert!(a.live.is_empty());
    }

    #[test]
    fn processes_probed_after_they_started_are_seeded_once() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        let bin = dir.path().join("app");
        std::fs::write(&bin, b"v1").unwrap();
        let mut u = UprobeTargets::new(8, |_| true, false, false).with_proc(&proc);
        let mut a = Fake::default();
        let by_exe = target(Some(bin.to_str().unwrap()), false);
        u.start(std::slice::from_ref(&by_exe), &mut a);
        let f = facts(bin.to_str().unwrap());
        // Running before the attach (start tick 0), after it (a tick far ahead), and one with
        // no stat (unknown: seeded).
        let stat = |tgid: u32, start: u64| {
            run(&proc, tgid, &bin);
            let fields: Vec<String> = (3..=21).map(|_| "0".to_string()).collect();
            std::fs::write(
                proc.join(tgid.to_string()).join("stat"),
                format!("{tgid} (a b) {} {start} 0 0\n", fields[..19].join(" ")),
            )
            .unwrap();
        };
        stat(30, 0);
        stat(31, u64::MAX / 2);
        run(&proc, 32, &bin);
        for t in [30, 31, 32] {
            u.on_process(t, &f, Some((0, &by_exe)), &mut a);
        }
        assert_eq!(u.take_seeds(), [30, 32]);
        assert!(u.take_seeds().is_empty(), "once");
        // Pid-scoped (matched by comm): seeded once attached; not after it exited.
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        run(&proc, 33, &other);
        run(&proc, 34, &other);
        let by_comm = target(None, false);
        u.on_process(33, &facts("/opt/other"), Some((1, &by_comm)), &mut a);
        u.on_process(34, &facts("/opt/other"), Some((1, &by_comm)), &mut a);
        u.on_exit(34, &mut a);
        assert_eq!(u.take_seeds(), [33]);
    }

    #[test]
    fn all_processes_probes_go_programs_of_no_target() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        let bin = dir.path().join("app");
        std::fs::write(&bin, b"v1").unwrap();
        run(&proc, 40, &bin);
        run(&proc, 41, &bin);
        let f = facts(bin.to_str().unwrap());
        let mut off = UprobeTargets::new(8, |_| true, false, false).with_proc(&proc);
        let mut a = Fake::default();
        off.on_process(40, &f, None, &mut a);
        assert!(a.calls.is_empty());
        let mut on = UprobeTargets::new(8, |_| true, true, false).with_proc(&proc);
        on.on_process(40, &f, None, &mut a);
        on.on_process(41, &f, None, &mut a);
        assert_eq!(a.calls, [format!("go {}/40/exe None", proc.display())]);
        assert_eq!(on.attachments()[&(Probe::Goroutines, "file")], 1);
        assert_eq!(on.take_seeds(), [40, 41]);
        // A target that opts out stays out.
        let mut t = target(None, false);
        t.goroutines = false;
        let mut on2 = UprobeTargets::new(8, |_| true, true, false).with_proc(&proc);
        on2.on_process(40, &f, Some((0, &t)), &mut a);
        assert_eq!(a.calls.len(), 1);
        // Not Go: nothing. Over the bound: counted.
        let mut not_go = UprobeTargets::new(8, |_| false, true, false).with_proc(&proc);
        not_go.on_process(40, &f, None, &mut a);
        assert_eq!(a.calls.len(), 1);
        let mut full = UprobeTargets::new(0, |_| true, true, false).with_proc(&proc);
        full.on_process(40, &f, None, &mut a);
        assert_eq!(full.failures()[&Probe::Goroutines], 1);
    }

    #[test]
    fn gc_all_processes_gives_each_go_file_the_gc_probes_once() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        let bin = dir.path().join("app");
        let other = dir.path().join("other");
        std::fs::write(&bin, b"v1").unwrap();
        std::fs::write(&other, b"x").unwrap();
        run(&proc, 50, &bin);
        run(&proc, 51, &bin);
        run(&proc, 52, &other);
        let f = facts(bin.to_str().unwrap());
        let mut u = UprobeTargets::new(8, |_| true, false, true).with_proc(&proc);
        let mut a = Fake::default();
        // No target: the GC probes on the file, once; nothing to seed.
        u.on_process(50, &f, None, &mut a);
        u.on_process(51, &f, None, &mut a);
        assert_eq!(a.calls, [format!("gc {}/50/exe None", proc.display())]);
        assert!(u.take_seeds().is_empty());
        assert_eq!(u.attachments()[&(Probe::Gc, "file")], 1);
        assert_eq!(u.attachments()[&(Probe::Goroutines, "file")], 0);
        // A target process of another file matched by comm: that file's GC probes, then the
        // goroutine half for the process.
        let by_comm = target(None, false);
        u.on_process(52, &facts("/opt/other"), Some((0, &by_comm)), &mut a);
        assert_eq!(
            a.calls[1..],
            [
                format!("gc {}/52/exe None", proc.display()),
                format!("goroutines {}/52/exe Some(52)", proc.display()),
            ]
        );
        assert_eq!(u.take_seeds(), [52]);
        // A target that opts out of goroutines stays out of GC too.
        let mut out = target(None, false);
        out.goroutines = false;
        run(&proc, 53, &other);
        let before = a.calls.len();
        u.on_process(53, &facts("/opt/other"), Some((0, &out)), &mut a);
        assert_eq!(a.calls.len(), before);
        // Off: nothing for processes of no target.
        let mut off = UprobeTargets::new(8, |_| true, false, false).with_proc(&proc);
        off.on_process(50, &f, None, &mut a);
        assert_eq!(a.calls.len(), before);
        // With all_processes too: the whole set on the file, no GC-only attachment.
        let mut all = UprobeTargets::new(8, |_| true, true, true).with_proc(&proc);
        all.on_process(50, &f, None, &mut a);
        assert_eq!(
            a.calls[before..],
            [
                format!("gc {}/50/exe None", proc.display()),
                format!("goroutines {}/50/exe None", proc.display()),
            ]
        );
        // Bounded, counted.
        let mut full = UprobeTargets::new(0, |_| true, false, true).with_proc(&proc);
        full.on_process(50, &f, None, &mut a);
        assert_eq!(full.failures()[&Probe::Gc], 1);
        // The file replaced and its processes gone: detached.
        std::fs::remove_file(&bin).unwrap();
        u.sweep(|t| t == 52, &mut a);
        assert_eq!(u.attachments()[&(Probe::Gc, "file")], 1);
    }

    #[test]
    fn start_times_are_read_past_the_comm() {
        let stat = "12 (a) b) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 50";
        assert_eq!(start_ticks(stat), Some(98765));
        assert_eq!(start_ticks("12 (x"), None);
        assert!(boot_ticks() > 0);
    }
}

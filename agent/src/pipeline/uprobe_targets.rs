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
//! - At most `max_attachments` attachments at once; failures (limit included) are counted per
//!   probe and logged once per target and probe, never fatal. Pid-scoped attachments are
//!   detached when their process exits or execs another program.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{go_elf::is_go_binary, services::ProcessFacts};
use crate::config::Target;

/// The probe sets, as `probe` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    Allocations,
    Goroutines,
}

impl Probe {
    pub const fn label(self) -> &'static str {
        match self {
            Probe::Allocations => "allocations",
            Probe::Goroutines => "goroutines",
        }
    }
}

/// What attaches the probes (the eBPF module in the daemon).
pub trait Attacher {
    type Links;
    fn attach_allocations(&mut self, pid: u32) -> Result<Self::Links, String>;
    /// `pid` None: every process running `exe`.
    fn attach_goroutines(&mut self, exe: &Path, pid: Option<u32>) -> Result<Self::Links, String>;
    fn detach(&mut self, links: Self::Links);
}

impl Attacher for crate::ebpf::Uprobes {
    type Links = crate::ebpf::LinkSet;
    fn attach_allocations(&mut self, pid: u32) -> Result<Self::Links, String> {
        crate::ebpf::Uprobes::attach_allocations(self, pid).map_err(|e| e.to_string())
    }
    fn attach_goroutines(&mut self, exe: &Path, pid: Option<u32>) -> Result<Self::Links, String> {
        crate::ebpf::Uprobes::attach_goroutines(self, exe, pid).map_err(|e| e.to_string())
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

#[derive(Debug)]
pub struct UprobeTargets<L> {
    max_attachments: usize,
    /// Go executables with file-wide goroutine probes, with the target's path.
    files: HashMap<FileId, (PathBuf, L)>,
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
    pub fn new(max_attachments: u32, is_go: GoCheck) -> Self {
        Self {
            max_attachments: max_attachments as usize,
            files: HashMap::new(),
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
                self.attach_file(i, t, id, path, exe, a);
            }
        }
    }

    /// A process matching `target` (index `i`) was seen alive: attach what it opts in to.
    /// Each process is considered once until it exits or execs.
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
        let Some((i, t)) = target else { return };
        tracing::debug!(tgid, service = %t.service, "target process seen");
        if t.allocations && !self.processes.contains_key(&(tgid, Probe::Allocations)) {
            let r = self.reserve().and_then(|()| a.attach_allocations(tgid));
            self.record(i, t, Probe::Allocations, r, |s, l| {
                s.processes.insert((tgid, Probe::Allocations), l);
            });
        }
        if !t.goroutines {
            return;
        }
        let link = self.exe_link(tgid);
        let Some(id) = file_id(&link) else { return };
        if self.files.contains_key(&id) {
            return; // covered by the file-wide probes
        }
        if !(self.is_go)(&link) {
            return;
        }
        match (t.exe.as_deref(), facts.exe.as_deref()) {
            // The target names this file's path: probe the file (through the link, which
            // reaches this very file) for this and every later process of it.
            (Some(te), Some(e)) if te == e => self.attach_file(i, t, id, &link, te, a),
            _ => {
                let r = self
                    .reserve()
                    .and_then(|()| a.attach_goroutines(&link, Some(tgid)));
                self.record(i, t, Probe::Goroutines, r, |s, l| {
                    s.processes.insert((tgid, Probe::Goroutines), l);
                });
            }
        }
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
        let stale: Vec<FileId> = self
            .files
            .iter()
            .filter(|(id, (path, _))| file_id(path) != Some(**id))
            .map(|(id, _)| *id)
            .collect();
        if stale.is_empty() {
            return;
        }
        let running: HashSet<FileId> = self
            .seen
            .iter()
            .filter_map(|&t| file_id(&self.exe_link(t)))
            .collect();
        for id in stale.into_iter().filter(|id| !running.contains(id)) {
            if let Some((path, l)) = self.files.remove(&id) {
                tracing::debug!(path = %path.display(), "replaced executable: goroutine probes detached");
                a.detach(l);
            }
        }
    }

    /// Attaches file-wide probes to the file `id`, reached through `path`; `target_path` is
    /// the path the target names (to notice when it names another file).
    fn attach_file<A: Attacher<Links = L>>(
        &mut self,
        i: usize,
        t: &Target,
        id: FileId,
        path: &Path,
        target_path: &str,
        a: &mut A,
    ) {
        if self.files.contains_key(&id) {
            return;
        }
        let r = self
            .reserve()
            .and_then(|()| a.attach_goroutines(path, None));
        self.record(i, t, Probe::Goroutines, r, |s, l| {
            s.files.insert(id, (PathBuf::from(target_path), l));
        });
    }

    fn reserve(&self) -> Result<(), String> {
        if self.files.len() + self.processes.len() >= self.max_attachments {
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
        i: usize,
        t: &Target,
        probe: Probe,
        r: Result<L, String>,
        keep: impl FnOnce(&mut Self, L),
    ) {
        match r {
            Ok(l) => {
                tracing::debug!(service = %t.service, probe = probe.label(), "uprobes attached");
                keep(self, l)
            }
            Err(e) => {
                *self.failures.entry(probe).or_default() += 1;
                if self.logged.insert((i, probe)) {
                    tracing::warn!(
                        target_service = %t.service,
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
        fn attach_goroutines(&mut self, exe: &Path, pid: Option<u32>) -> Result<u32, String> {
            self.calls.push(format!("go {} {pid:?}", exe.display()));
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
        let mut u = UprobeTargets::new(8, |_| false);
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
        let mut u = UprobeTargets::new(8, |_| true).with_proc(&proc);
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
        let mut u = UprobeTargets::new(1, |_| false);
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
}

//! Attaching and detaching the uprobe programs (allocations, goroutines) at run time, and the
//! readers of their counter maps. The pipeline decides what to attach where
//! (`pipeline::uprobe_targets`); this module only acts on the kernel.
//!
//! Each `UProbe` program is loaded once and attached many times: per process (a perf event
//! scoped to one pid, so the breakpoint exists only in that process) or per executable file
//! (every process that maps it, from its first instruction). Every attachment owns its links
//! (taken out of the program), so it can be detached on its own when its process exits.
//!
//! Detaching is slow: closing a uprobe perf event waits for an RCU grace period (hundreds of
//! milliseconds for a set of links, measured here), and the agent's runtime has one thread.
//! So detached link sets go to a background thread that drops them, and the pipeline never
//! waits for it.

use std::{
    num::NonZeroU32,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
};

use agent_common::uprobe::{AllocCounts, GoCounts, GoGc};
use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeLink, UProbeScope},
        UProbe,
    },
    Ebpf,
};

use super::{
    percpu_table::{PerCpuSum, PerCpuTable, SharedTable},
    program_runs::recursion_misses,
    ProbeError,
};

pub type AllocCountMap = PerCpuTable<u32, AllocCounts>;
pub type GoCountMap = PerCpuTable<u32, GoCounts>;
pub type GoGcMap = SharedTable<u32, GoGc>;

/// The maps of the uprobe programs.
pub struct UprobeMaps {
    pub alloc_counts: AllocCountMap,
    pub go_counts: GoCountMap,
    pub go_gc: GoGcMap,
}

impl PerCpuSum for AllocCounts {
    fn add(&mut self, o: &Self) {
        for (a, b) in self.calls.iter_mut().zip(o.calls.iter()) {
            *a += b;
        }
        self.bytes += o.bytes;
        self.tracked_bytes += o.tracked_bytes;
        self.freed_bytes += o.freed_bytes;
        self.untracked_frees += o.untracked_frees;
    }
}

impl PerCpuSum for GoCounts {
    fn add(&mut self, o: &Self) {
        self.created += o.created;
        self.exited += o.exited;
    }
}

/// libc functions and the program attached to each (`alloc_return` is the uretprobe).
const ALLOC_POINTS: [(&str, &str); 7] = [
    ("malloc_enter", "malloc"),
    ("calloc_enter", "calloc"),
    ("realloc_enter", "realloc"),
    ("free_enter", "free"),
    ("alloc_return", "malloc"),
    ("alloc_return", "calloc"),
    ("alloc_return", "realloc"),
];

/// Go runtime functions and the program attached to each (entries only: no uretprobes on
/// Go code, whose stacks move): goroutines, then the garbage collector (`go_gc.rs` in the
/// eBPF crate). A set is attached all or nothing, in this order: exits before creations, so
/// in a running process a goroutine that starts and ends between the two attaches can only be
/// missed (an undercount, clamped at 0), never counted as live forever; a seed from memory
/// (`pipeline::go_seed`) then corrects either way. [`GoSet`] picks the goroutine half, the GC
/// half (the last [`GC_POINTS`] entries) or both.
const GO_POINTS: [(&str, &str); 6] = [
    ("go_goexit", "runtime.goexit0"),
    ("go_newproc", "runtime.newproc1"),
    ("go_gc_done", "runtime.gcMarkTermination"),
    ("go_stw_other", "runtime.stopTheWorld"),
    ("go_stw_stop", "runtime.stopTheWorldWithSema"),
    ("go_stw_start", "runtime.startTheWorldWithSema"),
];

/// How many of [`GO_POINTS`], at its end, are the GC probes.
const GC_POINTS: usize = 4;

/// Which Go probes an attachment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoSet {
    /// Goroutines and GC.
    All,
    /// The GC probes only (`probes.go.gc_all_processes`).
    Gc,
    /// The goroutine probes only (a process whose file has the GC probes already).
    Goroutines,
}

impl GoSet {
    fn range(self) -> std::ops::Range<usize> {
        let split = GO_POINTS.len() - GC_POINTS;
        match self {
            GoSet::All => 0..GO_POINTS.len(),
            GoSet::Gc => split..GO_POINTS.len(),
            GoSet::Goroutines => 0..split,
        }
    }
}

/// Programs loaded at start.
const ALLOC_PROGRAMS: [&str; 5] = [
    "malloc_enter",
    "calloc_enter",
    "realloc_enter",
    "free_enter",
    "alloc_return",
];
const GO_PROGRAMS: [&str; 6] = [
    "go_newproc",
    "go_goexit",
    "go_gc_done",
    "go_stw_other",
    "go_stw_stop",
    "go_stw_start",
];

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the {0} probes are not loaded (no target opts in)")]
    NotLoaded(&'static str),
    #[error("reading /proc/{pid}/maps: {source}")]
    Maps { pid: u32, source: std::io::Error },
    #[error("pid 0 is not a process")]
    BadPid,
    #[error("{path}: Go functions not found by symbol ({source}) nor in the Go function table ({table})")]
    GoFunctions {
        path: String,
        table: super::go_pclntab::PclntabError,
        source: Box<AttachError>,
    },
    #[error("attaching {program} to {function} in {path}: {source}")]
    Attach {
        program: &'static str,
        function: &'static str,
        path: String,
        source: Box<aya::programs::ProgramError>,
    },
}

/// The links of one attachment (one process or one file, one probe set). Dropping it
/// detaches them.
#[derive(Debug)]
pub struct LinkSet {
    _links: Vec<UProbeLink>,
}

/// The uprobe programs, loaded and ready to attach, and their counter maps.
pub struct Uprobes {
    ebpf: Arc<Mutex<Ebpf>>,
    /// Where detached link sets go to be dropped off the runtime's thread (None: the thread
    /// could not be started; then they are dropped in place).
    reaper: Option<mpsc::Sender<LinkSet>>,
    allocations_loaded: bool,
    goroutines_loaded: bool,
    pub alloc_counts: AllocCountMap,
    pub go_counts: GoCountMap,
    pub go_gc: GoGcMap,
}

impl Uprobes {
    /// Loads (verifies) the programs of the probe sets some target uses and takes the maps.
    pub(super) fn load(
        ebpf: &mut Ebpf,
        allocations: bool,
        goroutines: bool,
    ) -> Result<UprobeMaps, ProbeError> {
        let alloc_counts =
            AllocCountMap::new(super::take_map(ebpf, "ALLOC_COUNTS")?, "ALLOC_COUNTS")?;
        let go_counts = GoCountMap::new(super::take_map(ebpf, "GO_COUNTS")?, "GO_COUNTS")?;
        let go_gc = GoGcMap::new(super::take_map(ebpf, "GO_GC")?, "GO_GC")?;
        let mut names: Vec<&'static str> = Vec::new();
        if allocations {
            names.extend(ALLOC_PROGRAMS);
        }
        if goroutines {
            names.extend(GO_PROGRAMS);
        }
        for name in names {
            program(ebpf, name)
                .ok_or(ProbeError::Program {
                    name,
                    source: aya::programs::ProgramError::NotLoaded,
                })?
                .load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        Ok(UprobeMaps {
            alloc_counts,
            go_counts,
            go_gc,
        })
    }

    pub(super) fn new(
        ebpf: Arc<Mutex<Ebpf>>,
        maps: UprobeMaps,
        allocations_loaded: bool,
        goroutines_loaded: bool,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<LinkSet>();
        let reaper = std::thread::Builder::new()
            .name("uprobe-detach".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .map_err(|e| tracing::warn!(error = %e, "no detach thread: detaching inline"))
            .ok()
            .map(|_| tx);
        Self {
            ebpf,
            reaper,
            allocations_loaded,
            goroutines_loaded,
            alloc_counts: maps.alloc_counts,
            go_counts: maps.go_counts,
            go_gc: maps.go_gc,
        }
    }

    /// Attaches the allocation probes to the libc that process `pid` has mapped, for that
    /// process only.
    pub fn attach_allocations(&mut self, pid: u32) -> Result<LinkSet, AttachError> {
        if !self.allocations_loaded {
            return Err(AttachError::NotLoaded("allocation"));
        }
        let pid = NonZeroU32::new(pid).ok_or(AttachError::BadPid)?;
        let libc = libc_of(pid.get())?;
        self.attach_all(&ALLOC_POINTS, &libc, UProbeScope::OneProcess(pid))
    }

    /// Attaches the goroutine and GC probes (`set`: both or one half) to a Go executable: for
    /// every process running it (`pid` None), or for one process. The functions are found
    /// through the Go runtime's function table (`ebpf::go_pclntab`), which stripped
    /// binaries keep too; where it cannot be read (a Go older than 1.18), by symbol name.
    pub fn attach_go(
        &mut self,
        exe: &Path,
        pid: Option<u32>,
        set: GoSet,
    ) -> Result<LinkSet, AttachError> {
        if !self.goroutines_loaded {
            return Err(AttachError::NotLoaded("goroutine"));
        }
        let scope = match pid {
            None => UProbeScope::AllProcesses,
            Some(p) => UProbeScope::OneProcess(NonZeroU32::new(p).ok_or(AttachError::BadPid)?),
        };
        let points = &GO_POINTS[set.range()];
        let functions: Vec<&str> = points.iter().map(|&(_, f)| f).collect();
        match super::go_pclntab::function_offsets(exe, &functions) {
            Ok(mut at) => {
                if let Ok(file) = std::fs::File::open(exe) {
                    for o in at.iter_mut() {
                        *o += past_stack_check(&file, *o);
                    }
                }
                self.attach_all_at(points, |i| at[i].into(), exe, scope)
            }
            Err(table) => {
                tracing::debug!(path = %exe.display(), error = %table, "no Go function table: attaching by symbol");
                self.attach_all(points, exe, scope)
                    .map_err(|e| AttachError::GoFunctions {
                        path: exe.display().to_string(),
                        table,
                        source: Box::new(e),
                    })
            }
        }
    }

    /// Runs of the (allocation, goroutine) programs the kernel skipped since load.
    ///
    /// A uprobe program is of the kprobe type, and the kernel does not run one on a CPU where
    /// another kprobe-type program, or a BPF map syscall of any process (the agent reading its
    /// maps, for one), holds that CPU's guard; the skipped run is counted in the program's
    /// `recursion_misses`. Each skipped run is one call or one goroutine event not counted.
    pub fn missed(&self) -> (u64, u64) {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = |names: &[&str], loaded: bool| -> u64 {
            if !loaded {
                return 0;
            }
            let mut total = 0;
            for name in names {
                if let Some(fd) = program(&mut ebpf, name).and_then(|p| p.fd().ok()) {
                    total += recursion_misses(fd.as_fd()).unwrap_or(0);
                }
            }
            total
        };
        let alloc = sum(&ALLOC_PROGRAMS, self.allocations_loaded);
        let go = sum(&GO_PROGRAMS, self.goroutines_loaded);
        (alloc, go)
    }

    /// Detaches every link of an attachment, in the background.
    pub fn detach(&mut self, set: LinkSet) {
        match &self.reaper {
            Some(tx) => {
                if let Err(mpsc::SendError(set)) = tx.send(set) {
                    drop(set);
                }
            }
            None => drop(set),
        }
    }

    fn attach_all(
        &mut self,
        points: &[(&'static str, &'static str)],
        path: &Path,
        scope: UProbeScope,
    ) -> Result<LinkSet, AttachError> {
        self.attach_all_at(points, |i| points[i].1.into(), path, scope)
    }

    /// Attaches program `points[i].0` at `location(i)` (a symbol or a file offset).
    fn attach_all_at<'a>(
        &mut self,
        points: &[(&'static str, &'static str)],
        location: impl Fn(usize) -> UProbeAttachLocation<'a>,
        path: &Path,
        scope: UProbeScope,
    ) -> Result<LinkSet, AttachError> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let mut links = Vec::with_capacity(points.len());
        for (i, &(name, function)) in points.iter().enumerate() {
            let attached = program(&mut ebpf, name)
                .ok_or(aya::programs::ProgramError::NotLoaded)
                .and_then(|p| {
                    let id = p.attach(location(i), path, scope)?;
                    p.take_link(id)
                })
                .map_err(|source| AttachError::Attach {
                    program: name,
                    function,
                    path: path.display().to_string(),
                    source: Box::new(source),
                });
            match attached {
                Ok(link) => links.push(link),
                Err(e) => {
                    // All or nothing: a half-attached set would count some calls only.
                    drop(ebpf);
                    self.detach(LinkSet { _links: links });
                    return Err(e);
                }
            }
        }
        Ok(LinkSet { _links: links })
    }
}

/// Where to put a Go function's probe, relative to its entry: past the stack check when the
/// function starts with the small-frame one (`CMPQ 0x10(R14), SP` then `JBE` to the
/// `morestack` call) or the large-frame one (`LEAQ -n(SP), R12`, `CMPQ 0x10(R14), R12`, then
/// `JBE`), else at the entry (0).
///
/// The entry instruction compares with a memory operand: the kernel cannot emulate it, so a
/// uprobe there single-steps it out of line, a second trap on every hit. The `JBE` after it is
/// a branch the kernel emulates: one trap. Measured on this project's VM with Go 1.19's
/// `runtime.newproc1` and `runtime.goexit0` (tracefs uprobes, 200,000 goroutines): ~29 µs of
/// CPU per goroutine at the entries, ~2.6 µs past the check (bare ~1 µs). Every call runs the
/// `JBE` exactly once, as it runs the entry (a stack growth jumps back to the entry, which
/// both count again). The large-frame check's `LEAQ` is not emulated either (a GC probe,
/// `runtime.gcMarkTermination`, starts with it: docs/benchmarks.md, section 8). Functions
/// that start otherwise (`NOSPLIT` ones) keep the entry.
fn past_stack_check(file: &std::fs::File, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut code = [0u8; 16];
    if file.read_exact_at(&mut code, offset).is_err() {
        return 0;
    }
    u64::from(go_stack_check_len(&code))
}

/// Length of the stack check before its `JBE` (`0f 86 rel32` or `76 rel8`): the small-frame
/// compare (`49 3b 66 10`: `CMPQ 0x10(R14), SP`), 4 bytes; or the large-frame `LEAQ -n(SP),
/// R12` (`4c 8d 64 24 d8` or `4c 8d a4 24 d32`) and `CMPQ 0x10(R14), R12` (`4d 3b 66 10`),
/// 9 or 12 bytes; 0 when the code starts otherwise.
pub fn go_stack_check_len(code: &[u8]) -> u8 {
    let jbe = |rest: &[u8]| matches!(rest, [0x0f, 0x86, ..] | [0x76, ..]);
    let lea = match code {
        [0x49, 0x3b, 0x66, 0x10, rest @ ..] => return if jbe(rest) { 4 } else { 0 },
        [0x4c, 0x8d, 0x64, 0x24, ..] => 5,
        [0x4c, 0x8d, 0xa4, 0x24, ..] => 8,
        _ => return 0,
    };
    match code.get(lea..) {
        Some([0x4d, 0x3b, 0x66, 0x10, rest @ ..]) if jbe(rest) => lea as u8 + 4,
        _ => 0,
    }
}

/// The uprobe program `name` (None if the object lacks it or it is of another type).
fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Option<&'a mut UProbe> {
    ebpf.program_mut(name)?.try_into().ok()
}

/// The libc of a process. When it is mapped, as a path that reaches that file from this
/// mount namespace (`/proc/<pid>/root/...`, so processes in containers work too).
///
/// Right after exec (which is when the agent normally sees a process) the dynamic loader has
/// not mapped libc yet: then the libc the loader will pick is this system's, found through
/// `/etc/ld.so.cache` (aya resolves the name `libc` so). A uprobe belongs to the file, not
/// to a mapping, so the kernel inserts the breakpoints when the loader maps it: every call is
/// seen, glibc's own start-up allocations included. (A process in another mount namespace
/// caught that early gets the host's libc, which it does not use: nothing is counted for it.)
fn libc_of(pid: u32) -> Result<PathBuf, AttachError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| AttachError::Maps { pid, source })?;
    Ok(match libc_in_maps(&maps) {
        Some(path) => PathBuf::from(format!("/proc/{pid}/root{path}")),
        None => PathBuf::from("libc"),
    })
}

/// The path of the first mapped file named `libc.so*` or `libc-*.so` in a maps file.
pub fn libc_in_maps(maps: &str) -> Option<&str> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_is_found_in_maps() {
        let maps = "00400000-00401000 r-xp 00000000 08:01 12 /usr/bin/cat\n\
                    7f00-7f01 r--p 00000000 08:01 13 /usr/lib/x86_64-linux-gnu/libcap.so.2\n\
                    7f10-7f11 r-xp 00000000 08:01 14 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f20-7f21 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            libc_in_maps(maps),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            libc_in_maps("7f-7f r-xp 0 0:0 1 /lib/libc-2.31.so\n"),
            Some("/lib/libc-2.31.so")
        );
        assert_eq!(
            libc_in_maps("00400000-00401000 r-xp 0 0:0 1 /bin/static\n"),
            None
        );
    }

    #[test]
    fn go_probes_go_past_the_small_frame_stack_check_only() {
        // runtime.newproc1 (Go 1.19): CMPQ 0x10(R14), SP; JBE rel32; SUBQ $0x48, SP
        let newproc1 = [
            0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x86, 0x03, 0, 0, 0x48, 0x83,
        ];
        assert_eq!(go_stack_check_len(&newproc1), 4);
        assert_eq!(go_stack_check_len(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x20]), 4);
        // A larger frame (runtime.gcMarkTermination, Go 1.19): LEAQ -0x130(SP), R12;
        // CMPQ 0x10(R14), R12; JBE rel32. And with an 8-bit displacement.
        let large = [
            0x4c, 0x8d, 0xa4, 0x24, 0xd0, 0xfe, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86,
        ];
        assert_eq!(go_stack_check_len(&large), 12);
        let small_disp = [
            0x4c, 0x8d, 0x64, 0x24, 0xf8, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10,
        ];
        assert_eq!(go_stack_check_len(&small_disp), 9);
        // Cut short, or no branch after the compare: the entry.
        assert_eq!(go_stack_check_len(&large[..12]), 0);
        assert_eq!(go_stack_check_len(&[0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff]), 0);
        // A NOSPLIT function: stay at entry.
        assert_eq!(go_stack_check_len(&[0x48, 0x83, 0xec, 0x18, 0x48, 0x89]), 0);
        // The compare without the branch after it.
        assert_eq!(go_stack_check_len(&[0x49, 0x3b, 0x66, 0x10, 0x90, 0x90]), 0);
    }

    #[test]
    fn this_process_maps_libc() {
        assert!(libc_of(std::process::id()).unwrap().exists());
    }
}

//! The true goroutine count of a Go process the probes were attached to after it started
//! (running before the agent, or matched other than by a target's `exe`), read once from its
//! memory at attach time, so its gauge starts from the truth instead of from zero.
//!
//! What is read (`runtime/proc.go`, Go 1.19 to 1.24): the runtime's list of every goroutine it
//! ever made (`allgptr`, `allglen`; Gs are never freed, a finished one is `_Gdead` and reused),
//! and each g's `atomicstatus`. A goroutine is live when its status, without the `_Gscan` bit,
//! is neither `_Gidle` (just allocated) nor `_Gdead`: the same set the probes count (every g
//! is made live by `newproc1` and dies in `goexit0`), the runtime's own goroutines included.
//!
//! - Addresses: from the symbol table, else from the code of `runtime.forEachGRace`
//!   ([`go_pclntab::runtime_allg`]), relocated by the process's `AT_ENTRY` (PIE).
//! - The offset of `atomicstatus` in `runtime.g`: a table per Go version (read from the
//!   binary's build information), taken from the DWARF of each version's own build: 144 bytes
//!   for Go 1.19, 1.21 and 1.22, 152 for 1.23 and 1.24 (`syscallbp` came before it in 1.23).
//!   Any other version (1.20, 1.18, 1.25 and later, development builds) is refused.
//! - The race with the probes: the kernel's counters of the process are read before, between
//!   and after two walks of the list; the seed is taken only when the counters did not move,
//!   both walks agree (a goroutine starting or ending meanwhile could be counted by one side
//!   and not the other) and every thread of the process was asleep before and after the walks
//!   (a runnable one may be stopped between a probe's trap and the status change it counted),
//!   else retried, at most [`ATTEMPTS`] times, then refused. Left: a thread that goes to sleep
//!   on a lock inside `newproc1` or `goexit0`, after the probe, while the rest is quiet.
//!
//! Reading another process's memory needs ptrace access to it (`process_vm_readv`: root with
//! `CAP_SYS_PTRACE`, or the same user). Every refusal is counted by result and logged; the
//! gauge of a refused process stays as without a seed (counted from the attach).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::Path,
    time::Duration,
};

use crate::ebpf::go_pclntab::{self, AllG, PclntabError};

/// Tries of the two walks before a busy process is refused.
pub const ATTEMPTS: u32 = 8;
/// Goroutines ever made beyond this are not walked (a list this long is not plausible).
const MAX_ALLG: u64 = 10_000_000;
/// `process_vm_readv` takes at most this many remote pieces a call (`IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Executables whose layout is remembered.
const MAX_LAYOUTS: usize = 256;

const G_IDLE: u32 = 0;
const G_DEAD: u32 = 6;
const G_SCAN: u32 = 0x1000;
const AT_ENTRY: u64 = 9;

/// Offset of `atomicstatus` in `runtime.g` for a Go 1.x minor version, where verified.
pub fn status_offset(minor: u32) -> Option<u64> {
    match minor {
        19 | 21 | 22 => Some(144),
        23 | 24 => Some(152),
        _ => None,
    }
}

/// `go1.22.6` -> 22; None for anything else (`devel ...`, Go 2).
pub fn go_minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("Go version {0} has no known layout of runtime.g (known: 1.19, 1.21 to 1.24)")]
    UnknownVersion(String),
    #[error("the runtime's goroutine list is not found: {0}")]
    NotFound(#[from] PclntabError),
    #[error("reading the process's memory: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error("implausible runtime state: {0}")]
    Implausible(&'static str),
    #[error(
        "goroutines kept starting or ending, or threads kept running, during {ATTEMPTS} reads"
    )]
    Busy,
}

impl SeedError {
    /// The `result` label of a refusal.
    pub fn label(&self) -> &'static str {
        match self {
            SeedError::UnknownVersion(_) => "unknown_go_version",
            SeedError::NotFound(_) => "runtime_not_found",
            SeedError::Unreadable(_) | SeedError::Implausible(_) => "unreadable",
            SeedError::Busy => "busy",
        }
    }
}

/// What is needed to walk the goroutines of a process of one executable.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub allg: AllG,
    pub status_offset: u64,
}

/// The layout of an executable (its Go version must be one of the table's).
pub fn layout(exe: &Path) -> Result<Layout, SeedError> {
    let version = go_pclntab::go_version(exe)?;
    let status_offset = go_minor(&version)
        .and_then(status_offset)
        .ok_or(SeedError::UnknownVersion(version))?;
    Ok(Layout {
        allg: go_pclntab::runtime_allg(exe)?,
        status_offset,
    })
}

/// The live goroutines of process `pid` now (one walk, no check against the probes).
pub fn count_live(pid: u32, layout: &Layout) -> Result<u64, SeedError> {
    let bias = entry_of(pid)?.wrapping_sub(layout.allg.entry);
    let mut words = [0u64; 2];
    read_words(
        pid,
        &[
            layout.allg.allglen.wrapping_add(bias),
            layout.allg.allgptr.wrapping_add(bias),
        ],
        &mut words,
    )?;
    let [len, ptr] = words;
    if len > MAX_ALLG {
        return Err(SeedError::Implausible("allglen"));
    }
    if len == 0 {
        return Ok(0);
    }
    if ptr == 0 {
        return Err(SeedError::Implausible("allgptr is nil"));
    }
    let mut gs = vec![0u64; len as usize];
    let mut bytes = vec![0u8; gs.len() * 8];
    read_exact(pid, &[(ptr, bytes.len())], &mut bytes)?;
    for (g, b) in gs.iter_mut().zip(bytes.chunks_exact(8)) {
        *g = u64::from_le_bytes(b.try_into().unwrap_or_default());
    }
    if gs.contains(&0) {
        return Err(SeedError::Implausible("a nil g in allgs"));
    }
    let mut live = 0;
    let mut status = vec![0u8; IOV_MAX * 4];
    for chunk in gs.chunks(IOV_MAX) {
        let remote: Vec<(u64, usize)> = chunk
            .iter()
            .map(|&g| (g.wrapping_add(layout.status_offset), 4))
            .collect();
        let out = &mut status[..chunk.len() * 4];
        read_exact(pid, &remote, out)?;
        for s in out.chunks_exact(4) {
            let s = u32::from_le_bytes(s.try_into().unwrap_or_default()) & !G_SCAN;
            if s > 9 {
                return Err(SeedError::Implausible("a g's status"));
            }
            if s != G_IDLE && s != G_DEAD {
                live += 1;
            }
        }
    }
    Ok(live)
}

/// A seed taken: the live goroutines read, and the probes' (created, exited) then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub live: u64,
    pub created: u64,
    pub exited: u64,
    pub attempts: u32,
}

impl Seed {
    /// What to add to the probes' created minus exited to get the live count.
    pub fn offset(&self) -> i64 {
        self.live as i64 - (self.created as i64 - self.exited as i64)
    }
}

/// Reads the live goroutines of `pid`, accepted only when `counter` (the probes' created and
/// exited for the process, read from the kernel) stayed the same before, between and after
/// two walks that agree.
pub fn seed(
    pid: u32,
    layout: &Layout,
    mut counter: impl FnMut() -> (u64, u64),
) -> Result<Seed, SeedError> {
    for attempt in 1..=ATTEMPTS {
        let c0 = counter();
        let still0 = all_threads_asleep(pid);
        let w1 = count_live(pid, layout)?;
        let c1 = counter();
        let w2 = count_live(pid, layout)?;
        let still1 = all_threads_asleep(pid);
        let c2 = counter();
        if still0 && still1 && c0 == c1 && c1 == c2 && w1 == w2 {
            return Ok(Seed {
                live: w1,
                created: c0.0,
                exited: c0.1,
                attempts: attempt,
            });
        }
        // A burst may be under way: wait a little longer each time (at most ~36 ms in all).
        std::thread::sleep(Duration::from_millis(u64::from(attempt)));
    }
    Err(SeedError::Busy)
}

/// Is every thread of `pid` asleep (state `S`)? A thread the scheduler took off its CPU right
/// after a probe's trap, inside `newproc1` or `goexit0`, has been counted by the probe but not
/// yet changed the g's status: it is runnable (`R`), so a process with a runnable thread is not
/// read. (Measured: without this check a program that never stops starting goroutines, on 2
/// busy CPUs, was sometimes seeded one off.)
fn all_threads_asleep(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.into_iter().all(|t| {
        t.ok()
            .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().next().map(|state| state == "S")
            })
            .unwrap_or(false)
    })
}

/// A layout, or why there is none (the result label and the message).
type LayoutOrRefusal = Result<Layout, (&'static str, String)>;

/// Layouts by executable (device, inode), and the results of seeding by label.
#[derive(Debug, Default)]
pub struct Seeder {
    /// A layout, or why there is none (the result label and the message): the same for
    /// every process of the executable.
    layouts: HashMap<(u64, u64), LayoutOrRefusal>,
    results: BTreeMap<&'static str, u64>,
    /// (executable, result) refusals logged at `warn` (later ones of the same go to `debug`).
    logged: HashSet<((u64, u64), &'static str)>,
}

impl Seeder {
    /// Seeds process `pid` (whose executable is reached through `exe`, its procfs link).
    /// Counts the result; logs refusals.
    pub fn seed(
        &mut self,
        pid: u32,
        exe: &Path,
        counter: impl FnMut() -> (u64, u64),
    ) -> Option<Seed> {
        let key = std::fs::metadata(exe).map_or((0, 0), |m| (m.dev(), m.ino()));
        let r = self
            .layout(exe)
            .and_then(|l| seed(pid, &l, counter).map_err(|e| (e.label(), e.to_string())));
        match r {
            Ok(s) => {
                *self.results.entry("seeded").or_default() += 1;
                tracing::debug!(
                    pid,
                    live = s.live,
                    offset = s.offset(),
                    attempts = s.attempts,
                    "goroutines seeded from the process's memory"
                );
                Some(s)
            }
            Err((label, e)) => {
                *self.results.entry(label).or_default() += 1;
                if self.logged.len() >= MAX_LAYOUTS {
                    self.logged.clear();
                }
                if self.logged.insert((key, label)) {
                    tracing::warn!(pid, exe = %exe.display(), error = %e, "goroutine count not seeded: the gauge counts from the attach (logged once per executable and reason)");
                } else {
                    tracing::debug!(pid, error = %e, "goroutine count not seeded");
                }
                None
            }
        }
    }

    fn layout(&mut self, exe: &Path) -> LayoutOrRefusal {
        let meta = std::fs::metadata(exe).map_err(|e| {
            let e = SeedError::from(e);
            (e.label(), e.to_string())
        })?;
        let key = (meta.dev(), meta.ino());
        if self.layouts.len() >= MAX_LAYOUTS && !self.layouts.contains_key(&key) {
            self.layouts.clear();
        }
        self.layouts
            .entry(key)
            .or_insert_with(|| layout(exe).map_err(|e| (e.label(), e.to_string())))
            .clone()
    }

    /// Seeds by result (`seeded`, or the reason of a refusal).
    pub fn results(&self) -> &BTreeMap<&'static str, u64> {
        &self.results
    }
}

/// The process's entry point as mapped (`AT_ENTRY` of `/proc/<pid>/auxv`).
fn entry_of(pid: u32) -> Result<u64, SeedError> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))?;
    auxv.chunks_exact(16)
        .find(|p| u64::from_le_bytes(p[..8].try_into().unwrap_or_default()) == AT_ENTRY)
        .map(|p| u64::from_le_bytes(p[8..].try_into().unwrap_or_default()))
        .ok_or(SeedError::Implausible("no AT_ENTRY"))
}

fn read_words(pid: u32, addresses: &[u64], out: &mut [u64]) -> Result<(), SeedError> {
    let mut b = vec![0u8; addresses.len() * 8];
    let remote: Vec<(u64, usize)> = addresses.iter().map(|&a| (a, 8)).collect();
    read_exact(pid, &remote, &mut b)?;
    for (o, w) in out.iter_mut().zip(b.chunks_exact(8)) {
        *o = u64::from_le_bytes(w.try_into().unwrap_or_default());
    }
    Ok(())
}

/// Reads the remote pieces `(address, len)` of `pid`, in order, into `out` (their total
/// length), in one `process_vm_readv`; a short read is an error.
fn read_exact(pid: u32, remote: &[(u64, usize)], out: &mut [u8]) -> Result<(), SeedError> {
    let total: usize = remote.iter().map(|r| r.1).sum();
    if total != out.len() || remote.len() > IOV_MAX {
        return Err(SeedError::Implausible("read size"));
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote: Vec<libc::iovec> = remote
        .iter()
        .map(|&(a, l)| libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: l,
        })
        .collect();
    // SAFETY: `local` covers exactly `out`, which is writable and outlives the call; the
    // remote iovecs are only addresses in the other process, which the kernel checks.
    let n = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if n as usize != total {
        return Err(SeedError::Implausible(
            "a short read of the process's memory",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_offsets() {
        assert_eq!(go_minor("go1.22.6"), Some(22));
        assert_eq!(go_minor("go1.24rc1"), Some(24));
        assert_eq!(go_minor("go1.19"), Some(19));
        assert_eq!(go_minor("devel go1.25-abc"), None);
        assert_eq!(status_offset(19), Some(144));
        assert_eq!(status_offset(24), Some(152));
        assert_eq!(status_offset(20), None, "not verified here");
        assert_eq!(status_offset(25), None);
    }

    #[test]
    fn the_seed_is_the_walk_minus_what_the_probes_counted() {
        let s = Seed {
            live: 1007,
            created: 10,
            exited: 4,
            attempts: 1,
        };
        assert_eq!(s.offset(), 1001);
    }

    #[test]
    fn reading_this_process_memory() {
        let words = [0x1122_3344_5566_7788u64, 42];
        let mut out = [0u64; 2];
        let addrs = [
            std::ptr::addr_of!(words[0]) as u64,
            std::ptr::addr_of!(words[1]) as u64,
        ];
        read_words(std::process::id(), &addrs, &mut out).unwrap();
        assert_eq!(out, words);
        assert!(matches!(
            read_words(std::process::id(), &[8], &mut out[..1]),
            Err(SeedError::Unreadable(_))
        ));
        assert_ne!(entry_of(std::process::id()).unwrap(), 0);
    }

    /// Every installed Go, unstripped and stripped, PIE: a program holding 10,000 goroutines
    /// is walked to exactly NumGoroutine() - 1 + R (R: the main goroutine and the runtime's
    /// own, 5 + GOMAXPROCS after the first GC cycle, as the probes count them; see
    /// tests/workloads/goroutines.go), and to exactly R once they ended. The walk's time is
    /// printed.
    #[test]
    fn the_walk_counts_what_the_runtime_has() {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let mut gos: Vec<std::path::PathBuf> = vec!["/usr/lib/go/bin/go".into()];
        gos.extend((21..=30).map(|v| format!("/usr/lib/go-1.{v}/bin/go").into()));
        gos.retain(|g| g.exists());
        assert!(!gos.is_empty(), "no Go toolchain (scripts/setup --test)");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/goroutines.go");
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let mut checked = 0;
        for (gi, go) in gos.iter().enumerate() {
            let flags: [&[&str]; 3] = [
                &[],
                &["-ldflags=-s -w"],
                &["-buildmode=pie", "-ldflags=-s -w"],
            ];
            for (fi, f) in flags.iter().enumerate() {
                let bin = dir.path().join(format!("g{gi}_{fi}"));
                let st = Command::new(go)
                    .arg("build")
                    .args(*f)
                    .arg("-o")
                    .arg(&bin)
                    .arg(&src)
                    .env("HOME", &home)
                    .env(
                        "GOCACHE",
                        crate::ebpf::go_pclntab::tests::go_cache(&home.join(format!("cache{gi}"))),
                    )
                    .env("GOPATH", home.join("path"))
                    .env("GOFLAGS", "")
                    .env("GOTOOLCHAIN", "local")
                    .env("CGO_ENABLED", "0")
                    .status()
                    .unwrap();
                assert!(st.success());
                let l = layout(&bin).unwrap_or_else(|e| panic!("{} {f:?}: {e}", go.display()));
                let mut child = Command::new(&bin)
                    .arg("10000")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
                let mut line = String::new();
                out.read_line(&mut line).unwrap();
                let v: Vec<&str> = line.split_whitespace().collect();
                let (num, procs): (u64, u64) = (v[1].parse().unwrap(), v[2].parse().unwrap());
                let r = 5 + procs;
                let t = std::time::Instant::now();
                let live = count_live(child.id(), &l).unwrap();
                let took = t.elapsed();
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(b"go\n").unwrap();
                line.clear();
                out.read_line(&mut line).unwrap();
                let after = count_live(child.id(), &l).unwrap();
                drop(stdin);
                child.wait().unwrap();
                eprintln!(
                    "{} {f:?}: NumGoroutine {num}, walked {live} (want {}) in {took:?}; after {after} (want {r})",
                    go.display(),
                    num - 1 + r
                );
                assert_eq!(live, num - 1 + r);
                assert_eq!(after, r);
                checked += 1;
            }
        }
        assert_eq!(checked, gos.len() * 3);
    }

    #[test]
    fn a_program_not_go_is_refused() {
        assert!(matches!(
            layout(Path::new("/bin/sh")),
            Err(SeedError::NotFound(_))
        ));
    }
}

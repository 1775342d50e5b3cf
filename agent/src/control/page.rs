//! The state page: the control snapshot in a memory-mappable file (default
//! `/run/steadfast/state.page`), so applications read a breaker or a signal with a few memory
//! loads: no syscall, no socket, no allocation. The layout is documented, versioned and
//! little-endian (docs/state-page.md):
//!
//! - a 64-byte header: magic, version, status (running, stopped, superseded), a seqlock
//!   sequence, the generation, the snapshot index, the time of the last write (refreshed at
//!   least once a second), the agent's pid, the breaker and signal counts and the name table's
//!   offset;
//! - one 64-byte slot per breaker, then one per signal (state, flags, value as f64 bits, the
//!   index of its last change, the time of its last change, openings, its name's place);
//! - the name table (UTF-8 names, in slot order, no separators).
//!
//! Values change in place under the seqlock: the sequence is odd while the agent writes, and a
//! reader's copy counts only if the sequence was even and unchanged around it. A change of the
//! name table (a breaker or signal added or removed) writes a complete new file and renames it
//! over the old one; the old one is then marked superseded, so readers holding it re-open the
//! path. On shutdown the page is marked stopped. The file is mode 0640, in the API socket's
//! group.
//!
//! The mapping below is the only `unsafe` of the control module.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{breaker::Force, Snapshot};

pub const MAGIC: [u8; 8] = *b"STDFPAGE";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
pub const SLOT_BYTES: usize = 64;

/// Header `status` values.
pub const STATUS_RUNNING: u32 = 0;
pub const STATUS_STOPPED: u32 = 1;
pub const STATUS_SUPERSEDED: u32 = 2;

/// Slot `flags` bits.
pub const FLAG_INPUTS_UNKNOWN: u32 = 1 << 0;
pub const FLAG_FORCED_OPEN: u32 = 1 << 1;
pub const FLAG_FORCED_CLOSE: u32 = 1 << 2;

/// Header field offsets.
pub mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const STATUS: usize = 12;
    pub const SEQUENCE: usize = 16;
    pub const GENERATION: usize = 24;
    pub const INDEX: usize = 32;
    pub const UPDATED_UNIX_NS: usize = 40;
    pub const PID: usize = 48;
    pub const BREAKERS: usize = 52;
    pub const SIGNALS: usize = 56;
    pub const NAMES_OFFSET: usize = 60;
}

/// Slot field offsets (from the slot's start).
pub mod slot {
    pub const STATE: usize = 0;
    pub const FLAGS: usize = 4;
    pub const VALUE: usize = 8;
    pub const CHANGED_INDEX: usize = 16;
    pub const SINCE_UNIX_NS: usize = 24;
    pub const OPENINGS: usize = 32;
    pub const NAME_LEN: usize = 36;
    pub const NAME_OFFSET: usize = 40;
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one slot shows (everything but its name).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SlotValue {
    state: u32,
    flags: u32,
    value: f64,
    since_unix_ns: u64,
    openings: u32,
}

/// A file mapped shared and writable. Every access goes through atomics at aligned offsets
/// inside the mapping.
struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is only touched through
// atomics (or before anyone else can see the file), so moving it between threads is fine.
unsafe impl Send for Mapped {}

impl Mapped {
    fn new(file: &File, len: usize) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of `len` bytes of a file we just sized to `len`; the
        // kernel picks the address. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap"))?;
        Ok(Mapped { ptr, len })
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "page offset {off}"
        );
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned); the memory lives as
        // long as `self`, and other processes only ever read it.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len,
            "page offset {off}"
        );
        // SAFETY: as in `u32`, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    /// Bytes written before the file is renamed into place (no reader can see them yet).
    fn fill(&mut self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len, "page offset {off}");
        // SAFETY: in bounds; `&mut self` and a file nobody else has opened yet (it still has
        // its temporary name) make this the only access.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(off), bytes.len())
        };
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no reference into it outlives self.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One file generation: its mapping and the names it has slots for.
struct Generation {
    map: Mapped,
    breakers: Vec<String>,
    signals: Vec<String>,
    generation: u64,
}

impl Generation {
    /// Runs `f` between the two sequence bumps of a seqlock write.
    fn write(&self, f: impl FnOnce(&Mapped)) {
        let seq = self.map.u64(header::SEQUENCE);
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f(&self.map);
        seq.store(s.wrapping_add(2), Ordering::Release);
    }

    fn slot_offset(&self, i: usize) -> usize {
        HEADER_BYTES + i * SLOT_BYTES
    }

    /// The index of the last change of a slot by name, if it holds `v`.
    fn changed_index(&self, is_breaker: bool, name: &str, v: &SlotValue) -> Option<u64> {
        let i = if is_breaker {
            self.breakers.iter().position(|n| n == name)?
        } else {
            self.breakers.len() + self.signals.iter().position(|n| n == name)?
        };
        (self.read_slot(i) == *v).then(|| {
            self.map
                .u64(self.slot_offset(i) + slot::CHANGED_INDEX)
                .load(Ordering::Relaxed)
        })
    }

    fn read_slot(&self, i: usize) -> SlotValue {
        let o = self.slot_offset(i);
        let m = &self.map;
        SlotValue {
            state: m.u32(o + slot::STATE).load(Ordering::Relaxed),
            flags: m.u32(o + slot::FLAGS).load(Ordering::Relaxed),
            value: f64::from_bits(m.u64(o + slot::VALUE).load(Ordering::Relaxed)),
            since_unix_ns: m.u64(o + slot::SINCE_UNIX_NS).load(Ordering::Relaxed),
            openings: m.u32(o + slot::OPENINGS).load(Ordering::Relaxed),
        }
    }
}

fn write_slot(m: &Mapped, o: usize, v: &SlotValue, changed_index: Option<u64>) {
    m.u32(o + slot::STATE).store(v.state, Ordering::Relaxed);
    m.u32(o + slot::FLAGS).store(v.flags, Ordering::Relaxed);
    m.u64(o + slot::VALUE)
        .store(v.value.to_bits(), Ordering::Relaxed);
    m.u64(o + slot::SINCE_UNIX_NS)
        .store(v.since_unix_ns, Ordering::Relaxed);
    m.u32(o + slot::OPENINGS)
        .store(v.openings, Ordering::Relaxed);
    if let Some(i) = changed_index {
        m.u64(o + slot::CHANGED_INDEX).store(i, Ordering::Relaxed);
    }
}

/// The agent's side of the page: writes every snapshot, refreshes the time, marks stops.
pub struct StatePage {
    path: PathBuf,
    group: Option<u32>,
    current: Option<Generation>,
    /// The snapshot a new file could not be written for (retried by the heartbeat).
    last: Option<Snapshot>,
    /// When each signal's level last changed (signals carry no time of their own).
    signal_since: BTreeMap<String, (f64, u64)>,
    /// A new file could not be written: the error was logged once; retried on each write.
    failing: bool,
    stopped: bool,
}

impl StatePage {
    /// `group`: the group id the file is given (the API socket's group), if any.
    pub fn new(path: PathBuf, group: Option<u32>) -> Self {
        Self {
            path,
            group,
            current: None,
            last: None,
            signal_since: BTreeMap::new(),
            failing: false,
            stopped: false,
        }
    }

    fn values(&mut self, snap: &Snapshot, now: u64) -> (Vec<SlotValue>, Vec<SlotValue>) {
        let breakers = snap
            .breakers
            .values()
            .map(|b| SlotValue {
                state: u32::from(b.state.as_number()),
                flags: match b.forced {
                    Some(Force::Open) => FLAG_FORCED_OPEN,
                    Some(Force::Close) => FLAG_FORCED_CLOSE,
                    None => 0,
                } | if b.inputs_unknown {
                    FLAG_INPUTS_UNKNOWN
                } else {
                    0
                },
                value: b.admit_ratio,
                since_unix_ns: b.since_unix_ms.saturating_mul(1_000_000),
                openings: b.openings,
            })
            .collect();
        self.signal_since
            .retain(|name, _| snap.signals.contains_key(name));
        let signals = snap
            .signals
            .iter()
            .map(|(name, s)| {
                let since = match self.signal_since.get(name) {
                    Some((level, since)) if *level == s.level => *since,
                    _ => {
                        self.signal_since.insert(name.clone(), (s.level, now));
                        now
                    }
                };
                SlotValue {
                    state: 0,
                    flags: if s.inputs_unknown {
                        FLAG_INPUTS_UNKNOWN
                    } else {
                        0
                    },
                    value: s.level,
                    since_unix_ns: since,
                    openings: 0,
                }
            })
            .collect();
        (breakers, signals)
    }

    /// Writes `snap`: in place when the names are the same, else as a new file.
    pub fn publish(&mut self, snap: &Snapshot) {
        if self.stopped {
            return;
        }
        let now = unix_ns();
        let (breakers, signals) = self.values(snap, now);
        let same_names = self.current.as_ref().is_some_and(|g| {
            g.breakers.iter().eq(snap.breakers.keys()) && g.signals.iter().eq(snap.signals.keys())
        });
        if same_names && !self.failing {
            let g = self.current.as_ref().expect("checked above");
            let changed: Vec<bool> = breakers
                .iter()
                .chain(&signals)
                .enumerate()
                .map(|(i, v)| g.read_slot(i) != *v)
                .collect();
            g.write(|m| {
                for (i, v) in breakers.iter().chain(&signals).enumerate() {
                    if changed[i] {
                        write_slot(m, g.slot_offset(i), v, Some(snap.index));
                    }
                }
                m.u64(header::INDEX).store(snap.index, Ordering::Relaxed);
                m.u64(header::UPDATED_UNIX_NS).store(now, Ordering::Relaxed);
            });
            return;
        }
        match self.create(snap, &breakers, &signals, now) {
            Ok(next) => {
                if self.failing {
                    tracing::info!(page = %self.path.display(), "state page written again");
                }
                self.failing = false;
                self.last = None;
                if let Some(old) = self.current.replace(next) {
                    old.write(|m| {
                        m.u32(header::STATUS)
                            .store(STATUS_SUPERSEDED, Ordering::Relaxed)
                    });
                }
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(page = %self.path.display(), error = %e, "writing the state page failed: readers see it stopped and fail open; retrying");
                }
                self.failing = true;
                self.last = Some(snap.clone());
                // The old file's names no longer match: readers must not trust it.
                if let Some(old) = &self.current {
                    old.write(|m| {
                        m.u32(header::STATUS)
                            .store(STATUS_STOPPED, Ordering::Relaxed)
                    });
                }
            }
        }
    }

    /// Refreshes the page's time (at least once a second), so readers can tell a stopped agent
    /// from a quiet one; retries a file that could not be written.
    pub fn heartbeat(&mut self) {
        if self.stopped {
            return;
        }
        if self.failing {
            if let Some(snap) = self.last.take() {
                self.publish(&snap);
            }
            return;
        }
        if let Some(g) = &self.current {
            let now = unix_ns();
            g.write(|m| m.u64(header::UPDATED_UNIX_NS).store(now, Ordering::Relaxed));
        }
    }

    /// Marks the page stopped (at shutdown): readers fail open at once. The file stays.
    pub fn stop(&mut self) {
        self.stopped = true;
        if let Some(g) = &self.current {
            let now = unix_ns();
            g.write(|m| {
                m.u32(header::STATUS)
                    .store(STATUS_STOPPED, Ordering::Relaxed);
                m.u64(header::UPDATED_UNIX_NS).store(now, Ordering::Relaxed);
            });
        }
    }

    fn create(
        &self,
        snap: &Snapshot,
        breakers: &[SlotValue],
        signals: &[SlotValue],
        now: u64,
    ) -> std::io::Result<Generation> {
        let names: Vec<&String> = snap.breakers.keys().chain(snap.signals.keys()).collect();
        let slots = names.len();
        let names_offset = HEADER_BYTES + slots * SLOT_BYTES;
        let names_len: usize = names.iter().map(|n| n.len()).sum();
        let len = names_offset + names_len;
        if len > u32::MAX as usize {
            return Err(std::io::Error::other("state page over 4 GiB"));
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&tmp)?;
            // The umask may have taken bits away; the mode is part of the contract.
            file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            if let Some(gid) = self.group {
                if file.metadata()?.gid() != gid {
                    std::os::unix::fs::fchown(&file, None, Some(gid))?;
                }
            }
            file.set_len(len as u64)?;
            let mut map = Mapped::new(&file, len)?;
            map.fill(header::MAGIC, &MAGIC);
            let generation = self
                .current
                .as_ref()
                .map_or(snap.index, |g| snap.index.max(g.generation + 1));
            let mut name_at = names_offset;
            for (i, name) in names.iter().enumerate() {
                let o = HEADER_BYTES + i * SLOT_BYTES;
                map.fill(name_at, name.as_bytes());
                map.u32(o + slot::NAME_LEN)
                    .store(name.len() as u32, Ordering::Relaxed);
                map.u32(o + slot::NAME_OFFSET)
                    .store(name_at as u32, Ordering::Relaxed);
                name_at += name.len();
            }
            let g = Generation {
                map,
                breakers: snap.breakers.keys().cloned().collect(),
                signals: snap.signals.keys().cloned().collect(),
                generation,
            };
            let m = &g.map;
            m.u32(header::VERSION).store(VERSION, Ordering::Relaxed);
            m.u32(header::STATUS)
                .store(STATUS_RUNNING, Ordering::Relaxed);
            m.u64(header::GENERATION)
                .store(generation, Ordering::Relaxed);
            m.u64(header::INDEX).store(snap.index, Ordering::Relaxed);
            m.u64(header::UPDATED_UNIX_NS).store(now, Ordering::Relaxed);
            m.u32(header::PID)
                .store(std::process::id(), Ordering::Relaxed);
            m.u32(header::BREAKERS)
                .store(breakers.len() as u32, Ordering::Relaxed);
            m.u32(header::SIGNALS)
                .store(signals.len() as u32, Ordering::Relaxed);
            m.u32(header::NAMES_OFFSET)
                .store(names_offset as u32, Ordering::Relaxed);
            // A slot's last change: the previous file's, when the value is the same there.
            let kinds = snap
                .breakers
                .keys()
                .map(|n| (true, n))
                .chain(snap.signals.keys().map(|n| (false, n)));
            for (i, ((is_breaker, name), v)) in
                kinds.zip(breakers.iter().chain(signals)).enumerate()
            {
                let changed = self
                    .current
                    .as_ref()
                    .and_then(|old| old.changed_index(is_breaker, name, v))
                    .unwrap_or(snap.index);
                write_slot(m, g.slot_offset(i), v, Some(changed));
            }
            std::fs::rename(&tmp, &self.path)?;
            Ok(g)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{breaker::State, BreakerView, SignalView};
    use std::os::unix::fs::FileExt;

    fn snap(index: u64, breakers: &[(&str, State, f64)], signals: &[(&str, f64)]) -> Snapshot {
        let mut s = Snapshot {
            index,
            ..Snapshot::default()
        };
        for (name, state, ratio) in breakers {
            s.breakers.insert(
                name.to_string(),
                BreakerView {
                    state: *state,
                    admit_ratio: *ratio,
                    forced: (*state == State::Shed).then_some(Force::Open),
                    openings: 3,
                    since_unix_ms: 1_700_000_000_000,
                    reason: String::new(),
                    inputs_unknown: *state == State::Probe,
                    unknown_reason: None,
                },
            );
        }
        for (name, level) in signals {
            s.signals.insert(
                name.to_string(),
                SignalView {
                    level: *level,
                    source: "test".into(),
                    inputs_unknown: *level == 0.5,
                    unknown_reason: None,
                },
            );
        }
        s
    }

    /// The page decoded by hand from its bytes, as docs/state-page.md describes it.
    struct Decoded {
        status: u32,
        seq: u64,
        generation: u64,
        index: u64,
        updated: u64,
        /// name -> (state, flags, value, changed index, since, openings)
        slots: Vec<(String, u32, u32, f64, u64, u64, u32)>,
        breakers: u32,
    }

    fn decode(bytes: &[u8]) -> Decoded {
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(&bytes[..8], b"STDFPAGE");
        assert_eq!(u32_at(8), 1, "version");
        let (nb, ns, names) = (u32_at(52), u32_at(56), u32_at(60) as usize);
        assert_eq!(names, 64 + 64 * (nb + ns) as usize);
        let slots = (0..(nb + ns) as usize)
            .map(|i| {
                let o = 64 + 64 * i;
                let (len, at) = (u32_at(o + 36) as usize, u32_at(o + 40) as usize);
                assert!(at >= names && at + len <= bytes.len());
                assert!(bytes[o + 44..o + 64].iter().all(|b| *b == 0), "reserved");
                (
                    String::from_utf8(bytes[at..at + len].to_vec()).unwrap(),
                    u32_at(o),
                    u32_at(o + 4),
                    f64::from_bits(u64_at(o + 8)),
                    u64_at(o + 16),
                    u64_at(o + 24),
                    u32_at(o + 32),
                )
            })
            .collect();
        Decoded {
            status: u32_at(12),
            seq: u64_at(16),
            generation: u64_at(24),
            index: u64_at(32),
            updated: u64_at(40),
            slots,
            breakers: nb,
        }
    }

    #[test]
    fn the_page_follows_snapshots_in_place_and_by_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/state.page");
        let mut page = StatePage::new(path.clone(), None);
        let before = unix_ns();
        page.publish(&snap(5, &[("db", State::Admit, 1.0)], &[("io", 0.0)]));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        let d = decode(&std::fs::read(&path).unwrap());
        assert_eq!((d.status, d.seq % 2, d.generation, d.index), (0, 0, 5, 5));
        assert!(d.updated >= before);
        assert_eq!(d.breakers, 1);
        assert_eq!(
            d.slots[0],
            ("db".into(), 0, 0, 1.0, 5, 1_700_000_000_000_000_000, 3)
        );
        assert_eq!(d.slots[1].0, "io");

        // Same names: written in place under the seqlock (the sequence moves by 2).
        page.publish(&snap(6, &[("db", State::Shed, 0.0)], &[("io", 0.0)]));
        let d2 = decode(&std::fs::read(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        assert_eq!((d2.seq, d2.generation, d2.index), (d.seq + 2, 5, 6));
        assert_eq!((d2.slots[0].1, d2.slots[0].4), (2, 6));
        assert_eq!(d2.slots[0].2, FLAG_FORCED_OPEN);
        assert_eq!(d2.slots[1].4, 5, "io did not change at 6");

        // A breaker added: a new file; the old one (still open here) says superseded.
        let old = std::fs::File::open(&path).unwrap();
        page.publish(&snap(
            7,
            &[("cache", State::Probe, 0.25), ("db", State::Shed, 0.0)],
            &[("io", 0.5)],
        ));
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        let mut status = [0u8; 4];
        old.read_exact_at(&mut status, 12).unwrap();
        assert_eq!(u32::from_le_bytes(status), STATUS_SUPERSEDED);
        let d3 = decode(&std::fs::read(&path).unwrap());
        assert_eq!((d3.generation, d3.index, d3.breakers), (7, 7, 2));
        let names: Vec<&str> = d3.slots.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["cache", "db", "io"]);
        assert_eq!((d3.slots[0].1, d3.slots[0].3, d3.slots[0].4), (1, 0.25, 7));
        assert_eq!(d3.slots[1].4, 6, "db's last change carried over");
        assert_eq!((d3.slots[2].3, d3.slots[2].4), (0.5, 7));
        // Inputs unknown (the probe breaker and the 0.5 signal here) set bit 0 of the flags.
        assert_eq!(d3.slots[0].2, FLAG_INPUTS_UNKNOWN);
        assert_eq!(d3.slots[1].2, FLAG_FORCED_OPEN);
        assert_eq!(d3.slots[2].2, FLAG_INPUTS_UNKNOWN);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        // The heartbeat moves the time only; a stop marks the page and ends the writes.
        std::thread::sleep(Duration::from_millis(2));
        page.heartbeat();
        let d4 = decode(&std::fs::read(&path).unwrap());
        assert!(d4.updated > d3.updated);
        assert_eq!((d4.index, d4.seq, d4.status), (7, d3.seq + 2, 0));
        page.stop();
        page.publish(&snap(8, &[], &[]));
        page.heartbeat();
        let d5 = decode(&std::fs::read(&path).unwrap());
        assert_eq!((d5.status, d5.index), (STATUS_STOPPED, 7));
    }

    #[test]
    fn a_page_that_cannot_be_written_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        // The parent is a file: nothing can be created under it until it is removed.
        let blocker = dir.path().join("run");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("state.page");
        let mut page = StatePage::new(path.clone(), None);
        page.publish(&snap(2, &[("db", State::Admit, 1.0)], &[]));
        assert!(!path.exists());
        page.heartbeat();
        std::fs::remove_file(&blocker).unwrap();
        page.heartbeat();
        let d = decode(&std::fs::read(&path).unwrap());
        assert_eq!((d.index, d.slots.len()), (2, 1));
    }

    use std::time::Duration;
}

//! The state page as a reader sees it (layout: docs/state-page.md): a read-only shared mapping,
//! a name index built once per file, and seqlock reads made of atomic loads only. All of the
//! crate's `unsafe` is here.

use std::{
    collections::HashMap,
    fs::File,
    hash::{BuildHasherDefault, Hasher},
    os::unix::fs::MetadataExt,
    path::Path,
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicU64, Ordering},
};

use crate::Error;

pub(crate) const MAGIC: [u8; 8] = *b"STDFPAGE";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 64;
pub(crate) const SLOT_BYTES: usize = 64;

pub(crate) const STATUS_RUNNING: u32 = 0;
pub(crate) const STATUS_SUPERSEDED: u32 = 2;

const H_VERSION: usize = 8;
const H_STATUS: usize = 12;
const H_SEQUENCE: usize = 16;
const H_GENERATION: usize = 24;
const H_INDEX: usize = 32;
const H_UPDATED_UNIX_NS: usize = 40;
const H_PID: usize = 48;
const H_BREAKERS: usize = 52;
const H_SIGNALS: usize = 56;
const H_NAMES_OFFSET: usize = 60;

const S_STATE: usize = 0;
const S_FLAGS: usize = 4;
const S_VALUE: usize = 8;
const S_CHANGED_INDEX: usize = 16;
const S_SINCE_UNIX_NS: usize = 24;
const S_OPENINGS: usize = 32;
const S_NAME_LEN: usize = 36;
const S_NAME_OFFSET: usize = 40;

/// How many times a reader retries while the agent is mid-write before it gives up (and the
/// caller fails open). A write takes well under a microsecond.
const MAX_TRIES: u32 = 10_000;

/// An Fx-style hash, eight bytes at a time: names are short, and SipHash would be most of an
/// `allow`. (Names come from the agent's rule files, not from attackers.)
#[derive(Default)]
pub(crate) struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type Names = HashMap<Box<str>, usize, BuildHasherDefault<Fx>>;

/// One slot's fields, read together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RawSlot {
    pub state: u32,
    pub flags: u32,
    pub value: f64,
    pub changed_index: u64,
    pub since_unix_ns: u64,
    pub openings: u32,
}

/// The header's changing fields, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub status: u32,
    pub index: u64,
    pub updated_unix_ns: u64,
}

/// One mapped file.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    pub breakers: Names,
    pub signals: Names,
    /// Slot offsets with their names, in file order (breakers first).
    pub slots: Vec<(Box<str>, usize, bool)>,
    pub generation: u64,
    pub pid: u32,
    /// Which file this is (to notice a new one renamed over the path).
    pub dev: u64,
    pub ino: u64,
}

// SAFETY: a read-only shared mapping, only read through atomics; it is unmapped in Drop, which
// needs `&mut self`, so no reader can be using it then.
unsafe impl Send for Mapping {}
// SAFETY: as above: concurrent readers only load.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped exactly once, with no borrow left.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl Mapping {
    /// Opens and maps the page at `path`, checks its layout and indexes its names.
    pub(crate) fn open(path: &Path) -> Result<Mapping, Error> {
        use std::os::fd::AsRawFd;
        let file = File::open(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::Io(path.to_path_buf(), e))?;
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let bad = |what: &str| Error::Format(path.to_path_buf(), what.to_string());
        if len < HEADER_BYTES || len > u32::MAX as usize {
            return Err(bad("size out of range"));
        }
        // SAFETY: a read-only shared mapping of the whole file; the kernel picks the address
        // and the result is checked. The file is complete before the agent renames it into
        // place, and it never shrinks, so every offset checked below stays mapped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Io(
                path.to_path_buf(),
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| bad("mmap returned null"))?;
        let mut m = Mapping {
            ptr,
            len,
            breakers: Names::default(),
            signals: Names::default(),
            slots: Vec::new(),
            generation: 0,
            pid: 0,
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if m.bytes(0, 8) != MAGIC {
            return Err(bad("not a steadfast state page (magic)"));
        }
        let version = m.u32(H_VERSION).load(Ordering::Relaxed);
        if version != VERSION {
            return Err(bad(&format!(
                "layout version {version}, this client reads {VERSION}"
            )));
        }
        m.generation = m.u64(H_GENERATION).load(Ordering::Relaxed);
        m.pid = m.u32(H_PID).load(Ordering::Relaxed);
        let nb = m.u32(H_BREAKERS).load(Ordering::Relaxed) as usize;
        let ns = m.u32(H_SIGNALS).load(Ordering::Relaxed) as usize;
        let names_offset = m.u32(H_NAMES_OFFSET).load(Ordering::Relaxed) as usize;
        let slots_end = (nb + ns)
            .checked_mul(SLOT_BYTES)
            .and_then(|b| b.checked_add(HEADER_BYTES))
            .ok_or_else(|| bad("slot counts"))?;
        if slots_end > names_offset || names_offset > len {
            return Err(bad("slot counts and name table disagree"));
        }
        for i in 0..nb + ns {
            let o = HEADER_BYTES + i * SLOT_BYTES;
            let name_len = m.u32(o + S_NAME_LEN).load(Ordering::Relaxed) as usize;
            let name_at = m.u32(o + S_NAME_OFFSET).load(Ordering::Relaxed) as usize;
            if name_at < names_offset || name_at.checked_add(name_len).is_none_or(|e| e > len) {
                return Err(bad("a name outside the name table"));
            }
            let name: Box<str> = std::str::from_utf8(m.bytes(name_at, name_len))
                .map_err(|_| bad("a name that is not UTF-8"))?
                .into();
            let is_breaker = i < nb;
            if is_breaker {
                m.breakers.insert(name.clone(), o);
            } else {
                m.signals.insert(name.clone(), o);
            }
            m.slots.push((name, o, is_breaker));
        }
        Ok(m)
    }

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: in bounds of the mapping, which lives as long as `self`. Only immutable parts
        // of the file (magic, names) are read this way: the agent never changes them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: every offset used is a header field or inside a slot checked in `open`, so in
        // bounds and 4-aligned (the mapping is page-aligned); the memory lives as long as self.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: as in `u32`, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    /// A seqlock read: `f` copies fields with atomic loads; the copy counts only if the
    /// sequence was even and unchanged around it. None when the agent seems stuck mid-write.
    #[inline]
    pub(crate) fn read<T>(&self, f: impl Fn(&Self) -> T) -> Option<T> {
        let seq = self.u64(H_SEQUENCE);
        for _ in 0..MAX_TRIES {
            let s1 = seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let v = f(self);
                fence(Ordering::Acquire);
                if seq.load(Ordering::Relaxed) == s1 {
                    return Some(v);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// State and value of the slot at `o` (no seqlock: use inside `read`).
    #[inline]
    pub(crate) fn state_value(&self, o: usize) -> (u32, f64) {
        (
            self.u32(o + S_STATE).load(Ordering::Relaxed),
            f64::from_bits(self.u64(o + S_VALUE).load(Ordering::Relaxed)),
        )
    }

    pub(crate) fn slot(&self, o: usize) -> RawSlot {
        RawSlot {
            state: self.u32(o + S_STATE).load(Ordering::Relaxed),
            flags: self.u32(o + S_FLAGS).load(Ordering::Relaxed),
            value: f64::from_bits(self.u64(o + S_VALUE).load(Ordering::Relaxed)),
            changed_index: self.u64(o + S_CHANGED_INDEX).load(Ordering::Relaxed),
            since_unix_ns: self.u64(o + S_SINCE_UNIX_NS).load(Ordering::Relaxed),
            openings: self.u32(o + S_OPENINGS).load(Ordering::Relaxed),
        }
    }

    pub(crate) fn header(&self) -> RawHeader {
        RawHeader {
            status: self.u32(H_STATUS).load(Ordering::Relaxed),
            index: self.u64(H_INDEX).load(Ordering::Relaxed),
            updated_unix_ns: self.u64(H_UPDATED_UNIX_NS).load(Ordering::Relaxed),
        }
    }
}

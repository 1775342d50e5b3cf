//! Reader of a ring buffer of fixed-size records. Draining is synchronous, so a collection can
//! first take every record submitted before it; a duplicate of the map's fd lets a task sleep
//! in epoll until records arrive.

use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering},
};

use aya::{
    maps::{Map, MapData},
    Pod,
};
use tokio::io::unix::AsyncFd;

use super::ProbeError;

/// Record header bits (`BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`) and size.
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

/// A reader of a BPF ring buffer of `T` records.
///
/// Its data pages are mapped once. libbpf and aya map them twice in a row, so that a record
/// that wraps around the end reads as one slice; but every page of that mapping is resident
/// from the `mmap` on (the kernel inserts them all) and counted twice in the agent's RSS: 8 MiB
/// for the 4 MiB HTTP ring. Here a record that wraps is copied out in two pieces instead
/// (records are a few dozen bytes).
pub struct EventRing<T> {
    map: MapData,
    reader: Reader,
    _t: PhantomData<T>,
}

/// The ring's shared memory and the reading of its records.
struct Reader {
    /// The consumer position's page (read-write).
    consumer: Mmap,
    /// The producer position's page, then the data pages (read-only).
    producer: Mmap,
    page: usize,
    mask: usize,
    /// A record that wraps around the end of the data, put back together.
    scratch: Vec<u8>,
}

/// One `mmap` of the ring's descriptor, unmapped on drop.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, valid until drop; the reader only touches it
// through atomics and reads of bytes the producer has published.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` gives out no mutable access.
unsafe impl Sync for Mmap {}

impl Mmap {
    fn new(fd: &MapData, len: usize, prot: i32, offset: usize) -> std::io::Result<Mmap> {
        // SAFETY: a fresh shared mapping of the map's descriptor; the kernel checks the
        // length and offset against the ring's size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.fd().as_fd().as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mmap {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("mmap gave null"))?,
            len,
        })
    }

    /// The `usize` at `offset` (8-byte aligned), as an atomic.
    fn atomic_usize(&self, offset: usize) -> &AtomicUsize {
        assert!(offset + size_of::<usize>() <= self.len && offset.is_multiple_of(8));
        // SAFETY: in bounds and aligned (page-aligned mapping, 8-aligned offset); the kernel
        // accesses it atomically too.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicUsize>() }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= self.len && offset.is_multiple_of(4));
        // SAFETY: in bounds and aligned, as above.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Bytes `offset..offset + len` of the mapping.
    fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len);
        // SAFETY: in bounds; the producer wrote these bytes before it cleared the record's
        // busy bit, which the reader loaded with acquire ordering.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl<T: Pod> EventRing<T> {
    pub(super) fn new(map: Map, name: &'static str) -> Result<Self, ProbeError> {
        let Map::RingBuf(map) = map else {
            return Err(ProbeError::Ring {
                name,
                reason: "not a ring buffer map".into(),
            });
        };
        let size = map
            .info()
            .map_err(|source| ProbeError::Map { name, source })?
            .max_entries() as usize;
        if !size.is_power_of_two() {
            return Err(ProbeError::Ring {
                name,
                reason: format!("size {size} is not a power of two"),
            });
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mmap_err = |e: std::io::Error| ProbeError::Ring {
            name,
            reason: format!("mmap: {e}"),
        };
        let consumer =
            Mmap::new(&map, page, libc::PROT_READ | libc::PROT_WRITE, 0).map_err(mmap_err)?;
        let producer = Mmap::new(&map, page + size, libc::PROT_READ, page).map_err(mmap_err)?;
        Ok(Self {
            map,
            reader: Reader {
                consumer,
                producer,
                page,
                mask: size - 1,
                scratch: Vec::new(),
            },
            _t: PhantomData,
        })
    }

    /// A duplicate of the ring buffer's fd registered with tokio's reactor: readable when
    /// records are waiting. Must be called inside a tokio runtime.
    pub fn readiness(&self) -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd = self.map.fd().as_fd().try_clone_to_owned()?;
        // SAFETY: the AsyncFd owns `fd`, a valid open descriptor that nothing else closes or
        // replaces while the AsyncFd lives.
        unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
    }

    /// Hands every waiting record to `f`, without blocking. Returns the number of records and
    /// of malformed ones (which the caller counts as lost).
    pub fn drain(&mut self, f: impl FnMut(T)) -> (u64, u64) {
        self.reader.drain(f)
    }
}

impl Reader {
    fn drain<T: Pod>(&mut self, mut f: impl FnMut(T)) -> (u64, u64) {
        let (mut ok, mut bad) = (0, 0);
        let consumer_pos = self.consumer.atomic_usize(0);
        let mut cons = consumer_pos.load(Ordering::Acquire);
        // The kernel wakes the reader when, on submitting a record, it sees the consumer
        // position at that record. The reader stores its position and then reads the next
        // record's header (or the producer position); the kernel stores the header and then
        // reads the consumer position. Without a full fence between the reader's store and its
        // read, each can see the other's old value: the reader sees the record still busy,
        // the kernel an old position, and nobody wakes the reader until the next collection.
        // So before concluding "nothing more" after a store, fence and look once more (as
        // libbpf and aya do).
        let mut fenced = true;
        loop {
            let prod = self.producer.atomic_usize(0).load(Ordering::Acquire);
            let header = if cons < prod {
                self.producer
                    .atomic_u32(self.page + (cons & self.mask))
                    .load(Ordering::Acquire)
            } else {
                BUSY
            };
            if header & BUSY != 0 {
                // Caught up, or the next record is reserved but not yet submitted.
                if fenced {
                    return (ok, bad);
                }
                fence(Ordering::SeqCst);
                fenced = true;
                continue;
            }
            let at = cons & self.mask;
            let len = (header & !(BUSY | DISCARD)) as usize;
            if header & DISCARD == 0 {
                let start = (at + HEADER) & self.mask;
                let first = len.min(self.mask + 1 - start);
                let record = if first == len {
                    self.producer.bytes(self.page + start, len)
                } else {
                    self.scratch.clear();
                    self.scratch
                        .extend_from_slice(self.producer.bytes(self.page + start, first));
                    self.scratch
                        .extend_from_slice(self.producer.bytes(self.page, len - first));
                    &self.scratch
                };
                match decode::<T>(record) {
                    Some(ev) => {
                        ok += 1;
                        f(ev)
                    }
                    None => bad += 1,
                }
            }
            cons += (HEADER + len).next_multiple_of(8);
            consumer_pos.store(cons, Ordering::Release);
            fenced = false;
        }
    }
}

/// Decodes one record; `None` if its size is not that of a `T`.
pub fn decode<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length matches, T is Pod (any bit pattern is valid), and read_unaligned
    // does not need alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::process::ProcEvent;

    impl Mmap {
        /// Private anonymous memory standing in for a ring's pages.
        fn anon(len: usize) -> Mmap {
            // SAFETY: a fresh anonymous mapping.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Mmap {
                ptr: NonNull::new(ptr.cast()).unwrap(),
                len,
            }
        }

        fn write(&self, offset: usize, bytes: &[u8]) {
            assert!(offset + bytes.len() <= self.len);
            // SAFETY: in bounds of a writable test mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.ptr.as_ptr().add(offset),
                    bytes.len(),
                )
            };
        }
    }

    /// A kernel-like producer: records of `T = [u8; 44]` (52 bytes with the header, 56 with
    /// the padding), so that they wrap around the end of a 4 KiB ring at changing places.
    struct Producer {
        page: usize,
        size: usize,
        pos: usize,
    }

    impl Producer {
        fn submit(&mut self, r: &Reader, record: &[u8; 44], flags: u32) {
            let at = self.pos % self.size;
            r.producer
                .write(self.page + at, &((44 | flags).to_le_bytes()));
            for (i, b) in record.iter().enumerate() {
                let o = (at + HEADER + i) % self.size;
                r.producer.write(self.page + o, &[*b]);
            }
            self.pos += (HEADER + 44).next_multiple_of(8);
            if flags & BUSY == 0 {
                r.producer.write(0, &self.pos.to_le_bytes());
            }
        }
    }

    #[test]
    fn records_that_wrap_around_are_read_whole() {
        let (page, size) = (4096, 4096);
        let mut r = Reader {
            consumer: Mmap::anon(page),
            producer: Mmap::anon(page + size),
            page,
            mask: size - 1,
            scratch: Vec::new(),
        };
        let mut p = Producer { page, size, pos: 0 };
        let mut want = Vec::new();
        let mut got = Vec::new();
        // 10 rounds of 30 records (1,680 bytes), the consumer following: about 4 times
        // around the ring, records cut by its end included.
        for round in 0..10u8 {
            for i in 0..30u8 {
                let rec = [round.wrapping_mul(31).wrapping_add(i); 44];
                if i % 7 == 3 {
                    p.submit(&r, &rec, DISCARD);
                } else {
                    p.submit(&r, &rec, 0);
                    want.push(rec);
                }
            }
            let (ok, bad) = r.drain::<[u8; 44]>(|rec| got.push(rec));
            assert_eq!((ok, bad), (26, 0), "round {round}");
            assert_eq!(r.consumer.atomic_usize(0).load(Ordering::Relaxed), p.pos);
        }
        assert_eq!(got, want);
        assert!(p.pos > 4 * size);

        // A record still being written (busy) stops the reader until it is submitted.
        let before = p.pos;
        p.submit(&r, &[7; 44], BUSY);
        p.pos = before;
        r.producer.write(0, &(before + 56).to_le_bytes());
        assert_eq!(r.drain::<[u8; 44]>(|_| panic!("busy")), (0, 0));
        p.submit(&r, &[8; 44], 0);
        let mut last = Vec::new();
        assert_eq!(r.drain::<[u8; 44]>(|rec| last.push(rec)), (1, 0));
        assert_eq!(last, vec![[8; 44]]);

        // A record of another size is counted as malformed and skipped.
        assert_eq!(r.drain::<[u8; 40]>(|_| {}), (0, 0));
        p.submit(&r, &[9; 44], 0);
        assert_eq!(r.drain::<[u8; 40]>(|_| panic!("wrong size")), (0, 1));
    }

    #[test]
    fn decode_checks_length() {
        let ev = ProcEvent {
            kind: 1,
            tgid: 42,
            pid: 43,
            _pad: 0,
            cgroup_id: 7,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: viewing a repr(C) value without padding as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const ProcEvent).cast::<u8>(),
                std::mem::size_of::<ProcEvent>(),
            )
        };
        assert_eq!(decode::<ProcEvent>(bytes), Some(ev));
        assert_eq!(decode::<ProcEvent>(&bytes[1..]), None);
        assert_eq!(decode::<ProcEvent>(&[]), None);
        assert_eq!(ev.comm_bytes(), b"worker");
    }
}

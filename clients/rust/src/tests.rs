//! The client against pages written here, independently of the agent, from the layout in
//! docs/state-page.md.

use super::*;
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    os::fd::AsRawFd,
    path::Path,
    sync::atomic::{fence, AtomicU32},
    time::Instant,
};

// ---- counting allocations made by this thread -------------------------------------------

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local Cell (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// ---- a writer built from the documented layout ------------------------------------------

struct Writer {
    ptr: *mut u8,
    len: usize,
    names: Vec<String>,
    /// Skip the seqlock (the negative control of the torn-read test).
    no_seqlock: bool,
}

// SAFETY: test-only shared memory written through atomics.
unsafe impl Send for Writer {}
// SAFETY: as above.
unsafe impl Sync for Writer {}

impl Writer {
    /// Writes a complete page to a temporary file and renames it to `path`.
    fn create(path: &Path, breakers: &[&str], signals: &[&str]) -> Writer {
        let names: Vec<String> = breakers
            .iter()
            .chain(signals)
            .map(|s| s.to_string())
            .collect();
        let names_offset = 64 + 64 * names.len();
        let len = names_offset + names.iter().map(String::len).sum::<usize>();
        let tmp = path.with_extension("tmp");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .unwrap();
        file.set_len(len as u64).unwrap();
        // SAFETY: a fresh shared mapping of a file sized to len.
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
        assert_ne!(ptr, libc::MAP_FAILED);
        let w = Writer {
            ptr: ptr.cast(),
            len,
            names: names.clone(),
            no_seqlock: false,
        };
        // SAFETY: in bounds.
        unsafe { std::ptr::copy_nonoverlapping(b"STDFPAGE".as_ptr(), w.ptr, 8) };
        w.u32(8).store(1, Ordering::Relaxed);
        w.u64(24).store(7, Ordering::Relaxed);
        w.u64(32).store(1, Ordering::Relaxed);
        w.u64(40).store(unix_ns(), Ordering::Relaxed);
        w.u32(48).store(4242, Ordering::Relaxed);
        w.u32(52).store(breakers.len() as u32, Ordering::Relaxed);
        w.u32(56).store(signals.len() as u32, Ordering::Relaxed);
        w.u32(60).store(names_offset as u32, Ordering::Relaxed);
        let mut at = names_offset;
        for (i, n) in names.iter().enumerate() {
            let o = 64 + 64 * i;
            // SAFETY: in bounds.
            unsafe { std::ptr::copy_nonoverlapping(n.as_ptr(), w.ptr.add(at), n.len()) };
            w.u32(o + 36).store(n.len() as u32, Ordering::Relaxed);
            w.u32(o + 40).store(at as u32, Ordering::Relaxed);
            w.u64(o + 8).store(
                if i < breakers.len() { 1.0f64 } else { 0.0 }.to_bits(),
                Ordering::Relaxed,
            );
            at += n.len();
        }
        std::fs::rename(&tmp, path).unwrap();
        w
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= self.len);
        // SAFETY: in bounds, aligned, lives as long as self.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= self.len);
        // SAFETY: in bounds, aligned, lives as long as self.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }
    }

    fn slot(&self, name: &str) -> usize {
        64 + 64 * self.names.iter().position(|n| n == name).unwrap()
    }

    fn write(&self, f: impl FnOnce(&Writer)) {
        if self.no_seqlock {
            return f(self);
        }
        let seq = self.u64(16);
        let s = seq.load(Ordering::Relaxed);
        seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        f(self);
        seq.store(s + 2, Ordering::Release);
    }

    fn set(&self, name: &str, state: u32, value: f64, index: u64) {
        let o = self.slot(name);
        self.write(|w| {
            w.u32(o).store(state, Ordering::Relaxed);
            w.u64(o + 8).store(value.to_bits(), Ordering::Relaxed);
            w.u64(o + 16).store(index, Ordering::Relaxed);
            w.u64(32).store(index, Ordering::Relaxed);
            w.u64(40).store(unix_ns(), Ordering::Relaxed);
        });
    }

    fn status(&self, status: u32) {
        self.write(|w| w.u32(12).store(status, Ordering::Relaxed));
    }

    fn updated(&self, unix_ns: u64) {
        self.write(|w| w.u64(40).store(unix_ns, Ordering::Relaxed));
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in create.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The timing and hammering tests take the CPUs: one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn client(path: &Path, stale_after: Duration) -> Client {
    Client::open(Options {
        page_path: path.to_path_buf(),
        api_socket: path.with_extension("sock"),
        stale_after,
    })
    .unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn allow_follows_admit_shed_and_the_probe_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.page");
    let w = Writer::create(&path, &["db", "cache"], &["pressure"]);
    let c = client(&path, DEFAULT_STALE_AFTER);
    assert!(c.healthy());
    assert!(c.allow("db"));
    assert_eq!(c.signal("pressure"), Some(0.0));
    assert_eq!(c.signal("nope"), None);
    assert!(c.allow("unknown breaker"), "unknown breakers are allowed");

    w.set("db", 2, 0.0, 2);
    assert!(!c.allow("db"));
    assert!(c.allow("cache"));
    let b = c.breaker("db").unwrap();
    assert_eq!((b.state, b.admit_ratio, b.index), (State::Shed, 0.0, 2));
    assert_eq!(c.page_info(), Some((4242, 7)));

    w.set("db", 1, 0.25, 3);
    let n = 200_000;
    let allowed = (0..n).filter(|_| c.allow("db")).count();
    let share = allowed as f64 / n as f64;
    assert!(
        (share - 0.25).abs() < 0.01,
        "probe at 0.25 let {share} through"
    );

    w.set("pressure", 0, 0.7, 4);
    assert_eq!(c.signal("pressure"), Some(0.7));
    let snap = c.snapshot().unwrap();
    assert_eq!(snap.index, 4);
    assert_eq!(snap.breakers["db"].state, State::Probe);
    assert_eq!(snap.breakers["db"].changed_index, 3);
    assert_eq!(snap.signals["pressure"].level, 0.7);
}

#[test]
fn fails_open_without_a_page_with_a_stale_one_and_a_stopped_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.page");
    let c = client(&path, Duration::from_millis(400));
    assert!(!c.healthy());
    assert!(c.allow("db"));
    assert_eq!(c.signal("pressure"), None);
    assert_eq!(c.breaker("db"), None);

    // The agent appears: picked up by the background check.
    let w = Writer::create(&path, &["db"], &["pressure"]);
    w.set("db", 2, 0.0, 2);
    w.set("pressure", 0, 1.0, 3);
    wait_until("a healthy page", || c.healthy());
    assert!(!c.allow("db"));
    assert_eq!(c.signal("pressure"), Some(1.0));

    // No refresh for longer than stale_after: fail open.
    w.updated(unix_ns() - 1_000_000_000);
    wait_until("a stale page", || !c.healthy());
    assert!(c.allow("db"));
    assert_eq!(c.signal("pressure"), None);
    w.updated(unix_ns());
    wait_until("a fresh page", || c.healthy());
    assert!(!c.allow("db"));

    // Stopped: fail open at once, however fresh.
    w.status(1);
    wait_until("a stopped page", || !c.healthy());
    assert!(c.allow("db"));
}

#[test]
fn a_new_file_is_mapped_and_the_old_one_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.page");
    let old = Writer::create(&path, &["db"], &[]);
    old.set("db", 2, 0.0, 2);
    let c = client(&path, DEFAULT_STALE_AFTER);
    assert!(!c.allow("db"));
    // A breaker added: a new file renamed over the old one, which is marked superseded.
    let new = Writer::create(&path, &["cache", "db"], &[]);
    new.set("cache", 2, 0.0, 3);
    old.status(2);
    wait_until("the new file", || !c.allow("cache"));
    assert!(c.allow("db"), "db admits in the new file");
    assert_eq!(c.breaker("cache").unwrap().index, 3);
    // Another thread that read the old mapping moves on to the new one too.
    std::thread::scope(|s| {
        s.spawn(|| assert!(!c.allow("cache")));
    });
}

#[test]
fn not_a_page_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.page");
    std::fs::write(&path, vec![b'x'; 100]).unwrap();
    let err = Client::open(Options {
        page_path: path,
        ..Options::default()
    })
    .err()
    .expect("garbage is refused");
    assert!(err.to_string().contains("magic"), "{err}");
}

/// Hammers a page with updates whose fields go in pairs (state = k % 3, value = k, the slot's
/// index = the header's index = k) while readers check every copy they get. With the seqlock
/// no copy is ever torn; the same writer without it is caught tearing (so the check works).
fn hammer(no_seqlock: bool, for_how_long: Duration) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.page");
    let mut w = Writer::create(&path, &["a", "b"], &[]);
    w.no_seqlock = no_seqlock;
    let c = client(&path, DEFAULT_STALE_AFTER);
    let stop = AtomicBool::new(false);
    let (reads, torn) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let o = w.slot("b");
            let mut k = 10u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                w.write(|w| {
                    w.u64(32).store(k, Ordering::Relaxed);
                    w.u32(o).store((k % 3) as u32, Ordering::Relaxed);
                    for _ in 0..50 {
                        std::hint::spin_loop();
                    }
                    w.u64(o + 8).store((k as f64).to_bits(), Ordering::Relaxed);
                    w.u64(o + 16).store(k, Ordering::Relaxed);
                });
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
            }
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (mut reads, mut torn) = (0u64, 0u64);
                    let end = Instant::now() + for_how_long;
                    while Instant::now() < end {
                        for _ in 0..100 {
                            let Some(snap) = c.snapshot() else { continue };
                            let b = &snap.breakers["b"];
                            reads += 1;
                            let k = snap.index;
                            if k > 10
                                && (b.admit_ratio != k as f64
                                    || b.changed_index != k
                                    || b.state != State::from_page((k % 3) as u32))
                            {
                                torn += 1;
                            }
                        }
                    }
                    (reads, torn)
                })
            })
            .collect();
        let totals = readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        totals
    });
    (reads, torn)
}

#[test]
fn torn_reads_are_impossible() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (reads, torn) = hammer(false, Duration::from_secs(2));
    eprintln!("seqlock: {reads} consistent reads under constant writes, {torn} torn");
    assert!(reads > 1000, "{reads}");
    assert_eq!(torn, 0);
    let (reads, torn) = hammer(true, Duration::from_secs(2));
    eprintln!("without the seqlock: {torn} torn of {reads} reads");
    assert!(
        torn > 0,
        "the check must catch a writer without the seqlock"
    );
}

/// `allow` makes no allocation and takes nanoseconds, with 1 and with 1,000 breakers. The
/// bound here is generous (debug build, shared machine); `cargo xtask bench` prints the
/// release figure.
#[test]
fn allow_is_allocation_free_and_fast() {
    let _one = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for n in [1usize, 1000] {
        let path = dir.path().join(format!("state{n}.page"));
        let names: Vec<String> = (0..n).map(|i| format!("breaker-{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let w = Writer::create(&path, &refs, &["pressure"]);
        let target = &names[n / 2];
        w.set(target, 2, 0.0, 2);
        let c = client(&path, DEFAULT_STALE_AFTER);
        assert!(!c.allow(target));
        let before = allocs();
        let calls = 1_000_000u32;
        // This thread's CPU time: time spent descheduled on a busy machine does not count.
        let t = thread_cpu_ns();
        let mut refused = 0u32;
        for _ in 0..calls {
            refused += u32::from(!c.allow(std::hint::black_box(target)));
        }
        let ns = (thread_cpu_ns() - t) as f64 / f64::from(calls);
        let level = c.signal("pressure");
        assert_eq!(allocs() - before, 0, "allow and signal allocated");
        assert_eq!(refused, calls);
        assert_eq!(level, Some(0.0));
        eprintln!("allow with {n} breakers: {ns:.1} ns per call (this build)");
        assert!(ns < 2000.0, "{ns} ns per allow");
    }
}

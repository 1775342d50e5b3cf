//! Counters of the uprobe-based probes (targets only): libc allocations and Go goroutines.

/// Kinds of allocation call, indexes of [`AllocCounts::calls`].
pub const CALL_MALLOC: u32 = 0;
pub const CALL_CALLOC: u32 = 1;
pub const CALL_REALLOC: u32 = 2;
pub const CALL_FREE: u32 = 3;
pub const CALL_KINDS: usize = 4;
/// No allocation call in flight on the thread.
pub const CALL_NONE: u32 = u32::MAX;

/// Label value of each call kind.
pub const fn call_name(kind: u32) -> &'static str {
    match kind {
        CALL_MALLOC => "malloc",
        CALL_CALLOC => "calloc",
        CALL_REALLOC => "realloc",
        CALL_FREE => "free",
        _ => "unknown",
    }
}

/// Per-CPU allocation counters of one thread group, cumulative since attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocCounts {
    /// Calls by kind ([`CALL_MALLOC`] ...), failed ones included.
    pub calls: [u64; CALL_KINDS],
    /// Bytes asked for by calls that returned memory (calloc: n * size; realloc: the new size).
    pub bytes: u64,
    /// Of `bytes`, what was recorded in the pointer map (its size is known at free).
    pub tracked_bytes: u64,
    /// Bytes of recorded allocations that were freed (or moved away by realloc).
    pub freed_bytes: u64,
    /// free/realloc of a non-NULL pointer with no recorded size: allocated before the probe
    /// was attached, by a function not probed (memalign, ...), or evicted from the pointer map.
    pub untracked_frees: u64,
}
const _: () = assert!(core::mem::size_of::<AllocCounts>() == 64);

/// The allocation call a thread is in, between entry (uprobe) and return (uretprobe).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingAlloc {
    /// Bytes asked for.
    pub size: u64,
    /// realloc's old pointer (0 otherwise).
    pub old_ptr: u64,
    /// [`CALL_MALLOC`], [`CALL_CALLOC`], [`CALL_REALLOC`] or [`CALL_NONE`].
    pub kind: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PendingAlloc>() == 24);

/// Key of the pointer -> size map: a live allocation of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PtrKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ptr: u64,
}
const _: () = assert!(core::mem::size_of::<PtrKey>() == 16);

/// Per-CPU goroutine counters of one Go process, cumulative since attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCounts {
    /// Entries of `runtime.newproc1`: goroutines created (the runtime's own included).
    pub created: u64,
    /// Entries of `runtime.goexit0`: goroutines that exited.
    pub exited: u64,
}
const _: () = assert!(core::mem::size_of::<GoCounts>() == 16);

/// Garbage collector of one Go process, one copy for all CPUs: completed cycles and the
/// stop-the-world pauses of the GC, counted since attach, and the state of the stop in
/// progress. Every event that writes it happens with the process's world stopped or about to
/// be (the runtime serialises stops with `worldsema`), so at most one thread of the process
/// writes it at a time; the counters are still added atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoGc {
    /// Entries of `runtime.gcMarkTermination`: completed GC cycles (`runtime.NumGC`).
    pub cycles: u64,
    /// The GC's stop-the-world pauses (sweep termination, mark termination, and a mark
    /// termination that restarts marking), log2 buckets of nanoseconds: from the entry of
    /// `runtime.stopTheWorldWithSema` to the entry of `runtime.startTheWorldWithSema`.
    pub pauses: crate::syscall::Hist,
    /// State: monotonic time (ns) at which the GC's stop in progress began; 0 when none.
    pub stw_start_ns: u64,
    /// State: 1 from the entry of `runtime.stopTheWorld` (a stop that is not the GC's:
    /// `ReadMemStats`, `GOMAXPROCS`, profiles, traces) until the world starts again.
    pub stw_other: u64,
}
const _: () =
    assert!(core::mem::size_of::<GoGc>() == 8 * (1 + crate::syscall::HIST_BUCKETS + 1 + 2));

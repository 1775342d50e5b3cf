//! libc allocations of target processes: uprobes on `malloc`, `calloc`, `realloc` and `free`,
//! and a uretprobe (shared by the three allocating calls) for the returned pointer. These run
//! only in processes userspace attached them to (targets with `allocations: true`): a uprobe
//! costs a trap per call (~1.7 µs here), far too much for every process.
//!
//! The size asked for waits in the thread's slot between entry and return (written in place,
//! like the syscall probe's slot). At return, the pointer's size goes into an LRU map keyed by
//! (tgid, pointer), so `free` can tell how many bytes it released: outstanding bytes are
//! `tracked_bytes - freed_bytes`. Every map is bounded; what does not fit is counted.
//!
//! The counters are per CPU, but every increment is an atomic add (`atomic.rs`): uprobe
//! programs run with migration disabled yet preemptible, so two threads on one CPU can run
//! these programs on the same value interleaved, and a plain `+=` would lose one's increment.
//! What that costs is measured in docs/benchmarks.md.

use core::ptr::addr_of_mut;

use agent_common::uprobe::{
    AllocCounts, PendingAlloc, PtrKey, CALL_CALLOC, CALL_FREE, CALL_MALLOC, CALL_NONE, CALL_REALLOC,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe, uretprobe},
    maps::{LruHashMap, LruPerCpuHashMap},
    programs::{ProbeContext, RetProbeContext},
};

use crate::atomic;

/// Thread id -> the allocation call in flight. LRU: threads that die are evicted.
#[map]
static ALLOC_PENDING: LruHashMap<u32, PendingAlloc> = LruHashMap::with_max_entries(16384, 0);

/// (tgid, pointer) -> size of a live allocation. LRU: when full, the least recently used
/// entries (first of all those of processes that have exited) make room; a pointer evicted
/// while live is later counted as an untracked free, and its bytes stay outstanding.
#[map]
static ALLOC_PTRS: LruHashMap<PtrKey, u64> = LruHashMap::with_max_entries(131072, 0);

/// tgid -> allocation counters, per CPU. LRU; userspace deletes exited processes' keys.
#[map]
static ALLOC_COUNTS: LruPerCpuHashMap<u32, AllocCounts> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// `void *malloc(size_t size)`
#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    let _ = enter(CALL_MALLOC, size, 0);
    0
}

// glibc's realloc calls malloc itself (`realloc(NULL, n)` jumps to it as a tail call; moving
// a block to another arena or out of an mmapped chunk calls it) and free (`realloc(p, 0)`).
// Those inner calls are part of the realloc, with the same size and result:
// - an inner malloc leaves the thread's realloc slot as it is, and the *first* return that
//   fires consumes the slot (realloc's own return after it finds nothing pending). This also
//   covers the tail call, where the kernel drops realloc's return probe (its stack frame is
//   gone when malloc's return probe is set up) and only malloc's return fires;
// - an inner free is ignored: realloc's return releases the old block.
// So one realloc counts once, as a realloc.

/// `void *calloc(size_t n, size_t size)`
#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    let n: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    // An overflowing product makes calloc fail (NULL), and sizes count only for calls that
    // return memory: so a wrapped product is never counted (and BPF has no 128-bit multiply
    // for an overflow check).
    let _ = enter(CALL_CALLOC, n.wrapping_mul(size), 0);
    0
}

/// `void *realloc(void *ptr, size_t size)`
#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    let _ = enter(CALL_REALLOC, size, ptr);
    0
}

/// Return of `malloc`, `calloc` and `realloc`: the pointer they handed out.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    let ptr: u64 = ctx.ret();
    let _ = try_return(ptr);
    0
}

/// `void free(void *ptr)`
#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let _ = try_free(ptr);
    0
}

#[inline(always)]
fn enter(kind: u32, size: u64, old_ptr: u64) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let pending = PendingAlloc {
        size,
        old_ptr,
        kind,
        _pad: 0,
    };
    match ALLOC_PENDING.get_ptr_mut(tid) {
        // SAFETY: the slot belongs to this thread; only this thread writes it.
        Some(slot) => unsafe {
            // A malloc inside realloc is that realloc: keep its slot.
            if !(kind == CALL_MALLOC && (*slot).kind == CALL_REALLOC) {
                *slot = pending;
            }
        },
        None => ALLOC_PENDING.insert(tid, pending, 0).map_err(i64::from)?,
    }
    Ok(())
}

#[inline(always)]
fn try_return(ptr: u64) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let slot = ALLOC_PENDING.get_ptr_mut(id as u32).ok_or(0i64)?;
    // SAFETY: the slot belongs to this thread; only this thread writes it.
    let p = unsafe {
        let p = *slot;
        (*slot).kind = CALL_NONE;
        p
    };
    if p.kind == CALL_NONE || p.kind > CALL_REALLOC {
        // Consumed already (realloc's own return after its inner malloc's), or no entry seen
        // (attached while the call was in flight).
        return Ok(());
    }
    let c = counts_of(tgid)?;
    add(call_counter(c, p.kind), 1);
    if p.kind == CALL_REALLOC && p.old_ptr != 0 && (ptr != 0 || p.size == 0) {
        // realloc moved (or, with size 0, freed) the old block: its bytes are released.
        release(c, tgid, p.old_ptr);
    }
    if ptr == 0 {
        return Ok(());
    }
    // SAFETY (this and every `addr_of_mut!((*c)...)` below): `c` points to a live map value
    // (`counts_of`); only the field's address is taken, and `add` writes it atomically.
    add(unsafe { addr_of_mut!((*c).bytes) }, p.size);
    let key = PtrKey { tgid, _pad: 0, ptr };
    if let Some(stale) = ALLOC_PTRS.get_ptr_mut(key) {
        // The allocator handed out a pointer we still hold: its free was not seen (a skipped
        // run, or a path not probed). That block is gone: count it freed, record the new one.
        // SAFETY: the entry is this process's; a concurrent delete only makes it stale.
        let old = unsafe { core::ptr::replace(stale, p.size) };
        add(unsafe { addr_of_mut!((*c).freed_bytes) }, old);
        add(unsafe { addr_of_mut!((*c).tracked_bytes) }, p.size);
    } else if ALLOC_PTRS.insert(key, p.size, 0).is_ok() {
        add(unsafe { addr_of_mut!((*c).tracked_bytes) }, p.size);
    }
    Ok(())
}

#[inline(always)]
fn try_free(ptr: u64) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if let Some(slot) = ALLOC_PENDING.get_ptr_mut(id as u32) {
        // SAFETY: the slot belongs to this thread; only this thread writes it.
        if unsafe { (*slot).kind } == CALL_REALLOC {
            // realloc(p, 0) freeing p itself: realloc's return releases it.
            return Ok(());
        }
    }
    let c = counts_of(tgid)?;
    add(call_counter(c, CALL_FREE), 1);
    if ptr != 0 {
        release(c, tgid, ptr);
    }
    Ok(())
}

/// Forgets the allocation at `ptr` and counts its bytes as freed.
#[inline(always)]
fn release(c: *mut AllocCounts, tgid: u32, ptr: u64) {
    let key = PtrKey { tgid, _pad: 0, ptr };
    // SAFETY: the value is copied out at once; a concurrent delete only makes it stale.
    match unsafe { ALLOC_PTRS.get(key) } {
        Some(&size) => {
            // SAFETY: as in `try_return`.
            add(unsafe { addr_of_mut!((*c).freed_bytes) }, size);
            let _ = ALLOC_PTRS.remove(key);
        }
        // SAFETY: as in `try_return`.
        None => add(unsafe { addr_of_mut!((*c).untracked_frees) }, 1),
    }
}

/// The call counter of `kind` (masked into the array's bounds).
#[inline(always)]
fn call_counter(c: *mut AllocCounts, kind: u32) -> *mut u64 {
    // SAFETY: `c` is a live map value; the index is in bounds (CALL_KINDS is 4).
    unsafe { addr_of_mut!((*c).calls[(kind & 3) as usize]) }
}

/// Adds `n` to a counter of a live `ALLOC_COUNTS` value, atomically.
#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    // SAFETY: every caller passes a field of a live, 8-byte-aligned map value, whose writers
    // all add atomically.
    unsafe { atomic::add(counter, n) }
}

#[inline(always)]
fn counts_of(tgid: u32) -> Result<*mut AllocCounts, i64> {
    if let Some(c) = ALLOC_COUNTS.get_ptr_mut(tgid) {
        return Ok(c);
    }
    // NOEXIST: another CPU may have created the key meanwhile; then count into it.
    let _ = ALLOC_COUNTS.insert(tgid, AllocCounts::default(), BPF_NOEXIST as u64);
    ALLOC_COUNTS.get_ptr_mut(tgid).ok_or(0i64)
}

//! The Go garbage collector of target processes, from outside: uprobes at the *entry* of four
//! runtime functions (never uretprobes on Go code, whose stacks move), the same in Go 1.19 to
//! 1.24 (`runtime/mgc.go`, `runtime/proc.go`):
//!
//! - `runtime.gcMarkTermination`: called once per completed cycle, by `gcMarkDone`, with the
//!   world stopped; it does `memstats.numgc++` (what `runtime.NumGC` reports).
//! - `runtime.stopTheWorldWithSema` / `runtime.startTheWorldWithSema`: every stop of the world
//!   begins and ends in them. The GC calls them directly (sweep termination in `gcStart`, mark
//!   termination in `gcMarkDone`, the restart of marking there); every other stop
//!   (`ReadMemStats`, `GOMAXPROCS`, profiles, traces) goes through `runtime.stopTheWorld`
//!   first, whose entry marks the stop that follows as not the GC's. (1.21+ also pass the
//!   reason to `stopTheWorldWithSema`; 1.19 does not, so the caller is what tells them apart.)
//!   A GC pause is the time from the entry of the stop to the entry of the start: the runtime's
//!   own figure also covers the work of `startTheWorldWithSema` itself (restarting the Ps).
//!
//! Stops of one process are serialised by the runtime (`worldsema`), so the state of the stop
//! in progress is per process.

use core::ptr::addr_of_mut;

use agent_common::{syscall::bucket_of, uprobe::GoGc};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};

use crate::atomic;

/// tgid -> GC counters and stop state, one copy for all CPUs. LRU; userspace deletes exited
/// processes' keys.
#[map]
static GO_GC: LruHashMap<u32, GoGc> = LruHashMap::with_max_entries(4096, 0);

/// `func gcMarkTermination()` (1.19-1.21), `func gcMarkTermination(stw worldStop)` (1.22+)
#[uprobe]
pub fn go_gc_done(_ctx: ProbeContext) -> u32 {
    if let Some(gc) = this_process() {
        // SAFETY: a u64 of a live map value; every writer of it adds atomically.
        unsafe { atomic::add(addr_of_mut!((*gc).cycles), 1) };
    }
    0
}

/// `func stopTheWorld(reason string)` (1.19-1.20), `func stopTheWorld(reason stwReason)
/// worldStop` (1.21+): a stop that is not the GC's is about to begin.
#[uprobe]
pub fn go_stw_other(_ctx: ProbeContext) -> u32 {
    if let Some(gc) = this_process() {
        // SAFETY: state of a live map value, written only by the thread stopping the world.
        unsafe { (*gc).stw_other = 1 };
    }
    0
}

/// `func stopTheWorldWithSema()` (1.19-1.20), `func stopTheWorldWithSema(reason stwReason)`
/// (1.21), `... worldStop` (1.22+)
#[uprobe]
pub fn go_stw_stop(_ctx: ProbeContext) -> u32 {
    if let Some(gc) = this_process() {
        // SAFETY: as in `go_stw_other`.
        unsafe {
            if (*gc).stw_other == 0 {
                (*gc).stw_start_ns = bpf_ktime_get_ns().max(1);
            }
        }
    }
    0
}

/// `func startTheWorldWithSema(emitTraceEvent bool) int64` (1.19-1.20), `func
/// startTheWorldWithSema() int64` (1.21), `func startTheWorldWithSema(now int64, w worldStop)
/// int64` (1.22+)
#[uprobe]
pub fn go_stw_start(_ctx: ProbeContext) -> u32 {
    if let Some(gc) = this_process() {
        // SAFETY: as in `go_stw_other`; the histogram's counters are added atomically.
        unsafe {
            let start = (*gc).stw_start_ns;
            (*gc).stw_start_ns = 0;
            (*gc).stw_other = 0;
            if start != 0 {
                let ns = bpf_ktime_get_ns().saturating_sub(start);
                let b = bucket_of(ns);
                atomic::add(addr_of_mut!((*gc).pauses.buckets[b]), 1);
                atomic::add(addr_of_mut!((*gc).pauses.sum_ns), ns);
            }
        }
    }
    0
}

/// The current process's value, made on its first event.
#[inline(always)]
fn this_process() -> Option<*mut GoGc> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(gc) = GO_GC.get_ptr_mut(tgid) {
        return Some(gc);
    }
    // NOEXIST: another thread of the process may have made it meanwhile; then use that one.
    let _ = GO_GC.insert(tgid, GoGc::default(), BPF_NOEXIST as u64);
    GO_GC.get_ptr_mut(tgid)
}

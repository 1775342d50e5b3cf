//! Go goroutines of target processes: uprobes at the *entry* of `runtime.newproc1` (one call
//! per goroutine created, the runtime's own included) and of `runtime.goexit0` (one call per
//! goroutine that exits). Never uretprobes on Go code: Go moves goroutine stacks, and a
//! uretprobe's rewritten return address on a moved stack crashes the program.
//!
//! `goexit0` rather than `goexit1`: `goexit1` is small enough to be inlined into
//! `runtime.Goexit`, which would hide those exits; `goexit0` is only ever reached through
//! `mcall(goexit0)`, a call by function value that cannot be inlined, once per exiting
//! goroutine (Go 1.19 `runtime/proc.go`).
//!
//! The counters are per CPU, incremented with atomic adds: uprobes are preemptible, so two
//! threads on one CPU can interleave on the same value (see `atomic.rs`).

use core::ptr::addr_of_mut;

use agent_common::uprobe::GoCounts;
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::LruPerCpuHashMap,
    programs::ProbeContext,
};

use crate::atomic;

/// tgid -> goroutine counters, per CPU. LRU; userspace deletes exited processes' keys.
#[map]
static GO_COUNTS: LruPerCpuHashMap<u32, GoCounts> = LruPerCpuHashMap::with_max_entries(4096, 0);

/// `func newproc1(fn *funcval, callergp *g, callerpc uintptr) *g`
#[uprobe]
pub fn go_newproc(_ctx: ProbeContext) -> u32 {
    let _ = try_count(GoCounts {
        created: 1,
        exited: 0,
    });
    0
}

/// `func goexit0(gp *g)`
#[uprobe]
pub fn go_goexit(_ctx: ProbeContext) -> u32 {
    let _ = try_count(GoCounts {
        created: 0,
        exited: 1,
    });
    0
}

/// Adds `delta` to the current process's counters: one lookup, or on the process's first
/// event on this CPU one insert of `delta` itself.
#[inline(always)]
fn try_count(delta: GoCounts) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let counts = match GO_COUNTS.get_ptr_mut(tgid) {
        Some(c) => c,
        None => {
            // NOEXIST: the key may exist meanwhile (made on another CPU, or by another thread
            // on this one while this uprobe was preempted); then add to this CPU's value.
            if GO_COUNTS.insert(tgid, delta, BPF_NOEXIST as u64).is_ok() {
                return Ok(());
            }
            GO_COUNTS.get_ptr_mut(tgid).ok_or(0i64)?
        }
    };
    // SAFETY: u64 fields of a live map value; every writer of them adds atomically.
    unsafe {
        if delta.created != 0 {
            atomic::add(addr_of_mut!((*counts).created), delta.created);
        }
        if delta.exited != 0 {
            atomic::add(addr_of_mut!((*counts).exited), delta.exited);
        }
    }
    Ok(())
}

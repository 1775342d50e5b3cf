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
    // SAFETY: only the field's address of the live value `try_count` passes.
    let _ = try_count(|c| unsafe { addr_of_mut!((*c).created) });
    0
}

/// `func goexit0(gp *g)`
#[uprobe]
pub fn go_goexit(_ctx: ProbeContext) -> u32 {
    // SAFETY: as above.
    let _ = try_count(|c| unsafe { addr_of_mut!((*c).exited) });
    0
}

#[inline(always)]
/// Adds one to the counter `field` picks in the current process's value.
fn try_count(field: impl FnOnce(*mut GoCounts) -> *mut u64) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if GO_COUNTS.get_ptr_mut(tgid).is_none() {
        // NOEXIST: another CPU may have created the key meanwhile; then count into it.
        let _ = GO_COUNTS.insert(tgid, GoCounts::default(), BPF_NOEXIST as u64);
    }
    let counts = GO_COUNTS.get_ptr_mut(tgid).ok_or(0i64)?;
    // SAFETY: a u64 field of a live map value; every writer of it adds atomically.
    unsafe { atomic::add(field(counts), 1) };
    Ok(())
}

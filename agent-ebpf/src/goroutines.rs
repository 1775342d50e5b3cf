//! Go goroutines of target processes: uprobes at the *entry* of `runtime.newproc1` (one call
//! per goroutine created, the runtime's own included) and of `runtime.goexit0` (one call per
//! goroutine that exits). Never uretprobes on Go code: Go moves goroutine stacks, and a
//! uretprobe's rewritten return address on a moved stack crashes the program.
//!
//! `goexit0` rather than `goexit1`: `goexit1` is small enough to be inlined into
//! `runtime.Goexit`, which would hide those exits; `goexit0` is only ever reached through
//! `mcall(goexit0)`, a call by function value that cannot be inlined, once per exiting
//! goroutine (Go 1.19 `runtime/proc.go`).

use agent_common::uprobe::GoCounts;
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::LruPerCpuHashMap,
    programs::ProbeContext,
};

/// tgid -> goroutine counters, per CPU. LRU; userspace deletes exited processes' keys.
#[map]
static GO_COUNTS: LruPerCpuHashMap<u32, GoCounts> = LruPerCpuHashMap::with_max_entries(4096, 0);

/// `func newproc1(fn *funcval, callergp *g, callerpc uintptr) *g`
#[uprobe]
pub fn go_newproc(_ctx: ProbeContext) -> u32 {
    let _ = try_count(|c| c.created += 1);
    0
}

/// `func goexit0(gp *g)`
#[uprobe]
pub fn go_goexit(_ctx: ProbeContext) -> u32 {
    let _ = try_count(|c| c.exited += 1);
    0
}

#[inline(always)]
fn try_count(update: impl FnOnce(&mut GoCounts)) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if GO_COUNTS.get_ptr_mut(tgid).is_none() {
        // NOEXIST: another CPU may have created the key meanwhile; then count into it.
        let _ = GO_COUNTS.insert(tgid, GoCounts::default(), BPF_NOEXIST as u64);
    }
    let counts = GO_COUNTS.get_ptr_mut(tgid).ok_or(0i64)?;
    // SAFETY: per-CPU value: no other writer on this CPU while the program runs.
    update(unsafe { &mut *counts });
    Ok(())
}

//! Task (thread) lifecycle per thread group: `task_newtask` counts what a thread group creates
//! (and which of those are its own new threads), `sched_process_exit` counts each task that
//! exits. Per-CPU counters, so no atomics; userspace sums them.

use agent_common::task::{TaskCounts, CLONE_THREAD};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::LruPerCpuHashMap,
    programs::BtfTracePointContext,
};

use crate::config::agent_tgid;

/// tgid -> counters. LRU: bounded by the map size; userspace deletes exited processes' keys.
#[map]
static TASKS: LruPerCpuHashMap<u32, TaskCounts> = LruPerCpuHashMap::with_max_entries(32768, 0);

/// `task_newtask(struct task_struct *task, unsigned long clone_flags)`: runs in the creator.
#[btf_tracepoint(function = "task_newtask")]
pub fn task_newtask(ctx: BtfTracePointContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    let _ = try_count(|c| {
        c.created += 1;
        if flags & CLONE_THREAD != 0 {
            c.threads_started += 1;
        }
    });
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`: runs in the exiting task (every thread).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn task_exit(_ctx: BtfTracePointContext) -> i32 {
    let _ = try_count(|c| c.exited += 1);
    0
}

#[inline(always)]
fn try_count(update: impl FnOnce(&mut TaskCounts)) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == agent_tgid() || tgid == 0 {
        return Ok(());
    }
    if TASKS.get_ptr_mut(tgid).is_none() {
        // NOEXIST: another CPU may have created the key meanwhile; then count into it.
        let _ = TASKS.insert(tgid, TaskCounts::default(), BPF_NOEXIST as u64);
    }
    let counts = TASKS.get_ptr_mut(tgid).ok_or(0i64)?;
    // SAFETY: per-CPU value: no other writer on this CPU while the program runs.
    update(unsafe { &mut *counts });
    Ok(())
}

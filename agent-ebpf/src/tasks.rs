//! Task (thread) lifecycle per thread group: `task_newtask` counts what a thread group creates
//! (and which of those are its own new threads), `sched_process_exit` counts each task that
//! exits. One shared copy of the counters with atomic adds (task creation and exit are rare
//! next to syscalls; a per-CPU copy took 786 KB per possible CPU).

use core::ptr::addr_of_mut;

use agent_common::task::{TaskCounts, CLONE_THREAD};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};

use crate::{atomic, config::agent_tgid};

/// tgid -> counters. LRU: bounded by the map size; userspace deletes exited processes' keys.
#[map]
static TASKS: LruHashMap<u32, TaskCounts> = LruHashMap::with_max_entries(32768, 0);

/// `task_newtask(struct task_struct *task, unsigned long clone_flags)`: runs in the creator.
#[btf_tracepoint(function = "task_newtask")]
pub fn task_newtask(ctx: BtfTracePointContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    let thread = u64::from(flags & CLONE_THREAD != 0);
    let _ = try_count(TaskCounts {
        created: 1,
        threads_started: thread,
        exited: 0,
    });
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`: runs in the exiting task (every thread).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn task_exit(_ctx: BtfTracePointContext) -> i32 {
    let _ = try_count(TaskCounts {
        created: 0,
        threads_started: 0,
        exited: 1,
    });
    0
}

/// Adds `delta` to the current thread group's counters: one lookup, or on the group's first
/// event one insert of `delta` itself.
#[inline(always)]
fn try_count(delta: TaskCounts) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == agent_tgid() || tgid == 0 {
        return Ok(());
    }
    let counts = match TASKS.get_ptr_mut(tgid) {
        Some(c) => c,
        None => {
            // NOEXIST: another CPU may have created the key meanwhile; then add to it.
            if TASKS.insert(tgid, delta, BPF_NOEXIST as u64).is_ok() {
                return Ok(());
            }
            TASKS.get_ptr_mut(tgid).ok_or(0i64)?
        }
    };
    // SAFETY: u64 fields of a live map value; every writer adds atomically.
    unsafe {
        if delta.created != 0 {
            atomic::add(addr_of_mut!((*counts).created), delta.created);
        }
        if delta.threads_started != 0 {
            atomic::add(
                addr_of_mut!((*counts).threads_started),
                delta.threads_started,
            );
        }
        if delta.exited != 0 {
            atomic::add(addr_of_mut!((*counts).exited), delta.exited);
        }
    }
    Ok(())
}

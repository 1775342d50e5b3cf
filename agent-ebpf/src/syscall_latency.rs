//! Syscall latency, aggregated in the kernel: `sys_enter` writes the start time into the
//! thread's slot in place, `sys_exit` turns it into a log2 bucket of a per-CPU histogram keyed
//! by (tgid, syscall nr). No map entry is inserted or deleted per call once a thread has a slot.

use agent_common::syscall::{
    bucket_of, Hist, HistKey, ThreadSlot, HIST_BUCKETS, MAX_SYSCALL_NR, NO_SYSCALL,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, LruPerCpuHashMap},
    programs::BtfTracePointContext,
};

use crate::config::agent_tgid;

/// Thread id -> syscall in flight. LRU: threads that die in `exit`/`exit_group` are evicted.
#[map]
static SYSCALL_THREADS: LruHashMap<u32, ThreadSlot> = LruHashMap::with_max_entries(65536, 0);

/// (tgid, nr) -> per-CPU log2 histogram. LRU bounds the process keys; userspace reads and
/// deletes the keys of exited processes.
#[map]
static SYSCALL_HIST: LruPerCpuHashMap<HistKey, Hist> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// `sys_enter(struct pt_regs *regs, long id)`
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

/// `sys_exit(struct pt_regs *regs, long ret)`
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

#[inline(always)]
fn try_sys_enter(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    if (id >> 32) as u32 == agent_tgid() {
        return Ok(());
    }
    let tid = id as u32;
    let nr: i64 = ctx.arg(1);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match SYSCALL_THREADS.get_ptr_mut(tid) {
        Some(slot) => {
            // SAFETY: the slot belongs to this thread; only this thread writes it.
            unsafe {
                (*slot).start_ns = now;
                (*slot).nr = nr as u32;
            }
            Ok(())
        }
        None => SYSCALL_THREADS
            .insert(
                tid,
                ThreadSlot {
                    start_ns: now,
                    nr: nr as u32,
                    _pad: 0,
                },
                0,
            )
            .map_err(i64::from),
    }
}

#[inline(always)]
fn try_sys_exit(_ctx: &BtfTracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if tgid == agent_tgid() {
        return Ok(());
    }
    let slot = SYSCALL_THREADS.get_ptr_mut(id as u32).ok_or(0i64)?;
    // SAFETY: the slot belongs to this thread; only this thread writes it.
    let (start_ns, nr) = unsafe {
        let s = *slot;
        (*slot).nr = NO_SYSCALL;
        (s.start_ns, s.nr)
    };
    // No enter seen (the probe attached mid-call), or a number outside the table.
    if nr >= MAX_SYSCALL_NR {
        return Ok(());
    }
    // SAFETY: helper without preconditions.
    let delta = unsafe { bpf_ktime_get_ns() }.saturating_sub(start_ns);
    let key = HistKey { tgid, nr };
    let hist = match SYSCALL_HIST.get_ptr_mut(key) {
        Some(h) => h,
        None => {
            // Another CPU may insert the same key at the same time: NOEXIST, then look again.
            let _ = SYSCALL_HIST.insert(key, Hist::default(), BPF_NOEXIST as u64);
            SYSCALL_HIST.get_ptr_mut(key).ok_or(0i64)?
        }
    };
    let b = bucket_of(delta) & (HIST_BUCKETS - 1);
    // SAFETY: per-CPU value: no other writer on this CPU while the program runs.
    unsafe {
        (*hist).buckets[b] += 1;
        (*hist).sum_ns += delta;
    }
    Ok(())
}

//! Syscall latency, aggregated in the kernel: `sys_enter` writes the start time into the
//! thread's slot in place, `sys_exit` turns it into a log2 bucket of a per-CPU histogram keyed
//! by (tgid, syscall nr). No map entry is inserted or deleted per call once a thread has a slot.

use agent_common::{
    loss::LOSS_SYSCALL_EVENTS,
    syscall::{
        bucket_of, ErrKey, Hist, HistKey, SlowSyscallEvent, ThreadSlot, HIST_BUCKETS,
        MAX_SYSCALL_NR, NO_SYSCALL,
    },
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, LruPerCpuHashMap, RingBuf},
    programs::BtfTracePointContext,
};

use crate::{
    config::agent_tgid,
    loss::{count_lost, submit_flags},
};

/// Thread id -> syscall in flight. LRU: threads that die in `exit`/`exit_group` are evicted.
#[map]
static SYSCALL_THREADS: LruHashMap<u32, ThreadSlot> = LruHashMap::with_max_entries(65536, 0);

/// (tgid, nr) -> per-CPU log2 histogram. LRU bounds the process keys; userspace reads and
/// deletes the keys of exited processes.
#[map]
static SYSCALL_HIST: LruPerCpuHashMap<HistKey, Hist> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// (tgid, nr, errno) -> failed calls, per CPU. Touched only when a syscall fails.
#[map]
static SYSCALL_ERRORS: LruPerCpuHashMap<ErrKey, u64> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// Per-syscall slow threshold in ns, indexed by nr; 0 = no events for that syscall. Written by
/// userspace from the config, and rewritten on reload without reattaching.
#[map]
static SYSCALL_SLOW_NS: Array<u64> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Slow syscall events. Sized by userspace from the config.
#[map]
static SYSCALL_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

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
fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
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

    let ret: i64 = ctx.arg(1);
    if (-4095..0).contains(&ret) {
        count_error(tgid, nr, (-ret) as u32);
    }
    if let Some(&threshold) = SYSCALL_SLOW_NS.get(nr) {
        if threshold != 0 && delta >= threshold {
            emit_slow(id, nr, start_ns, delta, ret);
        }
    }
    Ok(())
}

/// Off the fast path: only failed calls get here.
#[inline(never)]
fn count_error(tgid: u32, nr: u32, errno: u32) {
    let key = ErrKey {
        tgid,
        nr,
        errno,
        _pad: 0,
    };
    if SYSCALL_ERRORS.get_ptr_mut(key).is_none() {
        // NOEXIST: another CPU may have created the key meanwhile; then count into it.
        let _ = SYSCALL_ERRORS.insert(key, 0, BPF_NOEXIST as u64);
    }
    if let Some(n) = SYSCALL_ERRORS.get_ptr_mut(key) {
        // SAFETY: per-CPU value: no other writer on this CPU while the program runs.
        unsafe { *n += 1 };
    }
}

/// Off the fast path: only calls over their threshold get here.
#[inline(never)]
fn emit_slow(pid_tgid: u64, nr: u32, start_ns: u64, latency_ns: u64, ret: i64) {
    let Some(mut entry) = SYSCALL_EVENTS.reserve::<SlowSyscallEvent>(0) else {
        count_lost(LOSS_SYSCALL_EVENTS);
        return;
    };
    entry.write(SlowSyscallEvent {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        nr,
        _pad: 0,
        start_ns,
        latency_ns,
        ret,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(submit_flags(&SYSCALL_EVENTS, LOSS_SYSCALL_EVENTS));
}

//! Syscall latency, aggregated in the kernel: `sys_enter` writes the start time into the
//! CPU's in-flight slot, `sys_exit` turns it into a log2 bucket of a histogram keyed by
//! (tgid, syscall nr). No map entry is inserted or deleted per call.
//!
//! The in-flight slot is per CPU (`SYSCALL_CPU`, one entry, no hashing), not per thread: a
//! syscall that returns without its thread leaving the CPU (most of them) finds its start
//! there. A thread that leaves the CPU inside a syscall (it blocks, or is preempted or
//! migrated) passes `sched_switch` first, and `syscall_switch` moves its start into the
//! thread's slot in `SYSCALL_THREADS` (an LRU hash keyed by thread id), where its exit finds
//! it. So the slot of a CPU only ever holds the call of the task running on it, and the hash
//! is touched only by calls that blocked.
//!
//! The clock is read as close to the syscall as the programs allow: last thing at enter (after
//! the slot is found), first thing at exit, so the map work is not part of the latency.
//!
//! The histograms and error counters are one shared copy with atomic adds, not per-CPU copies:
//! a per-CPU LRU hash holds `max_entries x value_size` bytes for every possible CPU (the
//! histograms alone took 4.3 MB per CPU, about 280 MB on a 64-CPU host). An atomic add costs
//! little while one process's calls of one syscall stay on one CPU at a time; what it costs
//! when many CPUs hit the same (process, syscall) at once is measured in docs/benchmarks.md.
//!
//! Most calls do not touch the histogram map at all: a CPU keeps pending samples (one
//! (tgid, nr, bucket) per slot, 16 slots by syscall number, in the same per-CPU value as the
//! in-flight call), and a call that matches its slot only adds to it. The slots are flushed
//! into the map under the in-flight slot's rule (the task leaves the CPU or exits), when a
//! call needs the slot for another key or bucket, and when a slot is 100 ms old. That removes
//! the hash lookup and the two atomic adds from a loop's calls (measured in
//! docs/benchmarks.md).
//!
//! The same two programs carry the HTTP probe's syscall part (`http.rs`: the connection
//! syscalls, and reads and writes on kernels before 6.3), by syscall number, so that no
//! per-syscall `syscalls:*` tracepoint is attached. Each part is behind a load-time flag:
//! with the syscall probe off and the HTTP probe on, the programs do the HTTP part only.

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
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};

use crate::{
    atomic,
    config::agent_tgid,
    http,
    loss::{count_lost, submit_flags_at},
};

/// 1 when `probes.syscalls.enabled`: the latency histograms, error counters and slow events.
/// Load-time constant (`.rodata`), so with 0 the verifier drops that part.
#[unsafe(no_mangle)]
static SYSCALL_PROBE_ON: u32 = 1;

#[inline(always)]
fn syscall_probe_on() -> bool {
    crate::config::load(&SYSCALL_PROBE_ON) != 0
}

/// x86_64 `struct pt_regs` offsets: the first two syscall arguments and the syscall number.
const REGS_DI: usize = 112;
const REGS_SI: usize = 104;
const REGS_ORIG_AX: usize = 120;
/// The saved code segment (the low 16 bits; FRED keeps flags above them).
const REGS_CS: usize = 136;
/// x86_64 `__USER_CS`: a 64-bit task's syscall. A 32-bit one (`__USER32_CS`) passes i386
/// numbers (41 is `dup` there), which the HTTP part must not take for its own.
const USER_CS: u64 = 0x33;

/// Whether the HTTP part wants this syscall: one of its numbers, from 64-bit code.
#[inline(always)]
fn http_wants(ctx: &BtfTracePointContext, nr: u32) -> bool {
    http::wants(nr) && reg(ctx, REGS_CS) & 0xffff == USER_CS
}

/// A field of the `struct pt_regs` the raw syscall tracepoints pass (a BTF pointer: a plain
/// load, which the verifier checks against the struct's layout).
#[inline(always)]
fn reg(ctx: &BtfTracePointContext, off: usize) -> u64 {
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: `off` is a u64 field of struct pt_regs; loads through a BTF pointer are
    // checked by the verifier and cannot fault.
    unsafe { core::ptr::read_volatile(regs.wrapping_add(off).cast::<u64>()) }
}

/// Thread id -> syscall in flight, for calls during which the thread left its CPU (written by
/// `syscall_switch`). A thread's slot is deleted when it exits (`syscall_thread_exit`):
/// otherwise a thread that reuses the id would read the dead one's syscall (`exit_group`,
/// never returned from) and start time at its first `sys_exit`. LRU as well, so that a missed
/// exit (probe attached mid-exit) cannot fill the map.
#[map]
static SYSCALL_THREADS: LruHashMap<u32, ThreadSlot> = LruHashMap::with_max_entries(65536, 0);

/// The syscall in flight on a CPU, of the task running there (`busy` 1), or none (`busy` 0;
/// the map starts zeroed). Which task it belongs to needs no field: the slot is emptied
/// whenever its task leaves the CPU (`syscall_switch`) or exits, so a full slot is always the
/// current task's, and `sys_enter` need not ask for the thread id.
///
/// It also holds the CPU's pending samples ([`Pending`]), of the same task, flushed under the
/// same rule.
#[repr(C)]
#[derive(Clone, Copy)]
struct InFlight {
    start_ns: u64,
    busy: u32,
    nr: u32,
    /// Bit `i` set: `pending[i]` holds samples.
    dirty: u64,
    pending: [Pending; PENDING_SLOTS],
}
const _: () = assert!(core::mem::size_of::<InFlight>() == 24 + 32 * PENDING_SLOTS);

/// Samples of one (process, syscall) that fell in one bucket, not yet added to
/// `SYSCALL_HIST`. A call that finds its own key and bucket in its slot adds to it on this
/// CPU (no hash lookup, no atomic add); any other call flushes the slot first. The slots are
/// flushed whenever the task leaves the CPU or exits, and a slot older than
/// [`PENDING_MAX_NS`] at the next call, so counts reach the map at most that late while the
/// task makes calls, and as soon as it stops running. Userspace reads only the map.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    key: HistKey,
    bucket: u32,
    count: u32,
    sum_ns: u64,
    since_ns: u64,
}

/// Pending slots per CPU, indexed by the syscall number's low bits: a loop of a few syscalls
/// (read/write, epoll_wait/read/write/futex) keeps them apart.
const PENDING_SLOTS: usize = 16;

/// How long a slot may collect before its next sample flushes it.
const PENDING_MAX_NS: u64 = 100_000_000;

/// One [`InFlight`] per CPU (536 bytes each): the lookup is a few instructions, no hashing.
#[map]
static SYSCALL_CPU: PerCpuArray<InFlight> = PerCpuArray::with_max_entries(1, 0);

/// (tgid, nr) -> log2 histogram, one copy for all CPUs (atomic adds). LRU bounds the process
/// keys; userspace reads and deletes the keys of exited processes.
#[map]
static SYSCALL_HIST: LruHashMap<HistKey, Hist> = LruHashMap::with_max_entries(16384, 0);

/// Keys this CPU inserted into `SYSCALL_HIST`. With the keys userspace deleted and those it
/// finds, they tell how many the LRU evicted, including keys evicted before any read (whose
/// calls would otherwise be lost without a trace). Touched only on an insert.
#[map]
static SYSCALL_HIST_INSERTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// (tgid, nr, errno) -> failed calls (atomic adds). Touched only when a syscall fails.
#[map]
static SYSCALL_ERRORS: LruHashMap<ErrKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Per-syscall slow threshold in ns, indexed by nr; 0 = no events for that syscall. Written by
/// userspace from the config, and rewritten on reload without reattaching.
#[map]
static SYSCALL_SLOW_NS: Array<u64> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Unread bytes in `SYSCALL_EVENTS` at which a submit wakes the reader; below, the events
/// wait for the next collection (at most a second). Written by userspace.
#[unsafe(no_mangle)]
static SYSCALL_WAKEUP_MIN_BYTES: u64 = 0;

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

/// `sched_process_exit(struct task_struct *p, ...)`: runs in each exiting thread, after its
/// last syscall.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn syscall_thread_exit(_ctx: BtfTracePointContext) -> i32 {
    let _ = try_syscall_thread_exit();
    0
}

/// Frees the exiting thread's slot (absent for threads that never blocked in a call since
/// the attach, and for the agent's own), and empties its CPU's slot, which holds its
/// `exit_group` (or `exit`): that call never returns, and the switches that follow must not
/// move it into `SYSCALL_THREADS`.
#[inline(always)]
fn try_syscall_thread_exit() -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(cpu) = SYSCALL_CPU.get_ptr_mut(0) {
        // SAFETY: this CPU's value; programs on one CPU do not run concurrently with it. A
        // full slot is the exiting thread's own (see `InFlight`).
        unsafe {
            (*cpu).busy = 0;
            flush_pending(&mut *cpu);
        }
    }
    SYSCALL_THREADS.remove(tid).map_err(i64::from)
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)`: runs
/// in `prev` before it leaves the CPU.
#[btf_tracepoint(function = "sched_switch")]
pub fn syscall_switch(_ctx: BtfTracePointContext) -> i32 {
    let _ = try_syscall_switch();
    0
}

/// Moves the leaving task's syscall in flight, if any, from its CPU's slot into its thread
/// slot, where its `sys_exit` (on whichever CPU it resumes) finds it.
#[inline(always)]
fn try_syscall_switch() -> Result<(), i64> {
    let cpu = SYSCALL_CPU.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: this CPU's value; programs on one CPU do not run concurrently with it.
    flush_pending(unsafe { &mut *cpu });
    // SAFETY: as above.
    let (busy, start_ns, nr) = unsafe { ((*cpu).busy, (*cpu).start_ns, (*cpu).nr) };
    if busy == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { (*cpu).busy = 0 };
    // The slot is the leaving task's (see `InFlight`). The agent's own calls are recorded
    // nowhere: `sys_enter` fills the slot for them too, to keep its own path short.
    let id = bpf_get_current_pid_tgid();
    if (id >> 32) as u32 == agent_tgid() {
        return Ok(());
    }
    let tid = id as u32;
    let slot = ThreadSlot {
        start_ns,
        nr,
        _pad: 0,
    };
    match SYSCALL_THREADS.get_ptr_mut(tid) {
        Some(p) => {
            // SAFETY: the slot belongs to this thread; only this thread's events write it.
            unsafe { *p = slot };
            Ok(())
        }
        None => SYSCALL_THREADS.insert(tid, slot, 0).map_err(i64::from),
    }
}

#[inline(always)]
fn try_sys_enter(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let nr = ctx.arg::<i64>(1) as u32;
    // Before the start time is taken: the HTTP work is not part of the latency.
    if http_wants(ctx, nr) {
        let id = bpf_get_current_pid_tgid();
        if (id >> 32) as u32 != agent_tgid() {
            http::sys_enter_http(id, nr, reg(ctx, REGS_DI), reg(ctx, REGS_SI));
        }
    }
    if !syscall_probe_on() {
        return Ok(());
    }
    let cpu = SYSCALL_CPU.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: helper without preconditions. Read last: the lookup is not latency.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's value; programs on one CPU do not run concurrently with it.
    unsafe {
        (*cpu).start_ns = now;
        (*cpu).busy = 1;
        (*cpu).nr = nr;
    }
    Ok(())
}

#[inline(always)]
fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let on = syscall_probe_on();
    // SAFETY: helper without preconditions. Read first: the lookups below are not latency.
    let now = if on { unsafe { bpf_ktime_get_ns() } } else { 0 };
    let id = bpf_get_current_pid_tgid();
    if on {
        // Also for the agent's own calls: it empties the slot their enter filled.
        record_exit(now, id, ctx.arg(1));
    }
    if (id >> 32) as u32 == agent_tgid() {
        return Ok(());
    }
    let nr = reg(ctx, REGS_ORIG_AX) as u32;
    if http_wants(ctx, nr) {
        http::sys_exit_http(id, ctx.arg(1));
    }
    Ok(())
}

/// The syscall probe's part of `sys_exit`: a BPF-to-BPF call, so that its stack and the HTTP
/// part's are not added up by the verifier.
#[inline(never)]
fn record_exit(now: u64, id: u64, ret: i64) -> i32 {
    try_record_exit(now, id, ret).is_err() as i32
}

#[inline(always)]
fn try_record_exit(now: u64, id: u64, ret: i64) -> Result<(), i64> {
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    let cpu = SYSCALL_CPU.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: this CPU's value; programs on one CPU do not run concurrently with it.
    // (The three fields only: the value also holds the pending slots.)
    let (busy, start, in_flight_nr) = unsafe {
        let s = ((*cpu).busy, (*cpu).start_ns, (*cpu).nr);
        (*cpu).busy = 0;
        s
    };
    // The agent's own calls fill the slot too (see `try_sys_enter`): emptied, not recorded.
    if tgid == agent_tgid() {
        return Ok(());
    }
    let (start_ns, nr) = if busy != 0 {
        // The thread stayed on this CPU since its enter.
        (start, in_flight_nr)
    } else {
        // It left the CPU (`syscall_switch` moved its call), or no enter was seen.
        thread_slot(tid)
    };
    // No enter seen (the probe attached mid-call), or a number outside the table.
    if nr >= MAX_SYSCALL_NR {
        return Ok(());
    }
    let delta = now.saturating_sub(start_ns);
    let b = bucket_of(delta) & (HIST_BUCKETS - 1);
    let key = HistKey { tgid, nr };
    let i = nr as usize & (PENDING_SLOTS - 1);
    // SAFETY: this CPU's value, as above; `i` < PENDING_SLOTS.
    unsafe {
        let p = core::ptr::addr_of_mut!((*cpu).pending[i]);
        if (*cpu).dirty & (1 << i) != 0
            && (*p).key == key
            && (*p).bucket == b as u32
            && now.wrapping_sub((*p).since_ns) < PENDING_MAX_NS
        {
            (*p).count += 1;
            (*p).sum_ns += delta;
        } else {
            if (*cpu).dirty & (1 << i) != 0 {
                let old = *p;
                add_to_map(old.key, old.bucket as usize, old.count as u64, old.sum_ns);
            }
            *p = Pending {
                key,
                bucket: b as u32,
                count: 1,
                sum_ns: delta,
                since_ns: now,
            };
            (*cpu).dirty |= 1 << i;
        }
    }

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

/// Takes (and clears) the call that thread `tid` left its CPU in: (start, nr), or nr
/// [`NO_SYSCALL`] when there is none. Off the fast path: only calls that blocked get here.
#[inline(never)]
fn thread_slot(tid: u32) -> (u64, u32) {
    match SYSCALL_THREADS.get_ptr_mut(tid) {
        // SAFETY: the slot belongs to this thread; only this thread's events write it.
        Some(slot) => unsafe {
            let s = *slot;
            (*slot).nr = NO_SYSCALL;
            (s.start_ns, s.nr)
        },
        None => (0, NO_SYSCALL),
    }
}

/// Adds every pending slot of this CPU to `SYSCALL_HIST` and empties them.
#[inline(always)]
fn flush_pending(cpu: &mut InFlight) {
    if cpu.dirty == 0 {
        return;
    }
    for i in 0..PENDING_SLOTS {
        if cpu.dirty & (1 << i) != 0 {
            let p = cpu.pending[i];
            add_to_map(p.key, p.bucket as usize, p.count as u64, p.sum_ns);
        }
    }
    cpu.dirty = 0;
}

/// Adds `n` calls in bucket `b`, `sum_ns` in all, to the key's shared histogram, inserting
/// the key if it is new. Off the fast path: a flush of a pending slot.
#[inline(never)]
fn add_to_map(key: HistKey, b: usize, n: u64, sum_ns: u64) -> i32 {
    try_add_to_map(key, b & (HIST_BUCKETS - 1), n, sum_ns).is_err() as i32
}

#[inline(always)]
fn try_add_to_map(key: HistKey, b: usize, n: u64, sum_ns: u64) -> Result<(), i64> {
    match SYSCALL_HIST.get_ptr_mut(key) {
        // SAFETY: `hist` points into the map value; every writer adds atomically.
        Some(hist) => unsafe { add_samples(hist, b, n, sum_ns) },
        None => {
            // The first flush of this key: insert it with these samples. Another CPU may
            // insert the same key at the same time (NOEXIST fails then): add to the winner's
            // value.
            let mut first = Hist::default();
            first.buckets[b] = n;
            first.sum_ns = sum_ns;
            if SYSCALL_HIST.insert(key, first, BPF_NOEXIST as u64).is_err() {
                let hist = SYSCALL_HIST.get_ptr_mut(key).ok_or(0i64)?;
                // SAFETY: as above.
                unsafe { add_samples(hist, b, n, sum_ns) };
            } else if let Some(c) = SYSCALL_HIST_INSERTS.get_ptr_mut(0) {
                // SAFETY: this CPU's slot; programs on one CPU do not run concurrently.
                unsafe { *c += 1 };
            }
        }
    }
    Ok(())
}

/// Adds `n` calls, `sum_ns` in all, in bucket `b` to a shared histogram.
///
/// # Safety
/// `hist` points to a live map value whose writers all add atomically.
#[inline(always)]
unsafe fn add_samples(hist: *mut Hist, b: usize, n: u64, sum_ns: u64) {
    // SAFETY: in-bounds fields of the value (`b` < HIST_BUCKETS), 8-byte aligned.
    unsafe {
        atomic::add(core::ptr::addr_of_mut!((*hist).buckets[b]), n);
        atomic::add(core::ptr::addr_of_mut!((*hist).sum_ns), sum_ns);
    }
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
    match SYSCALL_ERRORS.get_ptr_mut(key) {
        // SAFETY: a u64 in a live map value; every writer adds atomically.
        Some(n) => unsafe { atomic::add(n, 1) },
        // NOEXIST: another CPU may have created the key meanwhile; then count into it.
        None => {
            if SYSCALL_ERRORS.insert(key, 1, BPF_NOEXIST as u64).is_err() {
                if let Some(n) = SYSCALL_ERRORS.get_ptr_mut(key) {
                    // SAFETY: as above.
                    unsafe { atomic::add(n, 1) };
                }
            }
        }
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
    let min = crate::config::load(&SYSCALL_WAKEUP_MIN_BYTES);
    entry.submit(submit_flags_at::<SlowSyscallEvent>(
        &SYSCALL_EVENTS,
        LOSS_SYSCALL_EVENTS,
        min,
    ));
}

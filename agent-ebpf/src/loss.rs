//! Loss accounting and wakeups: every failed ring-buffer reservation is counted per source, per
//! CPU; each ring buffer's fill is sampled as events are submitted ([`FILL_SAMPLE_BYTES`]); and
//! one rule decides, for every ring, when a submit wakes the reader ([`wake_flags`]).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};

/// Index = loss source (`agent_common::loss::*`), value = events that could not be reserved.
#[map]
static EVENTS_LOST: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(agent_common::loss::SOURCES, 0);

#[inline(always)]
pub fn count_lost(source: u32) {
    if let Some(counter) = EVENTS_LOST.get_ptr_mut(source) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Index = loss source, value = bytes waiting in its ring buffer when the last event was
/// submitted (the consumer's lag).
#[map]
static RING_FILL: Array<u64> = Array::with_max_entries(agent_common::loss::SOURCES, 0);

/// `RING_FILL[source]` is written when a record lands in an empty ring or the fill crosses a
/// multiple of this: the slot is a cache line that every CPU submitting to the ring would
/// otherwise write on every event.
const FILL_SAMPLE_BYTES: u64 = 4096;

/// Bytes a record of `T` takes in a ring buffer: its 8-byte header and the value, 8-aligned.
const fn record_bytes<T>() -> u64 {
    ((core::mem::size_of::<T>() + 8 + 7) & !7) as u64
}

/// Samples the bytes waiting in `ring` (a record of `T` just reserved in it) into
/// `RING_FILL[source]`, on the rule of [`FILL_SAMPLE_BYTES`], and returns them.
#[inline(always)]
fn sample_fill<T>(ring: &RingBuf, source: u32) -> u64 {
    let fill = ring.query(BPF_RB_AVAIL_DATA as u64);
    let before = fill.saturating_sub(record_bytes::<T>());
    if before == 0 || before / FILL_SAMPLE_BYTES != fill / FILL_SAMPLE_BYTES {
        if let Some(slot) = RING_FILL.get_ptr_mut(source) {
            // SAFETY: a u64 slot; a racing writer on another CPU only makes the sample older.
            unsafe { *slot = fill };
        }
    }
    fill
}

/// Index = loss source, value = the consumer position (plus one, so that the initial 0 matches
/// nothing) at which a submit last woke the reader of its ring.
#[map]
static WOKE_AT: Array<u64> = Array::with_max_entries(agent_common::loss::SOURCES, 0);

/// Submit flags for a record just reserved in `ring` (loss source `source`), with `fill` bytes
/// unread and a wakeup threshold of `min` bytes:
/// - `min` 0: the kernel's own rule (a wakeup when the reader had caught up), an event at a time;
/// - below `min`: no wakeup, the reader drains on its collection tick (at most a second);
/// - at or above it: one wakeup, unless the reader was already woken at the current consumer
///   position and has not read since (it is about to, and reads until the ring is empty).
///
/// Waking on every submit above the threshold while the reader catches up costs an interrupt
/// and a scheduler wakeup per event: most of the HTTP probe's cost per request before this rule
/// (docs/benchmarks.md). Two CPUs racing here may both wake the reader, which is harmless.
#[inline(always)]
pub fn wake_flags(ring: &RingBuf, source: u32, fill: u64, min: u64) -> u64 {
    if min == 0 {
        return 0;
    }
    if fill < min {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let Some(woke) = WOKE_AT.get_ptr_mut(source) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    let at = ring.query(BPF_RB_CONS_POS as u64).wrapping_add(1);
    // SAFETY: a u64 slot; a racing writer on another CPU only causes one more wakeup.
    unsafe {
        if core::ptr::read_volatile(woke) == at {
            return BPF_RB_NO_WAKEUP as u64;
        }
        core::ptr::write_volatile(woke, at);
    }
    BPF_RB_FORCE_WAKEUP as u64
}

/// Flags for submitting a record of `T` just reserved in `ring`, which wakes at
/// `probes.wakeup_min_bytes`, after sampling its fill for `source`.
#[inline(always)]
pub fn submit_flags<T>(ring: &RingBuf, source: u32) -> u64 {
    submit_flags_at::<T>(ring, source, crate::config::wakeup_min_bytes())
}

/// [`submit_flags`] for a ring with its own wakeup threshold (`min` bytes, 0: always).
#[inline(always)]
pub fn submit_flags_at<T>(ring: &RingBuf, source: u32, min: u64) -> u64 {
    let fill = sample_fill::<T>(ring, source);
    wake_flags(ring, source, fill, min)
}

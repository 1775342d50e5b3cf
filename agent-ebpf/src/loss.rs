//! Loss accounting: every failed ring-buffer reservation is counted per source, per CPU, and
//! each ring buffer's fill is sampled whenever an event is submitted.

use aya_ebpf::{
    bindings::BPF_RB_AVAIL_DATA,
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

/// Samples the bytes waiting in `ring` into `RING_FILL[source]` and returns them.
#[inline(always)]
pub fn record_fill(ring: &RingBuf, source: u32) -> u64 {
    let avail = ring.query(BPF_RB_AVAIL_DATA as u64);
    if let Some(slot) = RING_FILL.get_ptr_mut(source) {
        // SAFETY: a u64 slot; a racing writer on another CPU only makes the sample older.
        unsafe { *slot = avail };
    }
    avail
}

/// Stores `avail` (bytes waiting in its ring buffer) as `RING_FILL[source]`.
#[inline(always)]
pub fn record_fill_value(source: u32, avail: u64) {
    if let Some(slot) = RING_FILL.get_ptr_mut(source) {
        // SAFETY: as in `record_fill`.
        unsafe { *slot = avail };
    }
}

/// Flags for `submit`, after sampling the ring's fill for `source`.
#[inline(always)]
pub fn submit_flags(ring: &RingBuf, source: u32) -> u64 {
    record_fill(ring, source);
    crate::config::wakeup_flags(ring)
}

/// [`submit_flags`] for a ring with its own wakeup threshold (`min` bytes, 0: always).
#[inline(always)]
pub fn submit_flags_at(ring: &RingBuf, source: u32, min: u64) -> u64 {
    record_fill(ring, source);
    crate::config::wakeup_flags_at(ring, min)
}

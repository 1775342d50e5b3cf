//! Loss accounting: every failed ring-buffer reservation is counted per source, per CPU.

use aya_ebpf::{macros::map, maps::PerCpuArray};

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

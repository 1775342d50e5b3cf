//! Load-time constants, patched into `.rodata` by userspace (`EbpfLoader::set_global`), so the
//! verifier sees them as constants and prunes what they switch off.

/// Thread group id of the agent itself: its own syscalls and events are not recorded.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

#[inline(always)]
pub fn agent_tgid() -> u32 {
    // SAFETY: a plain read of a static; volatile so the compiler does not fold the default.
    unsafe { core::ptr::read_volatile(&AGENT_TGID) }
}

/// Ring buffers wake userspace only once this many bytes wait (0: on every event). Below it,
/// userspace drains them on its collection tick anyway.
#[unsafe(no_mangle)]
static WAKEUP_MIN_BYTES: u64 = 0;

/// Flags for `RingBufEntry::submit`: batch wakeups up to `WAKEUP_MIN_BYTES`.
#[inline(always)]
pub fn wakeup_flags(ring: &aya_ebpf::maps::RingBuf) -> u64 {
    // SAFETY: a plain read of a static; volatile so the compiler does not fold the default.
    wakeup_flags_at(ring, unsafe { core::ptr::read_volatile(&WAKEUP_MIN_BYTES) })
}

/// Flags for `RingBufEntry::submit`: wake the reader once `min` bytes wait (0: always).
#[inline(always)]
pub fn wakeup_flags_at(ring: &aya_ebpf::maps::RingBuf, min: u64) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if min == 0 {
        return 0;
    }
    if ring.query(BPF_RB_AVAIL_DATA as u64) >= min {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

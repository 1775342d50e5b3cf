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

/// [`WAKEUP_MIN_BYTES`], for `loss::submit_flags`.
#[inline(always)]
pub fn wakeup_min_bytes() -> u64 {
    // SAFETY: a plain read of a static; volatile so the compiler does not fold the default.
    unsafe { core::ptr::read_volatile(&WAKEUP_MIN_BYTES) }
}

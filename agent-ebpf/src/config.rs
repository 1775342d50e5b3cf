//! Load-time constants, patched into `.rodata` by userspace (`EbpfLoader::set_global`), so the
//! verifier sees them as constants and prunes what they switch off.

/// The value of a load-time constant (a `static` userspace patches before loading): read
/// through a volatile load, so the compiler does not fold the compiled-in default into the code.
#[inline(always)]
pub fn load<T: Copy>(constant: &'static T) -> T {
    // SAFETY: a plain read of a valid, aligned static that nothing writes after loading.
    unsafe { core::ptr::read_volatile(constant) }
}

/// Thread group id of the agent itself: its own syscalls and events are not recorded.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

#[inline(always)]
pub fn agent_tgid() -> u32 {
    load(&AGENT_TGID)
}

/// Ring buffers wake userspace only once this many bytes wait (0: on every event). Below it,
/// userspace drains them on its collection tick anyway.
#[unsafe(no_mangle)]
static WAKEUP_MIN_BYTES: u64 = 0;

/// [`WAKEUP_MIN_BYTES`], for `loss::submit_flags`.
#[inline(always)]
pub fn wakeup_min_bytes() -> u64 {
    load(&WAKEUP_MIN_BYTES)
}

//! Counters that several programs may update at once: one shared map value written from many
//! CPUs, or a per-CPU value written by preemptible programs (uprobes run with migration
//! disabled but can be preempted, so another task on the same CPU can run the same program on
//! the same value meanwhile). A plain `+=` (load, add, store) would lose the other's
//! increment; an atomic add cannot.
//!
//! `core::sync::atomic` has no read-modify-write operations on this target (it has no
//! compare-and-swap), so the instruction is written out: `BPF_STX | BPF_ATOMIC | BPF_ADD`
//! without `BPF_FETCH` (the old value is not read back), which every kernel since 4.x
//! verifies and x86's JIT turns into one `lock add`.

/// Adds `n` to the `u64` at `counter` atomically.
///
/// # Safety
/// `counter` points to a valid, 8-byte-aligned `u64` in a map value, alive for the call.
#[inline(always)]
pub unsafe fn add(counter: *mut u64, n: u64) {
    // SAFETY: the caller guarantees a valid aligned u64; every writer of it uses atomics.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({0} + 0) += {1}",
            in(reg) counter,
            in(reg) n,
            options(nostack),
        )
    };
}

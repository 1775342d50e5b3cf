//! Syscall latency: per-thread start slots and per-(process, syscall) log2 histograms.

/// Number of log2 latency buckets. Bucket `i` counts calls that took `[2^i, 2^(i+1))` ns;
/// bucket 0 also holds 0 ns and the last bucket holds everything from `2^(HIST_BUCKETS-1)` ns
/// (about 2.1 s) up.
pub const HIST_BUCKETS: usize = 32;

/// Maximum syscall number recorded; larger numbers (x32 ABI, garbage) are ignored.
pub const MAX_SYSCALL_NR: u32 = 1024;

/// Sentinel in [`ThreadSlot::nr`]: no syscall is in flight on this thread.
pub const NO_SYSCALL: u32 = u32::MAX;

/// Start of the syscall a thread is in, for a call during which the thread left its CPU:
/// written when it is switched out (the start is kept per CPU until then) and consumed at
/// `sys_exit`. Keyed by thread id in an LRU map, so that slots of threads the exit program
/// missed are evicted instead of filling the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSlot {
    pub start_ns: u64,
    pub nr: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ThreadSlot>() == 16);

/// Key of the in-kernel histogram map: the bounded process key (thread group id) and the
/// syscall number. The map is an LRU, so the number of keys is bounded by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    pub tgid: u32,
    pub nr: u32,
}
const _: () = assert!(core::mem::size_of::<HistKey>() == 8);

/// One CPU's share of a latency histogram. The count is the sum of the buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    pub buckets: [u64; HIST_BUCKETS],
    pub sum_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Hist>() == 8 * (HIST_BUCKETS + 1));

impl Default for Hist {
    fn default() -> Self {
        Self {
            buckets: [0; HIST_BUCKETS],
            sum_ns: 0,
        }
    }
}

/// Index of the log2 bucket for a latency in nanoseconds, without loops (the verifier and
/// the per-syscall budget both want straight-line code).
#[inline(always)]
pub fn bucket_of(ns: u64) -> usize {
    // floor(log2(ns)) for ns >= 1, by binary search over the bit positions.
    let mut v = ns;
    let mut r: u64 = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    if r >= HIST_BUCKETS as u64 {
        HIST_BUCKETS - 1
    } else {
        r as usize
    }
}

/// Upper bound of bucket `i` in nanoseconds (exclusive): `2^(i+1)`.
#[inline]
pub const fn bucket_upper_ns(i: usize) -> u64 {
    1u64 << (i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_floor_log2() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(4), 2);
        assert_eq!(bucket_of(1023), 9);
        assert_eq!(bucket_of(1024), 10);
        // 20 ms lands in [2^24, 2^25) ns = [16.8 ms, 33.6 ms).
        assert_eq!(bucket_of(20_000_000), 24);
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
        for i in 0..HIST_BUCKETS - 1 {
            assert_eq!(bucket_of(bucket_upper_ns(i) - 1), i);
            assert_eq!(bucket_of(bucket_upper_ns(i)), i + 1);
        }
    }
}

/// Key of the in-kernel error counters: failed syscalls by (tgid, nr, errno).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrKey {
    pub tgid: u32,
    pub nr: u32,
    pub errno: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ErrKey>() == 16);

/// A syscall that took at least its configured threshold (`SYSCALL_SLOW_NS[nr]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowSyscallEvent {
    pub tgid: u32,
    pub tid: u32,
    pub nr: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` at entry (CLOCK_MONOTONIC).
    pub start_ns: u64,
    pub latency_ns: u64,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SlowSyscallEvent>() == 56);

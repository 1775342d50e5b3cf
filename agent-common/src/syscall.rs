//! Syscall latency: per-thread start slots and per-(process, syscall) log2 histograms.

/// Number of latency buckets. The buckets are powers of two **in seconds**, upper-inclusive,
/// exactly the buckets of a Prometheus native histogram of schema 0 and of an OTLP exponential
/// histogram of scale 0 (docs/metrics.md, "Histograms"):
/// - bucket 0 counts calls that took at most `2^ZERO_BUCKET_EXP` s (2^-21 s, about 477 ns): the
///   native histogram's zero bucket;
/// - bucket `b` in `1..=30` counts calls in `(2^(b-22), 2^(b-21)]` s, native bucket index
///   `b - 21` (upper bound `2^(b-21)` s);
/// - bucket 31 counts calls over `2^9` s (512 s), which no native bucket holds.
pub const HIST_BUCKETS: usize = 32;

/// Exponent of the zero bucket's bound: bucket 0 holds everything up to `2^-21` s.
pub const ZERO_BUCKET_EXP: i32 = -21;

/// The last bucket that has a finite upper bound (`2^9` s); the one after it is the overflow.
pub const LAST_FINITE_BUCKET: usize = HIST_BUCKETS - 2;

/// Longest duration in a finite bucket, in nanoseconds: `2^9` s.
const LAST_FINITE_NS: u64 = 512_000_000_000;

/// `5^9`: `10^9 = 2^9 * 5^9`, so `2^e` s is `2^(e+9) * 5^9` ns.
const FIVE_POW_9: u64 = 1_953_125;

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

/// The bucket of a latency in nanoseconds (see [`HIST_BUCKETS`]), without loops (the verifier
/// and the per-syscall budget both want straight-line code), exact at every boundary.
#[inline(always)]
pub fn bucket_of(ns: u64) -> usize {
    if ns < 256 {
        // Under 2^8 ns < 2^-21 s.
        return 0;
    }
    if ns > LAST_FINITE_NS {
        return HIST_BUCKETS - 1;
    }
    // r = floor(log2(ns)), 8 <= r <= 38, by binary search over the bit positions.
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
    // 2^r ns lies between 2^(r-30) s and 2^(r-29) s, and 2^(r+1) ns below 2^(r-28) s, so ns is
    // in bucket r - 8 (upper bound 2^(r-29) s) or r - 7 (2^(r-28) s). Since 2^(r-29) s is
    // 2^(r+1) * 5^9 / 2^21 ns, it is r - 8 exactly when ns * 2^21 <= 5^9 * 2^(r+1) (both
    // sides whole numbers below 2^61).
    let above = ((ns << 21) > (FIVE_POW_9 << (r + 1))) as u64;
    let b = r - 8 + above;
    if b > LAST_FINITE_BUCKET as u64 {
        LAST_FINITE_BUCKET
    } else {
        b as usize
    }
}

/// Exponent of bucket `i`'s upper bound in seconds: bucket `i < HIST_BUCKETS - 1` holds
/// durations up to `2^bucket_upper_exp(i)` s (bucket 0 from 0, the others from half of it).
#[inline]
pub const fn bucket_upper_exp(i: usize) -> i32 {
    ZERO_BUCKET_EXP + i as i32
}

/// Upper bound of bucket `i` in seconds (inclusive); `+Inf` for the overflow bucket.
pub fn bucket_upper_seconds(i: usize) -> f64 {
    if i > LAST_FINITE_BUCKET {
        f64::INFINITY
    } else {
        // Exact: a power of two.
        let e = bucket_upper_exp(i);
        if e >= 0 {
            (1u64 << e) as f64
        } else {
            1.0 / (1u64 << -e) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest whole number of nanoseconds at most `2^e` s.
    fn floor_ns(e: i32) -> u64 {
        // 2^e s = 2^(e+9) * 5^9 ns.
        let k = e + 9;
        if k >= 0 {
            FIVE_POW_9 << k
        } else {
            FIVE_POW_9 >> -k
        }
    }

    #[test]
    fn buckets_are_powers_of_two_in_seconds_upper_inclusive() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(255), 0);
        // 2^-21 s = 476.837... ns.
        assert_eq!(bucket_of(476), 0);
        assert_eq!(bucket_of(477), 1);
        // 2^-6 s = 15.625 ms exactly: upper-inclusive.
        assert_eq!(bucket_of(15_625_000), 15);
        assert_eq!(bucket_of(15_625_001), 16);
        assert_eq!(bucket_upper_seconds(15), 0.015625);
        // 1 s = 2^0 s, bucket 21: (0.5 s, 1 s].
        assert_eq!(bucket_of(1_000_000_000), 21);
        assert_eq!(bucket_of(1_000_000_001), 22);
        assert_eq!(bucket_of(500_000_000), 20);
        assert_eq!(bucket_of(500_000_001), 21);
        assert_eq!(bucket_of(512_000_000_000), LAST_FINITE_BUCKET);
        assert_eq!(bucket_of(512_000_000_001), HIST_BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
        assert_eq!(bucket_upper_seconds(HIST_BUCKETS - 1), f64::INFINITY);
        // Every boundary, both sides: ns <= 2^e s is in the bucket of bound 2^e, ns + 1 in
        // the next.
        for i in 0..=LAST_FINITE_BUCKET {
            let e = bucket_upper_exp(i);
            let at = floor_ns(e);
            assert!(at as f64 <= bucket_upper_seconds(i) * 1e9, "bucket {i}");
            assert_eq!(bucket_of(at), i, "{at} ns");
            assert_eq!(bucket_of(at + 1), i + 1, "{} ns", at + 1);
        }
        // Against the definition, on a sweep of values (f64 is exact enough away from the
        // boundaries, which the loop above checks exactly).
        let mut ns = 1u64;
        while ns < 1 << 42 {
            let s = ns as f64 / 1e9;
            let want = (0..=LAST_FINITE_BUCKET)
                .find(|&i| s <= bucket_upper_seconds(i))
                .unwrap_or(HIST_BUCKETS - 1);
            assert_eq!(bucket_of(ns), want, "{ns} ns");
            ns = ns * 9 / 7 + 1;
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

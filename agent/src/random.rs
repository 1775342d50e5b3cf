//! The agent's one source of randomness, for the things that only need to differ between
//! processes and calls, never to be secret: backoff and breaker jitter, trace and span ids,
//! span sampling.
//!
//! One seed per process, from `getrandom(2)` (the clock and pid if that fails); every
//! [`Rng`] takes its own stream of it (a process-wide counter mixed into the seed), so two
//! generators made in the same nanosecond still differ. Each stream is SplitMix64, which has
//! no bad (all-zero) state.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

static SEED: OnceLock<u64> = OnceLock::new();
static STREAMS: AtomicU64 = AtomicU64::new(0);

fn process_seed() -> u64 {
    *SEED.get_or_init(|| {
        let mut buf = [0u8; 8];
        // SAFETY: getrandom writes at most `buf.len()` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
        if n == buf.len() as isize {
            u64::from_le_bytes(buf)
        } else {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(GOLDEN, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        }
    })
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A SplitMix64 generator: fast, small, not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// A new stream of the process's seed.
    pub fn new() -> Self {
        let stream = STREAMS.fetch_add(1, Ordering::Relaxed);
        Self(mix(process_seed() ^ stream.wrapping_mul(GOLDEN)))
    }

    /// A fixed seed (tests that want the same numbers every run).
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_units_stay_in_range() {
        let (mut a, mut b) = (Rng::new(), Rng::new());
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_ne!(xs, ys, "two generators made at once give different streams");
        let mut sorted = xs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        let mut r = Rng::seeded(0);
        let units: Vec<f64> = (0..10_000).map(|_| r.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = units.iter().sum::<f64>() / units.len() as f64;
        assert!((0.48..0.52).contains(&mean), "mean {mean}");
        assert_eq!(Rng::seeded(7).bytes(13).len(), 13);
        assert_eq!(Rng::seeded(7).bytes(13), Rng::seeded(7).bytes(13));
    }
}

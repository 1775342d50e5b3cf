//! Capped exponential backoff with full jitter: the n-th wait is uniform in
//! `[0, min(cap, base * 2^n)]`. A jitter source of `None` gives the upper bound itself, so
//! tests are exact.

use std::time::Duration;

pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    jitter: Option<Box<dyn FnMut() -> f64 + Send>>,
}

impl Backoff {
    /// With full jitter from a small xorshift generator seeded from the clock.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let mut state = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        let rng = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        Self {
            base,
            cap,
            attempt: 0,
            jitter: Some(Box::new(rng)),
        }
    }

    /// Without jitter: each wait is the upper bound (for exact tests).
    pub fn without_jitter(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            jitter: None,
        }
    }

    /// The upper bound of the next wait.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The longest wait (the cap).
    pub fn max(&self) -> Duration {
        self.cap
    }

    /// The next wait, and one more attempt counted.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter.as_mut() {
            Some(rng) => ceiling.mul_f64(rng().clamp(0.0, 1.0)),
            None => ceiling,
        }
    }

    /// After a success: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_its_cap_without_jitter() {
        let mut b = Backoff::without_jitter(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling_and_varies() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut seen = Vec::new();
        for _ in 0..40 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling);
            seen.push(d);
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 30, "jitter gives distinct waits");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::without_jitter(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}

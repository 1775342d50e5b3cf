//! The agent's one jittered backoff, for OTLP export, the Alertmanager client and the
//! circuit breakers' open waits: the n-th wait's ceiling is `min(cap, base * multiplier^n)`
//! (n from 0), and the wait itself is
//! - [`Jitter::Full`]: uniform in `[0, ceiling]` (export and Alertmanager: "full jitter");
//! - [`Jitter::Spread`]`(j)`: the ceiling times a factor uniform in `[1 - j, 1 + j]` (the
//!   breakers' `jitter:`, so a wait may exceed the cap by `j`);
//! - [`Jitter::None`]: the ceiling itself (exact tests).
//!
//! The random numbers come from the agent's one source ([`crate::random`]). A server that
//! says how long to wait (HTTP `Retry-After` in seconds, gRPC `RetryInfo`) is obeyed, up to
//! the cap: [`Backoff::next_delay_or`].

use std::time::Duration;

use crate::random::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    None,
    Full,
    Spread(f64),
}

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    multiplier: f64,
    attempt: u32,
    jitter: Jitter,
    rng: Rng,
}

impl Backoff {
    /// Doubling, with full jitter.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            multiplier: 2.0,
            attempt: 0,
            jitter: Jitter::Full,
            rng: Rng::new(),
        }
    }

    /// Doubling, without jitter: each wait is the ceiling (for exact tests).
    pub fn without_jitter(base: Duration, cap: Duration) -> Self {
        Self::new(base, cap).with_jitter(Jitter::None)
    }

    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The ceiling of the wait after `attempt` earlier ones.
    pub fn ceiling_at(&self, attempt: u32) -> Duration {
        if self.multiplier == 2.0 {
            let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
            return self.base.saturating_mul(factor).min(self.cap);
        }
        let secs = self.base.as_secs_f64() * self.multiplier.powi(attempt.min(1024) as i32);
        Duration::try_from_secs_f64(secs.min(self.cap.as_secs_f64())).unwrap_or(self.cap)
    }

    /// The upper bound of the next wait (before a spread jitter).
    pub fn ceiling(&self) -> Duration {
        self.ceiling_at(self.attempt)
    }

    /// The longest wait (the cap).
    pub fn max(&self) -> Duration {
        self.cap
    }

    /// The next wait, and one more attempt counted.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter {
            Jitter::None | Jitter::Spread(0.0) => ceiling,
            Jitter::Full => ceiling.mul_f64(self.rng.unit()),
            Jitter::Spread(j) => {
                ceiling.mul_f64((1.0 + j * (2.0 * self.rng.unit() - 1.0)).max(0.0))
            }
        }
    }

    /// The next wait, or what the server asked for (`asked`) capped at [`Backoff::max`]; one
    /// more attempt counted either way.
    pub fn next_delay_or(&mut self, asked: Option<Duration>) -> Duration {
        let jittered = self.next_delay();
        asked.map_or(jittered, |d| d.min(self.cap))
    }

    /// After a success: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Takes over another backoff's count (a breaker reloaded with the same spec).
    pub fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }
}

/// HTTP `Retry-After` as delay-seconds; an HTTP date is not honoured (the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
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
    fn spread_jitter_stays_within_its_band_and_other_multipliers_grow() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(100))
            .with_multiplier(3.0)
            .with_jitter(Jitter::Spread(0.2));
        for ceiling in [10.0, 30.0, 90.0, 100.0, 100.0] {
            assert_eq!(b.ceiling().as_secs_f64(), ceiling);
            let d = b.next_delay().as_secs_f64();
            assert!(
                (ceiling * 0.8..=ceiling * 1.2).contains(&d),
                "{d} for {ceiling}"
            );
        }
    }

    #[test]
    fn a_servers_delay_wins_up_to_the_cap() {
        let mut b = Backoff::without_jitter(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(
            b.next_delay_or(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            b.next_delay_or(Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
        assert_eq!(b.next_delay_or(None), Duration::from_millis(400));
        assert_eq!(b.attempt(), 3);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::without_jitter(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        let mut b = Backoff::without_jitter(Duration::from_secs(1), Duration::from_secs(30))
            .with_multiplier(1.5);
        for _ in 0..2000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}

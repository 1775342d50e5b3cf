//! Histograms over fixed upper bounds in seconds (HTTP request and TCP connect durations),
//! kept as the exposition wants them: a count per bound (not cumulative), then `+Inf`.

use std::marker::PhantomData;

/// The upper bounds of one kind of histogram, ascending.
pub trait Bounds {
    const BOUNDS: &'static [f64];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram<B: Bounds> {
    /// Observations per bound (`<=` it and above the one before), then above the last.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
    bounds: PhantomData<B>,
}

impl<B: Bounds> Default for Histogram<B> {
    fn default() -> Self {
        Self {
            counts: vec![0; B::BOUNDS.len() + 1],
            sum_seconds: 0.0,
            count: 0,
            bounds: PhantomData,
        }
    }
}

impl<B: Bounds> Histogram<B> {
    pub fn observe(&mut self, seconds: f64) {
        let i = B::BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(B::BOUNDS.len());
        self.counts[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// `(upper bound, count)` pairs, non-cumulative, last one `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        B::BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Two;
    impl Bounds for Two {
        const BOUNDS: &'static [f64] = &[0.1, 1.0];
    }

    #[test]
    fn observations_land_in_the_first_bound_that_holds_them() {
        let mut h = Histogram::<Two>::default();
        for s in [0.05, 0.1, 0.5, 1.0, 3.0] {
            h.observe(s);
        }
        assert_eq!(h.buckets(), [(0.1, 2), (1.0, 2), (f64::INFINITY, 1)]);
        assert_eq!(h.count, 5);
        assert!((h.sum_seconds - 4.65).abs() < 1e-12);
    }
}

//! What a rule file's `breakers:` entry says (the parameters of `control::breaker`'s state
//! machine), and what an evaluation hands it: plain data, so that the rules do not import
//! the control layer they feed.

use std::time::Duration;

/// A breaker's parameters (from a rule file).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub open_failure_ratio: Option<f64>,
    pub close_failure_ratio: Option<f64>,
    pub open_slow_ratio: Option<f64>,
    pub close_slow_ratio: Option<f64>,
    pub min_volume: f64,
    pub wait_base: Duration,
    pub wait_multiplier: f64,
    pub wait_max: Duration,
    /// Each wait is multiplied by a factor uniform in [1 - jitter, 1 + jitter].
    pub jitter: f64,
    /// Traffic ratios admitted in Probe, one per step, ending below or at 1.
    pub ramp: Vec<f64>,
    pub step: Duration,
    pub probe_timeout: Duration,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            open_failure_ratio: Some(0.5),
            close_failure_ratio: Some(0.25),
            open_slow_ratio: None,
            close_slow_ratio: None,
            min_volume: 20.0,
            wait_base: Duration::from_secs(5),
            wait_multiplier: 2.0,
            wait_max: Duration::from_secs(300),
            jitter: 0.1,
            ramp: vec![0.1, 0.25, 0.5, 1.0],
            step: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// One evaluation's inputs. `None` = unknown (missing or stale series).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    pub failure_ratio: Option<f64>,
    pub slow_ratio: Option<f64>,
    pub volume: Option<f64>,
}

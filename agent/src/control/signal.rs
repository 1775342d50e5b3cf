//! Degrade signals: a level in [0, 1] from a pressure value, in the shape of Envoy's
//! ScaledTrigger: 0 below `scaling`, 1 at or above `saturation`, linear between.

pub use crate::config::Scaled;

/// Levels are published rounded to this step, so a pressure that wobbles does not wake every
/// blocked reader each evaluation.
pub fn publishable(level: f64) -> f64 {
    (level.clamp(0.0, 1.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_trigger_levels() {
        let s = Scaled {
            scaling: 20.0,
            saturation: 80.0,
        };
        assert_eq!(s.level(0.0), 0.0);
        assert_eq!(s.level(20.0), 0.0);
        assert_eq!(s.level(50.0), 0.5);
        assert_eq!(s.level(80.0), 1.0);
        assert_eq!(s.level(1e9), 1.0);
        assert_eq!(s.level(f64::NAN), 0.0);
        assert!(s.problem().is_none());
        assert!(Scaled {
            scaling: 5.0,
            saturation: 5.0
        }
        .problem()
        .is_some());
        assert_eq!(publishable(0.123456), 0.12);
        assert_eq!(publishable(1.7), 1.0);
    }
}

//! Settings of the built-in host-protection signal (computed in `control::host`) and the
//! scaled trigger that degrade signals share: plain data, checked at load.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaled {
    /// Pressure at which the level starts to rise above 0.
    pub scaling: f64,
    /// Pressure at which the level reaches 1.
    pub saturation: f64,
}

impl Scaled {
    pub fn level(&self, pressure: f64) -> f64 {
        if pressure.is_nan() || pressure <= self.scaling {
            0.0
        } else if pressure >= self.saturation {
            1.0
        } else {
            (pressure - self.scaling) / (self.saturation - self.scaling)
        }
    }

    /// Problems with the thresholds, if any.
    pub fn problem(&self) -> Option<String> {
        (!(self.scaling.is_finite()
            && self.saturation.is_finite()
            && self.scaling < self.saturation))
            .then(|| {
                format!(
                    "scaling ({}) must be below saturation ({})",
                    self.scaling, self.saturation
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostProtectionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `/proc/pressure/cpu` `some avg10`, in percent.
    #[serde(default = "default_cpu")]
    pub cpu_pressure_percent: Scaled,
    /// `/proc/pressure/memory` `some avg10`, in percent.
    #[serde(default = "default_memory")]
    pub memory_pressure_percent: Scaled,
    /// Runnable tasks (`procs_running` in `/proc/stat`) per online CPU.
    #[serde(default = "default_run_queue")]
    pub run_queue_per_cpu: Scaled,
}

const fn yes() -> bool {
    true
}
const fn default_cpu() -> Scaled {
    Scaled {
        scaling: 40.0,
        saturation: 90.0,
    }
}
const fn default_memory() -> Scaled {
    Scaled {
        scaling: 10.0,
        saturation: 50.0,
    }
}
const fn default_run_queue() -> Scaled {
    Scaled {
        scaling: 2.0,
        saturation: 8.0,
    }
}

impl Default for HostProtectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cpu_pressure_percent: default_cpu(),
            memory_pressure_percent: default_memory(),
            run_queue_per_cpu: default_run_queue(),
        }
    }
}

impl HostProtectionConfig {
    pub fn problems(&self) -> Vec<String> {
        [
            ("cpu_pressure_percent", &self.cpu_pressure_percent),
            ("memory_pressure_percent", &self.memory_pressure_percent),
            ("run_queue_per_cpu", &self.run_queue_per_cpu),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.problem().map(|p| format!("{k}: {p}")))
        .collect()
    }
}

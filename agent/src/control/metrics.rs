//! The breakers' and signals' own metric families (`steadfast_breaker_*`,
//! `steadfast_signal_*`), read from the published control state at each collection. The
//! families are listed in the metric catalogue (`metrics::catalogue`) with the others.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use super::Control;

/// Adds breakers and signals to the registry.
pub fn register(registry: &mut Registry, control: Arc<Mutex<Control>>) {
    registry.register_collector(Box::new(ControlCollector { control }));
}

#[derive(Debug)]
struct ControlCollector {
    control: Arc<Mutex<Control>>,
}

impl std::fmt::Debug for super::Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Collector for ControlCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let snap = c.snapshot();
        let mut state = encoder.encode_descriptor(
            "breaker_state",
            "Breaker state: 0 admit (closed), 1 probe (half-open), 2 shed (open).",
            None,
            MetricType::Gauge,
        )?;
        for (name, b) in &snap.breakers {
            ConstGauge::new(i64::from(b.state.as_number()))
                .encode(state.encode_family(&[("breaker", name.as_str())])?)?;
        }
        let ratio = Unit::Other("ratio".into());
        let mut admit = encoder.encode_descriptor(
            "breaker_admit",
            "Share of traffic the breaker lets through now.",
            Some(&ratio),
            MetricType::Gauge,
        )?;
        for (name, b) in &snap.breakers {
            ConstGauge::new(b.admit_ratio)
                .encode(admit.encode_family(&[("breaker", name.as_str())])?)?;
        }
        let mut transitions = encoder.encode_descriptor(
            "breaker_transitions",
            "Breaker state changes, by breaker and the state entered.",
            None,
            MetricType::Counter,
        )?;
        for ((name, to), &n) in &c.transitions {
            ConstCounter::new(n)
                .encode(transitions.encode_family(&[("breaker", name.as_str()), ("to", *to)])?)?;
        }
        let mut level = encoder.encode_descriptor(
            "signal_level",
            "Degrade signal level in [0, 1].",
            None,
            MetricType::Gauge,
        )?;
        for (name, s) in &snap.signals {
            ConstGauge::new(s.level).encode(level.encode_family(&[("signal", name.as_str())])?)?;
        }
        let mut present = encoder.encode_descriptor(
            "breaker_inputs_present",
            "1 if the rule engine could evaluate the breaker's inputs at its last evaluation, 0 if not (no data, stale, several series, not a number: the state is held; the reason is in the API and the log).",
            None,
            MetricType::Gauge,
        )?;
        for (name, b) in &snap.breakers {
            ConstGauge::new(i64::from(!b.inputs_unknown))
                .encode(present.encode_family(&[("breaker", name.as_str())])?)?;
        }
        let mut present = encoder.encode_descriptor(
            "signal_inputs_present",
            "1 if the signal's level comes from inputs evaluated at its last evaluation, 0 if its expression gave no number (the level is held).",
            None,
            MetricType::Gauge,
        )?;
        for (name, s) in &snap.signals {
            ConstGauge::new(i64::from(!s.inputs_unknown))
                .encode(present.encode_family(&[("signal", name.as_str())])?)?;
        }
        ConstGauge::new(snap.index as i64).encode(encoder.encode_descriptor(
            "control_snapshot_index",
            "Index of the published breaker and signal snapshot (grows on every change).",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

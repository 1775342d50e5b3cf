//! The rule engine's own metrics, as a second prometheus-client Collector in the agent's
//! registry. It locks the engine only while encoding; the evaluation loop encodes the
//! registry before it locks the engine, so the two never wait on each other.

use std::sync::{atomic::Ordering, Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};

use super::alertmanager::NotifierStats;
use crate::rules::engine::{Engine, EVAL_BUCKETS};
use crate::rules::spec::time::fmt_ms;

#[derive(Debug)]
pub struct RulesCollector {
    pub engine: Arc<Mutex<Engine>>,
    pub notifier: Option<Arc<NotifierStats>>,
}

impl Collector for RulesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let s = &e.stats;
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let f = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(f)
        };
        gauge(
            &mut encoder,
            "rules_last_reload_successful",
            "1 if the last load of the rule files succeeded, 0 if it was rejected (the previous rules keep running).",
            if s.last_reload_successful { 1.0 } else { 0.0 },
        )?;
        gauge(
            &mut encoder,
            "rules_last_reload_success_timestamp_seconds",
            "When the rule files were last loaded successfully.",
            s.last_reload_success_ms as f64 / 1000.0,
        )?;
        let counts = e.counts();
        gauge(
            &mut encoder,
            "rules_alerting_rules",
            "Alerting rules loaded.",
            counts.alerting_rules as f64,
        )?;
        gauge(
            &mut encoder,
            "rules_slos",
            "SLOs loaded.",
            counts.slos as f64,
        )?;
        gauge(
            &mut encoder,
            "rules_breakers",
            "Breakers loaded.",
            counts.breakers as f64,
        )?;
        gauge(
            &mut encoder,
            "rules_signals",
            "Signals defined by `signals:` entries loaded.",
            counts.signals as f64,
        )?;
        let f = encoder.encode_descriptor(
            "rules_reloads_failed",
            "Rule loads rejected because a file was invalid.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.reloads_failed).encode(f)?;
        let f = encoder.encode_descriptor(
            "rules_evaluation_failures",
            "Rule evaluations that failed (the rule's state was held).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.evaluation_failures).encode(f)?;
        let mut f = encoder.encode_descriptor(
            "rules_evaluation_duration",
            "Time one evaluation tick took (every due group).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let mut buckets: Vec<(f64, u64)> = EVAL_BUCKETS
            .iter()
            .zip(s.eval_buckets.iter())
            .map(|(b, n)| (*b, *n))
            .collect();
        buckets.push((f64::INFINITY, s.eval_buckets[EVAL_BUCKETS.len()]));
        f.encode_histogram::<NoLabelSet>(s.eval_seconds_sum, s.evaluations, &buckets, None)?;

        let mut f = encoder.encode_descriptor(
            "slo_error_budget_remaining_ratio",
            "Share of the SLO's error budget left over its period (negative: overspent).",
            None,
            MetricType::Gauge,
        )?;
        for slo in e.slos() {
            ConstGauge::new(slo.budget_remaining())
                .encode(f.encode_family(&[("slo", slo.def.name.as_str())])?)?;
        }
        let mut f = encoder.encode_descriptor(
            "slo_objective_ratio",
            "The SLO's objective as a ratio.",
            None,
            MetricType::Gauge,
        )?;
        for slo in e.slos() {
            ConstGauge::new(slo.def.objective / 100.0)
                .encode(f.encode_family(&[("slo", slo.def.name.as_str())])?)?;
        }
        let mut f = encoder.encode_descriptor(
            "slo_burn_rate",
            "Error budget burn rate over a window (1: the budget lasts exactly the period; NaN: no events; absent: no data).",
            None,
            MetricType::Gauge,
        )?;
        for slo in e.slos() {
            for (w, b) in &slo.burn {
                if let Some(b) = b {
                    let window = fmt_ms(*w);
                    ConstGauge::new(*b).encode(f.encode_family(&[
                        ("slo", slo.def.name.as_str()),
                        ("window", window.as_str()),
                    ])?)?;
                }
            }
        }
        let mut f = encoder.encode_descriptor(
            "alerts",
            "Alerts by name and state (pending, firing).",
            None,
            MetricType::Gauge,
        )?;
        for ((name, state), n) in e.alert_counts() {
            ConstGauge::new(n as i64)
                .encode(f.encode_family(&[("alertname", name.as_str()), ("state", state)])?)?;
        }
        let mut f = encoder.encode_descriptor(
            "signal_raised",
            "Signals raised by firing rules and spent SLO budgets (1 while raised).",
            None,
            MetricType::Gauge,
        )?;
        for sig in e.signals() {
            ConstGauge::new(1).encode(f.encode_family(&[("signal", sig.as_str())])?)?;
        }
        gauge(
            &mut encoder,
            "store_series",
            "Series held by the rule engine's store.",
            e.store.series_count() as f64,
        )?;
        gauge(
            &mut encoder,
            "store_samples",
            "Samples held by the rule engine's store.",
            e.store.sample_count() as f64,
        )?;
        let f = encoder.encode_descriptor(
            "store_refused_samples",
            "Samples the store refused because rules.max_series was reached.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(e.store.refused_samples()).encode(f)?;
        let f = encoder.encode_descriptor(
            "rules_alerts_refused",
            "New alerts refused because a rule held 1,000 or all rules held rules.max_alerts.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(e.stats.alerts_refused).encode(f)?;
        drop(e);
        if let Some(n) = &self.notifier {
            for (name, help, v) in [
                (
                    "alertmanager_notifications",
                    "Alerts delivered to Alertmanager.",
                    &n.sent,
                ),
                (
                    "alertmanager_notifications_failed",
                    "Alerts given up on after every attempt to send them failed.",
                    &n.failed,
                ),
                (
                    "alertmanager_notifications_dropped",
                    "Alerts dropped because the send queue was full.",
                    &n.dropped,
                ),
            ] {
                let f = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(v.load(Ordering::Relaxed)).encode(f)?;
            }
        }
        Ok(())
    }
}

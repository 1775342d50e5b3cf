//! The agent's catalogue as store samples, from the registry's typed families (the Prometheus
//! data model as `prometheus_client` encodes it; no text is written or parsed back): every
//! counter, gauge and classic histogram series becomes label sets with `__name__`, histograms
//! as `_bucket` (bounds in the canonical form of [`super::exposition::canonical_le`], `+Inf`
//! always present), `_sum` and `_count`, as a scrape of the text format would give them.

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType,
};

use super::Labels;
use crate::collector::{counter_value, gauge_value};

/// The samples of `families` whose name `wanted` accepts and whose labels `keep` accepts
/// (`keep` sees the name and the labels without `__name__`, `le` included for buckets).
pub fn samples(
    families: &[MetricFamily],
    wanted: impl Fn(&str) -> bool,
    keep: impl Fn(&str, &[(String, String)]) -> bool,
) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    // A bound's text, formatted once per run: every kernel histogram has the same bounds.
    let mut bounds: Vec<(u64, String)> = Vec::new();
    let mut bound = |v: f64| -> String {
        match bounds.iter().find(|(b, _)| *b == v.to_bits()) {
            Some((_, s)) => s.clone(),
            None => {
                let s = canonical(v);
                bounds.push((v.to_bits(), s.clone()));
                s
            }
        }
    };
    let mut push = |name: &str, labels: Vec<(String, String)>, value: f64| {
        if keep(name, &labels) {
            let mut set: Labels = labels.into_iter().collect();
            set.insert("__name__".into(), name.to_string());
            out.push((set, value));
        }
    };
    for f in families {
        let kind = MetricType::try_from(f.r#type).unwrap_or(MetricType::Untyped);
        let histogram = matches!(kind, MetricType::Histogram | MetricType::GaugeHistogram);
        // The names this family's samples take, each asked once per family.
        let named = |suffix: &str| {
            let n = format!("{}{suffix}", f.name);
            wanted(&n).then_some(n)
        };
        let (plain, bucket, sum, count) = if histogram {
            (None, named("_bucket"), named("_sum"), named("_count"))
        } else {
            (named(""), None, None, None)
        };
        if plain.is_none() && bucket.is_none() && sum.is_none() && count.is_none() {
            // Most of the catalogue is histogram buckets no rule reads.
            continue;
        }
        for m in &f.metric {
            let labels = || -> Vec<(String, String)> {
                m.label
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect()
            };
            match kind {
                MetricType::Histogram | MetricType::GaugeHistogram => {
                    let Some(h) = &m.histogram else { continue };
                    if let Some(name) = &bucket {
                        let mut inf = false;
                        for b in &h.bucket {
                            inf |= b.upper_bound == f64::INFINITY;
                            let mut l = labels();
                            l.push(("le".into(), bound(b.upper_bound)));
                            push(name, l, b.cumulative_count as f64);
                        }
                        if !inf {
                            let mut l = labels();
                            l.push(("le".into(), "+Inf".into()));
                            push(name, l, h.sample_count as f64);
                        }
                    }
                    if let Some(name) = &sum {
                        push(name, labels(), h.sample_sum);
                    }
                    if let Some(name) = &count {
                        push(name, labels(), h.sample_count as f64);
                    }
                }
                MetricType::Counter => {
                    if let Some(name) = &plain {
                        push(name, labels(), counter_value(m));
                    }
                }
                _ => {
                    if let Some(name) = &plain {
                        push(name, labels(), gauge_value(m));
                    }
                }
            }
        }
    }
    out
}

/// A bucket bound as [`super::exposition::canonical_le`] writes it.
fn canonical(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel histograms, counters and gauges read from the registry's families give the
    /// same samples as the text format parsed back (the path this replaced).
    #[test]
    fn families_give_the_samples_the_text_format_gives() {
        use agent_common::syscall::{bucket_of, Hist};
        let mut hist = Hist::default();
        for ns in [100, 15_625_000, 15_625_001, 20_000_000_000] {
            hist.buckets[bucket_of(ns)] += 1;
            hist.sum_ns += ns;
        }
        let families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let mut typed = samples(&families, |_| true, |_, _| true);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(crate::metrics::KernelHistogramForTests(
            "steadfast_x_seconds".into(),
            hist,
        )));
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let (parsed, errors) = super::super::exposition::parse_selected(&text, |_| true, |_| true);
        assert!(errors.is_empty());
        let mut parsed: Vec<(Labels, f64)> =
            parsed.into_iter().map(|s| (s.labels, s.value)).collect();
        typed.sort_by(|a, b| a.0.cmp(&b.0));
        parsed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(typed, parsed);
        // 15.625 ms is at or under 0.015625; the 20 s call only in +Inf.
        let bucket = |le: &str| {
            typed
                .iter()
                .find(|(l, _)| l.get("le").map(String::as_str) == Some(le))
                .map(|(_, v)| *v)
        };
        assert_eq!(bucket("0.015625"), Some(2.0));
        assert_eq!(bucket("0.03125"), Some(3.0));
        assert_eq!(bucket("8"), Some(3.0));
        assert_eq!(bucket("+Inf"), Some(4.0));
    }

    #[test]
    fn unwanted_names_and_labels_are_skipped() {
        use agent_common::syscall::Hist;
        let families = crate::metrics::kernel_histogram_families("h_seconds", &Hist::default());
        let only_count = samples(&families, |n| n == "h_seconds_count", |_, _| true);
        assert_eq!(only_count.len(), 1);
        assert!(samples(&families, |_| false, |_, _| true).is_empty());
        assert!(samples(&families, |_| true, |_, l| l.is_empty()).is_empty());
    }
}

//! The agent's catalogue as store samples, from the registry's typed families (the Prometheus
//! data model as `prometheus_client` encodes it; no text is written or parsed back): every
//! counter, gauge and classic histogram series becomes a label set with `__name__`, histograms
//! as `_bucket` (bounds in the canonical form of [`super::exposition::canonical_le`], `+Inf`
//! always present), `_sum` and `_count`, as a scrape of the text format would give them.
//!
//! The label sets are views ([`Series`]) borrowed from the families: the store copies the
//! labels of a series only when it starts to hold it.

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    LabelPair, MetricFamily, MetricType,
};

use super::{pair_hash, series_hash, LabelView, Labels};
use crate::collector::{classic_buckets, counter_value, gauge_value};

/// One series of a family, borrowed: its name, the metric's labels and, for a bucket, its
/// bound.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub name: &'a str,
    pub labels: &'a [LabelPair],
    pub le: Option<&'a str>,
    /// Its [`LabelView::series_hash`], when known (from parts hashed once per metric, family
    /// and bound).
    pub hash: Option<u64>,
}

impl<'a> Series<'a> {
    /// The series `name` (with the hash of its `__name__` label) of a metric with `labels`,
    /// whose hash without `__name__` is `base` when known.
    fn named(name: &'a (String, u64), labels: &'a [LabelPair], base: Option<u64>) -> Self {
        Self {
            name: &name.0,
            labels,
            le: None,
            hash: base.map(|b| b.wrapping_add(name.1)),
        }
    }
}

impl LabelView for Series<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        match name {
            "__name__" => Some(self.name),
            "le" if self.le.is_some() => self.le,
            _ => self
                .labels
                .iter()
                .rev()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str()),
        }
    }

    fn series_hash(&self) -> u64 {
        self.hash.unwrap_or_else(|| series_hash(self))
    }

    fn label_count(&self) -> usize {
        self.labels.len() + 1 + usize::from(self.le.is_some())
    }

    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for l in self.labels {
            if !(l.name == "__name__" || (l.name == "le" && self.le.is_some())) {
                f(&l.name, &l.value);
            }
        }
        f("__name__", self.name);
        if let Some(le) = self.le {
            f("le", le);
        }
    }
}

/// Calls `f` with every sample of `families` whose name `wanted` accepts.
pub fn visit(
    families: &[MetricFamily],
    wanted: impl Fn(&str) -> bool,
    f: &mut dyn FnMut(&dyn LabelView, f64),
) {
    // A bound's text and hash, made once per run: every kernel histogram has the same bounds.
    let mut bounds: Vec<Bound> = Vec::new();
    let inf_hash = pair_hash("le", "+Inf");
    for fam in families {
        let kind = MetricType::try_from(fam.r#type).unwrap_or(MetricType::Untyped);
        let histogram = matches!(kind, MetricType::Histogram | MetricType::GaugeHistogram);
        // The names this family's samples take, each asked once per family, with their hash.
        let named = |suffix: &str| {
            let n = format!("{}{suffix}", fam.name);
            wanted(&n).then(|| {
                let h = pair_hash("__name__", &n);
                (n, h)
            })
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
        for m in &fam.metric {
            // The metric's labels hashed once for all its series (unless one would be replaced
            // by `__name__` or `le`: then each series hashes its own view).
            let base = (!m
                .label
                .iter()
                .any(|l| l.name == "__name__" || l.name == "le"))
            .then(|| {
                m.label
                    .iter()
                    .fold(0u64, |h, l| h.wrapping_add(pair_hash(&l.name, &l.value)))
            });
            let series = |name| Series::named(name, &m.label, base);
            match kind {
                MetricType::Histogram | MetricType::GaugeHistogram => {
                    let Some(h) = &m.histogram else { continue };
                    if let Some(name) = &bucket {
                        let mut inf = false;
                        for (upper_bound, cumulative) in classic_buckets(h) {
                            inf |= upper_bound == f64::INFINITY;
                            let bound = bound(&mut bounds, upper_bound);
                            let s = series(name);
                            let s = Series {
                                le: Some(&bound.text),
                                hash: s.hash.map(|h| h.wrapping_add(bound.hash)),
                                ..s
                            };
                            f(&s, cumulative as f64);
                        }
                        if !inf {
                            let s = series(name);
                            let s = Series {
                                le: Some("+Inf"),
                                hash: s.hash.map(|h| h.wrapping_add(inf_hash)),
                                ..s
                            };
                            f(&s, h.sample_count as f64);
                        }
                    }
                    if let Some(name) = &sum {
                        f(&series(name), h.sample_sum);
                    }
                    if let Some(name) = &count {
                        f(&series(name), h.sample_count as f64);
                    }
                }
                MetricType::Counter => {
                    if let Some(name) = &plain {
                        f(&series(name), counter_value(m));
                    }
                }
                _ => {
                    if let Some(name) = &plain {
                        f(&series(name), gauge_value(m));
                    }
                }
            }
        }
    }
}

/// The samples of `families` whose name `wanted` accepts, as label sets (tests, tools).
pub fn samples(families: &[MetricFamily], wanted: impl Fn(&str) -> bool) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    visit(families, wanted, &mut |s, v| out.push((s.to_labels(), v)));
    out
}

/// A bucket bound's text and its `le` label's [`pair_hash`].
struct Bound {
    bits: u64,
    text: String,
    hash: u64,
}

/// The bound `v` in `bounds`, added when new.
fn bound(bounds: &mut Vec<Bound>, v: f64) -> &Bound {
    let i = match bounds.iter().position(|b| b.bits == v.to_bits()) {
        Some(i) => i,
        None => {
            let text = canonical(v);
            let hash = pair_hash("le", &text);
            bounds.push(Bound {
                bits: v.to_bits(),
                text,
                hash,
            });
            bounds.len() - 1
        }
    };
    &bounds[i]
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
        let hist = crate::metrics::hist_of(&[100, 15_625_000, 15_625_001, 20_000_000_000]);
        let families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let mut typed = samples(&families, |_| true);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        // The reference: the classic buckets written out by the client library.
        registry.register_collector(Box::new(crate::metrics::ClassicReferenceForTests(
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

    /// The hash a view gets from its parts is the hash of its labels.
    #[test]
    fn views_hash_as_their_labels() {
        use agent_common::syscall::Hist;
        let mut families = crate::metrics::kernel_histogram_families("h_seconds", &Hist::default());
        families.extend(crate::metrics::kernel_histogram_families(
            "g_seconds",
            &Hist::default(),
        ));
        let mut n = 0;
        visit(&families, |_| true, &mut |s, _| {
            assert_eq!(s.series_hash(), series_hash(&s.to_labels()));
            n += 1;
        });
        assert!(n > 20, "{n} samples");
    }

    #[test]
    fn unwanted_names_are_skipped() {
        use agent_common::syscall::Hist;
        let families = crate::metrics::kernel_histogram_families("h_seconds", &Hist::default());
        let only_count = samples(&families, |n| n == "h_seconds_count");
        assert_eq!(only_count.len(), 1);
        assert!(samples(&families, |_| false).is_empty());
    }
}

//! The local series store: recent samples of the agent's own metrics, in memory, bounded, for
//! the rule engine to query.
//!
//! How it is fed: at every tick where a group is due, the rule engine encodes the agent's whole registry to
//! Prometheus text and hands the parsed samples to [`Store::ingest`] with the tick's time. So
//! every metric family, present and future, is queryable without coupling rules to the
//! pipeline. Only series that some selector of the loaded rules can match are kept (the
//! *interest*, set at each rule load), so unused histogram buckets cost nothing.
//!
//! Bounds: at most `max_series` series (samples of further series are refused and counted in
//! [`Store::refused_samples`]); per series, samples newer than `raw_secs` at full resolution
//! (one per tick) and older samples, up to the retention, downsampled to one per
//! `coarse_step_secs` (the first sample of each step is kept). The retention is the longest
//! range the loaded rules need plus the 5 minute lookback, capped by `max_retention_secs`.
//! With the defaults (1 s ticks, 15 min raw, 60 s coarse, 3 d retention) a series holds at most
//! 900 + 4320 samples of 16 bytes: about 84 KiB.
//!
//! Staleness follows Prometheus: a series missing from an ingest gets a stale marker (a
//! special NaN) at that time; an instant lookup returns the newest sample at most 5 minutes
//! old unless it is a stale marker. Stale series are dropped once their last real sample is
//! older than the retention.

pub mod exposition;
pub mod families;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use promql_parser::label::Matcher;

/// Labels of a series, `__name__` included, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// Prometheus' lookback delta for instant lookups, in ms.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// The bit pattern Prometheus uses for stale markers.
const STALE_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_BITS)
}

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_BITS
}

/// Bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_series: usize,
    /// Samples older than this (ms) are dropped.
    pub retention_ms: i64,
    /// Samples newer than this (ms) are kept at full resolution.
    pub raw_ms: i64,
    /// Older samples are kept one per this step (ms).
    pub coarse_step_ms: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_series: 2000,
            retention_ms: 3 * 86_400_000 + LOOKBACK_MS,
            raw_ms: 15 * 60 * 1000,
            coarse_step_ms: 60_000,
        }
    }
}

#[derive(Debug, Default)]
struct Series {
    coarse: VecDeque<(i64, f64)>,
    raw: VecDeque<(i64, f64)>,
    /// The newest sample is a stale marker.
    stale: bool,
    /// Time of the newest real (non-stale) sample.
    last_real: i64,
    /// Written by a recording rule ([`Store::record`]): a scrape missing it does not make it
    /// stale (its rule does, when the series leaves the rule's output).
    recorded: bool,
}

impl Series {
    fn newest(&self) -> Option<(i64, f64)> {
        self.raw.back().or(self.coarse.back()).copied()
    }

    fn push(&mut self, t: i64, v: f64) {
        if self.newest().is_some_and(|(last, _)| last >= t) {
            return; // time never goes backwards in a series
        }
        self.raw.push_back((t, v));
        self.stale = is_stale(v);
        if !self.stale {
            self.last_real = t;
        }
    }

    fn trim(&mut self, now: i64, limits: &StoreLimits) {
        let raw_ms = limits.raw_ms.min(limits.retention_ms);
        while let Some(&(t, v)) = self.raw.front() {
            if t > now - raw_ms {
                break;
            }
            self.raw.pop_front();
            let keep = match self.coarse.back() {
                None => true,
                Some(&(last, _)) => {
                    is_stale(v)
                        || t.div_euclid(limits.coarse_step_ms)
                            != last.div_euclid(limits.coarse_step_ms)
                }
            };
            if keep {
                self.coarse.push_back((t, v));
            }
        }
        while self
            .coarse
            .front()
            .is_some_and(|&(t, _)| t <= now - limits.retention_ms)
        {
            self.coarse.pop_front();
        }
    }

    fn samples(&self) -> impl DoubleEndedIterator<Item = &(i64, f64)> {
        self.coarse.iter().chain(self.raw.iter())
    }

    fn len(&self) -> usize {
        self.coarse.len() + self.raw.len()
    }
}

/// A set of metric names, shared.
pub type NameSet = Arc<std::collections::HashSet<String>>;

/// The in-memory store. See the module docs.
#[derive(Debug, Default)]
pub struct Store {
    series: HashMap<Labels, Series>,
    limits: StoreLimits,
    /// Selectors (as matcher lists) whose series are kept; empty keeps nothing.
    interest: Vec<Vec<Matcher>>,
    /// The metric names the interest can match, when every selector names its metric.
    names: Option<NameSet>,
    refused: u64,
    last_ingest: Option<i64>,
}

/// True when every matcher accepts the labels (a missing label is the empty string).
pub fn matches(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| {
        let v = labels.get(&m.name).map(String::as_str).unwrap_or("");
        m.is_match(v)
    })
}

impl Store {
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Changes the bounds and the selectors whose series are kept; drops series nobody can
    /// select any more and trims the rest.
    pub fn configure(&mut self, limits: StoreLimits, interest: Vec<Vec<Matcher>>) {
        self.limits = limits;
        self.names = interest
            .iter()
            .map(|ms| {
                ms.iter().find_map(|m| {
                    (m.name == "__name__" && matches!(m.op, promql_parser::label::MatchOp::Equal))
                        .then(|| m.value.clone())
                })
            })
            .collect::<Option<_>>()
            .map(Arc::new);
        self.interest = interest;
        let interest = &self.interest;
        self.series
            .retain(|labels, _| interest.iter().any(|m| matches(m, labels)));
        if let Some(now) = self.last_ingest {
            for s in self.series.values_mut() {
                s.trim(now, &limits);
            }
        }
    }

    /// Adds one scrape's samples at time `t` (ms). Series missing from it get a stale marker.
    pub fn ingest(&mut self, t: i64, samples: impl IntoIterator<Item = (Labels, f64)>) {
        self.add(t, samples, true)
    }

    /// Adds samples at `t` without marking missing series stale (synthetic series in rule
    /// tests, where a missing value is just missing; pass [`stale_marker`] to end a series).
    pub fn append(&mut self, t: i64, samples: impl IntoIterator<Item = (Labels, f64)>) {
        self.add(t, samples, false)
    }

    fn add(&mut self, t: i64, samples: impl IntoIterator<Item = (Labels, f64)>, mark_stale: bool) {
        if self.last_ingest.is_some_and(|last| t <= last) {
            return;
        }
        self.last_ingest = Some(t);
        for (labels, value) in samples {
            if !self.interest.iter().any(|m| matches(m, &labels)) {
                continue;
            }
            let at_cap = self.series.len() >= self.limits.max_series;
            match self.series.get_mut(&labels) {
                Some(s) => s.push(t, value),
                None if at_cap => {
                    self.refused += 1;
                    continue;
                }
                None => self.series.entry(labels).or_default().push(t, value),
            }
        }
        let limits = self.limits;
        self.series.retain(|_, s| {
            if mark_stale && !s.recorded && s.newest().is_some_and(|(last, _)| last < t) && !s.stale
            {
                s.push(t, stale_marker());
            }
            s.trim(t, &limits);
            !(s.stale && s.last_real <= t - limits.retention_ms) && s.len() > 0
        });
    }

    /// Adds the output of a recording rule at `t` (ms): kept like scraped series (when some
    /// selector of the interest can match it, within `max_series`), but never made stale by
    /// a scrape that lacks it; the rule ends a series by writing a [`stale_marker`]. A
    /// sample at or before a series' newest is dropped (time never goes backwards).
    pub fn record(&mut self, t: i64, samples: impl IntoIterator<Item = (Labels, f64)>) {
        for (labels, value) in samples {
            if !self.interest.iter().any(|m| matches(m, &labels)) {
                continue;
            }
            let at_cap = self.series.len() >= self.limits.max_series;
            match self.series.get_mut(&labels) {
                Some(s) => s.push(t, value),
                None if at_cap => self.refused += 1,
                None if is_stale(value) => {}
                None => {
                    let s = self.series.entry(labels).or_default();
                    s.recorded = true;
                    s.push(t, value);
                }
            }
        }
    }

    /// False when no selector of the interest can match a series named `name`.
    pub fn wants_name(&self, name: &str) -> bool {
        match &self.names {
            Some(names) => names.contains(name),
            None => true,
        }
    }

    /// Every metric name the interest can match, or `None` when a selector does not name its
    /// metric (then any name may be wanted). Shared, so the exposition can be filtered
    /// while it is encoded, without the store.
    pub fn wanted_names(&self) -> Option<NameSet> {
        self.names.clone()
    }

    /// A quick look at a parsed line before it becomes a label set: false when no selector
    /// of the interest can match it. Matchers on `le` are not judged here (bounds are compared
    /// in canonical form later), so a true answer may still be refused by [`Store::ingest`].
    pub fn might_want(&self, name: &str, labels: &[(String, String)]) -> bool {
        self.interest.iter().any(|ms| {
            ms.iter().all(|m| match m.name.as_str() {
                "__name__" => m.is_match(name),
                "le" => true,
                key => m.is_match(
                    labels
                        .iter()
                        .find(|(k, _)| k == key)
                        .map_or("", |(_, v)| v.as_str()),
                ),
            })
        })
    }

    /// Series now held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Samples held, over every series.
    pub fn sample_count(&self) -> usize {
        self.series.values().map(Series::len).sum()
    }

    /// Samples refused because `max_series` was reached.
    pub fn refused_samples(&self) -> u64 {
        self.refused
    }

    /// Every series the matchers select, with its value at `t`: the newest sample at most
    /// [`LOOKBACK_MS`] old, unless that sample is a stale marker.
    pub fn instant(&self, matchers: &[Matcher], t: i64) -> Vec<(Labels, f64)> {
        self.instant_with_times(matchers, t)
            .into_iter()
            .map(|(l, _, v)| (l, v))
            .collect()
    }

    /// [`Store::instant`] with each sample's own time (ms), for PromQL's `timestamp()`.
    pub fn instant_with_times(&self, matchers: &[Matcher], t: i64) -> Vec<(Labels, i64, f64)> {
        let mut out = Vec::new();
        for (labels, s) in &self.series {
            if !matches(matchers, labels) {
                continue;
            }
            let newest = s.samples().rev().find(|(ts, _)| *ts <= t);
            if let Some(&(ts, v)) = newest {
                if ts > t - LOOKBACK_MS && !is_stale(v) {
                    out.push((labels.clone(), ts, v));
                }
            }
        }
        out
    }

    /// Every series the matchers select with its real samples in `(start, end]`; series with
    /// none are left out.
    pub fn range(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let mut out = Vec::new();
        for (labels, s) in &self.series {
            if !matches(matchers, labels) {
                continue;
            }
            let points: Vec<(i64, f64)> = s
                .samples()
                .filter(|(ts, v)| *ts > start && *ts <= end && !is_stale(*v))
                .copied()
                .collect();
            if !points.is_empty() {
                out.push((labels.clone(), points));
            }
        }
        out
    }

    /// Values of `label` over the series the matchers select (for choosing a bucket bound).
    pub fn label_values(&self, matchers: &[Matcher], label: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .keys()
            .filter(|l| matches(matchers, l))
            .filter_map(|l| l.get(label).cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use promql_parser::label::MatchOp;

    /// A series' labels with its name, for tests here and in the rule engine.
    pub(crate) fn l(name: &str, extra: &[(&str, &str)]) -> Labels {
        let mut m: Labels = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("__name__".into(), name.into());
        m
    }

    fn name(n: &str) -> Vec<Matcher> {
        vec![Matcher::new(MatchOp::Equal, "__name__", n)]
    }

    fn store() -> Store {
        let mut s = Store::new(StoreLimits {
            max_series: 3,
            retention_ms: 600_000,
            raw_ms: 120_000,
            coarse_step_ms: 60_000,
        });
        s.configure(s.limits(), vec![name("a"), name("b")]);
        s
    }

    #[test]
    fn keeps_only_interesting_series_and_caps_them() {
        let mut s = store();
        let batch = |t: i64| {
            (0..5)
                .map(move |i| (l("a", &[("i", &i.to_string())]), t as f64))
                .chain([(l("zzz", &[]), 1.0)])
        };
        s.ingest(1000, batch(1000));
        assert_eq!(s.series_count(), 3);
        assert_eq!(s.refused_samples(), 2);
        s.ingest(2000, batch(2000));
        assert_eq!(s.series_count(), 3);
        assert_eq!(s.refused_samples(), 4);
    }

    /// The quick look never refuses what the full match keeps: checked through the text
    /// path, with a bound written in another float form than the selector's.
    #[test]
    fn the_quick_look_agrees_with_the_full_match() {
        let mut s = store();
        let sel = vec![
            Matcher::new(MatchOp::Equal, "__name__", "h_bucket"),
            Matcher::new(MatchOp::Equal, "service", "a"),
            Matcher::new(MatchOp::Equal, "le", "0.5"),
        ];
        let re = Matcher::new_matcher(
            promql_parser::parser::token::T_EQL_REGEX,
            "y".into(),
            "1|2".into(),
        )
        .unwrap();
        s.configure(s.limits(), vec![sel, vec![re]]);
        let text = "h_bucket{service=\"a\",le=\"5.0e-1\"} 1\nh_bucket{service=\"a\",le=\"1\"} 2\n\
                    h_bucket{service=\"b\",le=\"0.5\"} 3\nother{x=\"z\"} 4\nother{y=\"1\"} 5\n";
        let (parsed, errors) =
            exposition::parse_selected(text, |_| true, |p| s.might_want(&p.name, &p.labels));
        assert!(errors.is_empty());
        let values: Vec<f64> = parsed.iter().map(|p| p.value).collect();
        // service b and other{x="z"} are refused by the quick look; le="1" only by the full match
        assert_eq!(values, [1.0, 2.0, 5.0]);
        s.ingest(1000, parsed.into_iter().map(|p| (p.labels, p.value)));
        assert_eq!(s.series_count(), 2);
    }

    #[test]
    fn wanted_names_follow_the_interest() {
        let mut s = store();
        assert!(s.wants_name("a") && s.wants_name("b") && !s.wants_name("c"));
        let all = vec![vec![Matcher::new(MatchOp::NotEqual, "__name__", "x")]];
        s.configure(s.limits(), all);
        assert!(s.wants_name("c"));
    }

    #[test]
    fn staleness_and_lookback() {
        let mut s = store();
        s.ingest(1000, [(l("a", &[]), 1.0), (l("b", &[]), 2.0)]);
        s.ingest(2000, [(l("a", &[]), 3.0)]);
        // b went missing at 2000: stale from then on, still visible before.
        assert_eq!(s.instant(&name("b"), 1500).len(), 1);
        assert!(s.instant(&name("b"), 2000).is_empty());
        assert_eq!(s.instant(&name("a"), 2000)[0].1, 3.0);
        // a is not re-ingested: its last sample is visible for 5 minutes after it (until the
        // next ingest marks it stale).
        assert_eq!(s.instant(&name("a"), 2000 + LOOKBACK_MS - 1)[0].1, 3.0);
        assert!(s.instant(&name("a"), 2000 + LOOKBACK_MS).is_empty());
        // ranges skip stale markers
        assert_eq!(s.range(&name("b"), 0, 5000)[0].1, vec![(1000, 2.0)]);
    }

    #[test]
    fn downsamples_old_samples_and_drops_past_retention() {
        let mut s = store();
        for i in 1..=900 {
            s.ingest(i * 1000, [(l("a", &[]), i as f64)]);
        }
        let pts = &s.range(&name("a"), 0, 900_000)[0].1;
        // retention 600 s: (300 s, 900 s]; raw for the last 120 s, one per minute before.
        assert!(pts.iter().all(|(t, _)| *t > 300_000));
        let raw = pts.iter().filter(|(t, _)| *t > 780_000).count();
        assert_eq!(raw, 120);
        let coarse = pts.len() - raw;
        assert!((8..=9).contains(&coarse), "{coarse} coarse samples");
        assert!(s.sample_count() < 140);
    }

    #[test]
    fn retention_shorter_than_the_raw_window_is_honoured() {
        let mut s = store();
        s.configure(
            StoreLimits {
                retention_ms: 30_000,
                ..s.limits()
            },
            vec![name("a")],
        );
        for i in 1..=100 {
            s.ingest(i * 1000, [(l("a", &[]), i as f64)]);
        }
        let pts = &s.range(&name("a"), 0, 100_000)[0].1;
        assert!(pts.iter().all(|(t, _)| *t > 70_000), "{pts:?}");
        assert!(s.sample_count() <= 31);
    }

    #[test]
    fn stale_series_are_forgotten_after_retention() {
        let mut s = store();
        s.ingest(1000, [(l("a", &[]), 1.0)]);
        for i in 2..=700 {
            s.ingest(i * 1000, [(l("b", &[]), 1.0)]);
        }
        assert_eq!(s.series_count(), 1);
    }
}

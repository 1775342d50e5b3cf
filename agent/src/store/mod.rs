//! The local series store: recent samples of the agent's own metrics, in memory, bounded, for
//! the rule engine to query.
//!
//! How it is fed: at every tick where a group is due, the rule engine reads the collector's
//! latest typed snapshot and hands the series some rule can read to [`Store::ingest_with`]
//! (see [`families`]) with the tick's time; tests and the fuzzer feed label sets
//! ([`Store::ingest`], [`Store::append`]). So every metric family, present and future, is
//! queryable without coupling rules to the pipeline. Only series that some selector of the
//! loaded rules can match are kept (the *interest*, set at each rule load), so unused
//! histogram buckets cost nothing.
//!
//! Series are found by a hash of their label pairs computed from the caller's own view of
//! them ([`LabelView`]): a series already held costs a hash and a comparison per ingest, no
//! label map is built for it, and one whose labels the store does not hold and cannot hold
//! (no selector matches it, or `max_series` is reached) is never copied.
//!
//! Bounds: at most `max_series` series (samples of further series are refused and counted in
//! [`Store::refused_samples`]); per series, samples newer than `raw_secs` at full resolution
//! (one per tick) and older samples, up to the retention, downsampled to one per
//! `coarse_step_secs` (the first sample of each step is kept). The retention is the longest
//! range the loaded rules need plus the 5 minute lookback, capped by `max_retention_secs`.
//! Of the samples older than the longest range (`range_ms`), only the newest is kept: the
//! rules read ranges and instants at the time of the latest ingest, and an instant lookup
//! needs only the newest sample within the lookback. With the defaults (1 s ticks, 15 min
//! raw, 60 s coarse, 3 d retention) a series holds at most 900 + 4320 samples of 16 bytes:
//! about 84 KiB; with a `[10s]` range at 100 ms ticks, about 100.
//!
//! Staleness follows Prometheus: a series missing from an ingest gets a stale marker (a
//! special NaN) at that time; an instant lookup returns the newest sample at most 5 minutes
//! old unless it is a stale marker. Stale series are dropped once their last real sample is
//! older than the retention.

pub mod exposition;
pub mod families;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
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

/// A series' labels, `__name__` included, as whoever feeds the store holds them: the store
/// hashes, compares and matches them without building a [`Labels`] (it builds one only for a
/// series it starts to hold).
pub trait LabelView {
    /// The value of the label `name`, if present.
    fn label(&self, name: &str) -> Option<&str>;
    /// How many labels, `__name__` included.
    fn label_count(&self) -> usize;
    /// Calls `f` with every label, in any order.
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str));
    /// The store's hash of these labels: [`pair_hash`] of every label, summed. A view that
    /// knows it (from parts hashed once for many series) gives it without walking its labels.
    fn series_hash(&self) -> u64 {
        series_hash(self)
    }
    /// The labels as a map.
    fn to_labels(&self) -> Labels {
        let mut out = Labels::new();
        self.for_each_label(&mut |k, v| {
            out.insert(k.to_string(), v.to_string());
        });
        out
    }
}

impl LabelView for Labels {
    fn label(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
    fn label_count(&self) -> usize {
        self.len()
    }
    fn for_each_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v);
        }
    }
    fn to_labels(&self) -> Labels {
        self.clone()
    }
}

/// Bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_series: usize,
    /// Samples older than this (ms) are dropped.
    pub retention_ms: i64,
    /// Of the samples older than this (ms), only the newest is kept (for an instant lookup
    /// within the lookback); `i64::MAX`: all within the retention. The rule engine sets it
    /// to the longest range (offsets included) its rules read plus one evaluation interval.
    pub range_ms: i64,
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
            range_ms: i64::MAX,
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

    /// The time of the `i`th oldest sample.
    fn time_at(&self, i: usize) -> Option<i64> {
        match self.coarse.get(i) {
            Some(&(t, _)) => Some(t),
            None => self.raw.get(i - self.coarse.len()).map(|&(t, _)| t),
        }
    }

    fn pop_front(&mut self) {
        if self.coarse.pop_front().is_none() {
            self.raw.pop_front();
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
        // Of the samples no range reaches, the newest stays (an instant lookup's).
        let range_start = now.saturating_sub(limits.range_ms);
        while self.time_at(1).is_some_and(|t| t <= range_start) {
            self.pop_front();
        }
        while self
            .time_at(0)
            .is_some_and(|t| t <= now - limits.retention_ms)
        {
            self.pop_front();
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

/// A series held: its labels, their hash and its samples.
#[derive(Debug)]
struct Entry {
    labels: Labels,
    hash: u64,
    series: Series,
}

/// Hashes that are already hashes ([`series_hash`]) as `HashMap` keys.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The store's index: series hash -> the positions in `entries` of the series with it.
type Index = HashMap<u64, Vec<u32>, BuildHasherDefault<PreHashed>>;

/// The in-memory store. See the module docs.
#[derive(Debug, Default)]
pub struct Store {
    entries: Vec<Entry>,
    index: Index,
    limits: StoreLimits,
    /// Selectors (as matcher lists) whose series are kept; empty keeps nothing.
    interest: Vec<Vec<Matcher>>,
    /// The metric names the interest can match, when every selector names its metric.
    names: Option<NameSet>,
    refused: u64,
    last_ingest: Option<i64>,
}

/// True when every matcher accepts the labels (a missing label is the empty string).
pub fn matches<V: LabelView + ?Sized>(matchers: &[Matcher], labels: &V) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(labels.label(&m.name).unwrap_or("")))
}

/// FxHash's step (rustc's hasher): fast on short strings; the store compares labels on
/// every hit, so a collision costs a comparison, never a wrong series.
fn fx(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
}

fn fx_str(mut h: u64, s: &str) -> u64 {
    h = fx(h, s.len() as u64);
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        h = fx(h, u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = fx(h, u64::from_le_bytes(word));
    }
    h
}

/// One label's part of a series' hash ([`LabelView::series_hash`]): FxHash of the name and
/// the value, mixed (MurmurHash3's finaliser) so that sums of them spread.
pub fn pair_hash(name: &str, value: &str) -> u64 {
    let mut h = fx_str(fx_str(0, name), value);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A hash of a label set that does not depend on the order its labels come in: the sum of
/// each label's [`pair_hash`].
pub fn series_hash<V: LabelView + ?Sized>(labels: &V) -> u64 {
    let mut sum = 0u64;
    labels.for_each_label(&mut |k, v| sum = sum.wrapping_add(pair_hash(k, v)));
    sum
}

/// Whether `view` has exactly the labels `labels` has.
fn same<V: LabelView + ?Sized>(labels: &Labels, view: &V) -> bool {
    if labels.len() != view.label_count() {
        return false;
    }
    let mut same = true;
    view.for_each_label(&mut |k, v| {
        same = same && labels.get(k).is_some_and(|x| x == v);
    });
    same
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
        self.retain(|labels, _| interest.iter().any(|m| matches(m, labels)));
        self.interest = interest;
        if let Some(now) = self.last_ingest {
            for e in &mut self.entries {
                e.series.trim(now, &limits);
            }
        }
    }

    /// Keeps the series `keep` accepts.
    fn retain(&mut self, mut keep: impl FnMut(&Labels, &mut Series) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|e| keep(&e.labels, &mut e.series));
        if self.entries.len() != before {
            self.index.clear();
            for (i, e) in self.entries.iter().enumerate() {
                self.index.entry(e.hash).or_default().push(i as u32);
            }
        }
    }

    /// The position of the series with exactly these labels, whose hash is `hash`.
    fn find<V: LabelView + ?Sized>(&self, hash: u64, labels: &V) -> Option<usize> {
        self.index
            .get(&hash)?
            .iter()
            .map(|&i| i as usize)
            .find(|&i| same(&self.entries[i].labels, labels))
    }

    /// The position of the series `labels`, added when new.
    fn insert(&mut self, labels: Labels) -> usize {
        let hash = series_hash(&labels);
        if let Some(i) = self.find(hash, &labels) {
            return i;
        }
        self.entries.push(Entry {
            labels,
            hash,
            series: Series::default(),
        });
        let i = self.entries.len() - 1;
        self.index.entry(hash).or_default().push(i as u32);
        i
    }

    /// Adds one sample at `t` to the series `labels`, when held or when it can be held (some
    /// selector of the interest matches it, within `max_series`). `recorded`: a recording
    /// rule's output (a new series starts only with a real value, and is not made stale by
    /// ingests).
    fn put<V: LabelView + ?Sized>(&mut self, t: i64, labels: &V, value: f64, recorded: bool) {
        // Only series the interest matches are held (`configure` drops the others).
        if let Some(i) = self.find(labels.series_hash(), labels) {
            self.entries[i].series.push(t, value);
            return;
        }
        if !self.interest.iter().any(|m| matches(m, labels)) {
            return;
        }
        if self.entries.len() >= self.limits.max_series {
            self.refused += 1;
            return;
        }
        if recorded && is_stale(value) {
            return;
        }
        let i = self.insert(labels.to_labels());
        let s = &mut self.entries[i].series;
        s.recorded |= recorded;
        s.push(t, value);
    }

    /// Adds one scrape's samples at time `t` (ms). Series missing from it get a stale marker.
    pub fn ingest<V: LabelView>(&mut self, t: i64, samples: impl IntoIterator<Item = (V, f64)>) {
        self.add(t, samples, true)
    }

    /// [`Store::ingest`] with the samples given to `feed`'s argument one by one: label views
    /// borrowed from the caller's data (the collector's snapshot), no label set built for a
    /// series already held.
    pub fn ingest_with(&mut self, t: i64, feed: impl FnOnce(&mut dyn FnMut(&dyn LabelView, f64))) {
        if !self.begin(t) {
            return;
        }
        feed(&mut |labels, value| self.put(t, labels, value, false));
        self.end(t, true);
    }

    /// Adds samples at `t` without marking missing series stale (synthetic series in rule
    /// tests, where a missing value is just missing; pass [`stale_marker`] to end a series).
    pub fn append<V: LabelView>(&mut self, t: i64, samples: impl IntoIterator<Item = (V, f64)>) {
        self.add(t, samples, false)
    }

    fn add<V: LabelView>(
        &mut self,
        t: i64,
        samples: impl IntoIterator<Item = (V, f64)>,
        mark_stale: bool,
    ) {
        if !self.begin(t) {
            return;
        }
        for (labels, value) in samples {
            self.put(t, &labels, value, false);
        }
        self.end(t, mark_stale);
    }

    /// Starts an ingest at `t`: false when `t` is not after the last one.
    fn begin(&mut self, t: i64) -> bool {
        if self.last_ingest.is_some_and(|last| t <= last) {
            return false;
        }
        self.last_ingest = Some(t);
        true
    }

    /// Ends an ingest at `t`: stale markers for the series it lacked (`mark_stale`), trims,
    /// drops series stale past the retention.
    fn end(&mut self, t: i64, mark_stale: bool) {
        let limits = self.limits;
        self.retain(|_, s| {
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
            self.put(t, &labels, value, true);
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
        self.entries.len()
    }

    /// Samples held, over every series.
    pub fn sample_count(&self) -> usize {
        self.entries.iter().map(|e| e.series.len()).sum()
    }

    /// Samples refused because `max_series` was reached.
    pub fn refused_samples(&self) -> u64 {
        self.refused
    }

    fn selected<'a>(
        &'a self,
        matchers: &'a [Matcher],
    ) -> impl Iterator<Item = (&'a Labels, &'a Series)> + 'a {
        self.entries
            .iter()
            .filter(|e| matches(matchers, &e.labels))
            .map(|e| (&e.labels, &e.series))
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
        for (labels, s) in self.selected(matchers) {
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
    /// none are left out. For tests: the evaluator reads ranges with [`Store::range_each`].
    #[cfg(test)]
    pub fn range(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let mut out = Vec::new();
        self.range_each(matchers, start, end, |labels, points| {
            out.push((labels.clone(), points.to_vec()));
        });
        out
    }

    /// [`Store::range`] one series at a time: `f` gets each selected series with its real
    /// samples in `(start, end]` (series with none are skipped), in one buffer reused for
    /// every series. A range function over 2,000 series of 100 samples holds one series'
    /// samples at a time instead of 3.2 MB of copies.
    pub fn range_each(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        mut f: impl FnMut(&Labels, &[(i64, f64)]),
    ) {
        let mut points: Vec<(i64, f64)> = Vec::new();
        for (labels, s) in self.selected(matchers) {
            points.clear();
            points.extend(
                s.samples()
                    .filter(|(ts, v)| *ts > start && *ts <= end && !is_stale(*v))
                    .copied(),
            );
            if !points.is_empty() {
                f(labels, &points);
            }
        }
    }

    /// Values of `label` over the series the matchers select (for choosing a bucket bound).
    pub fn label_values(&self, matchers: &[Matcher], label: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .selected(matchers)
            .filter_map(|(l, _)| l.get(label).cloned())
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
            range_ms: i64::MAX,
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

    /// With `range_ms` set (as the rule engine sets it), samples past the longest range go
    /// but the newest of them stays: ranges up to `range_ms` and instant lookups within the
    /// lookback give what they gave with every sample kept.
    #[test]
    fn samples_past_the_longest_range_keep_only_the_newest() {
        let limits = StoreLimits {
            max_series: 10,
            retention_ms: 10_000 + LOOKBACK_MS,
            range_ms: 10_000,
            raw_ms: 15 * 60 * 1000,
            coarse_step_ms: 60_000,
        };
        let mut all = Store::new(StoreLimits {
            range_ms: i64::MAX,
            ..limits
        });
        let mut few = Store::new(limits);
        for s in [&mut all, &mut few] {
            s.configure(s.limits(), vec![name("a"), name("b")]);
        }
        // a: every 100 ms for 100 s; b: every 100 ms for 20 s, then nothing (append: no
        // stale marker), so its newest sample is 80 s old at the end.
        for i in 1..=1000i64 {
            let t = i * 100;
            let mut batch = vec![(l("a", &[]), i as f64)];
            if t <= 20_000 {
                batch.push((l("b", &[]), i as f64));
            }
            all.append(t, batch.clone());
            few.append(t, batch);
            for r in [1_000, 5_000, 10_000] {
                assert_eq!(
                    all.range(&name("a"), t - r, t),
                    few.range(&name("a"), t - r, t)
                );
            }
            for sel in [name("a"), name("b")] {
                assert_eq!(all.instant(&sel, t), few.instant(&sel, t), "t={t}");
            }
        }
        assert_eq!(few.instant(&name("b"), 100_000)[0].1, 200.0);
        // 10 s at 100 ms, and the one before the range.
        let held = few.sample_count();
        assert!(held <= 100 + 1 + 1, "{held} samples held");
        assert!(all.sample_count() >= 1200);
    }

    /// A series is the same whatever order its labels come in, and whether it comes as a
    /// label map or as a view of a snapshot's labels.
    #[test]
    fn series_are_found_by_their_labels_in_any_form() {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::LabelPair;
        let pair = |n: &str, v: &str| LabelPair {
            name: n.into(),
            value: v.into(),
        };
        let mut s = store();
        let as_map = l("a", &[("x", "1"), ("y", "2")]);
        let ab = [pair("x", "1"), pair("y", "2")];
        let ba = [pair("y", "2"), pair("x", "1")];
        s.ingest(1000, [(as_map.clone(), 1.0)]);
        for (t, pairs) in [(2000, &ab), (3000, &ba)] {
            s.ingest_with(t, |put| {
                put(
                    &families::Series {
                        name: "a",
                        labels: pairs,
                        le: None,
                        hash: None,
                    },
                    t as f64,
                )
            });
        }
        assert_eq!(s.series_count(), 1);
        assert_eq!(
            s.range(&name("a"), 0, 3000)[0].1,
            vec![(1000, 1.0), (2000, 2000.0), (3000, 3000.0)]
        );
        let view = families::Series {
            name: "a",
            labels: &ba,
            le: None,
            hash: None,
        };
        assert_eq!(as_map.series_hash(), view.series_hash());
        // Another value is another series.
        s.ingest(4000, [(l("a", &[("x", "1"), ("y", "3")]), 1.0)]);
        assert_eq!(s.instant(&name("a"), 4000).len(), 1);
        assert_eq!(s.series_count(), 2);
    }
}

//! A [`Snapshot`]'s families in the exposition formats: Prometheus text 0.0.4, OpenMetrics
//! 1.0 text and the Prometheus protobuf format (delimited `io.prometheus.client.MetricFamily`,
//! with the native histograms). Histograms are written with their classic buckets in text;
//! bucket bounds are written in one form in every format, Rust's shortest round-trip decimal
//! (`0.015625`, `1`, `+Inf`), the form the rule store keeps them in.

use std::fmt::Write;

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    Metric, MetricFamily, MetricType,
};
use prost::Message;

use crate::collector::{classic_buckets, counter_value, gauge_value, with_classic_buckets};

/// The exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    PrometheusText,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// Delimited `io.prometheus.client.MetricFamily` messages.
    PrometheusProtobuf,
}

/// Where an encoding in chunks stands: the next family, and the next series within it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    family: usize,
    metric: usize,
}

/// The next chunk of the families in `format`, from `pos` on: whole series only, stopping
/// at the first series boundary at or past `min_bytes` (a chunk can be larger by one series,
/// or one family's header; it is never empty before the end). Returns the chunk and whether it ends the encoding; the chunks in
/// order are byte for byte the whole encoding ([`prometheus_text`], [`openmetrics`],
/// [`protobuf`]).
pub fn chunk(
    families: &[MetricFamily],
    format: Format,
    pos: &mut Position,
    min_bytes: usize,
) -> (Vec<u8>, bool) {
    let room = min_bytes.saturating_add(min_bytes / 8).min(1 << 20);
    match format {
        Format::PrometheusProtobuf => {
            let mut out = Vec::with_capacity(room);
            let end = protobuf_from(families, pos, &mut out, min_bytes);
            (out, end)
        }
        text => {
            let mut out = String::with_capacity(room);
            let end = text_from(
                families,
                text == Format::OpenMetrics,
                pos,
                &mut out,
                min_bytes,
            );
            (out.into_bytes(), end)
        }
    }
}

/// The families as Prometheus text 0.0.4.
pub fn prometheus_text(families: &[MetricFamily], out: &mut String) {
    text_from(families, false, &mut Position::default(), out, usize::MAX);
}

/// The families as OpenMetrics 1.0 text, ending in `# EOF`.
pub fn openmetrics(families: &[MetricFamily], out: &mut String) {
    text_from(families, true, &mut Position::default(), out, usize::MAX);
}

/// The families as length-delimited protobuf messages.
pub fn protobuf(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    protobuf_from(families, &mut Position::default(), &mut out, usize::MAX);
    out
}

/// Text from `pos` on, until `out` holds `min_bytes` at a series boundary (false) or the
/// families end (true; OpenMetrics' `# EOF` written).
fn text_from(
    families: &[MetricFamily],
    openmetrics: bool,
    pos: &mut Position,
    out: &mut String,
    min_bytes: usize,
) -> bool {
    while let Some(f) = families.get(pos.family) {
        let kind = kind(f);
        if pos.metric == 0 {
            if !out.is_empty() && out.len() >= min_bytes {
                return false;
            }
            header(f, kind, openmetrics, out);
        }
        let names = SampleNames::new(&f.name);
        let mut bounds = Vec::new();
        for m in &f.metric[pos.metric.min(f.metric.len())..] {
            series(m, kind, &names, &mut bounds, out);
            pos.metric += 1;
            if out.len() >= min_bytes && pos.metric < f.metric.len() {
                return false;
            }
        }
        *pos = Position {
            family: pos.family + 1,
            metric: 0,
        };
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    true
}

/// A family's `# HELP`, `# TYPE` and (OpenMetrics) `# UNIT` lines.
fn header(f: &MetricFamily, kind: MetricType, openmetrics: bool, out: &mut String) {
    // OpenMetrics names a counter family without its `_total`.
    let base = match kind {
        MetricType::Counter if openmetrics => f.name.strip_suffix("_total").unwrap_or(&f.name),
        _ => &f.name,
    };
    let _ = writeln!(out, "# HELP {base} {}", escape_help(&f.help));
    let type_name = match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::GaugeHistogram if openmetrics => "gaugehistogram",
        MetricType::GaugeHistogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Untyped if openmetrics => "unknown",
        MetricType::Untyped => "untyped",
    };
    let _ = writeln!(out, "# TYPE {base} {type_name}");
    if openmetrics && !f.unit.is_empty() && base.ends_with(&format!("_{}", f.unit)) {
        let _ = writeln!(out, "# UNIT {base} {}", f.unit);
    }
}

/// Delimited protobuf from `pos` on, field by field as prost writes a whole family (name,
/// help, type, each metric, unit), so a family can end in a later chunk than it starts.
/// Kernel histograms get their classic buckets written out beside the native ones
/// ([`with_classic_buckets`]), as a scraper that reads either kind expects.
fn protobuf_from(
    families: &[MetricFamily],
    pos: &mut Position,
    out: &mut Vec<u8>,
    min_bytes: usize,
) -> bool {
    use prost::encoding::{encode_varint, int32, message, string};
    while let Some(f) = families.get(pos.family) {
        if pos.metric == 0 {
            if !out.is_empty() && out.len() >= min_bytes {
                return false;
            }
            // The family's length comes first: its metrics as they will be written. A kernel
            // histogram's classic buckets are built here and again when it is written, so
            // that the chunk, not the whole family, is what a scrape holds.
            let fields = MetricFamily {
                name: f.name.clone(),
                help: f.help.clone(),
                r#type: f.r#type,
                metric: Vec::new(),
                unit: f.unit.clone(),
            };
            let len = fields.encoded_len()
                + f.metric
                    .iter()
                    .map(|m| message::encoded_len(4, &*with_classic_buckets(m)))
                    .sum::<usize>();
            encode_varint(len as u64, out);
            if !f.name.is_empty() {
                string::encode(1, &f.name, out);
            }
            if !f.help.is_empty() {
                string::encode(2, &f.help, out);
            }
            if f.r#type != 0 {
                int32::encode(3, &f.r#type, out);
            }
        }
        for m in &f.metric[pos.metric.min(f.metric.len())..] {
            message::encode(4, &*with_classic_buckets(m), out);
            pos.metric += 1;
            if out.len() >= min_bytes && pos.metric < f.metric.len() {
                return false;
            }
        }
        if !f.unit.is_empty() {
            string::encode(5, &f.unit, out);
        }
        *pos = Position {
            family: pos.family + 1,
            metric: 0,
        };
    }
    true
}

fn kind(f: &MetricFamily) -> MetricType {
    MetricType::try_from(f.r#type).unwrap_or(MetricType::Untyped)
}

/// The sample names of a family's series (a histogram's three are written once per family).
struct SampleNames<'a> {
    name: &'a str,
    bucket: String,
    sum: String,
    count: String,
}

impl<'a> SampleNames<'a> {
    fn new(name: &'a str) -> Self {
        Self {
            name,
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

/// One series' sample lines. `bounds` keeps the text of the bucket bounds seen last: every
/// histogram of a family has the same bounds in this agent, so each is written once.
fn series(
    m: &Metric,
    kind: MetricType,
    names: &SampleNames<'_>,
    bounds: &mut Vec<(u64, String)>,
    out: &mut String,
) {
    match kind {
        MetricType::Counter => line(out, names.name, m, None, counter_value(m)),
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let Some(h) = &m.histogram else { return };
            let mut inf = false;
            for (i, (upper_bound, cumulative)) in classic_buckets(h).enumerate() {
                inf |= upper_bound == f64::INFINITY;
                let bits = upper_bound.to_bits();
                if bounds.get(i).is_none_or(|(k, _)| *k != bits) {
                    let text = number(upper_bound);
                    if i < bounds.len() {
                        bounds[i] = (bits, text);
                    } else {
                        bounds.push((bits, text));
                    }
                }
                line(out, &names.bucket, m, Some(&bounds[i].1), cumulative as f64);
            }
            if !inf {
                line(out, &names.bucket, m, Some("+Inf"), h.sample_count as f64);
            }
            line(out, &names.sum, m, None, h.sample_sum);
            line(out, &names.count, m, None, h.sample_count as f64);
        }
        _ => line(out, names.name, m, None, gauge_value(m)),
    }
}

/// One sample line: `name{labels[,le="..."]} value`.
fn line(out: &mut String, name: &str, m: &Metric, le: Option<&str>, value: f64) {
    out.push_str(name);
    if !m.label.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for l in &m.label {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&l.name);
            out.push_str("=\"");
            escape_label(&l.value, out);
            out.push('"');
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_number(value, out);
    out.push('\n');
}

/// A value as the formats write it: whole numbers without a fraction, `+Inf`, `-Inf`, `NaN`,
/// otherwise the shortest decimal that reads back the same.
pub fn number(v: f64) -> String {
    let mut s = String::new();
    write_number(v, &mut s);
    s
}

/// [`number`], written to `out`.
fn write_number(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_label(v: &str, out: &mut String) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel histogram as the registry encodes it, in each format: the same counts and
    /// bounds as prometheus-client's own text encoder writes (bounds compared as numbers).
    #[test]
    fn text_formats_agree_with_the_client_librarys() {
        let hist = crate::metrics::hist_of(&[100, 15_625_000, 15_625_001, 20_000_000_000]);
        let families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let mut ours = String::new();
        prometheus_text(&families, &mut ours);
        let mut registry = prometheus_client::registry::Registry::default();
        // The reference: the classic buckets written out by the client library.
        registry.register_collector(Box::new(crate::metrics::ClassicReferenceForTests(
            "steadfast_x_seconds".into(),
            hist,
        )));
        let mut theirs = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut theirs, &registry).unwrap();
        let parse = |t: &str| {
            let (s, e) = crate::store::exposition::parse_selected(t, |_| true, |_| true);
            assert!(e.is_empty(), "{e:?}\n{t}");
            let mut s: Vec<_> = s.into_iter().map(|s| (s.labels, s.value)).collect();
            s.sort_by(|a, b| a.0.cmp(&b.0));
            s
        };
        assert_eq!(parse(&ours), parse(&theirs));
        assert!(
            ours.contains("steadfast_x_seconds_bucket{service=\"s\",le=\"0.015625\"} 2\n"),
            "{ours}"
        );
        assert!(ours.contains("steadfast_x_seconds_bucket{service=\"s\",le=\"+Inf\"} 4\n"));
        assert!(ours.contains("steadfast_x_seconds_count{service=\"s\"} 4\n"));

        let mut om = String::new();
        openmetrics(&families, &mut om);
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE steadfast_x_seconds histogram\n"));
        assert!(
            om.contains("steadfast_x_seconds_sum{service=\"s\"} 20.031250101\n"),
            "{om}"
        );
    }

    #[test]
    fn counters_gauges_and_escapes() {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pm;
        let families = vec![
            MetricFamily {
                name: "steadfast_lost_total".into(),
                help: "Lost \\ events\nreally.".into(),
                r#type: MetricType::Counter as i32,
                metric: vec![Metric {
                    label: vec![pm::LabelPair {
                        name: "source".into(),
                        value: "a\"b\\c\nd".into(),
                    }],
                    counter: Some(pm::Counter {
                        value: 12345678.0,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "steadfast_ratio".into(),
                help: "R.".into(),
                r#type: MetricType::Gauge as i32,
                metric: vec![Metric {
                    gauge: Some(pm::Gauge { value: 0.25 }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let mut t = String::new();
        prometheus_text(&families, &mut t);
        assert_eq!(
            t,
            "# HELP steadfast_lost_total Lost \\\\ events\\nreally.\n# TYPE steadfast_lost_total counter\nsteadfast_lost_total{source=\"a\\\"b\\\\c\\nd\"} 12345678\n# HELP steadfast_ratio R.\n# TYPE steadfast_ratio gauge\nsteadfast_ratio 0.25\n"
        );
        let mut om = String::new();
        openmetrics(&families, &mut om);
        assert!(om.starts_with("# HELP steadfast_lost Lost"), "{om}");
        assert!(
            om.contains("# TYPE steadfast_lost counter\nsteadfast_lost_total{"),
            "{om}"
        );
        // The protobuf form reads back as the same families.
        let bytes = protobuf(&families);
        let mut buf = &bytes[..];
        let mut back = Vec::new();
        while !buf.is_empty() {
            back.push(MetricFamily::decode_length_delimited(&mut buf).unwrap());
        }
        assert_eq!(back, families);
    }

    /// Every format in chunks of any size is byte for byte the whole encoding, each chunk
    /// ending on a series boundary at or past the size asked (so it is never empty before
    /// the end), and prost's own encoding of the families is the protobuf one.
    #[test]
    fn chunks_make_the_whole_encoding() {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pm;
        let hist = crate::metrics::hist_of(&[100, 15_625_000, 15_625_001, 20_000_000_000]);
        let mut families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let mut big = families[0].clone();
        big.name = "steadfast_y_seconds".into();
        big.unit = "seconds".into();
        big.metric = (0..50)
            .map(|i| {
                let mut m = families[0].metric[0].clone();
                m.label[0].value = format!("service-{i}");
                m
            })
            .collect();
        families.push(big);
        families.push(MetricFamily {
            name: "steadfast_empty_total".into(),
            help: "None yet.".into(),
            r#type: MetricType::Counter as i32,
            ..Default::default()
        });
        families.push(MetricFamily {
            name: "steadfast_lost_total".into(),
            help: "Lost.".into(),
            r#type: MetricType::Counter as i32,
            metric: (0..30)
                .map(|i| Metric {
                    label: vec![pm::LabelPair {
                        name: "source".into(),
                        value: format!("s{i}"),
                    }],
                    counter: Some(pm::Counter {
                        value: i as f64,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let mut whole_text = String::new();
        prometheus_text(&families, &mut whole_text);
        let mut whole_om = String::new();
        openmetrics(&families, &mut whole_om);
        let whole_pb = protobuf(&families);
        // prost's own encoding of the families with every classic bucket written out, which
        // for a kernel histogram is the client library's (the reference).
        let reference = crate::metrics::classic_reference_families("steadfast_x_seconds", &hist);
        let native_only = &families[0].metric[0];
        assert!(native_only.histogram.as_ref().unwrap().bucket.is_empty());
        assert_eq!(
            *with_classic_buckets(native_only),
            reference[0].metric[0],
            "kernel histogram with its classic buckets written out"
        );
        let mut prost_pb = Vec::new();
        for f in &families {
            let mut full = f.clone();
            full.metric = f
                .metric
                .iter()
                .map(|m| with_classic_buckets(m).into_owned())
                .collect();
            full.encode_length_delimited(&mut prost_pb).unwrap();
        }
        assert_eq!(whole_pb, prost_pb);
        for (format, whole) in [
            (Format::PrometheusText, whole_text.as_bytes()),
            (Format::OpenMetrics, whole_om.as_bytes()),
            (Format::PrometheusProtobuf, &whole_pb[..]),
        ] {
            for min in [0, 1, 100, 1000, 4096, usize::MAX] {
                let (mut pos, mut all, mut chunks) = (Position::default(), Vec::new(), 0);
                loop {
                    let (c, end) = chunk(&families, format, &mut pos, min);
                    chunks += 1;
                    assert!(
                        end || c.len() >= min.max(1),
                        "{format:?} {min}: short chunk"
                    );
                    all.extend_from_slice(&c);
                    if end {
                        break;
                    }
                    assert!(chunks < 10_000, "{format:?} {min}: no end");
                }
                assert_eq!(all, whole, "{format:?} in chunks of at least {min} bytes");
                if min == 100 {
                    assert!(chunks > 20, "{format:?}: {chunks} chunks of 100 bytes");
                }
            }
        }
    }
}

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

use crate::collector::{counter_value, gauge_value};

/// The families as Prometheus text 0.0.4.
pub fn prometheus_text(families: &[MetricFamily], out: &mut String) {
    for f in families {
        let kind = kind(f);
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(
            out,
            "# TYPE {} {}",
            f.name,
            match kind {
                MetricType::Counter => "counter",
                MetricType::Gauge => "gauge",
                MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
                MetricType::Summary => "summary",
                MetricType::Untyped => "untyped",
            }
        );
        samples(f, kind, &f.name, out);
    }
}

/// The families as OpenMetrics 1.0 text, ending in `# EOF`.
pub fn openmetrics(families: &[MetricFamily], out: &mut String) {
    for f in families {
        let kind = kind(f);
        // OpenMetrics names a counter family without its `_total`.
        let base = match kind {
            MetricType::Counter => f.name.strip_suffix("_total").unwrap_or(&f.name),
            _ => &f.name,
        };
        let _ = writeln!(out, "# HELP {base} {}", escape_help(&f.help));
        let _ = writeln!(
            out,
            "# TYPE {base} {}",
            match kind {
                MetricType::Counter => "counter",
                MetricType::Gauge => "gauge",
                MetricType::Histogram => "histogram",
                MetricType::GaugeHistogram => "gaugehistogram",
                MetricType::Summary => "summary",
                MetricType::Untyped => "unknown",
            }
        );
        if !f.unit.is_empty() && base.ends_with(&format!("_{}", f.unit)) {
            let _ = writeln!(out, "# UNIT {base} {}", f.unit);
        }
        samples(f, kind, &f.name, out);
    }
    out.push_str("# EOF\n");
}

/// The families as length-delimited protobuf messages.
pub fn protobuf(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        families.iter().map(Message::encoded_len).sum::<usize>() + 8 * families.len(),
    );
    for f in families {
        // Cannot fail: the buffer grows.
        let _ = f.encode_length_delimited(&mut out);
    }
    out
}

fn kind(f: &MetricFamily) -> MetricType {
    MetricType::try_from(f.r#type).unwrap_or(MetricType::Untyped)
}

fn samples(f: &MetricFamily, kind: MetricType, name: &str, out: &mut String) {
    // Every histogram of a family has the same names and, in this agent, the same bounds:
    // written once per family.
    let (bucket, sum, count) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    let mut bounds: Vec<(u64, String)> = Vec::new();
    for m in &f.metric {
        match kind {
            MetricType::Counter => {
                line(out, name, m, None, counter_value(m));
            }
            MetricType::Histogram | MetricType::GaugeHistogram => {
                let Some(h) = &m.histogram else { continue };
                let mut inf = false;
                for (i, b) in h.bucket.iter().enumerate() {
                    inf |= b.upper_bound == f64::INFINITY;
                    let bits = b.upper_bound.to_bits();
                    if bounds.get(i).is_none_or(|(k, _)| *k != bits) {
                        let text = number(b.upper_bound);
                        if i < bounds.len() {
                            bounds[i] = (bits, text);
                        } else {
                            bounds.push((bits, text));
                        }
                    }
                    line(
                        out,
                        &bucket,
                        m,
                        Some(&bounds[i].1),
                        b.cumulative_count as f64,
                    );
                }
                if !inf {
                    line(out, &bucket, m, Some("+Inf"), h.sample_count as f64);
                }
                line(out, &sum, m, None, h.sample_sum);
                line(out, &count, m, None, h.sample_count as f64);
            }
            _ => line(out, name, m, None, gauge_value(m)),
        }
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
        use agent_common::syscall::{bucket_of, Hist};
        let mut hist = Hist::default();
        for ns in [100, 15_625_000, 15_625_001, 20_000_000_000] {
            hist.buckets[bucket_of(ns)] += 1;
            hist.sum_ns += ns;
        }
        let families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let mut ours = String::new();
        prometheus_text(&families, &mut ours);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(crate::metrics::KernelHistogramForTests(
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
}

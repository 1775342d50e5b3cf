//! The metric catalogue as OTLP metrics, from the registry's typed families (the Prometheus
//! data model, `io.prometheus.client.MetricFamily`, as `prometheus_client` encodes it: no text
//! is written or parsed back). Each family becomes a cumulative monotonic Sum (counters), a
//! Gauge, an exponential Histogram of scale 0 (the kernel's histograms, whose buckets are
//! powers of two in seconds: `otlp.histograms: exponential`, the default) or an explicit-bucket
//! Histogram (every other histogram, and the kernel's with `otlp.histograms: explicit`), so
//! every family the agent has is exported. The catalogue goes out as a series of requests of
//! at most `otlp.metrics_batch_size` points each, built one at a time: a catalogue of tens of
//! thousands of series in one request would exceed the 4 MiB a gRPC receiver accepts by
//! default.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
        Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    self as pm, MetricFamily, MetricType,
};

use super::spans::{key_value, resource, scope, Value};
use crate::collector::{classic_buckets, counter_value, gauge_value};

pub use crate::config::OtlpHistograms as HistogramFormat;

/// Where the next request starts: a family and a series in it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    family: usize,
    metric: usize,
}

/// The next request from `families` at `cursor`, which it advances: the following series,
/// up to `max_points` points (a family is split between two of its points). `None` once all
/// were sent. `start_ns` is when the counters started (the agent's start), `now_ns` the
/// collection time, both Unix nanoseconds.
pub fn next_request(
    families: &[MetricFamily],
    cursor: &mut Cursor,
    max_points: usize,
    start_ns: u64,
    now_ns: u64,
    histograms: HistogramFormat,
) -> Option<ExportMetricsServiceRequest> {
    let max_points = max_points.max(1);
    let mut metrics = Vec::new();
    let mut points = 0;
    while points < max_points {
        let Some(family) = families.get(cursor.family) else {
            break;
        };
        let take = (max_points - points).min(family.metric.len().saturating_sub(cursor.metric));
        let series = &family.metric[cursor.metric..cursor.metric + take];
        if !series.is_empty() {
            metrics.push(convert(family, series, start_ns, now_ns, histograms));
        }
        points += take;
        cursor.metric += take;
        if cursor.metric >= family.metric.len() {
            cursor.family += 1;
            cursor.metric = 0;
        }
    }
    if metrics.is_empty() {
        return None;
    }
    Some(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// The unit from the name's suffix (Prometheus base units to UCUM).
fn unit(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "s"
    } else if name.ends_with("_bytes") {
        "By"
    } else if name.ends_with("_ratio") {
        "1"
    } else {
        ""
    }
}

/// Families exported under their OpenTelemetry semantic-convention names, with the
/// conventions' attribute names (`method` is `http.request.method`, `status_code` an integer
/// `http.response.status_code`, `peer` is split into `server.address` and `server.port`).
const SEMCONV: &[(&str, &str)] = &[
    (
        "steadfast_http_server_request_duration_seconds",
        "http.server.request.duration",
    ),
    (
        "steadfast_http_client_request_duration_seconds",
        "http.client.request.duration",
    ),
];

fn semconv_name(family: &str) -> Option<&'static str> {
    SEMCONV.iter().find(|(f, _)| *f == family).map(|(_, n)| *n)
}

fn attributes(labels: &[pm::LabelPair], semconv: bool) -> Vec<KeyValue> {
    let mut out = Vec::new();
    for pm::LabelPair { name: k, value: v } in labels {
        if !semconv {
            out.push(key_value(k, Value::Str(v.clone())));
            continue;
        }
        match k.as_str() {
            "method" => out.push(key_value("http.request.method", Value::Str(v.clone()))),
            "status_code" => out.push(key_value(
                "http.response.status_code",
                v.parse().map_or_else(|_| Value::Str(v.clone()), Value::Int),
            )),
            "peer" => match v.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    out.push(key_value("server.address", Value::Str(host.to_string())));
                    out.push(key_value(
                        "server.port",
                        Value::Int(port.parse().unwrap_or_default()),
                    ));
                }
                // `other` and `unknown`: no address to split.
                _ => out.push(key_value("server.address", Value::Str(v.clone()))),
            },
            _ => out.push(key_value(k, Value::Str(v.clone()))),
        }
    }
    out
}

fn number(m: &pm::Metric, value: f64, start_ns: u64, now_ns: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(&m.label, false),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// True when a histogram carries native (schema 0, power-of-two) buckets.
fn is_native(h: &pm::Histogram) -> bool {
    h.zero_threshold > 0.0 || !h.positive_span.is_empty()
}

fn convert(
    f: &MetricFamily,
    series: &[pm::Metric],
    start_ns: u64,
    now_ns: u64,
    histograms: HistogramFormat,
) -> Metric {
    let semconv = semconv_name(&f.name);
    let name = semconv.map_or_else(
        || f.name.strip_suffix("_total").unwrap_or(&f.name).to_string(),
        str::to_string,
    );
    let cumulative = AggregationTemporality::Cumulative as i32;
    let kind = MetricType::try_from(f.r#type).unwrap_or(MetricType::Untyped);
    let data = match kind {
        MetricType::Counter => Data::Sum(Sum {
            data_points: series
                .iter()
                .map(|m| number(m, counter_value(m), start_ns, now_ns))
                .collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let native = histograms == HistogramFormat::Exponential
                && series
                    .iter()
                    .all(|m| m.histogram.as_ref().is_some_and(is_native));
            if native {
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: series
                        .iter()
                        .map(|m| exponential_point(m, start_ns, now_ns, semconv.is_some()))
                        .collect(),
                    aggregation_temporality: cumulative,
                })
            } else {
                Data::Histogram(Histogram {
                    data_points: series
                        .iter()
                        .map(|m| explicit_point(m, start_ns, now_ns, semconv.is_some()))
                        .collect(),
                    aggregation_temporality: cumulative,
                })
            }
        }
        MetricType::Gauge | MetricType::Untyped | MetricType::Summary => Data::Gauge(Gauge {
            data_points: series
                .iter()
                .map(|m| number(m, gauge_value(m), start_ns, now_ns))
                .collect(),
        }),
    };
    Metric {
        unit: unit(&f.name).to_string(),
        name,
        description: f.help.clone(),
        data: Some(data),
        ..Default::default()
    }
}

/// Per-bucket (not cumulative) counts over the classic bounds.
fn explicit_point(m: &pm::Metric, start_ns: u64, now_ns: u64, semconv: bool) -> HistogramDataPoint {
    let empty = pm::Histogram::default();
    let h = m.histogram.as_ref().unwrap_or(&empty);
    let mut point = HistogramDataPoint {
        attributes: attributes(&m.label, semconv),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        count: h.sample_count,
        sum: Some(h.sample_sum),
        ..Default::default()
    };
    let (mut previous, mut inf) = (0, false);
    for (upper_bound, cumulative) in classic_buckets(h) {
        if upper_bound.is_finite() {
            point.explicit_bounds.push(upper_bound);
        } else {
            inf = true;
        }
        point
            .bucket_counts
            .push(cumulative.saturating_sub(previous));
        previous = cumulative;
    }
    if !inf {
        // No `+Inf` bucket listed: the rest of the count is above the last bound.
        point
            .bucket_counts
            .push(h.sample_count.saturating_sub(previous));
    }
    point
}

/// Buckets of one exponential point at most (the kernel's histograms have 30).
const MAX_BUCKETS: usize = 4096;

/// A native histogram of schema 0 as an exponential one of scale 0. Prometheus's bucket `k`
/// is `(2^(k-1), 2^k]`, OTLP's bucket `i` is `(2^i, 2^(i+1)]`: the same bucket has `i = k - 1`.
/// Observations that no native bucket holds (the kernel's overflow, over 2^9 s) stay in the
/// count and sum only, as in the native histogram.
fn exponential_point(
    m: &pm::Metric,
    start_ns: u64,
    now_ns: u64,
    semconv: bool,
) -> ExponentialHistogramDataPoint {
    let h = m.histogram.clone().unwrap_or_default();
    let mut deltas = h.positive_delta.iter();
    let mut counts: Vec<u64> = Vec::new();
    let mut first: Option<i32> = None;
    let (mut index, mut running) = (0i32, 0i64);
    for (i, span) in h.positive_span.iter().enumerate() {
        // The first span's offset is its first index, each next one the gap after the last.
        index = if i == 0 {
            span.offset
        } else {
            index.saturating_add(span.offset)
        };
        let start = *first.get_or_insert(index);
        // Buckets between spans are empty. A span that goes back, or past MAX_BUCKETS,
        // ends the conversion (the registry never writes one).
        let Some(gap) = index
            .checked_sub(start)
            .and_then(|g| usize::try_from(g).ok())
            .filter(|&g| g >= counts.len() && g <= MAX_BUCKETS)
        else {
            break;
        };
        counts.resize(gap, 0);
        for _ in 0..span.length.min((MAX_BUCKETS - counts.len()) as u32) {
            running = running.saturating_add(deltas.next().copied().unwrap_or(0));
            counts.push(running.max(0) as u64);
            index = index.saturating_add(1);
        }
    }
    ExponentialHistogramDataPoint {
        attributes: attributes(&m.label, semconv),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        count: h.sample_count,
        sum: Some(h.sample_sum),
        scale: h.schema,
        zero_count: h.zero_count,
        zero_threshold: h.zero_threshold,
        positive: first.map(|k| Buckets {
            offset: k - 1,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[(&str, &str)]) -> Vec<pm::LabelPair> {
        l.iter()
            .map(|(k, v)| pm::LabelPair {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    fn family(name: &str, help: &str, kind: MetricType, metric: Vec<pm::Metric>) -> MetricFamily {
        MetricFamily {
            name: name.into(),
            help: help.into(),
            r#type: kind as i32,
            metric,
            ..Default::default()
        }
    }

    fn counter(l: &[(&str, &str)], v: f64) -> pm::Metric {
        pm::Metric {
            label: labels(l),
            counter: Some(pm::Counter {
                value: v,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn gauge(l: &[(&str, &str)], v: f64) -> pm::Metric {
        pm::Metric {
            label: labels(l),
            gauge: Some(pm::Gauge { value: v }),
            ..Default::default()
        }
    }

    /// A classic histogram: `(upper bound, cumulative count)`.
    fn classic(l: &[(&str, &str)], buckets: &[(f64, u64)], sum: f64) -> pm::Metric {
        pm::Metric {
            label: labels(l),
            histogram: Some(pm::Histogram {
                sample_count: buckets.last().map_or(0, |b| b.1),
                sample_sum: sum,
                bucket: buckets
                    .iter()
                    .map(|&(upper_bound, cumulative_count)| pm::Bucket {
                        upper_bound,
                        cumulative_count,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Every request, `max` points each at most.
    fn requests(families: &[MetricFamily], max: usize, h: HistogramFormat) -> Vec<Vec<Metric>> {
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        while let Some(r) = next_request(families, &mut cursor, max, 1, 2, h) {
            out.push(r.resource_metrics[0].scope_metrics[0].metrics.clone());
        }
        out
    }

    fn points(m: &Metric) -> usize {
        match m.data.as_ref().unwrap() {
            Data::Sum(s) => s.data_points.len(),
            Data::Gauge(g) => g.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            Data::ExponentialHistogram(h) => h.data_points.len(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn families_become_sums_gauges_and_histograms() {
        let families = [
            family(
                "steadfast_x_seconds",
                "X.",
                MetricType::Histogram,
                vec![classic(
                    &[("s", "a")],
                    &[(0.1, 2), (1.0, 5), (f64::INFINITY, 6)],
                    3.5,
                )],
            ),
            family(
                "steadfast_lost_total",
                "L.",
                MetricType::Counter,
                vec![counter(&[("source", "p")], 4.0)],
            ),
            family(
                "steadfast_keys",
                "K.",
                MetricType::Gauge,
                vec![gauge(&[], 9.0)],
            ),
        ];
        let req = requests(&families, 2_000, HistogramFormat::Exponential);
        assert_eq!(req.len(), 1);
        let m = &req[0];
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].unit, "s");
        assert_eq!(m[0].description, "X.");
        match m[0].data.as_ref().unwrap() {
            // Classic buckets only: explicit, whatever the setting.
            Data::Histogram(h) => {
                let p = &h.data_points[0];
                assert_eq!(p.explicit_bounds, [0.1, 1.0]);
                assert_eq!(p.bucket_counts, [2, 3, 1]);
                assert_eq!(p.count, 6);
                assert_eq!(p.sum, Some(3.5));
                assert_eq!(p.attributes, [key_value("s", Value::Str("a".into()))]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m[1].name, "steadfast_lost");
        assert!(matches!(m[1].data, Some(Data::Sum(ref s)) if s.is_monotonic));
        assert!(matches!(m[2].data, Some(Data::Gauge(_))));
    }

    /// The native histogram of a kernel histogram goes out as an exponential histogram of
    /// scale 0 with the same buckets: Prometheus's (2^(k-1), 2^k] is OTLP's index k - 1.
    #[test]
    fn kernel_histograms_go_out_exponential_with_the_same_buckets() {
        let hist = crate::metrics::hist_of(&[
            100,
            15_625_000,
            15_625_000,
            15_625_001,
            1_000_000_000,
            600_000_000_000,
        ]);
        // Through the registry, as the agent encodes it.
        let families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let req = requests(&families, 100, HistogramFormat::Exponential);
        let Some(Data::ExponentialHistogram(h)) = &req[0][0].data else {
            panic!("{:?}", req[0][0])
        };
        let p = &h.data_points[0];
        assert_eq!((p.scale, p.zero_count, p.count), (0, 1, 6));
        assert_eq!(p.zero_threshold, 2f64.powi(-21));
        // 15.625 ms = 2^-6 s is in (2^-7, 2^-6]: OTLP index -7; 15.625001 ms in index -6;
        // 1 s in (2^-1, 2^0]: index -1.
        let b = p.positive.as_ref().unwrap();
        assert_eq!(b.offset, -7);
        assert_eq!(b.bucket_counts, [2, 1, 0, 0, 0, 0, 1]);
        assert!((p.sum.unwrap() - 601.046_875_101).abs() < 1e-6);
        // The same histogram with `otlp.histograms: explicit`: the classic buckets.
        let req = requests(&families, 100, HistogramFormat::Explicit);
        let Some(Data::Histogram(h)) = &req[0][0].data else {
            panic!("{:?}", req[0][0])
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 6);
        let at = |bound: f64| p.explicit_bounds.iter().position(|&b| b == bound).unwrap();
        assert_eq!(p.bucket_counts[at(0.015625)], 2);
        assert_eq!(p.bucket_counts[at(0.03125)], 1);
        assert_eq!(p.bucket_counts[at(1.0)], 1);
        assert_eq!(*p.bucket_counts.last().unwrap(), 1, "over 8 s: +Inf");
    }

    /// Spans that go back or absurdly far end the conversion instead of allocating or
    /// panicking (the registry never writes them; the fuzzer does).
    #[test]
    fn malformed_spans_end_the_conversion() {
        let point = |spans: &[(i32, u32)], deltas: &[i64]| {
            let m = pm::Metric {
                histogram: Some(pm::Histogram {
                    sample_count: 9,
                    zero_threshold: 1.0,
                    positive_span: spans
                        .iter()
                        .map(|&(offset, length)| pm::BucketSpan { offset, length })
                        .collect(),
                    positive_delta: deltas.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            exponential_point(&m, 1, 2, false).positive.unwrap()
        };
        assert_eq!(point(&[(5, 2), (-4, 1)], &[3, 1, 1]).bucket_counts, [3, 4]);
        assert_eq!(point(&[(5, 1), (i32::MAX, 1)], &[3, 1]).bucket_counts, [3]);
        assert_eq!(
            point(&[(0, u32::MAX)], &[1]).bucket_counts.len(),
            MAX_BUCKETS
        );
    }

    #[test]
    fn http_durations_go_out_under_their_semantic_convention_names() {
        let families = [family(
            "steadfast_http_client_request_duration_seconds",
            "D.",
            MetricType::Histogram,
            vec![classic(
                &[
                    ("service", "s"),
                    ("peer", "[::1]:8080"),
                    ("method", "GET"),
                    ("status_code", "503"),
                ],
                &[(f64::INFINITY, 2)],
                0.5,
            )],
        )];
        let m = &requests(&families, 100, HistogramFormat::Exponential)[0][0];
        assert_eq!(m.name, "http.client.request.duration");
        assert_eq!(m.unit, "s");
        let Some(Data::Histogram(h)) = &m.data else {
            panic!("{m:?}")
        };
        assert_eq!(
            h.data_points[0].attributes,
            [
                key_value("service", Value::Str("s".into())),
                key_value("server.address", Value::Str("::1".into())),
                key_value("server.port", Value::Int(8080)),
                key_value("http.request.method", Value::Str("GET".into())),
                key_value("http.response.status_code", Value::Int(503)),
            ]
        );
        assert_eq!(h.data_points[0].count, 2);
    }

    /// A large catalogue goes out in requests of at most `max` points; families are split
    /// between points, and nothing is lost or sent twice.
    #[test]
    fn large_catalogues_are_split_between_points() {
        let families = [
            family(
                "h_seconds",
                "H.",
                MetricType::Histogram,
                (0..5u64)
                    .map(|i| {
                        classic(
                            &[("s", &i.to_string())],
                            &[(0.1, i), (1.0, i + 1), (f64::INFINITY, i + 2)],
                            1.0,
                        )
                    })
                    .collect(),
            ),
            family(
                "c_total",
                "C.",
                MetricType::Counter,
                (0..7)
                    .map(|i| counter(&[("n", &i.to_string())], f64::from(i)))
                    .collect(),
            ),
            family("g", "G.", MetricType::Gauge, vec![gauge(&[], 9.0)]),
        ];
        let req = requests(&families, 3, HistogramFormat::Exponential);
        let sizes: Vec<usize> = req.iter().map(|r| r.iter().map(points).sum()).collect();
        assert_eq!(sizes, [3, 3, 3, 3, 1], "13 points, 3 a request");
        let mut histogram_points = Vec::new();
        let mut counter_values = Vec::new();
        for m in req.iter().flatten() {
            match (m.name.as_str(), m.data.as_ref().unwrap()) {
                ("h_seconds", Data::Histogram(h)) => {
                    assert_eq!(m.description, "H.", "a continued family keeps its help");
                    histogram_points.extend(h.data_points.iter().cloned());
                }
                ("c", Data::Sum(s)) => {
                    assert_eq!(m.description, "C.");
                    counter_values.extend(s.data_points.iter().map(|p| p.value));
                }
                ("g", Data::Gauge(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(histogram_points.len(), 5);
        for (i, p) in histogram_points.iter().enumerate() {
            assert_eq!(p.bucket_counts, [i as u64, 1, 1], "point {i} whole");
            assert_eq!(p.count, i as u64 + 2);
        }
        let expected: Vec<_> = (0..7)
            .map(|i| Some(number_data_point::Value::AsDouble(f64::from(i))))
            .collect();
        assert_eq!(counter_values, expected);
        // The whole catalogue in one request when it fits.
        assert_eq!(
            requests(&families, 13, HistogramFormat::Exponential).len(),
            1
        );
        assert_eq!(
            requests(&families, 12, HistogramFormat::Exponential).len(),
            2
        );
    }
}

//! The metric catalogue as OTLP metrics: the agent's own Prometheus exposition is parsed
//! (`metrics::exposition`) and each family becomes a cumulative monotonic Sum (counters), a
//! Gauge, or an explicit-bucket Histogram, so every family the agent has is exported.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
};

use super::spans::{key_value, resource, scope, Value};
use crate::metrics::exposition::{Family, Kind, Sample};

/// Builds one export request from an exposition. `start_ns` is when the counters started
/// (the agent's start), `now_ns` the collection time, both Unix nanoseconds.
pub fn request(families: &[Family], start_ns: u64, now_ns: u64) -> ExportMetricsServiceRequest {
    let metrics = families
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| convert(f, start_ns, now_ns))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
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

fn attributes(s: &Sample) -> Vec<KeyValue> {
    s.labels
        .iter()
        .filter(|(k, _)| k != "le")
        .map(|(k, v)| key_value(k, Value::Str(v.clone())))
        .collect()
}

fn number(s: &Sample, start_ns: u64, now_ns: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(s),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(number_data_point::Value::AsDouble(s.value)),
        ..Default::default()
    }
}

fn convert(f: &Family, start_ns: u64, now_ns: u64) -> Metric {
    let name = f.name.strip_suffix("_total").unwrap_or(&f.name).to_string();
    let data = match f.kind {
        Kind::Counter => Data::Sum(Sum {
            data_points: f
                .samples
                .iter()
                .map(|s| number(s, start_ns, now_ns))
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Histogram => Data::Histogram(Histogram {
            data_points: histogram_points(f, start_ns, now_ns),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        Kind::Gauge | Kind::Untyped => Data::Gauge(Gauge {
            data_points: f
                .samples
                .iter()
                .map(|s| number(s, start_ns, now_ns))
                .collect(),
        }),
    };
    Metric {
        unit: unit(&name).to_string(),
        name,
        description: f.help.clone(),
        data: Some(data),
        ..Default::default()
    }
}

/// Groups `_bucket`/`_sum`/`_count` samples by their labels (without `le`) into points with
/// per-bucket (not cumulative) counts.
fn histogram_points(f: &Family, start_ns: u64, now_ns: u64) -> Vec<HistogramDataPoint> {
    // (attributes, point, (upper bound, cumulative count) pairs)
    // (point, (upper bound, cumulative count) pairs), in order of appearance, found by the
    // sample's labels without `le` (a linear search made this quadratic in the series).
    type Partial = (HistogramDataPoint, Vec<(f64, f64)>);
    let mut points: Vec<Partial> = Vec::new();
    let mut index: HashMap<Vec<&(String, String)>, usize> = HashMap::new();
    for s in &f.samples {
        let key: Vec<&(String, String)> = s.labels.iter().filter(|(k, _)| k != "le").collect();
        let i = *index.entry(key).or_insert_with(|| {
            points.push((
                HistogramDataPoint {
                    attributes: attributes(s),
                    start_time_unix_nano: start_ns,
                    time_unix_nano: now_ns,
                    ..Default::default()
                },
                Vec::new(),
            ));
            points.len() - 1
        });
        let (point, buckets) = &mut points[i];
        if s.name.ends_with("_bucket") {
            let le = s.label("le").and_then(|v| match v {
                "+Inf" => Some(f64::INFINITY),
                v => v.parse().ok(),
            });
            if let Some(le) = le {
                buckets.push((le, s.value));
            }
        } else if s.name.ends_with("_sum") {
            point.sum = Some(s.value);
        } else if s.name.ends_with("_count") {
            point.count = s.value as u64;
        }
    }
    points
        .into_iter()
        .map(|(mut point, mut buckets)| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut previous = 0.0;
            for (le, cumulative) in buckets {
                if le.is_finite() {
                    point.explicit_bounds.push(le);
                }
                point
                    .bucket_counts
                    .push((cumulative - previous).max(0.0) as u64);
                previous = cumulative;
            }
            point
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::parse;

    #[test]
    fn families_become_sums_gauges_and_histograms() {
        let text = "# HELP steadfast_x_seconds X.\n# TYPE steadfast_x_seconds histogram\n\
steadfast_x_seconds_bucket{s=\"a\",le=\"0.1\"} 2\nsteadfast_x_seconds_bucket{s=\"a\",le=\"1\"} 5\n\
steadfast_x_seconds_bucket{s=\"a\",le=\"+Inf\"} 6\nsteadfast_x_seconds_sum{s=\"a\"} 3.5\n\
steadfast_x_seconds_count{s=\"a\"} 6\n# HELP steadfast_lost_total L.\n# TYPE steadfast_lost_total counter\n\
steadfast_lost_total{source=\"p\"} 4\n# HELP steadfast_keys K.\n# TYPE steadfast_keys gauge\nsteadfast_keys 9\n";
        let req = request(&parse(text).unwrap(), 1, 2);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].unit, "s");
        match m[0].data.as_ref().unwrap() {
            Data::Histogram(h) => {
                let p = &h.data_points[0];
                assert_eq!(p.explicit_bounds, [0.1, 1.0]);
                assert_eq!(p.bucket_counts, [2, 3, 1]);
                assert_eq!(p.count, 6);
                assert_eq!(p.sum, Some(3.5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m[1].name, "steadfast_lost");
        assert!(matches!(m[1].data, Some(Data::Sum(ref s)) if s.is_monotonic));
        assert!(matches!(m[2].data, Some(Data::Gauge(_))));
    }
}

//! The metric catalogue as OTLP metrics: the agent's own Prometheus exposition is read line
//! by line (`metrics::exposition`) and each family becomes a cumulative monotonic Sum
//! (counters), a Gauge, or an explicit-bucket Histogram, so every family the agent has is
//! exported. The exposition goes out as a series of requests of at most
//! `otlp.metrics_batch_size` points each, built one at a time: a catalogue of tens of thousands of series in one
//! request would exceed the 4 MiB a gRPC receiver accepts by default, and building it whole
//! held tens of MiB at once.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
};

use super::spans::{key_value, resource, scope, Value};
use crate::metrics::exposition::{
    belongs, parse_line, parse_value, Kind, Line, ParseError, Sample,
};

/// Where the next request starts in an exposition.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Byte offset of the next line, and its index.
    pos: usize,
    line: usize,
    /// The family being read at `pos` (its earlier samples went into earlier requests).
    family: Option<Header>,
}

#[derive(Debug, Clone)]
struct Header {
    name: String,
    help: String,
    kind: Kind,
}

/// One request being built.
struct Building {
    metrics: Vec<Metric>,
    /// Points of the metrics above.
    points: usize,
    /// The current family's samples in this request, and their points.
    samples: Vec<Sample>,
    family_points: usize,
    start_ns: u64,
    now_ns: u64,
}

impl Building {
    /// The current family's samples become a metric of this request.
    fn finish(&mut self, family: Option<&Header>) {
        if let Some(h) = family {
            if !self.samples.is_empty() {
                self.metrics
                    .push(convert(h, &self.samples, self.start_ns, self.now_ns));
            }
        }
        self.samples.clear();
        self.points += std::mem::take(&mut self.family_points);
    }

    /// Starts the family `name` unless it is the one being read.
    fn enter(&mut self, cursor: &mut Cursor, name: String) {
        if cursor.family.as_ref().is_some_and(|h| h.name == name) {
            return;
        }
        self.finish(cursor.family.as_ref());
        cursor.family = Some(Header {
            name,
            help: String::new(),
            kind: Kind::Untyped,
        });
    }
}

/// The next request from the exposition `text` at `cursor`, which it advances: the following
/// families, up to `max_points` points (a family is split between two of its points; a
/// histogram point is never split). `None` once the text is used up. `start_ns` is when the
/// counters started (the agent's start), `now_ns` the collection time, both Unix nanoseconds.
pub fn next_request(
    text: &str,
    cursor: &mut Cursor,
    max_points: usize,
    start_ns: u64,
    now_ns: u64,
) -> Result<Option<ExportMetricsServiceRequest>, ParseError> {
    let max_points = max_points.max(1);
    let mut b = Building {
        metrics: Vec::new(),
        points: 0,
        samples: Vec::new(),
        family_points: 0,
        start_ns,
        now_ns,
    };
    while cursor.pos < text.len() {
        let rest = &text[cursor.pos..];
        let (raw, len) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        let line = parse_line(raw).map_err(|message| ParseError {
            line: cursor.line + 1,
            message,
        })?;
        match line {
            Line::Skip => {}
            Line::Help { name, help } => {
                b.enter(cursor, name);
                if let Some(h) = cursor.family.as_mut() {
                    h.help = help;
                }
            }
            Line::Type { name, kind } => {
                b.enter(cursor, name);
                if let Some(h) = cursor.family.as_mut() {
                    h.kind = kind;
                }
            }
            Line::Sample(s) => {
                if !cursor
                    .family
                    .as_ref()
                    .is_some_and(|h| belongs(&h.name, &s.name))
                {
                    b.enter(cursor, s.name.clone());
                }
                let histogram = cursor
                    .family
                    .as_ref()
                    .is_some_and(|h| h.kind == Kind::Histogram);
                let new_point = !histogram || b.samples.last().is_none_or(|p| !same_point(p, &s));
                if new_point {
                    if b.points + b.family_points >= max_points {
                        break;
                    }
                    b.family_points += 1;
                }
                b.samples.push(s);
            }
        }
        cursor.pos += len;
        cursor.line += 1;
    }
    b.finish(cursor.family.as_ref());
    if b.metrics.is_empty() {
        return Ok(None);
    }
    Ok(Some(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: b.metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }))
}

/// True when two samples of a histogram are lines of one point (their labels but `le` agree).
fn same_point(a: &Sample, b: &Sample) -> bool {
    a.point_labels().eq(b.point_labels())
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

fn attributes(s: &Sample, semconv: bool) -> Vec<KeyValue> {
    let mut out = Vec::new();
    for (k, v) in s.point_labels() {
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

fn number(s: &Sample, start_ns: u64, now_ns: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(s, false),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(number_data_point::Value::AsDouble(s.value)),
        ..Default::default()
    }
}

fn convert(f: &Header, samples: &[Sample], start_ns: u64, now_ns: u64) -> Metric {
    let semconv = semconv_name(&f.name);
    let name = semconv.map_or_else(
        || f.name.strip_suffix("_total").unwrap_or(&f.name).to_string(),
        str::to_string,
    );
    let data = match f.kind {
        Kind::Counter => Data::Sum(Sum {
            data_points: samples
                .iter()
                .map(|s| number(s, start_ns, now_ns))
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Histogram => Data::Histogram(Histogram {
            data_points: histogram_points(samples, start_ns, now_ns, semconv.is_some()),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        Kind::Gauge | Kind::Untyped => Data::Gauge(Gauge {
            data_points: samples
                .iter()
                .map(|s| number(s, start_ns, now_ns))
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

/// Turns `_bucket`/`_sum`/`_count` samples into points with per-bucket (not cumulative)
/// counts. A point's lines are consecutive, as the encoder writes them (and as
/// [`next_request`] counts points).
fn histogram_points(
    samples: &[Sample],
    start_ns: u64,
    now_ns: u64,
    semconv: bool,
) -> Vec<HistogramDataPoint> {
    samples
        .chunk_by(same_point)
        .map(|lines| {
            let mut point = HistogramDataPoint {
                attributes: attributes(&lines[0], semconv),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                ..Default::default()
            };
            // (upper bound, cumulative count)
            let mut buckets: Vec<(f64, f64)> = Vec::new();
            for s in lines {
                if s.name.ends_with("_bucket") {
                    if let Some(le) = s.label("le").and_then(parse_value) {
                        buckets.push((le, s.value));
                    }
                } else if s.name.ends_with("_sum") {
                    point.sum = Some(s.value);
                } else if s.name.ends_with("_count") {
                    point.count = s.value as u64;
                }
            }
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

    /// Every request of `text`, `max` points each at most.
    fn requests(text: &str, max: usize) -> Vec<Vec<Metric>> {
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        while let Some(r) = next_request(text, &mut cursor, max, 1, 2).unwrap() {
            out.push(r.resource_metrics[0].scope_metrics[0].metrics.clone());
        }
        out
    }

    fn points(m: &Metric) -> usize {
        match m.data.as_ref().unwrap() {
            Data::Sum(s) => s.data_points.len(),
            Data::Gauge(g) => g.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn families_become_sums_gauges_and_histograms() {
        let text = "# HELP steadfast_x_seconds X.\n# TYPE steadfast_x_seconds histogram\n\
steadfast_x_seconds_bucket{s=\"a\",le=\"0.1\"} 2\nsteadfast_x_seconds_bucket{s=\"a\",le=\"1\"} 5\n\
steadfast_x_seconds_bucket{s=\"a\",le=\"+Inf\"} 6\nsteadfast_x_seconds_sum{s=\"a\"} 3.5\n\
steadfast_x_seconds_count{s=\"a\"} 6\n# HELP steadfast_lost_total L.\n# TYPE steadfast_lost_total counter\n\
steadfast_lost_total{source=\"p\"} 4\n# HELP steadfast_keys K.\n# TYPE steadfast_keys gauge\nsteadfast_keys 9\n";
        let req = requests(text, 2_000);
        assert_eq!(req.len(), 1);
        let m = &req[0];
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].unit, "s");
        assert_eq!(m[0].description, "X.");
        match m[0].data.as_ref().unwrap() {
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
        // A sample without a family of its own becomes an untyped family (a gauge).
        let req = requests("# HELP a A.\n# TYPE a gauge\na 1\nb{x=\"1\"} 2\n", 2_000);
        let names: Vec<_> = req[0].iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(matches!(req[0][1].data, Some(Data::Gauge(_))));
    }

    #[test]
    fn http_durations_go_out_under_their_semantic_convention_names() {
        let f = "steadfast_http_client_request_duration_seconds";
        let text = format!(
            "# HELP {f} D.\n# TYPE {f} histogram\n\
{f}_bucket{{service=\"s\",peer=\"[::1]:8080\",method=\"GET\",status_code=\"503\",le=\"+Inf\"}} 2\n\
{f}_sum{{service=\"s\",peer=\"[::1]:8080\",method=\"GET\",status_code=\"503\"}} 0.5\n\
{f}_count{{service=\"s\",peer=\"[::1]:8080\",method=\"GET\",status_code=\"503\"}} 2\n"
        );
        let m = &requests(&text, 100)[0][0];
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
    /// between points, histogram points never, and nothing is lost or sent twice.
    #[test]
    fn large_catalogues_are_split_between_points() {
        let mut text = String::from("# HELP h_seconds H.\n# TYPE h_seconds histogram\n");
        for i in 0..5 {
            for (le, c) in [("0.1", i), ("1", i + 1), ("+Inf", i + 2)] {
                text += &format!("h_seconds_bucket{{s=\"{i}\",le=\"{le}\"}} {c}\n");
            }
            text += &format!(
                "h_seconds_sum{{s=\"{i}\"}} 1\nh_seconds_count{{s=\"{i}\"}} {}\n",
                i + 2
            );
        }
        text += "# HELP c_total C.\n# TYPE c_total counter\n";
        for i in 0..7 {
            text += &format!("c_total{{n=\"{i}\"}} {i}\n");
        }
        text += "# HELP g G.\n# TYPE g gauge\ng 9\n";

        let req = requests(&text, 3);
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
        assert_eq!(requests(&text, 13).len(), 1);
        assert_eq!(requests(&text, 12).len(), 2);
    }

    #[test]
    fn a_bad_line_names_its_line_even_in_a_later_request() {
        let text = "# TYPE a gauge\na{n=\"1\"} 1\na{n=\"2\"} 2\na{n=\"3} 3\n";
        let mut cursor = Cursor::default();
        assert!(next_request(text, &mut cursor, 1, 1, 2).unwrap().is_some());
        let e = next_request(text, &mut cursor, 1, 1, 2).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }
}

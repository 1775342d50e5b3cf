//! The OpenTelemetry SDK's standard environment variables for the OTLP exporter, as every
//! OpenTelemetry SDK and collector reads them (a Kubernetes DaemonSet sets them from the pod
//! spec). They fill in what the config file leaves out: **a key the file sets wins** over the
//! variable for it, and a file that sets any of `otlp.endpoint`, `otlp.traces_endpoint` or
//! `otlp.metrics_endpoint` decides alone where data goes (no endpoint variable is read then).
//!
//! | variable | config key | note |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `otlp.endpoint` | base URL; HTTP adds `/v1/traces`, `/v1/metrics` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `..._METRICS_ENDPOINT` | `otlp.traces_endpoint`, `otlp.metrics_endpoint` | used as they are |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (+ `_TRACES_`, `_METRICS_`) | `otlp.protocol` (+ `traces_protocol`, `metrics_protocol`) | `grpc` or `http/protobuf` |
//! | `OTEL_EXPORTER_OTLP_HEADERS` (+ `_TRACES_`, `_METRICS_`) | `otlp.headers` | `k=v,k2=v2`, percent-decoded; the file's keys win one by one |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (+ `_TRACES_`, `_METRICS_`) | `otlp.timeout_secs` | milliseconds, rounded up to seconds |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | `otlp.metrics_interval_secs` | milliseconds, rounded up to seconds |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `otlp.resource_attributes` | `k=v,...`, percent-decoded |
//! | `OTEL_SERVICE_NAME` | `otlp.resource_attributes.service.name` | |
//! | `OTEL_TRACES_SAMPLER` + `_ARG` | `otlp.sampling_ratio` | `always_on`, `always_off`, `traceidratio`, and their `parentbased_` forms |
//! | `OTEL_SDK_DISABLED` | | `true`: no export, whatever sets an endpoint |
//!
//! The per-signal header and timeout variables apply to both signals here (one value each in
//! the config); the per-signal one wins over the general one when both are given.

use std::collections::BTreeMap;

use super::{OtlpConfig, OtlpProtocol, Problem};

/// Applies the variables `env` gives to `otlp`, leaving every key `file` (the parsed config
/// document) sets alone. Returns the problems of malformed variables, each named by variable.
pub fn apply(
    otlp: &mut OtlpConfig,
    file: &crate::yaml::Document<'_>,
    env: impl Fn(&str) -> Option<String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let in_file = |key: &str| {
        file.get(&["otlp", key])
            .is_some_and(|v| !crate::yaml::is_null(v))
    };
    // Empty variables count as unset, as the specification asks.
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let signal_var = |general: &'static str, traces: &'static str, metrics: &'static str| {
        var(traces)
            .map(|v| (traces, v))
            .or_else(|| var(metrics).map(|v| (metrics, v)))
            .or_else(|| var(general).map(|v| (general, v)))
    };

    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        otlp.endpoint = None;
        otlp.traces_endpoint = None;
        otlp.metrics_endpoint = None;
        return problems;
    }

    if !["endpoint", "traces_endpoint", "metrics_endpoint"]
        .iter()
        .any(|k| in_file(k))
    {
        otlp.endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        otlp.traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        otlp.metrics_endpoint = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    }

    for (key, name, slot) in [
        ("protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", None),
        (
            "traces_protocol",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            Some(true),
        ),
        (
            "metrics_protocol",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            Some(false),
        ),
    ] {
        if in_file(key) {
            continue;
        }
        let Some(text) = var(name) else { continue };
        match protocol(&text) {
            Ok(p) => match slot {
                None => otlp.protocol = p,
                Some(true) => otlp.traces_protocol = Some(p),
                Some(false) => otlp.metrics_protocol = Some(p),
            },
            Err(message) => problems.push(Problem { key: name, message }),
        }
    }

    if let Some((name, text)) = signal_var(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ) {
        match pairs(&text) {
            Ok(headers) => {
                for (k, v) in headers {
                    otlp.headers.entry(k).or_insert(v);
                }
            }
            Err(message) => problems.push(Problem { key: name, message }),
        }
    }

    if !in_file("timeout_secs") {
        if let Some((name, text)) = signal_var(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        ) {
            match millis_as_secs(&text) {
                Ok(s) => otlp.timeout_secs = s,
                Err(message) => problems.push(Problem { key: name, message }),
            }
        }
    }
    if !in_file("metrics_interval_secs") {
        if let Some(text) = var("OTEL_METRIC_EXPORT_INTERVAL") {
            match millis_as_secs(&text) {
                Ok(s) => otlp.metrics_interval_secs = s,
                Err(message) => problems.push(Problem {
                    key: "OTEL_METRIC_EXPORT_INTERVAL",
                    message,
                }),
            }
        }
    }

    let file_attributes = in_file("resource_attributes");
    if let Some(text) = var("OTEL_RESOURCE_ATTRIBUTES") {
        match pairs(&text) {
            Ok(attributes) => {
                for (k, v) in attributes {
                    otlp.resource_attributes.entry(k).or_insert(v);
                }
            }
            Err(message) => problems.push(Problem {
                key: "OTEL_RESOURCE_ATTRIBUTES",
                message,
            }),
        }
    }
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        let from_file = file_attributes
            && file
                .get(&["otlp", "resource_attributes", "service.name"])
                .is_some();
        if !from_file {
            otlp.resource_attributes
                .insert("service.name".into(), name.trim().to_string());
        }
    }

    if !in_file("sampling_ratio") {
        if let Some(sampler) = var("OTEL_TRACES_SAMPLER") {
            match sampling_ratio(&sampler, var("OTEL_TRACES_SAMPLER_ARG").as_deref()) {
                Ok(r) => otlp.sampling_ratio = r,
                Err(message) => problems.push(Problem {
                    key: "OTEL_TRACES_SAMPLER",
                    message,
                }),
            }
        }
    }
    problems
}

fn protocol(text: &str) -> Result<OtlpProtocol, String> {
    match text.trim() {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "http/json" => Err("http/json is not supported: use grpc or http/protobuf".into()),
        other => Err(format!("{other:?} is not grpc or http/protobuf")),
    }
}

/// `k=v,k2=v2` with percent-encoded keys and values (W3C Baggage-like, as the
/// specification's headers and resource attributes are written).
fn pairs(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in text.split(',').filter(|i| !i.trim().is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("{item:?} is not key=value"));
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s.trim())
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| format!("{s:?} is not UTF-8 once percent-decoded"))
        };
        let key = decode(k)?;
        if key.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        out.insert(key, decode(v)?);
    }
    Ok(out)
}

/// Milliseconds (the specification's unit) to whole seconds, rounded up, at least 1.
fn millis_as_secs(text: &str) -> Result<u64, String> {
    let ms: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of milliseconds"))?;
    Ok(ms.div_ceil(1000).max(1))
}

fn sampling_ratio(sampler: &str, arg: Option<&str>) -> Result<f64, String> {
    let sampler = sampler.trim();
    match sampler.strip_prefix("parentbased_").unwrap_or(sampler) {
        "always_on" => Ok(1.0),
        "always_off" => Ok(0.0),
        "traceidratio" => {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG {arg:?} is not a ratio in [0, 1]"
                )),
            }
        }
        other => Err(format!(
            "{other:?} is not supported (always_on, always_off, traceidratio)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(file: &str, vars: &[(&str, &str)]) -> (OtlpConfig, Vec<Problem>) {
        let doc = crate::yaml::Document::parse(file).unwrap();
        let mut otlp = match doc.decode::<super::super::Config>() {
            Ok(c) => c.otlp,
            Err(e) => panic!("{e}"),
        };
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let problems = apply(&mut otlp, &doc, env);
        (otlp, problems)
    }

    #[test]
    fn variables_fill_in_what_the_file_leaves_out() {
        let (o, p) = run(
            "log: {}\n",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%20ecret,x=1"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "k8s.node.name=n1,deployment.environment=prod",
                ),
                ("OTEL_SERVICE_NAME", "steadfast-node"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(o.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(o.headers["api-key"], "s ecret");
        assert_eq!(o.headers["x"], "1");
        assert_eq!(o.timeout_secs, 3, "2.5 s rounds up");
        assert_eq!(o.metrics_interval_secs, 60);
        assert_eq!(o.resource_attributes["k8s.node.name"], "n1");
        assert_eq!(o.resource_attributes["service.name"], "steadfast-node");
        assert_eq!(o.sampling_ratio, 0.25);
        assert_eq!(
            o.signal_target(super::super::Signal::Traces),
            Some((
                OtlpProtocol::HttpProtobuf,
                "http://collector:4318/v1/traces".into()
            ))
        );
    }

    #[test]
    fn the_file_wins_where_both_are_set() {
        let (o, p) = run(
            "otlp:\n  endpoint: http://file:4317\n  headers: {x: from-file}\n  timeout_secs: 7\n  resource_attributes: {service.name: mine}\n",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:9999/t"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x=from-env,y=2"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
                ("OTEL_SERVICE_NAME", "env-name"),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(o.endpoint.as_deref(), Some("http://file:4317"));
        assert_eq!(o.traces_endpoint, None, "the file decides where data goes");
        assert_eq!(o.headers["x"], "from-file");
        assert_eq!(o.headers["y"], "2");
        assert_eq!(o.timeout_secs, 7);
        assert_eq!(o.resource_attributes["service.name"], "mine");
    }

    #[test]
    fn per_signal_variables_win_over_general_ones() {
        let (o, p) = run(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1000"),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        use super::super::Signal::*;
        assert_eq!(
            o.signal_target(Traces),
            Some((
                OtlpProtocol::HttpProtobuf,
                "http://base:4318/v1/traces".into()
            ))
        );
        assert_eq!(
            o.signal_target(Metrics),
            Some((OtlpProtocol::Grpc, "http://m:4317".into()))
        );
        assert_eq!(o.timeout_secs, 1);
    }

    #[test]
    fn malformed_variables_are_named_and_disabled_sdk_turns_export_off() {
        let (_, p) = run(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ],
        );
        let keys: Vec<_> = p.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_METRIC_EXPORT_INTERVAL",
                "OTEL_TRACES_SAMPLER"
            ]
        );
        let (o, p) = run(
            "otlp:\n  endpoint: http://file:4317\n",
            &[("OTEL_SDK_DISABLED", "true")],
        );
        assert!(p.is_empty());
        assert_eq!(o.signal_target(super::super::Signal::Traces), None);
    }
}

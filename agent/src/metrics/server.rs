//! `GET /metrics`: asks the collector for a fresh snapshot (one whose collection started after
//! the request, waiting at most [`FRESH_BOUND`], else the latest one), then encodes it in the
//! format the scraper asks for: Prometheus protobuf (delimited `io.prometheus.client.MetricFamily`,
//! with native histograms) when its Accept header lists it first among the formats served,
//! else OpenMetrics text when listed, else Prometheus text 0.0.4.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::metrics::histogram::Histogram;

use super::{encode, exposition::SizeHint};
use crate::collector::{Snapshot, Snapshots};

/// How long a scrape waits for a collection started after it: past it, the latest snapshot
/// is served (at most a collection interval older).
pub const FRESH_BOUND: Duration = Duration::from_secs(2);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const PROMETHEUS_PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The exposition formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    PrometheusText,
    OpenMetrics,
    PrometheusProtobuf,
}

#[derive(Clone)]
pub struct AppState {
    pub snapshots: Snapshots,
    /// `steadfast_scrape_duration_seconds`.
    pub scrape_duration: Histogram,
    pub text_size: Arc<SizeHint>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "ok\n" }))
        .with_state(state)
}

/// The format to answer in: the served one the Accept header prefers (highest `q`, then the
/// first listed), Prometheus text when it lists none of them.
pub fn negotiate(headers: &HeaderMap) -> Format {
    let mut best: Option<(f32, Format)> = None;
    for value in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let params: Vec<(String, String)> = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| {
                    (
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_string(),
                    )
                })
                .collect();
            let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let format = match media.as_str() {
                "application/vnd.google.protobuf"
                    if param("proto") == Some("io.prometheus.client.MetricFamily")
                        && param("encoding") == Some("delimited") =>
                {
                    Format::PrometheusProtobuf
                }
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" => Format::PrometheusText,
                _ => continue,
            };
            let q = param("q")
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, format));
            }
        }
    }
    best.map_or(Format::PrometheusText, |(_, f)| f)
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let started = std::time::Instant::now();
    let format = negotiate(&headers);
    let snapshot = state.snapshots.fresh(FRESH_BOUND).await;
    let size = state.text_size.clone();
    // Encoding a large catalogue takes milliseconds: off the async workers (`background`).
    let encoded = crate::background::run(move || encode_snapshot(&snapshot, format, &size)).await;
    state
        .scrape_duration
        .observe(started.elapsed().as_secs_f64());
    match encoded {
        Ok((body, content_type)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// The snapshot in `format`, with its content type.
fn encode_snapshot(
    snapshot: &Snapshot,
    format: Format,
    size: &SizeHint,
) -> (Vec<u8>, &'static str) {
    let families = &snapshot.families;
    let (body, content_type) = match format {
        Format::PrometheusProtobuf => return (encode::protobuf(families), PROMETHEUS_PROTOBUF),
        Format::OpenMetrics => {
            let mut body = size.buffer();
            encode::openmetrics(families, &mut body);
            (body, OPENMETRICS)
        }
        Format::PrometheusText => {
            let mut body = size.buffer();
            encode::prometheus_text(families, &mut body);
            (body, PROMETHEUS_TEXT)
        }
    };
    size.remember(&body);
    (body.into_bytes(), content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation_follows_the_scrapers() {
        // Prometheus 2.42 with --enable-feature=native-histograms.
        let native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.7,application/openmetrics-text;version=0.0.1;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(&accept(native)), Format::PrometheusProtobuf);
        // Prometheus 2.42 without it.
        let classic = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(&accept(classic)), Format::OpenMetrics);
        assert_eq!(negotiate(&accept("*/*")), Format::PrometheusText);
        assert_eq!(negotiate(&HeaderMap::new()), Format::PrometheusText);
        // Protobuf of another message is not ours.
        assert_eq!(
            negotiate(&accept(
                "application/vnd.google.protobuf;proto=x.Y;encoding=delimited"
            )),
            Format::PrometheusText
        );
    }
}

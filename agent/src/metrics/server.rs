//! `GET /metrics`: asks the collector for a fresh snapshot (one whose collection started after
//! the request, waiting at most [`FRESH_BOUND`], else the latest one), then encodes it in the
//! format the scraper asks for: Prometheus protobuf (delimited `io.prometheus.client.MetricFamily`,
//! with native histograms) when its Accept header lists it first among the formats served,
//! else OpenMetrics text when listed, else Prometheus text 0.0.4.
//!
//! The answer is encoded while it is sent, [`CHUNK_BYTES`] at a time on the bulk threads
//! (`background`), each chunk when the connection has taken the one before: a scrape holds
//! its snapshot and one chunk, not the whole text (2.9 MB at 30,300 series), and a slow
//! scraper holds no thread. The first chunk is encoded before the answer starts, so a failure
//! there is a 500; a failure after it cuts the body short (the scraper sees an error).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::metrics::histogram::Histogram;

pub use super::encode::Format;
use super::encode::{self, Position};
use crate::collector::{Snapshot, Snapshots};

/// How long a scrape waits for a collection started after it: past it, the latest snapshot
/// is served (at most a collection interval older).
pub const FRESH_BOUND: Duration = Duration::from_secs(2);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const PROMETHEUS_PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// How much of an answer is encoded at a time (whole series, so a chunk can be a little
/// larger).
pub const CHUNK_BYTES: usize = 128 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub snapshots: Snapshots,
    /// `steadfast_scrape_duration_seconds`.
    pub scrape_duration: Histogram,
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
    let format = negotiate(&headers);
    let waited = Instant::now();
    let answer = Answer {
        snapshot: state.snapshots.fresh(FRESH_BOUND).await,
        format,
        pos: Position::default(),
        end: false,
        timer: ScrapeTimer {
            spent: waited.elapsed(),
            histogram: state.scrape_duration,
        },
    };
    let Some((first, answer)) = answer.next_chunk().await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response();
    };
    let first = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(first)));
    let rest = futures_util::stream::unfold(Some(answer), |answer| async move {
        let answer = answer?;
        if answer.end {
            return None;
        }
        Some(match answer.next_chunk().await {
            Some((chunk, answer)) => (Ok(chunk), Some(answer)),
            None => (Err(std::io::Error::other("encoding failed")), None),
        })
    });
    let content_type = match format {
        Format::PrometheusProtobuf => PROMETHEUS_PROTOBUF,
        Format::OpenMetrics => OPENMETRICS,
        Format::PrometheusText => PROMETHEUS_TEXT,
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(futures_util::StreamExt::chain(first, rest)),
    )
        .into_response()
}

/// One scrape's answer being encoded.
struct Answer {
    snapshot: Arc<Snapshot>,
    format: Format,
    pos: Position,
    /// The last chunk was encoded.
    end: bool,
    timer: ScrapeTimer,
}

impl Answer {
    /// Encodes the next chunk on the bulk threads; `None` if that failed.
    async fn next_chunk(mut self) -> Option<(Bytes, Self)> {
        let started = Instant::now();
        let encoded = crate::background::run(move || {
            let (chunk, end) = encode::chunk(
                &self.snapshot.families,
                self.format,
                &mut self.pos,
                CHUNK_BYTES,
            );
            self.end = end;
            (chunk, self)
        })
        .await;
        let (chunk, mut answer) = encoded.ok()?;
        answer.timer.spent += started.elapsed();
        Some((Bytes::from(chunk), answer))
    }
}

/// Observes `steadfast_scrape_duration_seconds` when the answer is done (or dropped): the
/// wait for the snapshot and the encoding, not the time the scraper took to read.
struct ScrapeTimer {
    /// The wait for the snapshot and the encoding so far.
    spent: Duration,
    histogram: Histogram,
}

impl Drop for ScrapeTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.spent.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    /// A large answer goes out in several chunks that make the whole encoding, in each
    /// format; the scrape is timed once, when the body is done.
    #[tokio::test]
    async fn answers_are_sent_in_chunks_that_make_the_whole_encoding() {
        use http_body_util::BodyExt;
        let hist = crate::metrics::hist_of(&[100, 15_625_000, 20_000_000_000]);
        let mut families = crate::metrics::kernel_histogram_families("steadfast_x_seconds", &hist);
        let one = families[0].metric[0].clone();
        families[0].metric = (0..3000)
            .map(|i| {
                let mut m = one.clone();
                m.label[0].value = format!("service-{i}");
                m
            })
            .collect();
        let scrape_duration = Histogram::new([1.0]);
        let state = AppState {
            snapshots: Snapshots::fixed(families.clone()),
            scrape_duration: scrape_duration.clone(),
        };
        let mut text = String::new();
        encode::prometheus_text(&families, &mut text);
        let mut om = String::new();
        encode::openmetrics(&families, &mut om);
        let cases = [
            ("text/plain", text.into_bytes()),
            ("application/openmetrics-text", om.into_bytes()),
            (PROMETHEUS_PROTOBUF, encode::protobuf(&families)),
        ];
        for (i, (accept_header, whole)) in cases.into_iter().enumerate() {
            assert!(whole.len() > 3 * CHUNK_BYTES, "{} bytes", whole.len());
            let answer = metrics(State(state.clone()), accept(accept_header)).await;
            assert_eq!(answer.status(), StatusCode::OK);
            let mut body = answer.into_body();
            let (mut got, mut frames) = (Vec::new(), 0);
            while let Some(frame) = body.frame().await {
                got.extend_from_slice(frame.unwrap().data_ref().unwrap());
                frames += 1;
            }
            assert!(frames >= 3, "{accept_header}: {frames} chunks");
            assert!(got == whole, "{accept_header}: not the whole encoding");
            drop(body);
            let mut timed = String::new();
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("t", "t", scrape_duration.clone());
            prometheus_client::encoding::text::encode(&mut timed, &registry).unwrap();
            assert!(
                timed.contains(&format!("t_count {}\n", i + 1)),
                "{accept_header}: {timed}"
            );
        }
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

//! `GET /metrics`: collects fresh counts from the kernel, then encodes the registry as
//! OpenMetrics when the scraper asks for it (`Accept: application/openmetrics-text`), else as
//! Prometheus text 0.0.4.

use std::sync::{Arc, Mutex};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::{metrics::histogram::Histogram, registry::Registry};

use super::exposition::SizeHint;
use crate::pipeline::Pipeline;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Mutex<Pipeline>>,
    pub registry: Arc<Registry>,
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

/// True when the Accept header lists OpenMetrics text.
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let started = std::time::Instant::now();
    let openmetrics = wants_openmetrics(&headers);
    let encode_state = state.clone();
    // Reading the kernel maps and encoding are blocking work: off the async workers.
    let encoded = tokio::task::spawn_blocking(move || {
        let state = encode_state;
        state
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .collect();
        encode(&state.registry, openmetrics, &state.text_size)
    })
    .await;
    state
        .scrape_duration
        .observe(started.elapsed().as_secs_f64());
    match encoded {
        Ok((Ok(body), content_type)) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// The registry as OpenMetrics or Prometheus text, with its content type.
fn encode(
    registry: &Registry,
    openmetrics: bool,
    size: &SizeHint,
) -> (Result<String, std::fmt::Error>, &'static str) {
    let mut body = size.buffer();
    let (result, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, registry),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
            PROMETHEUS_TEXT,
        )
    };
    size.remember(&body);
    (result.map(|()| body), content_type)
}

//! The local API applications use to read breakers and signals, on a unix socket (default
//! `/run/steadfast/api.sock`, mode 0660, group `steadfast`) and on the loopback HTTP listener:
//!
//! - `GET /v1/breakers`, `GET /v1/signals`, `GET /v1/snapshot`: JSON with the snapshot `index`;
//!   with `?index=N&wait=30s` the answer waits until the index passes N (or the wait ends), so
//!   a client sees a change as soon as it is published (a blocking query);
//! - `GET /v1/watch`: server-sent events, one `snapshot` event per change;
//! - `GET /v1/breakers/{name}`: one breaker (same blocking query), 404 if there is none;
//! - `GET /v1/ready?breaker=..&signal=..&below=..`: 200 or 503 for health checks (`ready`);
//! - `POST /v1/breakers/{name}/force-open|force-close|reset`: manual overrides, which persist.
//!
//! Changes (every method but GET and HEAD: the overrides, `POST /-/reload`) are served on the
//! unix socket only, whose mode and group decide who may make them; the loopback listener,
//! which any local user can reach, answers them 403 and changes nothing ([`read_only`]).
//!
//! Bad paths get 404, bad methods 405, bad parameters 400, unknown breakers 404, bodies over
//! 4 KiB 413, changes over TCP 403; all as JSON `{"error": ...}`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{DefaultBodyLimit, Path, Query, State},
    http::StatusCode,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures_util::stream::Stream;
use serde::Deserialize;
use tokio::sync::watch;

use crate::control::{breaker::Force, Control, Snapshot};

pub mod http1;
pub mod ready;

/// The longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct ApiState {
    pub control: Arc<Mutex<Control>>,
    pub snapshots: watch::Receiver<Snapshot>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/breakers", get(breakers))
        .route("/v1/breakers/{name}", get(one_breaker))
        .route("/v1/signals", get(signals))
        .route("/v1/watch", get(watch_events))
        .route("/v1/ready", get(ready::ready))
        .route("/v1/breakers/{name}/{action}", post(override_breaker))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such path: see /v1/snapshot, /v1/breakers, /v1/signals, /v1/watch, /v1/ready",
            )
        })
        .layer(DefaultBodyLimit::max(4096))
        .with_state(state)
}

/// For the loopback listener: only GET and HEAD reach `router`; every other method (all the
/// changes) gets 403, whatever the path, so that a user who can reach the port but not the
/// socket cannot change anything.
pub fn read_only(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(refuse_changes))
}

async fn refuse_changes(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    error(
        StatusCode::FORBIDDEN,
        format!(
            "{} {}: changes are accepted only on the API's unix socket (control.api_socket), \
             not on the TCP listener",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A JSON error answer.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Blocking {
    index: Option<u64>,
    wait: Option<String>,
}

/// `30s`, `500ms`, `2m`; at most [`MAX_WAIT`] (longer waits are cut to it). The wait is
/// counted in milliseconds with checked arithmetic: one that does not fit in a `u64` of
/// milliseconds (`99999999999999999m`) is an error, never a wrapped or panicking multiply.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let (num, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("bad wait {text:?}"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        _ => return Err(format!("bad wait unit in {text:?} (ms, s or m)")),
    };
    let ms = n.checked_mul(ms_per_unit).ok_or_else(|| {
        format!(
            "wait {text:?} is too long to count (waits are cut to {} s anyway)",
            MAX_WAIT.as_secs()
        )
    })?;
    Ok(Duration::from_millis(ms).min(MAX_WAIT))
}

/// The current snapshot, or the first one past `index` within `wait`.
async fn current(
    mut rx: watch::Receiver<Snapshot>,
    q: Result<Query<Blocking>, axum::extract::rejection::QueryRejection>,
) -> Result<Snapshot, Response> {
    let Query(q) = q.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let wait = match q.wait.as_deref() {
        Some(w) => parse_wait(w).map_err(|e| error(StatusCode::BAD_REQUEST, e))?,
        None => Duration::ZERO,
    };
    if let Some(index) = q.index {
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.index > index)).await;
    }
    let snap = rx.borrow().clone();
    Ok(snap)
}

async fn snapshot(
    State(s): State<ApiState>,
    q: Result<Query<Blocking>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match current(s.snapshots.clone(), q).await {
        Ok(snap) => Json(snap).into_response(),
        Err(r) => r,
    }
}

async fn breakers(
    State(s): State<ApiState>,
    q: Result<Query<Blocking>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match current(s.snapshots.clone(), q).await {
        Ok(snap) => Json(serde_json::json!({ "index": snap.index, "breakers": snap.breakers }))
            .into_response(),
        Err(r) => r,
    }
}

async fn one_breaker(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    q: Result<Query<Blocking>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match current(s.snapshots.clone(), q).await {
        Ok(snap) => match snap.breakers.get(&name) {
            Some(b) => {
                Json(serde_json::json!({ "index": snap.index, "breaker": b })).into_response()
            }
            None => error(
                StatusCode::NOT_FOUND,
                format!("no breaker {name:?}: see /v1/breakers"),
            ),
        },
        Err(r) => r,
    }
}

async fn signals(
    State(s): State<ApiState>,
    q: Result<Query<Blocking>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match current(s.snapshots.clone(), q).await {
        Ok(snap) => Json(serde_json::json!({ "index": snap.index, "signals": snap.signals }))
            .into_response(),
        Err(r) => r,
    }
}

async fn watch_events(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.snapshots.clone();
    // First the current snapshot, then one event per change.
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let snap = rx.borrow_and_update().clone();
        let event = Event::default()
            .event("snapshot")
            .id(snap.index.to_string())
            .json_data(&snap)
            .unwrap_or_else(|_| Event::default().comment("encoding failed"));
        Some((Ok(event), (rx, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn override_breaker(
    State(s): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
    // Read (and ignored) so that the body limit applies: an oversized body gets 413.
    _body: axum::body::Bytes,
) -> Response {
    let force = match action.as_str() {
        "force-open" => Some(Force::Open),
        "force-close" => Some(Force::Close),
        "reset" => None,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}: force-open, force-close or reset"),
            )
        }
    };
    let mut control = s.control.lock().unwrap_or_else(|e| e.into_inner());
    match control.set_force(&name, force, tokio::time::Instant::now()) {
        Ok(()) => {
            let snap = control.snapshot();
            Json(serde_json::json!({ "index": snap.index, "breaker": snap.breakers.get(&name) }))
                .into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// Serves `app` on `listener` (the unix socket, or the loopback TCP port), HTTP/1.1 only, one
/// task per connection, until `shutdown` resolves. Then it stops accepting, asks every
/// connection to close after its response in progress (a held blocking query ends first: the
/// caller shuts the control down in `shutdown`), and returns when all have closed.
///
/// Not `axum::serve`, nor hyper's HTTP/1 connection: each holds two 8 KiB buffers for the
/// connection's life (26.6 and 13.5 KiB of resident memory per held blocking query, measured:
/// docs/benchmarks.md); [`http1`] holds what the request needs. Local clients and Prometheus
/// speak HTTP/1.1 (the clients in `clients/`, curl; a scraper uses HTTP/2 only over TLS), and
/// the API has no upgrades: server-sent events are a plain streamed body.
pub async fn serve<L>(mut listener: L, app: Router, shutdown: impl std::future::Future<Output = ()>)
where
    L: axum::serve::Listener,
{
    // Each connection holds a receiver; `closed` resolves when the last one is dropped.
    let (close, closing) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        // `Listener::accept` retries failed accepts itself (out of descriptors: it waits).
        let (io, _) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        // Sent once, after the last accept: every receiver sees it as a change, and a
        // connection closes when it has no answer in progress.
        let conn = http1::serve_connection(io, app.clone(), closing.clone());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection ended with an error");
            }
        });
    }
    drop(closing);
    let _ = close.send(());
    close.closed().await;
}

/// Binds the unix socket: removes a stale one, sets mode 0660 and the group (if it exists).
pub fn bind_unix(
    path: &std::path::Path,
    group: Option<&str>,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = group {
        use std::os::unix::fs::MetadataExt;
        match group_id(g) {
            // Already the group (the service runs as it): nothing to change, and a hardened
            // unit may not even allow chown.
            Some(gid) if std::fs::metadata(path)?.gid() == gid => {}
            Some(gid) => {
                if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
                    tracing::warn!(group = g, error = %e, "could not give the API socket its group: only its owner can use it");
                }
            }
            None => tracing::warn!(
                group = g,
                "no such group: only the socket's owner can use it"
            ),
        }
    }
    Ok(listener)
}

/// A group's id: a number as it is (for containers, whose /etc/group does not know the
/// host's groups), else the name's from /etc/group.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_and_are_capped() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_wait("99m"), Ok(MAX_WAIT));
        assert!(parse_wait("soon").is_err());
        assert!(parse_wait("3h").is_err());
        // Overflows are refused with a message, not wrapped or panicked on.
        let e = parse_wait("99999999999999999m").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        assert_eq!(
            parse_wait("307445734561825m"),
            Ok(MAX_WAIT),
            "the largest that fits"
        );
        assert!(parse_wait("307445734561826m").is_err());
        assert_eq!(parse_wait("18446744073709551s"), Ok(MAX_WAIT));
        assert!(parse_wait("18446744073709552s").is_err());
        assert_eq!(parse_wait("18446744073709551615ms"), Ok(MAX_WAIT));
        assert!(parse_wait("99999999999999999999ms").is_err(), "beyond u64");
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
        assert_eq!(group_id("2470"), Some(2470), "a number is a gid as it is");
    }
}

//! Alertmanager API v2 client: `POST <url>/api/v2/alerts` with a JSON list of
//! `{labels, annotations, startsAt, endsAt, generatorURL}`.
//!
//! The engine hands over a batch per evaluation tick (firing alerts when first firing and
//! every resend interval, with `endsAt` four intervals ahead so Alertmanager resolves them if
//! the agent dies; resolved alerts with `endsAt` = resolution time). Batches wait in a
//! bounded queue ([`QUEUE_BATCHES`]; a full queue drops the new batch and counts its alerts);
//! each is tried up to [`ATTEMPTS`] times, then counted as failed. Between attempts the
//! client waits the agent's one backoff ([`crate::backoff`]: ceilings 0.5, 1, 2 s, full
//! jitter), or, when Alertmanager answered 429 or 5xx with `Retry-After: <seconds>`, that
//! long (at most [`MAX_RETRY_WAIT`]). A 4xx other than 429 is not retried. Plain HTTP only
//! (no TLS in this build).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::mpsc;

use crate::backoff::{parse_retry_after, Backoff};
use crate::rules::engine::Notification;

pub const QUEUE_BATCHES: usize = 64;
pub const ATTEMPTS: u32 = 4;
/// The first retry's ceiling (it doubles with each attempt).
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// The longest wait before a retry, also when `Retry-After` asks for more.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// Alerts delivered (answered 2xx).
    pub sent: AtomicU64,
    /// Alerts given up on after every attempt failed.
    pub failed: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Vec<Notification>>,
    pub stats: Arc<NotifierStats>,
}

impl Notifier {
    /// Starts the sending task on the current runtime.
    pub fn spawn(
        base_url: &str,
        timeout: Duration,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let stats = Arc::new(NotifierStats::default());
        let url = format!("{}/api/v2/alerts", base_url.trim_end_matches('/'));
        tasks.spawn(send_loop(url, timeout, rx, stats.clone()));
        Notifier { tx, stats }
    }

    /// Queues a batch; never waits.
    pub fn send(&self, batch: Vec<Notification>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if self.tx.try_send(batch).is_err() {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The JSON body for a batch.
pub fn body(batch: &[Notification]) -> String {
    let list: Vec<serde_json::Value> = batch
        .iter()
        .map(|n| {
            serde_json::json!({
                "labels": n.labels,
                "annotations": n.annotations,
                "startsAt": rfc3339(n.starts_at),
                "endsAt": rfc3339(n.ends_at),
                "generatorURL": n.generator_url,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

async fn send_loop(
    url: String,
    timeout: Duration,
    mut rx: mpsc::Receiver<Vec<Notification>>,
    stats: Arc<NotifierStats>,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    while let Some(batch) = rx.recv().await {
        let body = body(&batch);
        let n = batch.len() as u64;
        let mut delivered = false;
        let mut backoff = Backoff::new(RETRY_BASE, MAX_RETRY_WAIT);
        let mut asked: Option<Duration> = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let delay = backoff.next_delay_or(asked.take());
                tracing::debug!(%url, attempt, delay_ms = delay.as_millis() as u64, "retrying alerts");
                tokio::time::sleep(delay).await;
            }
            let req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.clone())));
            let Ok(req) = req else { break };
            match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    let _ = resp.into_body().collect().await;
                    delivered = true;
                    break;
                }
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    asked = resp
                        .headers()
                        .get(hyper::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let text = resp
                        .into_body()
                        .collect()
                        .await
                        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                        .unwrap_or_default();
                    tracing::warn!(%url, %status, answer = %text.chars().take(200).collect::<String>(), attempt, retry_after_secs = asked.map(|d| d.as_secs()), "Alertmanager refused alerts");
                    if status.is_client_error() && status != hyper::StatusCode::TOO_MANY_REQUESTS {
                        break; // a 4xx (but 429) will not get better
                    }
                }
                Ok(Err(e)) => tracing::warn!(%url, error = %e, attempt, "sending alerts failed"),
                Err(_) => tracing::warn!(%url, attempt, "sending alerts timed out"),
            }
        }
        if delivered {
            stats.sent.fetch_add(n, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for ms since the epoch (UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_794_571_200_000), "2026-11-13T12:00:00.000Z");
    }

    /// A one-shot HTTP server answering each connection with the next status of `statuses`,
    /// recording the request bodies.
    fn server(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for status in statuses {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 65536];
                let mut got = String::new();
                // read until the body (Content-Length) is complete
                loop {
                    let n = c.read(&mut buf).unwrap();
                    got.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if let Some((head, body)) = got.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let _ = tx.send(got);
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, rx)
    }

    fn notification() -> Notification {
        let mut labels = crate::store::Labels::new();
        labels.insert("alertname".into(), "A".into());
        Notification {
            labels,
            annotations: Default::default(),
            starts_at: 0,
            ends_at: 1000,
            generator_url: "http://x/".into(),
        }
    }

    async fn settle(stats: &NotifierStats) {
        for _ in 0..100 {
            if stats.sent.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn retries_a_server_error_and_gives_up_on_a_client_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // 503 then 200: delivered on the second attempt
            let (url, rx) = server(vec![503, 200]);
            let mut tasks = tokio::task::JoinSet::new();
            let n = Notifier::spawn(&url, Duration::from_secs(2), &mut tasks);
            n.send(vec![notification()]);
            settle(&n.stats).await;
            assert_eq!(n.stats.sent.load(Ordering::Relaxed), 1);
            assert_eq!(n.stats.failed.load(Ordering::Relaxed), 0);
            let first = rx.recv().unwrap();
            assert!(first.starts_with("POST /api/v2/alerts HTTP/1.1"), "{first}");
            assert!(first.contains(r#""alertname":"A""#), "{first}");
            assert!(rx.recv().is_ok(), "retried");
            // 400: not retried, counted as failed
            let (url, rx) = server(vec![400]);
            let n = Notifier::spawn(&url, Duration::from_secs(2), &mut tasks);
            n.send(vec![notification(), notification()]);
            settle(&n.stats).await;
            assert_eq!(n.stats.failed.load(Ordering::Relaxed), 2);
            assert_eq!(n.stats.sent.load(Ordering::Relaxed), 0);
            assert!(rx.recv().is_ok());
        });
    }

    #[test]
    fn body_shape() {
        let mut labels = crate::store::Labels::new();
        labels.insert("alertname".into(), "A".into());
        let b = body(&[Notification {
            labels,
            annotations: Default::default(),
            starts_at: 0,
            ends_at: 1000,
            generator_url: "http://x/".into(),
        }]);
        assert_eq!(
            b,
            r#"[{"annotations":{},"endsAt":"1970-01-01T00:00:01.000Z","generatorURL":"http://x/","labels":{"alertname":"A"},"startsAt":"1970-01-01T00:00:00.000Z"}]"#
        );
    }
}

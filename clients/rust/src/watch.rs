//! Following the snapshot over the agent's API socket with blocking queries
//! (`GET /v1/snapshot?index=N&wait=60s`), on a background thread: no async runtime.
//!
//! The agent's index never goes backwards across restarts, so after a restart the held index
//! is answered at once; should an agent have lost its state (a smaller index), the watch takes
//! the new index rather than wait.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Deserialize;

use crate::{BreakerState, Error, Force, SignalState, Snapshot, State};

const WAIT: &str = "60s";
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct ApiBreaker {
    state: State,
    admit_ratio: f64,
    forced: Option<Force>,
    #[serde(default)]
    openings: u32,
    #[serde(default)]
    since_unix_ms: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    inputs_unknown: bool,
    #[serde(default)]
    unknown_reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiSignal {
    level: f64,
    #[serde(default)]
    source: String,
    #[serde(default)]
    inputs_unknown: bool,
    #[serde(default)]
    unknown_reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiSnapshot {
    index: u64,
    #[serde(default)]
    breakers: BTreeMap<String, ApiBreaker>,
    #[serde(default)]
    signals: BTreeMap<String, ApiSignal>,
}

impl From<ApiSnapshot> for Snapshot {
    fn from(s: ApiSnapshot) -> Snapshot {
        let index = s.index;
        Snapshot {
            index,
            breakers: s
                .breakers
                .into_iter()
                .map(|(name, b)| {
                    (
                        name,
                        BreakerState {
                            state: b.state,
                            admit_ratio: b.admit_ratio,
                            index,
                            changed_index: 0,
                            forced: b.forced,
                            openings: b.openings,
                            since_unix_ns: b.since_unix_ms.saturating_mul(1_000_000),
                            inputs_unknown: b.inputs_unknown,
                            unknown_reason: b.unknown_reason.unwrap_or_default(),
                            reason: b.reason,
                        },
                    )
                })
                .collect(),
            signals: s
                .signals
                .into_iter()
                .map(|(name, v)| {
                    (
                        name,
                        SignalState {
                            level: v.level,
                            changed_index: 0,
                            since_unix_ns: 0,
                            inputs_unknown: v.inputs_unknown,
                            unknown_reason: v.unknown_reason.unwrap_or_default(),
                            source: v.source,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One blocking query: the snapshot once the index passes `index` (or after the wait).
pub fn query(socket: &Path, index: u64, wait: &str) -> Result<Snapshot, Error> {
    let io = |e| Error::Io(socket.to_path_buf(), e);
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(330)))
        .map_err(io)?;
    write!(
        s,
        "GET /v1/snapshot?index={index}&wait={wait} HTTP/1.0\r\nHost: steadfast\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Api("no HTTP answer".into()))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(Error::Api(format!("status {status}: {body}")));
    }
    serde_json::from_str::<ApiSnapshot>(body)
        .map(Snapshot::from)
        .map_err(|e| Error::Api(format!("bad snapshot: {e}")))
}

/// Snapshots from the API, one per change; ends when dropped (the thread notices at its next
/// answer, within a minute).
pub struct Watch {
    rx: mpsc::Receiver<Snapshot>,
    stop: Arc<AtomicBool>,
    _thread: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Watch {
    pub(crate) fn start(socket: PathBuf) -> Watch {
        let (tx, rx) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("steadfast-watch".into())
            .spawn(move || {
                let mut index = 0;
                let mut backoff = Duration::from_millis(100);
                while !stopped.load(Ordering::Relaxed) {
                    match query(&socket, index, WAIT) {
                        Ok(snap) => {
                            backoff = Duration::from_millis(100);
                            if snap.index == index {
                                continue;
                            }
                            index = snap.index;
                            if tx.send(snap).is_err() {
                                return;
                            }
                        }
                        Err(_) => {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            })
            .expect("spawning the watch thread");
        Watch {
            rx,
            stop,
            _thread: thread,
        }
    }

    /// The next snapshot, waiting at most `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Snapshot> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Iterator for Watch {
    type Item = Snapshot;
    fn next(&mut self) -> Option<Snapshot> {
        self.rx.recv().ok()
    }
}

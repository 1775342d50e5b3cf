//! Read steadfast's circuit breakers and degrade signals from its state page
//! (`/run/steadfast/state.page`, layout in docs/state-page.md) in nanoseconds:
//!
//! ```no_run
//! let client = steadfast_client::Client::open(Default::default())?;
//! if client.allow("db-writes") {
//!     // call the database
//! } else {
//!     // fallback
//! }
//! let shed = client.signal("host_protection").unwrap_or(0.0);
//! # Ok::<(), steadfast_client::Error>(())
//! ```
//!
//! `allow` is a few memory loads: no syscall, no lock, no allocation, no async runtime. A
//! background thread checks the page every 100 ms: it notices a new file (a changed breaker
//! set, a restarted agent) and decides whether the page is healthy.
//!
//! **Fails open**: with no page, a stopped agent, or a page older than
//! [`Options::stale_after`], `allow` returns true, `signal` and `breaker` return None, and
//! [`Client::healthy`] is false. An unknown breaker is allowed too.
//!
//! [`Client::watch`] follows the snapshot over the agent's local API with blocking queries
//! (with reasons and sources, which the page does not carry).

mod page;
mod watch;

use std::{
    cell::RefCell,
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use page::Mapping;
pub use watch::Watch;

pub const DEFAULT_PAGE_PATH: &str = "/run/steadfast/state.page";
pub const DEFAULT_API_SOCKET: &str = "/run/steadfast/api.sock";
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5);
/// How often the background thread looks at the page.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Options {
    /// The state page (default `/run/steadfast/state.page`).
    pub page_path: PathBuf,
    /// The agent's API socket, for [`Client::watch`] (default `/run/steadfast/api.sock`).
    pub api_socket: PathBuf,
    /// A page not refreshed for this long counts as a dead agent (default 5 s; the agent
    /// refreshes it twice a second).
    pub stale_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            page_path: DEFAULT_PAGE_PATH.into(),
            api_socket: DEFAULT_API_SOCKET.into(),
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The page (or the API socket) exists but cannot be used: e.g. permission denied (the
    /// page is readable by root and the API socket's group).
    Io(PathBuf, std::io::Error),
    /// The file is not a state page this client can read.
    Format(PathBuf, String),
    /// The API answered something unexpected.
    Api(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Format(p, what) => write!(f, "{}: {what}", p.display()),
            Error::Api(what) => write!(f, "steadfast API: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Closed: let every call through.
    Admit,
    /// Half-open: let `admit_ratio` of the calls through.
    Probe,
    /// Open: refuse calls.
    Shed,
}

impl State {
    fn from_page(v: u32) -> State {
        match v {
            1 => State::Probe,
            2 => State::Shed,
            _ => State::Admit,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Admit => "admit",
            State::Probe => "probe",
            State::Shed => "shed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Force {
    Open,
    Close,
}

/// A breaker as the page (or the API) shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerState {
    pub state: State,
    /// Share of calls to let through: 1 admit, 0 shed, the ramp step in probe.
    pub admit_ratio: f64,
    /// The snapshot index this was read at.
    pub index: u64,
    /// The snapshot index of this breaker's last change (page only; 0 from the API).
    pub changed_index: u64,
    pub forced: Option<Force>,
    /// Consecutive openings.
    pub openings: u32,
    /// Unix nanoseconds of the last state change (the engine's decision).
    pub since_unix_ns: u64,
    /// The rule engine could not evaluate the breaker's inputs (its state is held).
    pub inputs_unknown: bool,
    /// Why the inputs are unknown, e.g. `volume: no series matched (no data, or stale)`
    /// (API only; empty from the page and when known).
    pub unknown_reason: String,
    /// Why it is in this state (API only; empty from the page).
    pub reason: String,
}

/// A degrade signal as the page (or the API) shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalState {
    /// In [0, 1]: 0 all is well, 1 shed everything optional.
    pub level: f64,
    pub changed_index: u64,
    pub since_unix_ns: u64,
    /// The rule engine could not evaluate the signal's expression (its level is held).
    pub inputs_unknown: bool,
    /// Why (API only; empty from the page and when known).
    pub unknown_reason: String,
    /// What set it (API only; empty from the page).
    pub source: String,
}

/// Every breaker and signal at one snapshot index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub index: u64,
    pub breakers: BTreeMap<String, BreakerState>,
    pub signals: BTreeMap<String, SignalState>,
}

const FLAG_INPUTS_UNKNOWN: u32 = 1;
const FLAG_FORCED_OPEN: u32 = 2;
const FLAG_FORCED_CLOSE: u32 = 4;

fn breaker_from(raw: page::RawSlot, index: u64) -> BreakerState {
    BreakerState {
        state: State::from_page(raw.state),
        admit_ratio: raw.value,
        index,
        changed_index: raw.changed_index,
        forced: if raw.flags & FLAG_FORCED_OPEN != 0 {
            Some(Force::Open)
        } else if raw.flags & FLAG_FORCED_CLOSE != 0 {
            Some(Force::Close)
        } else {
            None
        },
        openings: raw.openings,
        since_unix_ns: raw.since_unix_ns,
        inputs_unknown: raw.flags & FLAG_INPUTS_UNKNOWN != 0,
        unknown_reason: String::new(),
        reason: String::new(),
    }
}

fn signal_from(raw: page::RawSlot) -> SignalState {
    SignalState {
        level: raw.value,
        changed_index: raw.changed_index,
        since_unix_ns: raw.since_unix_ns,
        inputs_unknown: raw.flags & FLAG_INPUTS_UNKNOWN != 0,
        unknown_reason: String::new(),
        source: String::new(),
    }
}

/// What the client and its background thread share.
struct Shared {
    opts: Options,
    id: u64,
    healthy: AtomicBool,
    /// Bumped each time `current` is replaced.
    version: AtomicU64,
    current: Mutex<(u64, Option<Arc<Mapping>>)>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// For probe decisions (splitmix64 over a counter: lock-free).
    seed: AtomicU64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// (client id, version, mapping).
type Cached = (u64, u64, Option<Arc<Mapping>>);

thread_local! {
    /// Each thread's last mappings by client. A mapping is unmapped when the last Arc goes, so
    /// a reader never reads an unmapped page; a thread keeps at most `CACHED` old mappings
    /// alive.
    static CACHE: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}
const CACHED: usize = 4;

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Shared {
    /// Runs `f` on the current mapping, if there is one.
    #[inline]
    fn with_mapping<T>(&self, f: impl FnOnce(&Mapping) -> T) -> Option<T> {
        let version = self.version.load(Ordering::Acquire);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(i) = cache.iter().position(|(id, _, _)| *id == self.id) {
                if cache[i].1 != version {
                    let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
                    cache[i] = (self.id, cur.0, cur.1.clone());
                }
                return cache[i].2.as_deref().map(f);
            }
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let entry = (self.id, cur.0, cur.1.clone());
            drop(cur);
            if cache.len() >= CACHED {
                cache.remove(0);
            }
            cache.push(entry);
            cache.last().and_then(|e| e.2.as_deref()).map(f)
        })
    }

    /// A uniform number in [0, 1).
    fn coin(&self) -> f64 {
        let mut z = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One look at the page: re-open it if the file changed or was superseded, and decide
    /// whether it is healthy. Returns the error of a file that exists but cannot be used.
    fn refresh(&self) -> Result<(), Error> {
        let path = &self.opts.page_path;
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        let on_disk = std::fs::metadata(path);
        let replaced = match (&current, &on_disk) {
            (None, Ok(_)) => true,
            (Some(m), Ok(meta)) => {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino()) != (m.dev, m.ino)
                    || m.read(|m| m.header()).map(|h| h.status) == Some(page::STATUS_SUPERSEDED)
            }
            (_, Err(_)) => false,
        };
        let mut result = Ok(());
        let mapping = if replaced {
            match Mapping::open(path) {
                Ok(m) => {
                    let m = Arc::new(m);
                    let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
                    cur.0 += 1;
                    cur.1 = Some(m.clone());
                    self.version.store(cur.0, Ordering::Release);
                    Some(m)
                }
                Err(e) => {
                    result = Err(e);
                    current
                }
            }
        } else {
            if let Err(e) = on_disk {
                if e.kind() != std::io::ErrorKind::NotFound {
                    result = Err(Error::Io(path.clone(), e));
                }
            }
            current
        };
        let healthy = mapping.as_ref().is_some_and(|m| {
            m.read(|m| m.header()).is_some_and(|h| {
                h.status == page::STATUS_RUNNING
                    && unix_ns().saturating_sub(h.updated_unix_ns)
                        <= self.opts.stale_after.as_nanos() as u64
            })
        });
        self.healthy.store(healthy, Ordering::Release);
        result
    }
}

/// A reader of the state page. Cheap to share between threads (`&Client` is enough).
pub struct Client {
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
}

impl Client {
    /// Maps the page and starts the background check. A missing page is not an error (the
    /// client fails open until the agent writes one); a page that exists but cannot be read
    /// (permission denied) or is not a state page is.
    pub fn open(opts: Options) -> Result<Client, Error> {
        let shared = Arc::new(Shared {
            opts,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            healthy: AtomicBool::new(false),
            version: AtomicU64::new(0),
            current: Mutex::new((0, None)),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            seed: AtomicU64::new(unix_ns() ^ u64::from(std::process::id()) << 32),
        });
        shared.refresh()?;
        let bg = shared.clone();
        let refresher = std::thread::Builder::new()
            .name("steadfast-page".into())
            .spawn(move || loop {
                let stop = bg.stop.lock().unwrap_or_else(|e| e.into_inner());
                let (stop, _) = bg
                    .wake
                    .wait_timeout(stop, CHECK_INTERVAL)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
                drop(stop);
                let _ = bg.refresh();
            })
            .map_err(|e| Error::Io(PathBuf::from("(thread)"), e))?;
        Ok(Client {
            shared,
            refresher: Some(refresher),
        })
    }

    /// Whether to make a call guarded by `breaker`: Admit -> true, Shed -> false, Probe ->
    /// true with probability `admit_ratio`. True for an unknown breaker and whenever the client
    /// fails open. A few nanoseconds, no syscall, no allocation.
    #[inline]
    pub fn allow(&self, breaker: &str) -> bool {
        if !self.shared.healthy.load(Ordering::Acquire) {
            return true;
        }
        let read = self.shared.with_mapping(|m| {
            let o = *m.breakers.get(breaker)?;
            m.read(|m| m.state_value(o))
        });
        match read.flatten() {
            Some((2, _)) => false,
            Some((1, ratio)) => self.shared.coin() < ratio,
            _ => true,
        }
    }

    /// A breaker's state; None for an unknown breaker or when failing open (treat it as Admit).
    pub fn breaker(&self, name: &str) -> Option<BreakerState> {
        if !self.healthy() {
            return None;
        }
        self.shared
            .with_mapping(|m| {
                let o = *m.breakers.get(name)?;
                m.read(|m| (m.slot(o), m.header().index))
                    .map(|(raw, index)| breaker_from(raw, index))
            })
            .flatten()
    }

    /// A signal's level in [0, 1]; None for an unknown signal or when failing open (treat it
    /// as 0).
    #[inline]
    pub fn signal(&self, name: &str) -> Option<f64> {
        if !self.shared.healthy.load(Ordering::Acquire) {
            return None;
        }
        self.shared
            .with_mapping(|m| {
                let o = *m.signals.get(name)?;
                m.read(|m| m.state_value(o).1)
            })
            .flatten()
    }

    /// Every breaker and signal, read in one consistent copy; None when failing open.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if !self.healthy() {
            return None;
        }
        self.shared
            .with_mapping(|m| {
                m.read(|m| {
                    let index = m.header().index;
                    let mut snap = Snapshot {
                        index,
                        ..Snapshot::default()
                    };
                    for (name, o, is_breaker) in &m.slots {
                        let raw = m.slot(*o);
                        if *is_breaker {
                            snap.breakers
                                .insert(name.to_string(), breaker_from(raw, index));
                        } else {
                            snap.signals.insert(name.to_string(), signal_from(raw));
                        }
                    }
                    snap
                })
            })
            .flatten()
    }

    /// True while the page is there, says running, and is fresher than `stale_after`.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// The agent's pid and the page's generation, if a page is mapped.
    pub fn page_info(&self) -> Option<(u32, u64)> {
        self.shared.with_mapping(|m| (m.pid, m.generation))
    }

    /// Follows the snapshot over the API socket with blocking queries (a background thread):
    /// one snapshot now, then one per change. It reconnects after errors and agent restarts.
    pub fn watch(&self) -> Watch {
        Watch::start(self.shared.opts.api_socket.clone())
    }

    /// Stops the background thread (also done on drop).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;

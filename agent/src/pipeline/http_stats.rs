//! HTTP/1.x request metrics from socket I/O events: one state machine per tracked connection
//! (tgid, fd) finds the request line in the bytes the requester writes and the status line in
//! the bytes the responder writes, and times the request from the first byte of the request
//! to the status line (server side: first byte read to status line written; client side:
//! first byte written to status line read).
//!
//! The kernel sends the first [`HTTP_CAPTURE`] bytes of every read and write on a tracked
//! socket; a request or status line split over many small reads or writes is reassembled
//! here until it can be decided. What is counted, and what is not:
//! - a request is counted once its status line is seen; interim `1xx` answers (`100
//!   Continue`) are not the end of it, `101 Switching Protocols` is (and the connection is
//!   ignored from then on, like one that opened with the HTTP/2 preface);
//! - bytes that do not start with a method and a space (`_OTHER`: 1 to 15 capital letters,
//!   a space, then `/` or `*`) are not a request, and whatever answers them is not counted;
//! - a request whose connection is closed (or whose process exits) before a status line is
//!   counted in `unanswered`, not as a request;
//! - pipelined requests (several in one read): the server writes one final status line per
//!   request, each at the start of a write, so after a request is answered every further final
//!   status line the server writes before its next request is read counts as one more request
//!   of that read, with that read's first method and start (the kernel captures the start of
//!   each read only, so the later request lines themselves are not seen). On the client side,
//!   responses that arrive in the middle of a read are not seen: a client that pipelines counts
//!   the requests whose status line starts a read;
//! - bodies are not parsed, so a body that is read after the response was written and starts
//!   like a request would count.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use agent_common::http::{
    HttpEvent, HTTP_CAPTURE, HTTP_EV_ACCEPT, HTTP_EV_CLOSE, HTTP_EV_CONNECT, HTTP_EV_READ,
    HTTP_EV_WRITE, HTTP_ROLE_CLIENT,
};

use super::{
    histogram::{self, Bounds},
    peers::PeerLabels,
    services::ServiceId,
};

/// Upper bounds (seconds) of the duration buckets: OpenTelemetry's recommendation for
/// `http.server.request.duration` and `http.client.request.duration`, plus 0.2 so that the
/// most common latency objective ("under 200 ms") is a bucket bound a rule can name.
pub const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `method` label values: the nine standard methods, or `_OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

const METHODS: [(&[u8], Method); 9] = [
    (b"GET", Method::Get),
    (b"HEAD", Method::Head),
    (b"POST", Method::Post),
    (b"PUT", Method::Put),
    (b"DELETE", Method::Delete),
    (b"CONNECT", Method::Connect),
    (b"OPTIONS", Method::Options),
    (b"TRACE", Method::Trace),
    (b"PATCH", Method::Patch),
];

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => "_OTHER",
        }
    }
}

/// Which end of the connection the process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Server,
    Client,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// The HTTP duration buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpBounds;

impl Bounds for HttpBounds {
    const BOUNDS: &'static [f64] = &BUCKETS;
}

/// An HTTP request duration histogram over [`BUCKETS`].
pub type Histogram = histogram::Histogram<HttpBounds>;

/// What a prefix of bytes is, as far as it can be told yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict<T> {
    Is(T),
    Undecided,
    Not,
}

/// A request line's start: a method and a space (the HTTP/2 preface apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestStart {
    Http1(Method),
    Http2Preface,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
const MAX_OTHER_METHOD: usize = 15;

fn request_start(b: &[u8]) -> Verdict<RequestStart> {
    let n = b.len().min(H2_PREFACE.len());
    if b[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Is(RequestStart::Http2Preface)
        } else {
            Verdict::Undecided
        };
    }
    for (name, m) in METHODS {
        if b.len() > name.len() && b.starts_with(name) && b[name.len()] == b' ' {
            return Verdict::Is(RequestStart::Http1(m));
        }
    }
    // `_OTHER`: capital letters, a space, then an origin-form or asterisk target.
    let token = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    if token == 0 || token > MAX_OTHER_METHOD {
        return Verdict::Not;
    }
    match (b.get(token), b.get(token + 1)) {
        (None, _) => Verdict::Undecided,
        (Some(b' '), None) => Verdict::Undecided,
        (Some(b' '), Some(b'/' | b'*')) => Verdict::Is(RequestStart::Http1(Method::Other)),
        _ => Verdict::Not,
    }
}

/// A status line's start: `HTTP/1.x NNN`.
fn status_start(b: &[u8]) -> Verdict<u16> {
    const SHAPE: &[u8] = b"HTTP/1.x NNN";
    for (i, (&c, &s)) in b.iter().zip(SHAPE).enumerate() {
        let ok = match s {
            b'x' | b'N' => c.is_ascii_digit(),
            _ => c == s,
        };
        if !ok || (i == 9 && c == b'0') {
            return Verdict::Not;
        }
    }
    if b.len() < SHAPE.len() {
        return Verdict::Undecided;
    }
    let code = b[9..12]
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    Verdict::Is(code)
}

/// Bytes gathered while a line's start is undecided (at most [`HTTP_CAPTURE`], inline: one
/// event per read or write must not cost an allocation).
#[derive(Debug, Clone, Copy)]
struct Prefix {
    buf: [u8; HTTP_CAPTURE],
    len: u8,
    /// The previous piece was captured whole: the next one continues it.
    open: bool,
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix {
            buf: [0; HTTP_CAPTURE],
            len: 0,
            open: false,
        }
    }
}

impl Prefix {
    fn start(ev: &HttpEvent) -> Prefix {
        let mut p = Prefix::default();
        p.push(ev);
        p
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, ev: &HttpEvent) {
        let have = usize::from(self.len);
        let room = HTTP_CAPTURE.saturating_sub(have);
        let b = ev.bytes();
        let n = b.len().min(room);
        self.buf[have..have + n].copy_from_slice(&b[..n]);
        self.len = (have + n) as u8;
        self.open = ev.captured == ev.len && have + n < HTTP_CAPTURE;
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for the first bytes of a request.
    Idle,
    /// A request may be starting at `start_ns`.
    Request { start_ns: u64, prefix: Prefix },
    /// A request is in flight; its status line may be starting (`prefix` non-empty).
    Pending {
        start_ns: u64,
        method: Method,
        prefix: Prefix,
        /// The request line's first bytes (its target, for spans).
        line: Prefix,
    },
    /// The last request was answered; the read it came in may have held more (pipelined)
    /// requests, each answered by one more final status line from the responder.
    Answered {
        start_ns: u64,
        method: Method,
        prefix: Prefix,
    },
    /// Bytes that are not a request: ignore until the other side speaks.
    Skip,
    /// HTTP/2 or an upgraded connection: ignored from now on.
    Ignored,
}

#[derive(Debug, Clone)]
struct Conn {
    side: Side,
    peer: Option<SocketAddr>,
    state: State,
}

/// A finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub side: Side,
    pub method: Method,
    pub status: u16,
    pub start_ns: u64,
    pub end_ns: u64,
    /// What the kernel captured of the request target (spans only; never a label).
    pub target: Target,
    /// The remote end, when the agent saw the connect (or an accept that asked for it).
    pub peer: Option<SocketAddr>,
}

/// The start of a request's target, as far as the captured bytes hold it: at most
/// [`HTTP_CAPTURE`] bytes of the request line, less the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    bytes: [u8; HTTP_CAPTURE],
    len: u8,
    /// The target went on past the captured bytes.
    cut: bool,
}

impl Target {
    /// The target of a request line's first bytes: after the method and its space, up to a
    /// space, a line end or the bytes' end.
    pub fn of_line(line: &[u8]) -> Target {
        let mut t = Target {
            bytes: [0; HTTP_CAPTURE],
            len: 0,
            cut: false,
        };
        let Some(space) = line.iter().position(|&c| c == b' ') else {
            return t;
        };
        let rest = &line[space + 1..];
        let end = rest
            .iter()
            .position(|&c| matches!(c, b' ' | b'\r' | b'\n'))
            .unwrap_or(rest.len());
        t.cut = end == rest.len();
        let n = end.min(HTTP_CAPTURE);
        t.bytes[..n].copy_from_slice(&rest[..n]);
        t.len = n as u8;
        t
    }

    /// The path: the target without its query, as text (`None` when none was captured).
    /// A path the capture cut short ends in `...`.
    pub fn path(&self) -> Option<String> {
        let b = &self.bytes[..usize::from(self.len)];
        let (b, cut) = match b.iter().position(|&c| c == b'?') {
            Some(q) => (&b[..q], false),
            None => (b, self.cut),
        };
        if b.is_empty() {
            return None;
        }
        let mut s = String::from_utf8_lossy(b).into_owned();
        if cut {
            s.push_str("...");
        }
        Some(s)
    }
}

/// What one event did to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    Request(Done),
    /// A request was in flight when its connection ended.
    Unanswered(Side),
}

impl Conn {
    fn new(side: Side, peer: Option<SocketAddr>) -> Conn {
        Conn {
            side,
            peer,
            state: State::Idle,
        }
    }

    fn in_flight(&self) -> bool {
        matches!(self.state, State::Pending { .. })
    }

    /// Bytes the requester sent (`request == true`) or the responder sent.
    fn on_bytes(&mut self, ev: &HttpEvent, request: bool) -> Outcome {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (next, out) = match (state, request) {
            (State::Ignored, _) => (State::Ignored, Outcome::Nothing),
            (State::Idle, true) => self.decide_request(ev.timestamp_ns, Prefix::start(ev)),
            // A new request (bytes that are not one are skipped, as on an idle connection:
            // the rest of a pipelined batch larger than the server's read is not told from
            // garbage).
            (State::Answered { .. }, true) => {
                self.decide_request(ev.timestamp_ns, Prefix::start(ev))
            }
            // The responder again: the next pipelined request's status line, or more of the
            // last answer (its body).
            (
                State::Answered {
                    start_ns,
                    method,
                    mut prefix,
                },
                false,
            ) => {
                if prefix.is_empty() || prefix.open {
                    prefix.push(ev);
                    // A pipelined request's own line was not told apart: no target.
                    let line = Prefix::default();
                    match self.decide_status(start_ns, method, prefix, line, ev.timestamp_ns) {
                        // Not a status line: a body; the next write may start one.
                        (State::Skip, out) => (
                            State::Answered {
                                start_ns,
                                method,
                                prefix: Prefix::default(),
                            },
                            out,
                        ),
                        // A status line still undecided (kept), or an interim answer (the
                        // next request's `100 Continue`, prefix empty).
                        (State::Pending { prefix, .. }, out) => (
                            State::Answered {
                                start_ns,
                                method,
                                prefix,
                            },
                            out,
                        ),
                        other => other,
                    }
                } else {
                    (
                        State::Answered {
                            start_ns,
                            method,
                            prefix: Prefix::default(),
                        },
                        Outcome::Nothing,
                    )
                }
            }
            (
                State::Request {
                    start_ns,
                    mut prefix,
                },
                true,
            ) => {
                if prefix.open {
                    prefix.push(ev);
                    self.decide_request(start_ns, prefix)
                } else {
                    (State::Skip, Outcome::Nothing)
                }
            }
            // More of the request line (kept for its target), its body, or more garbage.
            (
                State::Pending {
                    start_ns,
                    method,
                    prefix,
                    mut line,
                },
                true,
            ) => {
                if line.open {
                    line.push(ev);
                }
                (
                    State::Pending {
                        start_ns,
                        method,
                        prefix,
                        line,
                    },
                    Outcome::Nothing,
                )
            }
            (State::Skip, true) => (State::Skip, Outcome::Nothing),
            // The other side spoke before a request was recognised: start again.
            (State::Idle | State::Request { .. } | State::Skip, false) => {
                (State::Idle, Outcome::Nothing)
            }
            (
                State::Pending {
                    start_ns,
                    method,
                    mut prefix,
                    line,
                },
                false,
            ) => {
                if prefix.is_empty() || prefix.open {
                    prefix.push(ev);
                    self.decide_status(start_ns, method, prefix, line, ev.timestamp_ns)
                } else {
                    (State::Skip, Outcome::Nothing)
                }
            }
        };
        self.state = next;
        out
    }

    fn decide_request(&self, start_ns: u64, prefix: Prefix) -> (State, Outcome) {
        let next = match request_start(prefix.bytes()) {
            Verdict::Is(RequestStart::Http1(method)) => State::Pending {
                start_ns,
                method,
                prefix: Prefix::default(),
                line: prefix,
            },
            Verdict::Is(RequestStart::Http2Preface) => State::Ignored,
            Verdict::Undecided if prefix.open => State::Request { start_ns, prefix },
            Verdict::Undecided | Verdict::Not => State::Skip,
        };
        (next, Outcome::Nothing)
    }

    fn decide_status(
        &self,
        start_ns: u64,
        method: Method,
        prefix: Prefix,
        line: Prefix,
        now_ns: u64,
    ) -> (State, Outcome) {
        match status_start(prefix.bytes()) {
            // Interim answers: the final status comes later.
            Verdict::Is(code) if (100..200).contains(&code) && code != 101 => (
                State::Pending {
                    start_ns,
                    method,
                    prefix: Prefix::default(),
                    line,
                },
                Outcome::Nothing,
            ),
            Verdict::Is(status) => {
                let done = Done {
                    side: self.side,
                    method,
                    status,
                    start_ns,
                    end_ns: now_ns,
                    target: Target::of_line(line.bytes()),
                    peer: self.peer,
                };
                let next = if status == 101 {
                    State::Ignored
                } else {
                    State::Answered {
                        start_ns,
                        method,
                        prefix: Prefix::default(),
                    }
                };
                (next, Outcome::Request(done))
            }
            Verdict::Undecided if prefix.open => (
                State::Pending {
                    start_ns,
                    method,
                    prefix,
                    line,
                },
                Outcome::Nothing,
            ),
            // Not an HTTP/1 answer: the request is dropped without being counted.
            Verdict::Undecided | Verdict::Not => (State::Skip, Outcome::Nothing),
        }
    }
}

/// Hashes a connection key (tgid, fd) with a rotate, a xor and a multiply per word (the
/// scheme of rustc's FxHasher): every socket read and write looks its connection up, and
/// SipHash would be most of that lookup. Both words are chosen by the kernel (a tgid, the
/// lowest free fd), and the table is bounded by `max_connections`.
#[derive(Debug, Default, Clone, Copy)]
struct ConnHasher(u64);

impl std::hash::Hasher for ConnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type ConnMap = HashMap<(u32, u32), Conn, std::hash::BuildHasherDefault<ConnHasher>>;

/// Per-connection state machines and the resulting series.
#[derive(Debug)]
pub struct HttpStats {
    conns: ConnMap,
    max_connections: usize,
    server: BTreeMap<(ServiceId, Method, u16), Histogram>,
    client: BTreeMap<(ServiceId, String, Method, u16), Histogram>,
    unanswered: BTreeMap<(ServiceId, Side), u64>,
    peers: PeerLabels,
    evicted: u64,
}

/// `peer` label of requests on connections whose connect the agent did not see.
pub const UNKNOWN_PEER: &str = "unknown";
pub use super::peers::OTHER_PEER;

impl HttpStats {
    pub fn new(max_connections: usize, max_peers: usize) -> Self {
        Self {
            conns: ConnMap::default(),
            max_connections: max_connections.max(1),
            server: BTreeMap::new(),
            client: BTreeMap::new(),
            unanswered: BTreeMap::new(),
            peers: PeerLabels::new(max_peers),
            evicted: 0,
        }
    }

    /// Applies one event; `service_of` names the process when a request is counted.
    /// Returns the finished request, if any (for spans).
    pub fn on_event(
        &mut self,
        ev: &HttpEvent,
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) -> Option<(Done, ServiceId)> {
        let key = (ev.tgid, ev.fd);
        let side = if ev.role == HTTP_ROLE_CLIENT {
            Side::Client
        } else {
            Side::Server
        };
        let outcome = match ev.kind {
            HTTP_EV_CONNECT | HTTP_EV_ACCEPT => {
                // The remote end: the server for a client, the client for a server (when
                // the accept asked for its address).
                let peer = peer_of(ev);
                let old = self.conns.remove(&key);
                self.insert(key, Conn::new(side, peer));
                match old {
                    Some(c) if c.in_flight() => Outcome::Unanswered(c.side),
                    _ => Outcome::Nothing,
                }
            }
            HTTP_EV_CLOSE => match self.conns.remove(&key) {
                Some(c) if c.in_flight() => Outcome::Unanswered(c.side),
                _ => Outcome::Nothing,
            },
            HTTP_EV_READ | HTTP_EV_WRITE => {
                if !self.conns.contains_key(&key) {
                    // Its accept or connect event was lost, or its state evicted.
                    self.insert(key, Conn::new(side, None));
                }
                let conn = self.conns.get_mut(&key)?;
                // The requester writes the request: a server reads it, a client writes it.
                let request = (ev.kind == HTTP_EV_READ) == (conn.side == Side::Server);
                conn.on_bytes(ev, request)
            }
            _ => Outcome::Nothing,
        };
        match outcome {
            Outcome::Nothing => None,
            Outcome::Unanswered(side) => {
                *self
                    .unanswered
                    .entry((service_of(ev.tgid), side))
                    .or_default() += 1;
                None
            }
            Outcome::Request(done) => {
                let service = service_of(ev.tgid);
                let seconds = done.end_ns.saturating_sub(done.start_ns) as f64 / 1e9;
                match done.side {
                    Side::Server => self
                        .server
                        .entry((service, done.method, done.status))
                        .or_default()
                        .observe(seconds),
                    Side::Client => {
                        let peer = self.conns.get(&key).and_then(|c| c.peer);
                        let label = self.peer_label(peer);
                        self.client
                            .entry((service, label, done.method, done.status))
                            .or_default()
                            .observe(seconds)
                    }
                }
                Some((done, service))
            }
        }
    }

    fn insert(&mut self, key: (u32, u32), conn: Conn) {
        if self.conns.len() >= self.max_connections {
            if let Some(&victim) = self.conns.keys().next() {
                self.conns.remove(&victim);
                self.evicted += 1;
            }
        }
        self.conns.insert(key, conn);
    }

    fn peer_label(&mut self, peer: Option<SocketAddr>) -> String {
        let Some(peer) = peer else {
            return UNKNOWN_PEER.into();
        };
        self.peers.label(peer)
    }

    /// The process exited: its connections end (requests in flight are unanswered).
    pub fn forget(&mut self, tgid: u32, service_of: impl FnOnce() -> ServiceId) {
        let mut lost = BTreeMap::new();
        self.conns.retain(|&(t, _), c| {
            if t != tgid {
                return true;
            }
            if c.in_flight() {
                *lost.entry(c.side).or_insert(0u64) += 1;
            }
            false
        });
        if lost.is_empty() {
            return;
        }
        let service = service_of();
        for (side, n) in lost {
            *self.unanswered.entry((service, side)).or_default() += n;
        }
    }

    /// Drops every series of a released service (its ids are never reused).
    pub fn release(&mut self, service: ServiceId) {
        self.server.retain(|k, _| k.0 != service);
        self.client.retain(|k, _| k.0 != service);
        self.unanswered.retain(|k, _| k.0 != service);
    }

    pub fn server(&self) -> &BTreeMap<(ServiceId, Method, u16), Histogram> {
        &self.server
    }

    pub fn client(&self) -> &BTreeMap<(ServiceId, String, Method, u16), Histogram> {
        &self.client
    }

    pub fn unanswered(&self) -> &BTreeMap<(ServiceId, Side), u64> {
        &self.unanswered
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

fn peer_of(ev: &HttpEvent) -> Option<SocketAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let ip = match ev.family {
        AF_INET6 => {
            let v6 = Ipv6Addr::from(ev.addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        AF_INET => IpAddr::V4(Ipv4Addr::new(
            ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
        )),
        _ => return None,
    };
    Some(SocketAddr::new(ip, ev.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::http::HTTP_ROLE_SERVER;

    fn io(kind: u32, role: u32, ts: u64, bytes: &[u8]) -> HttpEvent {
        let mut ev = HttpEvent {
            timestamp_ns: ts,
            tgid: 7,
            fd: 4,
            kind,
            role,
            len: bytes.len() as u32,
            ..HttpEvent::default()
        };
        let n = bytes.len().min(HTTP_CAPTURE);
        ev.data[..n].copy_from_slice(&bytes[..n]);
        ev.captured = n as u32;
        ev
    }

    fn server_read(ts: u64, b: &[u8]) -> HttpEvent {
        io(HTTP_EV_READ, HTTP_ROLE_SERVER, ts, b)
    }
    fn server_write(ts: u64, b: &[u8]) -> HttpEvent {
        io(HTTP_EV_WRITE, HTTP_ROLE_SERVER, ts, b)
    }

    fn count(s: &HttpStats, m: Method, status: u16) -> u64 {
        s.server().get(&(1, m, status)).map_or(0, |h| h.count)
    }

    #[test]
    fn keep_alive_requests_are_each_counted_and_timed() {
        let mut s = HttpStats::new(16, 4);
        let svc = |_| 1;
        for i in 0..5u64 {
            let t = i * 1_000_000_000;
            s.on_event(&server_read(t, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"), svc);
            s.on_event(&server_write(t + 2_000_000, b"HTTP/1.1 200 OK\r\n"), svc);
            s.on_event(&server_write(t + 3_000_000, b"body body body"), svc);
        }
        s.on_event(&server_read(9, b"POST /x HTTP/1.1\r\n"), svc);
        s.on_event(&server_read(10, b"{\"body\": 1}"), svc);
        s.on_event(
            &server_write(400_000_009, b"HTTP/1.0 503 Service Unavailable"),
            svc,
        );
        assert_eq!(count(&s, Method::Get, 200), 5);
        assert_eq!(count(&s, Method::Post, 503), 1);
        let h = &s.server()[&(1, Method::Get, 200)];
        assert!((h.sum_seconds - 0.010).abs() < 1e-9);
        assert_eq!(h.counts[0], 5, "2 ms is in the first bucket");
        let h = &s.server()[&(1, Method::Post, 503)];
        assert_eq!(h.buckets()[8], (0.5, 1), "400 ms is in (0.25, 0.5]");
    }

    /// What the kernel captures of a transfer of `len` > [`HTTP_CAPTURE`] bytes whose first
    /// bytes are `bytes` and then a NUL: the string read stops there, the NUL included.
    fn cut_at_nul(kind: u32, ts: u64, bytes: &[u8], len: u32) -> HttpEvent {
        let mut ev = io(kind, HTTP_ROLE_SERVER, ts, bytes);
        ev.data[bytes.len()] = 0;
        ev.captured = bytes.len() as u32 + 1;
        ev.len = len;
        ev
    }

    #[test]
    fn a_capture_cut_at_a_nul_byte_is_decided_at_once() {
        let mut s = HttpStats::new(16, 4);
        let svc = |_| 1;
        // Not a request: whatever answers it is not counted, and nothing waits for more.
        s.on_event(&cut_at_nul(HTTP_EV_READ, 1, b"\x16\x03\x01", 300), svc);
        s.on_event(&server_write(2, b"HTTP/1.1 400 Bad Request\r\n"), svc);
        assert!(s.server().is_empty());
        // A status line that stops at a NUL is decided at once: not a status line (the
        // answer is not HTTP, the request is not counted), and the next write does not
        // complete it ...
        s.on_event(&server_read(10, b"GET /a HTTP/1.1\r\n\r\n"), svc);
        s.on_event(&cut_at_nul(HTTP_EV_WRITE, 11, b"HTTP/1.1 2", 300), svc);
        s.on_event(&server_write(12, b"00 OK\r\n"), svc);
        assert!(s.server().is_empty());
        // ... as it does when the first piece was the whole write.
        s.on_event(&server_read(20, b"GET /a HTTP/1.1\r\n\r\n"), svc);
        s.on_event(&server_write(21, b"HTTP/1.1 2"), svc);
        s.on_event(&server_write(22, b"00 OK\r\n"), svc);
        assert_eq!(count(&s, Method::Get, 200), 1);
        assert_eq!(s.server().len(), 1);
    }

    #[test]
    fn lines_split_into_single_bytes() {
        let mut s = HttpStats::new(16, 4);
        let svc = |_| 1;
        for (i, b) in b"DELETE /a HTTP/1.1\r\n\r\n".iter().enumerate() {
            s.on_event(&server_read(100 + i as u64, &[*b]), svc);
        }
        let mut done = None;
        for (i, b) in b"HTTP/1.1 204 No Content\r\n".iter().enumerate() {
            done = done.or(s.on_event(&server_write(1000 + i as u64, &[*b]), svc));
        }
        assert_eq!(count(&s, Method::Delete, 204), 1);
        let (done, _) = done.expect("the request ended");
        assert_eq!(done.target.path().as_deref(), Some("/a"));
        let h = &s.server()[&(1, Method::Delete, 204)];
        // From the first byte read (100) to the byte completing "HTTP/1.1 204" (1011).
        assert!((h.sum_seconds - 911e-9).abs() < 1e-12, "{}", h.sum_seconds);
    }

    #[test]
    fn targets_lose_their_query_and_say_when_cut() {
        let path = |line: &[u8]| Target::of_line(line).path();
        assert_eq!(path(b"GET /a/b?secret=1 HTTP/1.1\r\n"), Some("/a/b".into()));
        assert_eq!(path(b"POST /x HTTP/1.1"), Some("/x".into()));
        assert_eq!(
            path(b"GET /a-very-long-path-that-goes-"),
            Some("/a-very-long-path-that-goes-...".into())
        );
        assert_eq!(
            path(b"GET /long?query-cut-by-the-captu"),
            Some("/long".into())
        );
        assert_eq!(path(b"OPTIONS * HTTP/1.1"), Some("*".into()));
        assert_eq!(path(b"GET "), None);
    }

    #[test]
    fn garbage_http2_and_interim_answers() {
        let mut s = HttpStats::new(16, 4);
        let svc = |_| 1;
        // Garbage, answered with a 400: neither is counted.
        s.on_event(&server_read(1, b"\x16\x03\x01\x02\x00garbage"), svc);
        s.on_event(&server_write(2, b"HTTP/1.1 400 Bad Request\r\n"), svc);
        s.on_event(&server_read(3, b"hello world\r\n"), svc);
        s.on_event(&server_write(4, b"HTTP/1.1 400 Bad Request\r\n"), svc);
        // Lower-case or unknown shapes are not methods.
        s.on_event(&server_read(5, b"FOO bar\r\n"), svc);
        s.on_event(&server_write(6, b"HTTP/1.1 400 Bad Request\r\n"), svc);
        assert!(s.server().is_empty());
        // A real request after the garbage is.
        s.on_event(&server_read(7, b"PURGE /cache HTTP/1.1\r\n"), svc);
        s.on_event(&server_write(8, b"HTTP/1.1 100 Continue\r\n\r\n"), svc);
        s.on_event(&server_read(9, b"body"), svc);
        s.on_event(&server_write(10, b"HTTP/1.1 201 Created\r\n"), svc);
        assert_eq!(count(&s, Method::Other, 201), 1);
        assert_eq!(count(&s, Method::Other, 100), 0);
        // HTTP/2 with prior knowledge: ignored for good, even bytes that look like HTTP/1.
        let mut h2 = HttpStats::new(16, 4);
        h2.on_event(&server_read(1, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), svc);
        h2.on_event(&server_write(2, b"HTTP/1.1 200 OK"), svc);
        h2.on_event(&server_read(3, b"GET / HTTP/1.1\r\n"), svc);
        h2.on_event(&server_write(4, b"HTTP/1.1 200 OK"), svc);
        assert!(h2.server().is_empty());
    }

    #[test]
    fn closed_mid_request_is_unanswered_and_client_peers_are_bounded() {
        let mut s = HttpStats::new(16, 1);
        let svc = |_| 1;
        s.on_event(&server_read(1, b"GET / HTTP/1.1\r\n"), svc);
        s.on_event(&io(HTTP_EV_CLOSE, HTTP_ROLE_SERVER, 2, b""), svc);
        assert!(s.server().is_empty());
        assert_eq!(s.unanswered()[&(1, Side::Server)], 1);
        assert_eq!(s.connections(), 0);

        for (fd, port) in [(5u32, 8080u16), (6, 8081)] {
            let mut c = io(HTTP_EV_CONNECT, HTTP_ROLE_CLIENT, 10, b"");
            c.fd = fd;
            c.family = 2;
            c.port = port;
            c.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
            s.on_event(&c, svc);
            let mut w = io(HTTP_EV_WRITE, HTTP_ROLE_CLIENT, 11, b"HEAD / HTTP/1.1\r\n");
            w.fd = fd;
            s.on_event(&w, svc);
            let mut r = io(HTTP_EV_READ, HTTP_ROLE_CLIENT, 20, b"HTTP/1.1 200 OK\r\n");
            r.fd = fd;
            s.on_event(&r, svc);
        }
        let peers: Vec<_> = s.client().keys().map(|k| k.1.clone()).collect();
        assert_eq!(peers, vec!["127.0.0.1:8080".to_string(), "other".into()]);
    }

    #[test]
    fn pipelined_requests_count_one_per_final_status_line() {
        let mut s = HttpStats::new(16, 4);
        let svc = |_| 1;
        // Three requests in one read; three answers, each a status line then a body.
        s.on_event(
            &server_read(
                100,
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n",
            ),
            svc,
        );
        for (i, status) in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 503 X\r\n",
        ]
        .into_iter()
        .enumerate()
        {
            let t = 200 + 10 * i as u64;
            s.on_event(&server_write(t, status), svc);
            s.on_event(&server_write(t + 1, b"xxxxxxxx"), svc);
        }
        assert_eq!(count(&s, Method::Get, 200), 2);
        assert_eq!(count(&s, Method::Get, 503), 1);
        // Timed from the read that brought them all.
        let h = &s.server()[&(1, Method::Get, 503)];
        assert!((h.sum_seconds - 120e-9).abs() < 1e-12, "{}", h.sum_seconds);
        // Garbage after an answered request is not a request, and its 400 is not counted.
        s.on_event(&server_read(300, b"hello\r\n\r\n"), svc);
        s.on_event(&server_write(301, b"HTTP/1.1 400 Bad Request\r\n"), svc);
        assert_eq!(s.server().values().map(|h| h.count).sum::<u64>(), 3);
        // A next request on the same connection, its status line one byte per write.
        s.on_event(&server_read(400, b"HEAD / HTTP/1.1\r\n\r\n"), svc);
        for (i, b) in b"HTTP/1.1 204 No Content\r\n".iter().enumerate() {
            s.on_event(&server_write(500 + i as u64, &[*b]), svc);
        }
        assert_eq!(count(&s, Method::Head, 204), 1);
        assert_eq!(s.server().values().map(|h| h.count).sum::<u64>(), 4);
    }

    #[test]
    fn shapes() {
        assert_eq!(request_start(b"GE"), Verdict::Undecided);
        assert_eq!(request_start(b"GET"), Verdict::Undecided);
        assert_eq!(
            request_start(b"GET "),
            Verdict::Is(RequestStart::Http1(Method::Get))
        );
        assert_eq!(request_start(b"PRI * HTTP/2"), Verdict::Undecided);
        assert_eq!(request_start(b"get / HTTP/1.1"), Verdict::Not);
        assert_eq!(status_start(b"HTTP/1.1 2"), Verdict::Undecided);
        assert_eq!(status_start(b"HTTP/1.1 200"), Verdict::Is(200));
        assert_eq!(status_start(b"HTTP/2 200 "), Verdict::Not);
        assert_eq!(status_start(b"HTTP/1.1 099"), Verdict::Not);
    }
}

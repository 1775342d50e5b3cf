//! TCP connections (`probes.connections`): folds the connection events of the kernel into
//! `steadfast_tcp_connections_total{service, direction, peer, outcome}`, the outbound connect
//! durations and the open connections per (service, direction).
//!
//! What is counted. Every connection the kernel saw start (`SYN_SENT`, `SYN_RECV`) while the
//! agent ran counts at each of its two transitions at most: `established` when the handshake
//! completes, then how it ended: `closed` or `reset`; an outbound connect that never got
//! established counts once, as `refused` or `timeout`. So for one (service, direction, peer):
//! `established` = connections that got established, `closed + reset` = those of them that
//! ended (the rest are open), and `refused + timeout` = connects that failed.
//!
//! Open connections are held here by their sock pointer from `established` to their end (at
//! most `probes.connections.max_connections`; beyond, a new one is counted but not held, and
//! its end is attributed by its owner's tgid alone), so an end counts under the service,
//! direction and peer its `established` counted under, even once the process is gone; the
//! gauge is the number held per (service, direction).
//!
//! Events are the only source: one lost in a full ring buffer (counted in
//! `steadfast_events_lost_total{source="connections"}`) is missing from these counts; a lost
//! end leaves its connection held (open) until its sock pointer is reused by another
//! connection.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use agent_common::tcp::{
    ConnEvent, CONN_CLOSED, CONN_ESTABLISHED, CONN_INBOUND, CONN_REFUSED, CONN_RESET, CONN_TIMEOUT,
};

use super::{
    histogram::{self, Bounds},
    peers::PeerLabels,
    services::ServiceId,
    tcp_stats,
};

/// Upper bounds (seconds) of the connect duration buckets: from loopback (tens of µs) to the
/// SYN retransmits (1 s, 3 s, 7 s after the first SYN).
pub const CONNECT_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0,
];

pub use super::peers::OTHER_PEER;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Established,
    Refused,
    Timeout,
    Reset,
    Closed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::Closed => "closed",
        }
    }

    fn of(code: u16) -> Option<Outcome> {
        Some(match code {
            CONN_ESTABLISHED => Outcome::Established,
            CONN_REFUSED => Outcome::Refused,
            CONN_TIMEOUT => Outcome::Timeout,
            CONN_RESET => Outcome::Reset,
            CONN_CLOSED => Outcome::Closed,
            _ => return None,
        })
    }
}

/// The connect duration buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectBounds;

impl Bounds for ConnectBounds {
    const BOUNDS: &'static [f64] = &CONNECT_BUCKETS;
}

/// A connect duration histogram over [`CONNECT_BUCKETS`].
pub type ConnectHistogram = histogram::Histogram<ConnectBounds>;

/// An established connection, by sock pointer.
#[derive(Debug, Clone)]
struct Open {
    service: ServiceId,
    direction: Direction,
    peer: String,
}

#[derive(Debug, Default)]
pub struct ConnStats {
    totals: BTreeMap<(ServiceId, Direction, String, Outcome), u64>,
    durations: BTreeMap<(ServiceId, String), ConnectHistogram>,
    open: BTreeMap<(ServiceId, Direction), u64>,
    conns: HashMap<u64, Open>,
    max_connections: usize,
    untracked: u64,
    peers: PeerLabels,
    ports: Vec<u16>,
}

impl ConnStats {
    pub fn new(max_peers: usize, ports: Vec<u16>, max_connections: usize) -> Self {
        Self {
            peers: PeerLabels::new(max_peers),
            ports,
            max_connections,
            ..Self::default()
        }
    }

    /// Applies one event; `service_of` names its owner (called only for a counted event).
    pub fn on_event(&mut self, ev: &ConnEvent, service_of: impl FnMut(u32) -> ServiceId) {
        let Some(outcome) = Outcome::of(ev.outcome) else {
            return;
        };
        let (direction, addr) = if ev.direction == CONN_INBOUND {
            (
                Direction::Inbound,
                SocketAddr::new(tcp_stats::address(ev.family, ev.saddr), ev.sport),
            )
        } else {
            (
                Direction::Outbound,
                SocketAddr::new(tcp_stats::address(ev.family, ev.daddr), ev.dport),
            )
        };
        if !self.ports.is_empty() && !self.ports.contains(&addr.port()) {
            return;
        }
        let (service, peer) = match outcome {
            Outcome::Reset | Outcome::Closed => match self.conns.remove(&ev.sock) {
                Some(o) if o.direction == direction => {
                    if let Some(n) = self.open.get_mut(&(o.service, direction)) {
                        *n = n.saturating_sub(1);
                    }
                    (o.service, o.peer)
                }
                // Its `established` was lost, or it was not held.
                _ => (
                    tcp_stats::owner_service(ev.tgid, service_of),
                    self.peers.label(addr),
                ),
            },
            _ => (
                tcp_stats::owner_service(ev.tgid, service_of),
                self.peers.label(addr),
            ),
        };
        if outcome == Outcome::Established {
            if direction == Direction::Outbound {
                self.durations
                    .entry((service, peer.clone()))
                    .or_default()
                    .observe(ev.duration_ns as f64 / 1e9);
            }
            let open = Open {
                service,
                direction,
                peer: peer.clone(),
            };
            // A sock pointer still held belongs to a connection whose end was lost.
            if let Some(old) = self.conns.remove(&ev.sock) {
                if let Some(n) = self.open.get_mut(&(old.service, old.direction)) {
                    *n = n.saturating_sub(1);
                }
            }
            if self.conns.len() < self.max_connections {
                self.conns.insert(ev.sock, open);
                *self.open.entry((service, direction)).or_default() += 1;
            } else {
                self.untracked += 1;
            }
        }
        *self
            .totals
            .entry((service, direction, peer, outcome))
            .or_default() += 1;
    }

    /// Established connections not held because `max_connections` were (their ends count by
    /// owner, and they are missing from the open gauge).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Drops every series of a released service (its ids are never reused).
    pub fn release(&mut self, service: ServiceId) {
        self.totals.retain(|k, _| k.0 != service);
        self.durations.retain(|k, _| k.0 != service);
        self.open.retain(|k, _| k.0 != service);
        self.conns.retain(|_, o| o.service != service);
    }

    pub fn totals(&self) -> &BTreeMap<(ServiceId, Direction, String, Outcome), u64> {
        &self.totals
    }

    pub fn durations(&self) -> &BTreeMap<(ServiceId, String), ConnectHistogram> {
        &self.durations
    }

    pub fn open(&self) -> &BTreeMap<(ServiceId, Direction), u64> {
        &self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::tcp::{CONN_OUTBOUND, UNKNOWN_OWNER};

    fn ev(direction: u16, outcome: u16, remote: [u8; 4], dport: u16, sock: u64) -> ConnEvent {
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&remote);
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ConnEvent {
            tgid: 7,
            family: 2,
            direction,
            outcome,
            sport: 8080,
            dport,
            saddr,
            daddr,
            sock,
            ..ConnEvent::default()
        }
    }

    fn out(outcome: u16, ip: [u8; 4], port: u16, sock: u64, ms: u64) -> ConnEvent {
        ConnEvent {
            duration_ns: ms * 1_000_000,
            ..ev(CONN_OUTBOUND, outcome, ip, port, sock)
        }
    }

    fn key(
        svc: ServiceId,
        d: Direction,
        p: &str,
        o: Outcome,
    ) -> (ServiceId, Direction, String, Outcome) {
        (svc, d, p.to_string(), o)
    }

    #[test]
    fn outcomes_peers_durations_and_the_open_gauge() {
        let mut s = ConnStats::new(2, Vec::new(), 100);
        s.on_event(&out(CONN_ESTABLISHED, [10, 0, 0, 1], 80, 1, 60), |_| 5);
        s.on_event(&out(CONN_ESTABLISHED, [10, 0, 0, 1], 80, 2, 2), |_| 5);
        s.on_event(&out(CONN_REFUSED, [10, 0, 0, 2], 81, 3, 0), |_| 5);
        s.on_event(&out(CONN_TIMEOUT, [10, 0, 0, 3], 82, 4, 0), |_| 5);
        s.on_event(&out(CONN_CLOSED, [10, 0, 0, 1], 80, 1, 0), |_| 5);
        s.on_event(
            &ev(CONN_INBOUND, CONN_ESTABLISHED, [1, 2, 3, 4], 5555, 5),
            |_| 6,
        );
        let t = s.totals();
        assert_eq!(
            t[&key(5, Direction::Outbound, "10.0.0.1:80", Outcome::Established)],
            2
        );
        assert_eq!(
            t[&key(5, Direction::Outbound, "10.0.0.2:81", Outcome::Refused)],
            1
        );
        // The third distinct peer is past max_peers.
        assert_eq!(
            t[&key(5, Direction::Outbound, "other", Outcome::Timeout)],
            1
        );
        assert_eq!(
            t[&key(5, Direction::Outbound, "10.0.0.1:80", Outcome::Closed)],
            1
        );
        // Inbound: the local address and port (past max_peers too).
        assert_eq!(
            t[&key(6, Direction::Inbound, "other", Outcome::Established)],
            1
        );
        assert_eq!(s.open()[&(5, Direction::Outbound)], 1);
        assert_eq!(s.open()[&(6, Direction::Inbound)], 1);
        let h = &s.durations()[&(5, "10.0.0.1:80".to_string())];
        assert_eq!(h.count, 2);
        // 60 ms lands in (0.05, 0.075], 2 ms in (0.001, 0.0025].
        let b = h.buckets();
        assert_eq!(b.iter().find(|b| b.0 == 0.075).unwrap().1, 1);
        assert_eq!(b.iter().find(|b| b.0 == 0.0025).unwrap().1, 1);
        // An end whose `established` was never seen counts by owner, and leaves the gauge.
        s.on_event(&out(CONN_RESET, [10, 0, 0, 1], 80, 9, 0), |_| 5);
        assert_eq!(s.open()[&(5, Direction::Outbound)], 1);
        s.on_event(&out(CONN_RESET, [10, 0, 0, 1], 80, 2, 0), |_| 5);
        assert_eq!(s.open()[&(5, Direction::Outbound)], 0);
        assert_eq!(
            s.totals()[&key(5, Direction::Outbound, "10.0.0.1:80", Outcome::Reset)],
            2
        );
        // An end counts where its `established` did, without asking for the (gone) owner.
        s.on_event(
            &ev(CONN_INBOUND, CONN_CLOSED, [1, 2, 3, 4], 5555, 5),
            |_| panic!("the held connection names its service"),
        );
        assert_eq!(
            s.totals()[&key(6, Direction::Inbound, "other", Outcome::Closed)],
            1
        );
        assert_eq!(s.open()[&(6, Direction::Inbound)], 0);
        s.release(5);
        assert!(s.totals().keys().all(|k| k.0 != 5));
        assert!(s.open().keys().all(|k| k.0 != 5));
    }

    #[test]
    fn held_connections_are_bounded_and_a_reused_pointer_replaces_a_lost_end() {
        let mut s = ConnStats::new(10, Vec::new(), 1);
        s.on_event(&out(CONN_ESTABLISHED, [10, 0, 0, 1], 80, 1, 1), |_| 5);
        s.on_event(&out(CONN_ESTABLISHED, [10, 0, 0, 1], 80, 2, 1), |_| 5);
        assert_eq!(s.untracked(), 1);
        assert_eq!(s.open()[&(5, Direction::Outbound)], 1);
        // Sock 1's end was lost; the pointer comes back for a new connection.
        s.on_event(&out(CONN_ESTABLISHED, [10, 0, 0, 1], 80, 1, 1), |_| 5);
        assert_eq!(s.open()[&(5, Direction::Outbound)], 1);
        assert_eq!(
            s.totals()[&key(5, Direction::Outbound, "10.0.0.1:80", Outcome::Established)],
            3
        );
    }

    #[test]
    fn ports_filter_and_unknown_owner() {
        let mut s = ConnStats::new(10, vec![443], 100);
        let mut e = out(CONN_ESTABLISHED, [10, 0, 0, 1], 80, 1, 1);
        s.on_event(&e, |_| 5);
        assert!(s.totals().is_empty(), "port 80 is not in the allow-list");
        e.dport = 443;
        e.tgid = UNKNOWN_OWNER;
        s.on_event(&e, |_| panic!("no owner to name"));
        assert_eq!(s.totals().len(), 1);
        assert_eq!(
            s.totals().keys().next().unwrap().0,
            super::super::services::UNKNOWN
        );
        // Inbound connections are filtered by their local port (8080 here).
        s.on_event(
            &ev(CONN_INBOUND, CONN_ESTABLISHED, [10, 0, 0, 1], 443, 2),
            |_| 5,
        );
        assert_eq!(s.totals().len(), 1, "local port 8080 is not in the list");
    }
}

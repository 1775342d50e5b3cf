//! TCP retransmits: folds the in-kernel per-owner counts (cumulative per tgid) into cumulative
//! counts per (service, kind), counting every retransmit once (each key's last value is
//! remembered and only the difference is added), and optionally tallies the first N peers
//! from the events (which the pipeline also exports as OTLP spans).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_common::tcp::{TcpCounts, TcpEvent, TCP_RETRANS_SYNACK, UNKNOWN_OWNER};

use super::{
    delta::Deltas,
    services::{ServiceId, UNKNOWN},
};

/// Label values of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetransKind {
    Data,
    Synack,
}

impl RetransKind {
    pub fn label(self) -> &'static str {
        match self {
            RetransKind::Data => "data",
            RetransKind::Synack => "synack",
        }
    }
}

#[derive(Debug, Default)]
pub struct TcpStats {
    counts: Deltas<u32, TcpCounts>,
    totals: BTreeMap<(ServiceId, RetransKind), u64>,
    failures: BTreeMap<ServiceId, u64>,
    peers: Peers,
}

impl TcpStats {
    pub fn new(top_peers: usize) -> Self {
        Self {
            peers: Peers {
                cap: top_peers,
                ..Peers::default()
            },
            ..Self::default()
        }
    }

    /// Adds what each owner gained since the last snapshot to its service's totals.
    pub fn fold(
        &mut self,
        snapshot: &[(u32, TcpCounts)],
        mut service_of: impl FnMut(u32) -> ServiceId,
    ) {
        let (totals, failures) = (&mut self.totals, &mut self.failures);
        self.counts.fold(snapshot, |&tgid, delta| {
            let service = owner_service(tgid, &mut service_of);
            for (kind, n) in [
                (RetransKind::Data, delta.data_segs),
                (RetransKind::Synack, delta.synack),
            ] {
                if n > 0 {
                    *totals.entry((service, kind)).or_default() += n;
                }
            }
            if delta.failed > 0 {
                *failures.entry(service).or_default() += delta.failed;
            }
        });
    }

    /// We deleted `tgid`'s kernel key on purpose: not an eviction. True if it had one.
    pub fn forget(&mut self, tgid: u32) -> bool {
        let had = self.counts.last(&tgid).is_some();
        self.counts.forget(&tgid);
        had
    }

    /// Drops every series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.totals.retain(|k, _| k.0 != service);
        self.failures.remove(&service);
    }

    pub fn on_event(&mut self, ev: &TcpEvent) {
        if ev.err != 0 {
            tracing::debug!(
                err = ev.err,
                segs = ev.segs,
                tgid = ev.tgid,
                "TCP retransmit attempt failed"
            );
        }
        self.peers.add(ev);
    }

    /// Cumulative retransmitted segments per (service, kind).
    pub fn totals(&self) -> &BTreeMap<(ServiceId, RetransKind), u64> {
        &self.totals
    }

    /// Cumulative failed retransmit attempts per service.
    pub fn failures(&self) -> &BTreeMap<ServiceId, u64> {
        &self.failures
    }

    /// Per-peer retransmits (first `top_peers` peers, then `other`); empty when off.
    pub fn peers(&self) -> Vec<(String, u64)> {
        let mut out: Vec<_> = self
            .peers
            .counts
            .iter()
            .map(|(ip, n)| (ip.to_string(), *n))
            .collect();
        out.sort();
        if self.peers.cap > 0 {
            out.push(("other".into(), self.peers.other));
        }
        out
    }

    pub fn evicted_keys(&self) -> u64 {
        self.counts.vanished()
    }
}

/// Retransmits by remote address: the first `cap` distinct addresses get their own series
/// (so every series is a true monotonic counter), the rest add up in `other`. Fed by events,
/// so events lost in the ring buffer are missing here (not in the per-service counts).
#[derive(Debug, Default)]
struct Peers {
    cap: usize,
    counts: HashMap<IpAddr, u64>,
    other: u64,
}

impl Peers {
    fn add(&mut self, ev: &TcpEvent) {
        if self.cap == 0 {
            return;
        }
        let n = if ev.kind == TCP_RETRANS_SYNACK {
            1
        } else {
            ev.segs as u64
        };
        if n == 0 {
            return;
        }
        let ip = peer_address(ev);
        if let Some(c) = self.counts.get_mut(&ip) {
            *c += n;
        } else if self.counts.len() < self.cap {
            self.counts.insert(ip, n);
        } else {
            self.other += n;
        }
    }
}

/// The service of a socket owner: [`UNKNOWN`] when the kernel knew no owner.
pub fn owner_service(tgid: u32, mut service_of: impl FnMut(u32) -> ServiceId) -> ServiceId {
    if tgid == UNKNOWN_OWNER {
        UNKNOWN
    } else {
        service_of(tgid)
    }
}

/// The remote address of an event.
pub fn peer_address(ev: &TcpEvent) -> IpAddr {
    address(ev.family, ev.daddr)
}

/// The local address of an event.
pub fn local_address(ev: &TcpEvent) -> IpAddr {
    address(ev.family, ev.saddr)
}

/// IPv4 in the first 4 bytes, or IPv6 (an IPv4-mapped one shown as IPv4).
pub fn address(family: u16, bytes: [u8; 16]) -> IpAddr {
    const AF_INET6: u16 = 10;
    if family == AF_INET6 {
        let v6 = Ipv6Addr::from(bytes);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(data_segs: u64, synack: u64, failed: u64) -> TcpCounts {
        TcpCounts {
            data_segs,
            synack,
            failed,
        }
    }

    #[test]
    fn repeated_snapshots_count_once_and_unknown_owner_is_unknown() {
        let mut s = TcpStats::new(0);
        s.fold(&[(7, c(3, 0, 1)), (UNKNOWN_OWNER, c(2, 1, 0))], |_| 5);
        s.fold(&[(7, c(3, 0, 1)), (UNKNOWN_OWNER, c(2, 1, 0))], |_| 5);
        s.fold(&[(7, c(10, 2, 1)), (UNKNOWN_OWNER, c(2, 1, 0))], |_| 5);
        assert_eq!(s.totals()[&(5, RetransKind::Data)], 10);
        assert_eq!(s.totals()[&(5, RetransKind::Synack)], 2);
        assert_eq!(s.totals()[&(UNKNOWN, RetransKind::Data)], 2);
        assert_eq!(s.totals()[&(UNKNOWN, RetransKind::Synack)], 1);
        assert_eq!(s.failures()[&5], 1);
        assert_eq!(s.evicted_keys(), 0);
    }

    #[test]
    fn evicted_and_recreated_keys() {
        let mut s = TcpStats::new(0);
        s.fold(&[(7, c(5, 0, 0))], |_| 5);
        s.fold(&[(7, c(2, 0, 0))], |_| 5);
        assert_eq!(
            s.totals()[&(5, RetransKind::Data)],
            7,
            "re-created key counts from 0"
        );
        assert!(s.forget(7));
        s.fold(&[], |_| 5);
        assert_eq!(s.evicted_keys(), 0, "forgotten on purpose");
        s.fold(&[(8, c(1, 0, 0))], |_| 6);
        s.fold(&[], |_| 6);
        assert_eq!(s.evicted_keys(), 1);
        assert_eq!(
            s.totals()[&(5, RetransKind::Data)],
            7,
            "totals never go down"
        );
    }

    fn ev(daddr: [u8; 4], segs: u32) -> TcpEvent {
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&daddr);
        TcpEvent {
            kind: 1,
            family: 2,
            segs,
            daddr: d,
            ..TcpEvent::default()
        }
    }

    #[test]
    fn peers_are_bounded() {
        let mut s = TcpStats::new(2);
        s.on_event(&ev([10, 0, 0, 1], 2));
        s.on_event(&ev([10, 0, 0, 2], 1));
        s.on_event(&ev([10, 0, 0, 3], 4));
        s.on_event(&ev([10, 0, 0, 1], 1));
        s.on_event(&ev([10, 0, 0, 9], 0)); // failed attempt: nothing was sent
        assert_eq!(
            s.peers(),
            vec![
                ("10.0.0.1".into(), 3),
                ("10.0.0.2".into(), 1),
                ("other".into(), 4)
            ]
        );
        assert!(TcpStats::new(0).peers().is_empty());
    }

    #[test]
    fn peer_addresses() {
        let mut e = ev([192, 168, 1, 2], 1);
        assert_eq!(peer_address(&e).to_string(), "192.168.1.2");
        e.family = 10;
        e.daddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
        assert_eq!(peer_address(&e).to_string(), "2001:db8::1");
        e.daddr = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        assert_eq!(peer_address(&e).to_string(), "10.1.2.3");
    }
}

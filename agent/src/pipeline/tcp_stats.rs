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

/// Collections without a new retransmit after which a retired owner's kernel key goes.
pub const RETIRE_AFTER_QUIET_COLLECTIONS: u32 = 30;
/// Retired owners remembered at most (the oldest go first, their kernel keys with them).
pub const MAX_RETIRED: usize = 4096;

#[derive(Debug, Default)]
pub struct TcpStats {
    counts: Deltas<u32, TcpCounts>,
    totals: BTreeMap<(ServiceId, RetransKind), u64>,
    failures: BTreeMap<ServiceId, u64>,
    peers: Peers,
    /// Owners whose process has exited, with the service they had: their sockets live on
    /// (a closed socket still sends what is left in its buffer, and its FIN, retransmitting
    /// under loss), and the kernel keeps counting under their tgid. Their key stays until it
    /// has been quiet for [`RETIRE_AFTER_QUIET_COLLECTIONS`], and what it gains goes to the
    /// service the process had. (Deleting the key at the exit lost the retransmits made
    /// between the last read and the delete, and counted later ones as `unknown`.)
    retired: HashMap<u32, Retired>,
    /// Insertion order of `retired`, for the bound.
    retired_order: std::collections::VecDeque<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Retired {
    service: ServiceId,
    quiet: u32,
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
        let (totals, failures, retired) = (&mut self.totals, &mut self.failures, &mut self.retired);
        self.counts.fold(snapshot, |&tgid, delta| {
            let service = match retired.get_mut(&tgid) {
                Some(r) => {
                    r.quiet = 0;
                    r.service
                }
                None => owner_service(tgid, &mut service_of),
            };
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

    /// `tgid`'s process exited while it was `service`: its sockets' later retransmits still
    /// count for that service, until [`TcpStats::expire_retired`] lets its key go. Returns
    /// owners pushed out by the bound, whose kernel keys the caller deletes.
    pub fn retire(&mut self, tgid: u32, service: ServiceId) -> Vec<u32> {
        if self.counts.last(&tgid).is_none() || tgid == UNKNOWN_OWNER {
            return Vec::new();
        }
        if self
            .retired
            .insert(tgid, Retired { service, quiet: 0 })
            .is_none()
        {
            self.retired_order.push_back(tgid);
        }
        let mut out = Vec::new();
        while self.retired.len() > MAX_RETIRED {
            let Some(old) = self.retired_order.pop_front() else {
                break;
            };
            if self.retired.remove(&old).is_some() {
                self.forget(old);
                out.push(old);
            }
        }
        out
    }

    /// One collection passed: retired owners quiet for long enough are forgotten, and
    /// returned for the caller to delete their kernel keys.
    pub fn expire_retired(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        self.retired.retain(|&tgid, r| {
            r.quiet += 1;
            let keep = r.quiet <= RETIRE_AFTER_QUIET_COLLECTIONS;
            if !keep {
                out.push(tgid);
            }
            keep
        });
        if !out.is_empty() {
            self.retired_order.retain(|t| self.retired.contains_key(t));
        }
        for &tgid in &out {
            self.forget(tgid);
        }
        out
    }

    /// A new process has `tgid` (the pid was reused): the old owner's sockets count for it
    /// from now on, as the kernel cannot tell them apart.
    pub fn reused(&mut self, tgid: u32) {
        if self.retired.remove(&tgid).is_some() {
            self.retired_order.retain(|&t| t != tgid);
        }
    }

    /// Drops every series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.totals.retain(|k, _| k.0 != service);
        self.failures.remove(&service);
        self.retired.retain(|_, r| r.service != service);
        let retired = &self.retired;
        self.retired_order.retain(|t| retired.contains_key(t));
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

    /// An owner's process exits: its sockets keep retransmitting under its tgid, counted for
    /// its service (not `unknown`, not lost); the key goes once quiet, or past the bound.
    #[test]
    fn retired_owners_keep_their_service_until_quiet() {
        let mut s = TcpStats::new(0);
        s.fold(&[(7, c(5, 0, 0))], |_| 5);
        assert!(s.retire(7, 5).is_empty());
        assert!(s.retire(8, 5).is_empty(), "no key, nothing to retire");
        // The process is gone: its name lookup now says unknown.
        s.fold(&[(7, c(9, 0, 1))], |_| UNKNOWN);
        assert_eq!(s.totals()[&(5, RetransKind::Data)], 9);
        assert_eq!(s.failures()[&5], 1);
        assert!(!s.totals().contains_key(&(UNKNOWN, RetransKind::Data)));
        for _ in 0..RETIRE_AFTER_QUIET_COLLECTIONS {
            assert!(s.expire_retired().is_empty());
            s.fold(&[(7, c(9, 0, 1))], |_| UNKNOWN);
        }
        assert_eq!(s.expire_retired(), vec![7]);
        assert!(s.counts.last(&7).is_none(), "forgotten: not an eviction");
        s.fold(&[], |_| UNKNOWN);
        assert_eq!(s.evicted_keys(), 0);
        // The bound: the oldest retired owner goes first.
        let keys: Vec<_> = (100..100 + MAX_RETIRED as u32 + 1)
            .map(|t| (t, c(1, 0, 0)))
            .collect();
        s.fold(&keys, |_| 5);
        let mut pushed = Vec::new();
        for (t, _) in &keys {
            pushed.extend(s.retire(*t, 5));
        }
        assert_eq!(pushed, vec![100]);
        // A reused pid belongs to the new process.
        s.reused(101);
        s.fold(&[(101, c(2, 0, 0))], |_| 6);
        assert_eq!(s.totals()[&(6, RetransKind::Data)], 1);
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

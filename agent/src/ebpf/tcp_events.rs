//! Readers of the TCP retransmit probe: the event ring buffer (`TCP_EVENTS`) and the
//! in-kernel per-owner counts (`TCP_COUNTS`). Counts are the source of truth for the metric;
//! events carry the details (4-tuple, state, owner) and may be lost when the ring is full.

use std::os::fd::{AsFd, OwnedFd};

use agent_common::tcp::{TcpCounts, TcpEvent};
use aya::maps::{Map, MapData, PerCpuHashMap, RingBuf};
use tokio::io::unix::AsyncFd;

use super::ProbeError;

/// What the TCP retransmit probe hands to the pipeline.
pub struct TcpProbe {
    pub events: TcpEvents,
    pub counts: TcpCountsMap,
}

pub struct TcpEvents {
    ring: RingBuf<MapData>,
}

impl TcpEvents {
    pub(super) fn new(map: Map) -> Result<Self, ProbeError> {
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "TCP_EVENTS",
            source,
        })?;
        Ok(Self { ring })
    }

    /// A duplicate of the ring buffer's fd registered with tokio's reactor: readable when the
    /// kernel forced a wakeup (the unread data passed `probes.tcp.wakeup_min_bytes`). Must be
    /// called inside a tokio runtime.
    pub fn readiness(&self) -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd = self.ring.as_fd().try_clone_to_owned()?;
        // SAFETY: the AsyncFd owns `fd`, a valid open descriptor that nothing else closes or
        // replaces while the AsyncFd lives.
        unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
    }

    /// Hands every waiting record to `f`, without blocking. Returns the number of events and
    /// of malformed records (which the caller counts as lost).
    pub fn drain(&mut self, mut f: impl FnMut(TcpEvent)) -> (u64, u64) {
        let (mut ok, mut bad) = (0, 0);
        while let Some(item) = self.ring.next() {
            match decode(&item) {
                Some(ev) => {
                    ok += 1;
                    f(ev)
                }
                None => bad += 1,
            }
        }
        (ok, bad)
    }
}

/// Decodes one record; `None` if its size is not that of a `TcpEvent`.
pub fn decode(bytes: &[u8]) -> Option<TcpEvent> {
    if bytes.len() != std::mem::size_of::<TcpEvent>() {
        return None;
    }
    // SAFETY: the length matches, TcpEvent is repr(C) plain integers (any bit pattern is
    // valid), and read_unaligned does not need alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TcpEvent>()) })
}

pub struct TcpCountsMap {
    map: PerCpuHashMap<MapData, u32, TcpCounts>,
}

impl TcpCountsMap {
    pub(super) fn new(map: Map) -> Result<Self, ProbeError> {
        let map = PerCpuHashMap::try_from(map).map_err(|source| ProbeError::Map {
            name: "TCP_COUNTS",
            source,
        })?;
        Ok(Self { map })
    }

    /// Every owner tgid with its counts summed over CPUs.
    pub fn snapshot(&self, out: &mut Vec<(u32, TcpCounts)>) {
        out.clear();
        for item in self.map.iter() {
            let Ok((tgid, per_cpu)) = item else { continue };
            let mut total = TcpCounts::default();
            for c in per_cpu.iter() {
                total.data_segs += c.data_segs;
                total.synack += c.synack;
                total.failed += c.failed;
            }
            out.push((tgid, total));
        }
    }

    /// Deletes an owner's key (its process exited and its last counts were read).
    pub fn remove(&mut self, tgid: u32) {
        let _ = self.map.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_checks_length() {
        let ev = TcpEvent {
            timestamp_ns: 1,
            kind: 1,
            tgid: 42,
            err: -16,
            segs: 0,
            family: 2,
            state: 1,
            sport: 40000,
            dport: 5001,
            saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: *b"client\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: viewing a repr(C) value without padding as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const TcpEvent).cast::<u8>(),
                std::mem::size_of::<TcpEvent>(),
            )
        };
        assert_eq!(decode(bytes), Some(ev));
        assert_eq!(decode(&bytes[1..]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(ev.comm_bytes(), b"client");
    }
}

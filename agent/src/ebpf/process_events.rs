//! Reader of the process lifecycle ring buffer (`PROC_EVENTS`). Draining is synchronous, so a
//! collection can first take every event submitted before it; a duplicate of the map's fd lets
//! a task sleep in epoll until records arrive.

use std::os::fd::{AsFd, OwnedFd};

use agent_common::process::ProcEvent;
use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::ProbeError;

pub struct ProcessEvents {
    ring: RingBuf<MapData>,
}

impl ProcessEvents {
    pub(super) fn new(map: Map) -> Result<Self, ProbeError> {
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "PROC_EVENTS",
            source,
        })?;
        Ok(Self { ring })
    }

    /// A duplicate of the ring buffer's fd registered with tokio's reactor: readable when
    /// records are waiting. Must be called inside a tokio runtime.
    pub fn readiness(&self) -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd = self.ring.as_fd().try_clone_to_owned()?;
        // SAFETY: the AsyncFd owns `fd`, a valid open descriptor that nothing else closes or
        // replaces while the AsyncFd lives.
        unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
    }

    /// Hands every waiting record to `f`, without blocking. Returns the number of events and
    /// of malformed records (which the caller counts as lost).
    pub fn drain(&mut self, mut f: impl FnMut(ProcEvent)) -> (u64, u64) {
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

/// Decodes one record; `None` if its size is not that of a `ProcEvent`.
pub fn decode(bytes: &[u8]) -> Option<ProcEvent> {
    if bytes.len() != std::mem::size_of::<ProcEvent>() {
        return None;
    }
    // SAFETY: the length matches, ProcEvent is repr(C) plain integers (any bit pattern is
    // valid), and read_unaligned does not need alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ProcEvent>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_checks_length() {
        let ev = ProcEvent {
            kind: 1,
            tgid: 42,
            pid: 43,
            _pad: 0,
            cgroup_id: 7,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: viewing a repr(C) value without padding as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const ProcEvent).cast::<u8>(),
                std::mem::size_of::<ProcEvent>(),
            )
        };
        assert_eq!(decode(bytes), Some(ev));
        assert_eq!(decode(&bytes[1..]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(ev.comm_bytes(), b"worker");
    }
}

//! Reader of a ring buffer of fixed-size records. Draining is synchronous, so a collection can
//! first take every record submitted before it; a duplicate of the map's fd lets a task sleep
//! in epoll until records arrive.

use std::{
    marker::PhantomData,
    os::fd::{AsFd, OwnedFd},
};

use aya::{
    maps::{Map, MapData, RingBuf},
    Pod,
};
use tokio::io::unix::AsyncFd;

use super::ProbeError;

pub struct EventRing<T> {
    ring: RingBuf<MapData>,
    _t: PhantomData<T>,
}

impl<T: Pod> EventRing<T> {
    pub(super) fn new(map: Map, name: &'static str) -> Result<Self, ProbeError> {
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        Ok(Self {
            ring,
            _t: PhantomData,
        })
    }

    /// A duplicate of the ring buffer's fd registered with tokio's reactor: readable when
    /// records are waiting. Must be called inside a tokio runtime.
    pub fn readiness(&self) -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd = self.ring.as_fd().try_clone_to_owned()?;
        // SAFETY: the AsyncFd owns `fd`, a valid open descriptor that nothing else closes or
        // replaces while the AsyncFd lives.
        unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
    }

    /// Hands every waiting record to `f`, without blocking. Returns the number of records and
    /// of malformed ones (which the caller counts as lost).
    pub fn drain(&mut self, mut f: impl FnMut(T)) -> (u64, u64) {
        let (mut ok, mut bad) = (0, 0);
        while let Some(item) = self.ring.next() {
            match decode::<T>(&item) {
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

/// Decodes one record; `None` if its size is not that of a `T`.
pub fn decode<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length matches, T is Pod (any bit pattern is valid), and read_unaligned
    // does not need alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::process::ProcEvent;

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
        assert_eq!(decode::<ProcEvent>(bytes), Some(ev));
        assert_eq!(decode::<ProcEvent>(&bytes[1..]), None);
        assert_eq!(decode::<ProcEvent>(&[]), None);
        assert_eq!(ev.comm_bytes(), b"worker");
    }
}

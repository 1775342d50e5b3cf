//! Resident memory per service, from the kernel's RSS counters as `/proc/<pid>/statm` shows
//! them, read for every live process at most once per interval.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::services::ServiceId;
use crate::ebpf::page_size;

#[derive(Debug)]
pub struct Memory {
    enabled: bool,
    interval: Duration,
    last: Option<Instant>,
    page_size: u64,
    resident: BTreeMap<ServiceId, u64>,
}

impl Memory {
    pub fn new(enabled: bool, interval: Duration) -> Self {
        Self {
            enabled,
            interval,
            last: None,
            page_size: page_size(),
            resident: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Re-reads every live process if the interval has passed.
    pub fn refresh(&mut self, now: Instant, live: impl Iterator<Item = (u32, ServiceId)>) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return;
        }
        self.last = Some(now);
        self.resident.clear();
        for (tgid, service) in live {
            if let Some(pages) = resident_pages(tgid) {
                *self.resident.entry(service).or_default() += pages * self.page_size;
            }
        }
    }

    /// Drops the series of a released service.
    pub fn release(&mut self, service: ServiceId) {
        self.resident.remove(&service);
    }

    /// Resident bytes per service, as of the last refresh.
    pub fn resident(&self) -> &BTreeMap<ServiceId, u64> {
        &self.resident
    }
}

/// The second field of `/proc/<tgid>/statm`: resident pages. `None` for kernel threads (0) and
/// processes that have gone.
fn resident_pages(tgid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{tgid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    (pages > 0).then_some(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_resident_memory_is_seen_and_refresh_respects_the_interval() {
        let mut m = Memory::new(true, Duration::from_secs(60));
        let me = std::process::id();
        let t0 = Instant::now();
        m.refresh(t0, [(me, 5)].into_iter());
        let rss = m.resident()[&5];
        assert!(
            rss > 1 << 20,
            "a test process has more than 1 MiB resident: {rss}"
        );
        m.refresh(t0 + Duration::from_secs(1), [(me, 6)].into_iter());
        assert!(
            !m.resident().contains_key(&6),
            "interval not over: no re-read"
        );
    }
}

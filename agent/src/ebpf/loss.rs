//! Reader of the kernel's lost-event counters (`EVENTS_LOST`, per CPU, per source).

use aya::maps::{Array, Map, MapData, PerCpuArray};

use super::ProbeError;

pub struct LossCounters {
    map: PerCpuArray<MapData, u64>,
    fill: Array<MapData, u64>,
}

impl LossCounters {
    pub(super) fn new(map: Map, fill: Map) -> Result<Self, ProbeError> {
        let map = PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
            name: "EVENTS_LOST",
            source,
        })?;
        let fill = Array::try_from(fill).map_err(|source| ProbeError::Map {
            name: "RING_FILL",
            source,
        })?;
        Ok(Self { map, fill })
    }

    /// Bytes waiting in `source`'s ring buffer, sampled by the programs when an event lands in an
    /// empty ring or the fill crosses a multiple of 4 KiB.
    pub fn ring_fill(&self, source: u32) -> u64 {
        self.fill.get(&source, 0).unwrap_or(0)
    }

    /// Events lost in the kernel for `source` since the probes were loaded.
    pub fn lost(&self, source: u32) -> u64 {
        self.map
            .get(&source, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

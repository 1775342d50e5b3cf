//! Readers of the TCP probes. Retransmits: the event ring buffer (`TCP_EVENTS`) and the
//! in-kernel per-owner counts (`TCP_COUNTS`). Counts are the source of truth for the metric;
//! events carry the details (4-tuple, state, owner) and may be lost when the ring is full.

use agent_common::tcp::{ConnEvent, TcpCounts, TcpEvent};

use super::{percpu_table::PerCpuSum, EventRing, PerCpuTable};

pub type TcpEvents = EventRing<TcpEvent>;
pub type TcpCountsMap = PerCpuTable<u32, TcpCounts>;

impl PerCpuSum for TcpCounts {
    fn add(&mut self, other: &Self) {
        self.data_segs += other.data_segs;
        self.synack += other.synack;
        self.failed += other.failed;
    }
}

/// What the TCP retransmit probe hands to the pipeline.
pub struct TcpProbe {
    pub events: TcpEvents,
    pub counts: TcpCountsMap,
}

pub type ConnEvents = EventRing<ConnEvent>;

/// What the connection probe (`probes.connections`) hands to the pipeline: its events are
/// the only source of its counts (losses are counted as `source="connections"`).
pub struct ConnProbe {
    pub events: ConnEvents,
}

//! The metric families and how the pipeline's state is encoded into them. Names follow
//! `steadfast_<thing>_<unit>`; the client library appends `_total` to counters.

use std::sync::{Arc, Mutex};

use agent_common::syscall::{bucket_upper_ns, Hist, HIST_BUCKETS};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use crate::{pipeline::Pipeline, syscalls};

/// Kernel buckets below this index are merged into the first exported bucket (512 ns):
/// finer resolution there is noise for the questions people ask of syscall latency.
const FIRST_EXPORTED_BUCKET: usize = 8;

/// Exported `(upper bound in seconds, count)` pairs, non-cumulative, last one `+Inf`.
pub fn export_buckets(h: &Hist) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(HIST_BUCKETS - FIRST_EXPORTED_BUCKET);
    let first: u64 = h.buckets[..=FIRST_EXPORTED_BUCKET].iter().sum();
    out.push((bucket_upper_ns(FIRST_EXPORTED_BUCKET) as f64 / 1e9, first));
    for i in FIRST_EXPORTED_BUCKET + 1..HIST_BUCKETS - 1 {
        out.push((bucket_upper_ns(i) as f64 / 1e9, h.buckets[i]));
    }
    out.push((f64::INFINITY, h.buckets[HIST_BUCKETS - 1]));
    out
}

/// The registry with every family, reading the shared pipeline at encode time.
pub fn registry(pipeline: Arc<Mutex<Pipeline>>) -> Registry {
    let mut registry = Registry::with_prefix("steadfast");
    registry.register_collector(Box::new(PipelineCollector { pipeline }));
    registry
}

#[derive(Debug)]
struct PipelineCollector {
    pipeline: Arc<Mutex<Pipeline>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());

        let mut family = encoder.encode_descriptor(
            "syscall_duration",
            "Time from syscall entry to return, by syscall and service.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (&(service, nr), hist) in p.stats.totals() {
            let syscall = syscalls::label(nr);
            let labels = [
                ("syscall", syscall.as_ref()),
                ("service", p.services.name(service)),
            ];
            let count: u64 = hist.buckets.iter().sum();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    hist.sum_ns as f64 / 1e9,
                    count,
                    &export_buckets(hist),
                    None,
                )?;
        }

        encode_tcp(&p, &mut encoder)?;

        let t = &p.telemetry;
        let mut received = encoder.encode_descriptor(
            "events_received",
            "Events read from the kernel's ring buffers, by source.",
            None,
            MetricType::Counter,
        )?;
        for (source, got, _) in t.per_source() {
            ConstCounter::new(got).encode(received.encode_family(&[("source", source)])?)?;
        }
        let mut lost = encoder.encode_descriptor(
            "events_lost",
            "Events lost by source: ring-buffer reservations that failed in the kernel, plus records dropped in userspace.",
            None,
            MetricType::Counter,
        )?;
        for (source, _, n) in t.per_source() {
            ConstCounter::new(n).encode(lost.encode_family(&[("source", source)])?)?;
        }
        ConstCounter::new(t.syscall_hist_evicted).encode(encoder.encode_descriptor(
            "syscall_map_keys_evicted",
            "Kernel histogram keys evicted by the LRU before their last read (raise probes.syscalls.max_histogram_keys if this grows).",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(t.syscall_hist_keys as i64).encode(encoder.encode_descriptor(
            "syscall_map_keys",
            "(process, syscall) keys currently in the kernel histogram map.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(t.tracked_processes as i64).encode(encoder.encode_descriptor(
            "tracked_processes",
            "Processes the agent currently holds a name for.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// `steadfast_tcp_retransmits_total{service,kind}` and its companions.
fn encode_tcp(p: &Pipeline, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let tcp = &p.tcp_stats;
    let mut family = encoder.encode_descriptor(
        "tcp_retransmits",
        "TCP segments retransmitted (as the kernel's TcpRetransSegs counts them), by owning service and kind (data, synack).",
        None,
        MetricType::Counter,
    )?;
    for (&(service, kind), &n) in tcp.totals() {
        let labels = [
            ("service", p.services.name(service)),
            ("kind", kind.label()),
        ];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "tcp_retransmit_failures",
        "tcp_retransmit_skb attempts that failed (nothing sent, e.g. the original still queued), by owning service.",
        None,
        MetricType::Counter,
    )?;
    for (&service, &n) in tcp.failures() {
        ConstCounter::new(n)
            .encode(family.encode_family(&[("service", p.services.name(service))])?)?;
    }
    let peers = tcp.peers();
    if !peers.is_empty() {
        let mut family = encoder.encode_descriptor(
            "tcp_retransmits_by_peer",
            "TCP segments retransmitted by remote address: the first probes.tcp.top_peers addresses seen, the rest as other (from events: ring-buffer losses are missing here).",
            None,
            MetricType::Counter,
        )?;
        for (peer, n) in &peers {
            ConstCounter::new(*n).encode(family.encode_family(&[("peer", peer.as_str())])?)?;
        }
    }
    ConstCounter::new(tcp.evicted_keys()).encode(encoder.encode_descriptor(
        "tcp_map_keys_evicted",
        "Per-process retransmit counters the kernel's LRU evicted before their last read (their counts since the previous read are lost).",
        None,
        MetricType::Counter,
    )?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_buckets_keep_every_count() {
        let mut h = Hist::default();
        for (i, b) in h.buckets.iter_mut().enumerate() {
            *b = i as u64 + 1;
        }
        let out = export_buckets(&h);
        assert_eq!(
            out.iter().map(|b| b.1).sum::<u64>(),
            h.buckets.iter().sum::<u64>()
        );
        assert_eq!(out[0], (512e-9, (1..=9).sum()));
        // 20 ms sits in [2^24, 2^25) ns: the bucket whose upper bound is 2^25 ns.
        let b24 = out
            .iter()
            .find(|b| b.0 == (1u64 << 25) as f64 / 1e9)
            .unwrap();
        assert_eq!(b24.1, 25);
        assert_eq!(out.last().unwrap(), &(f64::INFINITY, 32));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

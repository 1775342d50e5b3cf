//! The metric families and how the pipeline's state is encoded into them. Names follow
//! `steadfast_<thing>_<unit>`; the client library appends `_total` to counters.

use std::sync::{Arc, Mutex};

use agent_common::{
    syscall::{bucket_upper_exp, bucket_upper_seconds, Hist, LAST_FINITE_BUCKET},
    uprobe::call_name,
};
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeMetric, MetricEncoder, NativeHistogram, NativeHistogramBuckets,
        NoLabelSet,
    },
    metrics::{counter::ConstCounter, gauge::ConstGauge, histogram::Histogram, MetricType},
    registry::{Registry, Unit},
};

use crate::{
    collector::LAST_CLASSIC_BUCKET, errno, export::ExportStats, pipeline::Pipeline, syscalls,
};

/// Exported classic `(upper bound in seconds, count)` pairs, non-cumulative, last one `+Inf`:
/// the kernel's buckets as they are (powers of two in seconds, upper-inclusive, from 2^-21 s),
/// those above 2^3 s merged into `+Inf`.
pub fn export_buckets(h: &Hist) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = (0..=LAST_CLASSIC_BUCKET)
        .map(|i| (bucket_upper_seconds(i), h.buckets[i]))
        .collect();
    out.push((
        f64::INFINITY,
        h.buckets[LAST_CLASSIC_BUCKET + 1..].iter().sum(),
    ));
    out
}

/// A kernel histogram as a Prometheus native histogram of schema 0, exactly: kernel bucket 0
/// (at most 2^-21 s) is the zero bucket (threshold 2^-21), kernel bucket `b` in 1..=30 is
/// native bucket `b - 21`, whose range is `(2^(b-22), 2^(b-21)]` s as in the kernel. Calls
/// over 2^9 s (the kernel's overflow bucket) are in the count and sum only, as Prometheus
/// does with observations no bucket holds.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBuckets {
    pub zero_threshold: f64,
    pub zero_count: u64,
    /// `(offset, length)`: the first offset is the first bucket's index, each next one the
    /// gap after the span before.
    pub spans: Vec<(i32, u32)>,
    /// Bucket counts, the first absolute, each next one the difference to the one before.
    pub deltas: Vec<i64>,
}

pub fn native_buckets(h: &Hist) -> NativeBuckets {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::new();
    let (mut previous_count, mut next_index) = (0i64, None::<i32>);
    for b in 1..=LAST_FINITE_BUCKET {
        let n = h.buckets[b];
        if n == 0 {
            continue;
        }
        let index = bucket_upper_exp(b);
        match (next_index, spans.last_mut()) {
            (Some(expected), Some(span)) if expected == index => span.1 += 1,
            (Some(expected), _) => spans.push((index - expected, 1)),
            (None, _) => spans.push((index, 1)),
        }
        deltas.push(n as i64 - previous_count);
        previous_count = n as i64;
        next_index = Some(index + 1);
    }
    NativeBuckets {
        zero_threshold: bucket_upper_seconds(0),
        zero_count: h.buckets[0],
        spans,
        deltas,
    }
}

/// One series of a kernel histogram family, as native buckets only: the readers derive the
/// classic buckets (`collector::classic_buckets`), which would be most of a snapshot's size.
fn encode_kernel_histogram(metric: MetricEncoder<'_>, hist: &Hist) -> Result<(), std::fmt::Error> {
    encode_histogram(metric, hist, &[])
}

/// One kernel histogram series with native buckets and the `classic` ones given.
fn encode_histogram(
    mut metric: MetricEncoder<'_>,
    hist: &Hist,
    classic: &[(f64, u64)],
) -> Result<(), std::fmt::Error> {
    let count: u64 = hist.buckets.iter().sum();
    let native = native_buckets(hist);
    metric.encode_histogram_with_native::<NoLabelSet>(
        hist.sum_ns as f64 / 1e9,
        count,
        classic,
        None,
        NativeHistogram {
            schema: 0,
            zero_threshold: native.zero_threshold,
            zero_count: native.zero_count,
            negative: NativeHistogramBuckets {
                spans: &[],
                deltas: &[],
            },
            positive: NativeHistogramBuckets {
                spans: &native.spans,
                deltas: &native.deltas,
            },
            created: None,
        },
    )
}

/// Upper bounds of `steadfast_scrape_duration_seconds`, in seconds.
pub const SCRAPE_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The registry with every family, reading the shared pipeline at encode time, and the
/// histogram of `/metrics` handling times (observed by the HTTP handler).
pub fn registry(pipeline: Arc<Mutex<Pipeline>>) -> (Registry, Histogram) {
    let mut registry = Registry::with_prefix("steadfast");
    registry.register_collector(Box::new(PipelineCollector { pipeline }));
    registry.register_collector(Box::new(AgentCollector));
    let scrape = Histogram::new(SCRAPE_BUCKETS);
    registry.register_with_unit(
        "scrape_duration",
        // The client library ends HELP with a full stop itself.
        "Time to collect from the kernel and encode one /metrics answer",
        Unit::Seconds,
        scrape.clone(),
    );
    (registry, scrape)
}

/// The agent's own process: CPU time, resident memory, open file descriptors.
#[derive(Debug)]
struct AgentCollector;

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let own = crate::telemetry::own_process();
        ConstCounter::new(own.cpu_seconds).encode(encoder.encode_descriptor(
            "agent_cpu",
            "CPU time (user + system) the agent itself has used.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;
        ConstGauge::new(own.resident_bytes as i64).encode(encoder.encode_descriptor(
            "agent_resident_memory",
            "Resident memory of the agent itself.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(own.open_fds as i64).encode(encoder.encode_descriptor(
            "agent_open_fds",
            "Open file descriptors of the agent itself.",
            None,
            MetricType::Gauge,
        )?)?;
        let mut info = encoder.encode_descriptor(
            "build_info",
            "Always 1: the agent's version and the kernel it runs on, as labels.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(info.encode_family(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel_release", kernel_release()),
        ])?)?;
        Ok(())
    }
}

/// `uname -r`, read once.
fn kernel_release() -> &'static str {
    static RELEASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RELEASE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    })
}

/// Adds the OTLP exporter's own health to the registry.
pub fn register_export_stats(registry: &mut Registry, stats: Arc<ExportStats>) {
    registry.register_collector(Box::new(ExportCollector { stats }));
}

#[derive(Debug)]
struct ExportCollector {
    stats: Arc<ExportStats>,
}

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let get = ExportStats::get;
        let mut spans = encoder.encode_descriptor(
            "export_spans",
            "Spans offered to the OTLP exporter, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("exported", get(&s.spans_exported)),
            ("rejected", get(&s.spans_rejected)),
            ("sampled_out", get(&s.spans_sampled_out)),
            ("rate_limited", get(&s.spans_rate_limited)),
            ("dropped_queue_full", get(&s.spans_queue_full)),
            ("dropped_at_shutdown", get(&s.spans_dropped_at_shutdown)),
        ] {
            ConstCounter::new(n).encode(spans.encode_family(&[("outcome", outcome)])?)?;
        }
        let mut requests = encoder.encode_descriptor(
            "export_requests_failed",
            "OTLP export requests that failed, by signal (retryable failures are retried with backoff; rejected ones are not).",
            None,
            MetricType::Counter,
        )?;
        for (signal, n) in [
            ("traces", get(&s.span_requests_failed)),
            ("metrics", get(&s.metric_requests_failed)),
        ] {
            ConstCounter::new(n).encode(requests.encode_family(&[("signal", signal)])?)?;
        }
        ConstCounter::new(get(&s.span_batches)).encode(encoder.encode_descriptor(
            "export_span_batches",
            "Span batches accepted by the OTLP receiver (spans exported / batches = mean batch size).",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(get(&s.queue_length) as i64).encode(encoder.encode_descriptor(
            "export_queue_length",
            "Spans waiting in the export queue.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(get(&s.queue_capacity) as i64).encode(encoder.encode_descriptor(
            "export_queue_capacity",
            "Capacity of the span export queue (otlp.queue_size).",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[derive(Debug)]
struct PipelineCollector {
    pipeline: Arc<Mutex<Pipeline>>,
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        let svc = |id| p.services.name(id);

        let mut family = encoder.encode_descriptor(
            "syscall_duration",
            "Time from syscall entry to return, by syscall and service.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (&(service, nr), hist) in p.syscalls.latency() {
            let syscall = syscalls::label(nr);
            let labels = [("syscall", syscall.as_ref()), ("service", svc(service))];
            encode_kernel_histogram(family.encode_family(&labels)?, hist)?;
        }
        let mut family = encoder.encode_descriptor(
            "syscall_errors",
            "Syscalls that returned an error, by syscall, errno and service.",
            None,
            MetricType::Counter,
        )?;
        for (&(service, nr, errno), &n) in p.syscalls.failures() {
            let (syscall, errno) = (syscalls::label(nr), errno::label(errno));
            let labels = [
                ("syscall", syscall.as_ref()),
                ("errno", errno.as_ref()),
                ("service", svc(service)),
            ];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "syscall_slow",
            "Syscalls slower than their configured threshold (probes.syscalls.slow_ms or slow_ns), by syscall and service; each one is also an event.",
            None,
            MetricType::Counter,
        )?;
        for (&(service, nr), &n) in p.syscalls.slow() {
            let syscall = syscalls::label(nr);
            let labels = [("syscall", syscall.as_ref()), ("service", svc(service))];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "process_tasks",
            "Live tasks (threads) of the service's processes.",
            None,
            MetricType::Gauge,
        )?;
        for (&service, &n) in p.tasks.live() {
            ConstGauge::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
        }
        for (name, help, values) in [
            (
                "process_tasks_created",
                "Tasks (threads and child processes) created by the service's processes.",
                p.tasks.created(),
            ),
            (
                "process_tasks_exited",
                "Tasks (threads) of the service's processes that exited.",
                p.tasks.exited(),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (&service, &n) in values {
                ConstCounter::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
            }
        }
        if p.memory.enabled() {
            let mut family = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory of the service's processes (kernel RSS counters).",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            for (&service, &bytes) in p.memory.resident() {
                ConstGauge::new(bytes as i64)
                    .encode(family.encode_family(&[("service", svc(service))])?)?;
            }
        }

        encode_tcp(&p, &mut encoder)?;
        encode_uprobes(&p, &mut encoder)?;
        encode_http(&p, &mut encoder)?;
        encode_connections(&p, &mut encoder)?;

        let t = &p.telemetry;
        let mut received = encoder.encode_descriptor(
            "events_received",
            "Events read from the kernel's ring buffers, by source.",
            None,
            MetricType::Counter,
        )?;
        for (source, got, _, _) in t.per_source() {
            ConstCounter::new(got).encode(received.encode_family(&[("source", source)])?)?;
        }
        let mut lost = encoder.encode_descriptor(
            "events_lost",
            "Events lost by source: ring-buffer reservations that failed in the kernel, plus records dropped in userspace.",
            None,
            MetricType::Counter,
        )?;
        for (source, _, n, _) in t.per_source() {
            ConstCounter::new(n).encode(lost.encode_family(&[("source", source)])?)?;
        }
        let mut fill = encoder.encode_descriptor(
            "ring_buffer_used",
            "Bytes waiting in each ring buffer, sampled as events land on it in steps of 4 KiB (how far the agent lags).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for (source, _, _, used) in t.per_source() {
            ConstGauge::new(used as i64).encode(fill.encode_family(&[("source", source)])?)?;
        }
        ConstCounter::new(t.syscall_hist_evicted).encode(encoder.encode_descriptor(
            "syscall_map_keys_evicted",
            "Kernel histogram keys the LRU evicted, also those no read saw (calls counted after a key's last read are lost with it; raise probes.syscalls.max_histogram_keys if this grows steadily).",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(t.syscall_hist_keys as i64).encode(encoder.encode_descriptor(
            "syscall_map_keys",
            "(process, syscall) keys currently in the kernel histogram map.",
            None,
            MetricType::Gauge,
        )?)?;
        let mut probes = encoder.encode_descriptor(
            "probe_attached",
            "1 for each probe the config turns on that is attached, 0 for one that could not attach on this host (its reason is in the log).",
            None,
            MetricType::Gauge,
        )?;
        for &(probe, attached) in &t.probes_attached {
            ConstGauge::new(i64::from(attached))
                .encode(probes.encode_family(&[("probe", probe)])?)?;
        }
        let mut missed = encoder.encode_descriptor(
            "program_runs_missed",
            "Runs of each tracepoint program the kernel skipped because the program was already running on that CPU (a softirq interrupting it; kernel 5.12+): what each would have counted is missing (retransmits excepted, caught up from the socket's own count).",
            None,
            MetricType::Counter,
        )?;
        for (program, n) in &t.runs_missed {
            ConstCounter::new(*n)
                .encode(missed.encode_family(&[("program", program.as_str())])?)?;
        }
        ConstCounter::new(p.collections()).encode(encoder.encode_descriptor(
            "collections",
            "Collections completed: each drains the ring buffers and reads every kernel map once (every second; a stalled count means collection is stuck).",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(t.tracked_processes as i64).encode(encoder.encode_descriptor(
            "tracked_processes",
            "Processes the agent currently holds a name for.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(p.services.overflow()).encode(encoder.encode_descriptor(
            "services_overflow",
            "Processes reported as service=\"other\" because services.max_services comm-derived names were in use.",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(p.services.released()).encode(encoder.encode_descriptor(
            "services_released",
            "Service names released after services.idle_release_seconds without a live process (their series went with them).",
            None,
            MetricType::Counter,
        )?)?;
        encode_service_info(&p, &mut encoder)?;
        Ok(())
    }
}

/// `steadfast_service_info{service,namespace,pod,container,container_id}` and the container
/// cache's counters.
fn encode_service_info(
    p: &Pipeline,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "service_info",
        "Always 1: one row per container with a process the agent knows, giving its service and the container's names (empty when the runtime's files did not say).",
        None,
        MetricType::Gauge,
    )?;
    for (service, c) in &p.service_info {
        let labels = [
            ("service", p.services.name(*service)),
            ("namespace", c.namespace.as_deref().unwrap_or("")),
            ("pod", c.pod.as_deref().unwrap_or("")),
            ("container", c.container.as_deref().unwrap_or("")),
            ("container_id", c.id.as_str()),
        ];
        ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
    }
    ConstGauge::new(p.service_info_dropped as i64).encode(encoder.encode_descriptor(
        "service_info_dropped",
        "steadfast_service_info rows left out at the last collection (more containers than the bound).",
        None,
        MetricType::Gauge,
    )?)?;
    let stats = p.container_stats();
    ConstCounter::new(stats.lookups).encode(encoder.encode_descriptor(
        "container_lookups",
        "Containers whose names were read from their runtime's files (once per container while it is cached).",
        None,
        MetricType::Counter,
    )?)?;
    ConstGauge::new(p.containers_known() as i64).encode(encoder.encode_descriptor(
        "containers_known",
        "Containers whose identity the agent holds now: those with a process, and those stopped less than services.idle_release_seconds ago (at most 4096).",
        None,
        MetricType::Gauge,
    )?)?;
    ConstCounter::new(stats.errors).encode(encoder.encode_descriptor(
        "container_lookup_errors",
        "Container runtime files that existed but could not be read or parsed (those containers are named container-<id>).",
        None,
        MetricType::Counter,
    )?)?;
    Ok(())
}

/// `steadfast_tcp_retransmits_total{service,kind}` and its companions.
fn encode_tcp(p: &Pipeline, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let tcp = &p.tcp;
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

/// The uprobe-based families: allocations and goroutines of targets, and the attachments.
fn encode_uprobes(p: &Pipeline, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let svc = |id| p.services.name(id);
    let mut family = encoder.encode_descriptor(
        "alloc_calls",
        "libc allocation calls of targets with allocations: true, by call (malloc, calloc, realloc, free) and service.",
        None,
        MetricType::Counter,
    )?;
    for (&(service, kind), &n) in p.allocations.calls() {
        let labels = [("call", call_name(kind)), ("service", svc(service))];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "alloc",
        "Bytes handed out by malloc, calloc and realloc (the new size) to targets with allocations: true.",
        Some(&Unit::Bytes),
        MetricType::Counter,
    )?;
    for (&service, &n) in p.allocations.bytes() {
        ConstCounter::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "alloc_outstanding",
        "Bytes allocated and not freed yet by the service's live processes (allocations seen since attach whose size was recorded).",
        Some(&Unit::Bytes),
        MetricType::Gauge,
    )?;
    for (&service, &n) in p.allocations.outstanding() {
        ConstGauge::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "alloc_untracked_frees",
        "free/realloc of pointers with no recorded size (allocated before attach, by memalign and friends, or evicted: raise probes.uprobes.max_pointers if this grows).",
        None,
        MetricType::Counter,
    )?;
    for (&service, &n) in p.allocations.untracked_frees() {
        ConstCounter::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "go_goroutines",
        "Live goroutines of the service's Go processes (the runtime's own included): created minus exited since the probes were attached, plus, for a process probed after it started, what it had then (read from its memory once, steadfast_go_goroutine_seeds_total).",
        None,
        MetricType::Gauge,
    )?;
    for (&service, &n) in p.goroutines.live() {
        ConstGauge::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "go_goroutines_created",
        "Goroutines the service's Go processes created since the probes were attached.",
        None,
        MetricType::Counter,
    )?;
    for (&service, &n) in p.goroutines.created() {
        ConstCounter::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "go_gc_cycles",
        "Garbage collection cycles the service's Go processes completed since the probes were attached (runtime.NumGC's increments).",
        None,
        MetricType::Counter,
    )?;
    for (&service, &n) in p.goroutines.gc_cycles() {
        ConstCounter::new(n).encode(family.encode_family(&[("service", svc(service))])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "go_gc_pause",
        "Stop-the-world pauses of the Go garbage collector in the service's processes (sweep and mark termination; other stops of the world excluded), from the stop's entry to the restart's entry.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (&service, hist) in p.goroutines.gc_pauses() {
        encode_kernel_histogram(family.encode_family(&[("service", svc(service))])?, hist)?;
    }
    let mut family = encoder.encode_descriptor(
        "uprobe_attachments",
        "Uprobe attachments now, by probe (allocations; goroutines: the goroutine probes, with the GC probes unless the file has them alone; gc: the GC probes alone) and scope (process, or file: every process of a Go executable).",
        None,
        MetricType::Gauge,
    )?;
    for ((probe, scope), n) in p.uprobe_targets.attachments() {
        let labels = [("probe", probe.label()), ("scope", scope)];
        ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "uprobe_attach_failures",
        "Uprobe attachments that failed or hit probes.uprobes.max_attachments, by probe.",
        None,
        MetricType::Counter,
    )?;
    for (probe, &n) in p.uprobe_targets.failures() {
        ConstCounter::new(n).encode(family.encode_family(&[("probe", probe.label())])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "go_goroutine_seeds",
        "Go processes probed after they started whose live goroutines were read from their memory, by result: seeded, or refused (unknown_go_version, runtime_not_found, unreadable, busy: the gauge then counts from the attach).",
        None,
        MetricType::Counter,
    )?;
    for (&result, &n) in p.goroutines.seeder.results() {
        ConstCounter::new(n).encode(family.encode_family(&[("result", result)])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "uprobe_missed",
        "Runs of the uprobe programs the kernel skipped (another kprobe-type program or a BPF map syscall held that CPU's guard), by probe: each is one call, goroutine or GC event not counted.",
        None,
        MetricType::Counter,
    )?;
    for (probe, n) in [
        ("allocations", p.uprobe_missed.0),
        ("goroutines", p.uprobe_missed.1),
    ] {
        ConstCounter::new(n).encode(family.encode_family(&[("probe", probe)])?)?;
    }
    Ok(())
}

/// `steadfast_http_server_request_duration_seconds`, its client twin and their companions.
fn encode_http(p: &Pipeline, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let svc = |id| p.services.name(id);
    let h = &p.http;
    let mut family = encoder.encode_descriptor(
        "http_server_request_duration",
        "HTTP/1.x requests served, from the first byte of the request read to the status line written, by service, method and status code (plaintext TCP seen in socket syscalls).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for ((service, method, status), hist) in h.server() {
        let status = status.to_string();
        let labels = [
            ("service", svc(*service)),
            ("method", method.label()),
            ("status_code", status.as_str()),
        ];
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(hist.sum_seconds, hist.count, &hist.buckets(), None)?;
    }
    let mut family = encoder.encode_descriptor(
        "http_client_request_duration",
        "HTTP/1.x requests sent, from the first byte of the request written to the status line read, by service, peer (address:port, the first probes.http.max_peers, then other), method and status code.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for ((service, peer, method, status), hist) in h.client() {
        let status = status.to_string();
        let labels = [
            ("service", svc(*service)),
            ("peer", peer.as_str()),
            ("method", method.label()),
            ("status_code", status.as_str()),
        ];
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(hist.sum_seconds, hist.count, &hist.buckets(), None)?;
    }
    let mut family = encoder.encode_descriptor(
        "http_requests_unanswered",
        "HTTP/1.x requests whose connection was closed (or whose process exited) before a status line, by service and side (server, client); they are not in the duration histograms.",
        None,
        MetricType::Counter,
    )?;
    for (&(service, side), &n) in h.unanswered() {
        let labels = [("service", svc(service)), ("side", side.label())];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    ConstGauge::new(h.connections() as i64).encode(encoder.encode_descriptor(
        "http_connections_tracked",
        "Connections whose HTTP state the agent holds now.",
        None,
        MetricType::Gauge,
    )?)?;
    ConstCounter::new(h.evicted()).encode(encoder.encode_descriptor(
        "http_connections_evicted",
        "Connection states dropped because probes.http.max_connections were held (a request in flight on one is not counted).",
        None,
        MetricType::Counter,
    )?)?;
    Ok(())
}

/// `steadfast_tcp_connections_total`, the connect durations and the open connections.
fn encode_connections(
    p: &Pipeline,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let svc = |id| p.services.name(id);
    let c = &p.connections;
    let mut family = encoder.encode_descriptor(
        "tcp_connections",
        "TCP connections by service, direction (outbound: connect; inbound: accepted by a listener), peer (outbound: remote address:port; inbound: local address:port; the first probes.connections.max_peers, then other) and outcome: established when the handshake completes, then closed or reset when an established one ends; refused or timeout for a connect that never got established.",
        None,
        MetricType::Counter,
    )?;
    for ((service, direction, peer, outcome), &n) in c.totals() {
        let labels = [
            ("service", svc(*service)),
            ("direction", direction.label()),
            ("peer", peer.as_str()),
            ("outcome", outcome.label()),
        ];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "tcp_connect_duration",
        "Outbound TCP connects that got established, from SYN_SENT to ESTABLISHED, by service and peer.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for ((service, peer), hist) in c.durations() {
        let labels = [("service", svc(*service)), ("peer", peer.as_str())];
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(hist.sum_seconds, hist.count, &hist.buckets(), None)?;
    }
    let mut family = encoder.encode_descriptor(
        "tcp_open_connections",
        "TCP connections established while the agent ran and not yet ended, by service and direction.",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, direction), &n) in c.open() {
        let labels = [("service", svc(service)), ("direction", direction.label())];
        ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
    }
    ConstCounter::new(c.untracked()).encode(encoder.encode_descriptor(
        "tcp_connections_untracked",
        "Established TCP connections the agent did not hold because probes.connections.max_connections were open: missing from steadfast_tcp_open_connections.",
        None,
        MetricType::Counter,
    )?)?;
    Ok(())
}

/// A collector of one kernel histogram family named `.0` (labelled `service="s"`), encoded as
/// the catalogue encodes the kernel's histograms: for the consumers' tests.
#[cfg(test)]
#[derive(Debug)]
pub struct KernelHistogramForTests(pub String, pub Hist);

#[cfg(test)]
impl Collector for KernelHistogramForTests {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_test_family(encoder, &self.0, |m| encode_kernel_histogram(m, &self.1))
    }
}

/// The same family with the classic buckets written out by the client library beside the
/// native ones (how the catalogue encoded kernel histograms before the snapshots held native
/// buckets only): the reference the readers' derived classic buckets are checked against.
#[cfg(test)]
#[derive(Debug)]
pub struct ClassicReferenceForTests(pub String, pub Hist);

#[cfg(test)]
impl Collector for ClassicReferenceForTests {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_test_family(encoder, &self.0, |m| {
            encode_histogram(m, &self.1, &export_buckets(&self.1))
        })
    }
}

/// A histogram family `name` with one series labelled `service="s"`, written by `series`.
#[cfg(test)]
fn encode_test_family(
    mut encoder: DescriptorEncoder,
    name: &str,
    series: impl FnOnce(MetricEncoder<'_>) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, "A kernel histogram.", None, MetricType::Histogram)?;
    series(family.encode_family(&[("service", "s")])?)
}

/// A kernel histogram holding one call of each duration in `ns`: for the consumers' tests.
#[cfg(test)]
pub fn hist_of(ns: &[u64]) -> Hist {
    let mut hist = Hist::default();
    for &ns in ns {
        hist.buckets[agent_common::syscall::bucket_of(ns)] += 1;
        hist.sum_ns += ns;
    }
    hist
}

/// One kernel histogram family (labelled `service="s"`) as the registry encodes it in the
/// Prometheus data model: for the consumers' tests.
#[cfg(test)]
pub fn kernel_histogram_families(
    name: &str,
    hist: &Hist,
) -> Vec<prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily> {
    families_of(KernelHistogramForTests(name.to_string(), *hist))
}

/// [`ClassicReferenceForTests`]'s family in the Prometheus data model.
#[cfg(test)]
pub fn classic_reference_families(
    name: &str,
    hist: &Hist,
) -> Vec<prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily> {
    families_of(ClassicReferenceForTests(name.to_string(), *hist))
}

#[cfg(test)]
fn families_of(
    collector: impl Collector + 'static,
) -> Vec<prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    prometheus_client::encoding::prometheus_protobuf::encode(&registry).expect("encodes")
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
        assert_eq!(out[0], (1.0 / (1u64 << 21) as f64, 1));
        // 20 ms is in (2^-6, 2^-5] s = (15.625 ms, 31.25 ms]: kernel bucket 16.
        let b = agent_common::syscall::bucket_of(20_000_000);
        assert_eq!(b, 16);
        assert!(out.contains(&(0.03125, 17)));
        assert_eq!(out[LAST_CLASSIC_BUCKET], (8.0, 25));
        assert_eq!(out.last().unwrap(), &(f64::INFINITY, (26..=32).sum()));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn native_buckets_are_the_kernel_buckets() {
        use agent_common::syscall::bucket_of;
        let mut h = Hist::default();
        // Both sides of the 2^-6 s boundary (15.625 ms), a zero-bucket call, 1 s exactly, and
        // a call over 2^9 s.
        for ns in [
            100,
            15_625_000,
            15_625_000,
            15_625_001,
            1_000_000_000,
            600_000_000_000,
        ] {
            h.buckets[bucket_of(ns)] += 1;
        }
        let n = native_buckets(&h);
        assert_eq!(n.zero_count, 1);
        assert_eq!(n.zero_threshold, 2f64.powi(-21));
        // 15.625 ms -> native index -6 (upper bound 2^-6); 15.625001 ms -> -5; 1 s -> 0.
        assert_eq!(n.spans, [(-6, 2), (4, 1)]);
        assert_eq!(n.deltas, [2, -1, 0]);
        // The overflow call is in no bucket.
        let in_buckets: i64 = n
            .deltas
            .iter()
            .scan(0, |c, d| {
                *c += d;
                Some(*c)
            })
            .sum();
        assert_eq!(in_buckets as u64 + n.zero_count, 5);
    }
}

//! From kernel facts to series: process naming, then folding each kernel counter map into
//! per-service series. One `Pipeline` owns the map readers; `collect` runs on every scrape and
//! once a second.

pub mod conn_stats;
pub mod containers;
pub mod delta;
pub mod go_elf;
pub mod go_seed;
pub mod histogram;
pub mod http_stats;
pub mod memory;
pub mod peers;
pub mod processes;
pub mod services;
pub mod spans;
pub mod syscall_stats;
pub mod task_stats;
pub mod tcp_stats;
pub mod uprobe_stats;
pub mod uprobe_targets;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{
    loss::{
        LOSS_CONN_EVENTS, LOSS_HTTP_EVENTS, LOSS_PROC_EVENTS, LOSS_SYSCALL_EVENTS, LOSS_TCP_EVENTS,
    },
    process::{ProcEvent, PROC_EXEC, PROC_EXIT},
    tcp::UNKNOWN_OWNER,
};

use crate::{
    config::Config,
    ebpf::{
        ConnProbe, EventRing, HttpProbe, LinkSet, LossCounters, Probes, ProgramRuns, SyscallMaps,
        TaskCountMap, TcpProbe, Uprobes,
    },
    telemetry::Telemetry,
};
use conn_stats::ConnStats;
use http_stats::HttpStats;
use memory::Memory;
use processes::{procfs_tgids, Admission, ProcessTable};
use services::{Naming, ServiceId, ServiceNames};
use spans::{SpanOut, SpanRecord};
use syscall_stats::SyscallStats;
use task_stats::{procfs_threads, TaskStats};
use tcp_stats::TcpStats;
use uprobe_stats::{AllocStats, GoStats};
use uprobe_targets::UprobeTargets;

/// Every this many collections, forget processes that vanished without an exit event and
/// discover those that appeared without an exec (forks).
const SWEEP_EVERY: u64 = 30;

/// The kernel side the pipeline reads. Absent pieces (disabled probes) are `None`.
#[derive(Default)]
pub struct Sources {
    pub process_events: Option<EventRing<ProcEvent>>,
    pub syscalls: Option<SyscallMaps>,
    pub tasks: Option<TaskCountMap>,
    pub tcp: Option<TcpProbe>,
    pub loss: Option<LossCounters>,
    pub program_runs: Option<ProgramRuns>,
    pub uprobes: Option<Uprobes>,
    pub http: Option<HttpProbe>,
    pub connections: Option<ConnProbe>,
}

impl From<Probes> for (crate::ebpf::Attached, Sources) {
    fn from(p: Probes) -> Self {
        (
            p.attached,
            Sources {
                process_events: Some(p.process_events),
                syscalls: p.syscalls,
                tasks: p.tasks,
                tcp: p.tcp,
                loss: Some(p.loss),
                program_runs: Some(p.program_runs),
                uprobes: p.uprobes,
                http: p.http,
                connections: p.connections,
            },
        )
    }
}

pub struct Pipeline {
    sources: Sources,
    naming: Naming,
    pub services: ServiceNames,
    processes: ProcessTable,
    pub syscalls: SyscallStats,
    pub tasks: TaskStats,
    pub tcp: TcpStats,
    pub memory: Memory,
    pub allocations: AllocStats,
    pub goroutines: GoStats,
    pub http: HttpStats,
    pub connections: ConnStats,
    pub uprobe_targets: UprobeTargets<LinkSet>,
    /// Runs of the (allocation, goroutine) uprobe programs the kernel skipped.
    pub uprobe_missed: (u64, u64),
    pub telemetry: Telemetry,
    generation: u64,
    /// Histogram keys this agent deleted from the kernel map (its processes exited).
    hist_keys_removed: u64,
    /// Where slow syscalls go as spans, when OTLP export is on.
    span_sink: Option<Arc<dyn SpanOut>>,
    /// Unix time minus monotonic time, to date kernel events.
    unix_minus_monotonic_ns: u64,
    /// Which HTTP requests become spans.
    http_spans: HttpSpans,
    /// `steadfast_service_info` rows: (service, container) of the processes known now, at
    /// most [`MAX_SERVICE_INFO`].
    pub service_info: Vec<(ServiceId, std::sync::Arc<containers::Identity>)>,
    /// Rows left out of `service_info` at the last collection (past the bound).
    pub service_info_dropped: usize,
}

/// Rows of `steadfast_service_info` at most (one per container with a process).
pub const MAX_SERVICE_INFO: usize = 2000;

/// Which finished HTTP requests are offered as spans (`probes.http.slow_ms`,
/// `probes.http.spans_for_5xx`).
#[derive(Debug, Clone, Copy)]
struct HttpSpans {
    slow_ns: u64,
    server_errors: bool,
}

impl HttpSpans {
    fn wants(self, done: &http_stats::Done) -> bool {
        done.end_ns.saturating_sub(done.start_ns) >= self.slow_ns
            || (self.server_errors && (500..600).contains(&done.status))
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(sources: Sources, config: &Config) -> Self {
        let mut p = Self {
            sources,
            naming: Naming::new(config.targets.clone()).with_containers(
                containers::Containers::new(
                    &config.services.container_metadata_root,
                    containers::CACHE_CAPACITY,
                ),
            ),
            services: ServiceNames::new(
                config.services.max_services,
                Duration::from_secs(config.services.idle_release_seconds),
            ),
            processes: ProcessTable::new(Admission {
                after_syscalls: config.services.admit_after_syscalls,
                after: Duration::from_secs(config.services.admit_after_seconds),
            }),
            syscalls: SyscallStats::default(),
            tasks: TaskStats::default(),
            tcp: TcpStats::new(config.probes.tcp.top_peers as usize),
            memory: Memory::new(
                config.probes.memory.enabled,
                Duration::from_secs(config.probes.memory.interval_secs),
            ),
            allocations: AllocStats::default(),
            goroutines: GoStats::default(),
            http: HttpStats::new(
                config.probes.http.max_connections as usize,
                config.probes.http.max_peers as usize,
            ),
            connections: ConnStats::new(
                config.probes.connections.max_peers as usize,
                config.probes.connections.ports.clone(),
                config.probes.connections.max_connections as usize,
            ),
            uprobe_targets: UprobeTargets::new(
                config.probes.uprobes.max_attachments,
                uprobe_targets::go_check,
                config.probes.go.all_processes,
                config.probes.go.gc_all_processes,
            ),
            uprobe_missed: (0, 0),
            telemetry: Telemetry::default(),
            generation: 0,
            hist_keys_removed: 0,
            span_sink: None,
            unix_minus_monotonic_ns: crate::clock::unix_now_ns()
                .saturating_sub(crate::ebpf::monotonic_ns()),
            http_spans: HttpSpans {
                slow_ns: config.probes.http.slow_ms.saturating_mul(1_000_000),
                server_errors: config.probes.http.spans_for_5xx,
            },
            service_info: Vec::new(),
            service_info_dropped: 0,
        };
        let probes = &config.probes;
        p.telemetry.probes_attached = [
            (
                "syscalls",
                probes.syscalls.enabled,
                p.sources.syscalls.is_some(),
            ),
            ("tasks", probes.tasks.enabled, p.sources.tasks.is_some()),
            ("tcp", probes.tcp.enabled, p.sources.tcp.is_some()),
            ("http", probes.http.enabled, p.sources.http.is_some()),
            (
                "connections",
                probes.connections.enabled,
                p.sources.connections.is_some(),
            ),
        ]
        .into_iter()
        .filter(|&(_, enabled, _)| enabled)
        .map(|(name, _, attached)| (name, attached))
        .collect();
        if let Some(u) = p.sources.uprobes.as_mut() {
            p.uprobe_targets.start(p.naming.targets(), u);
        }
        p.discover();
        p
    }

    /// Seeds the goroutine gauge of the processes the probes reached after they started,
    /// from their memory (`go_seed`), against the kernel's counters of each.
    fn seed_goroutines(&mut self) {
        let Some(u) = self.sources.uprobes.as_ref() else {
            return;
        };
        for tgid in self.uprobe_targets.take_seeds() {
            let exe = std::path::PathBuf::from(format!("/proc/{tgid}/exe"));
            let counter = || {
                u.go_counts
                    .get(&tgid)
                    .map_or((0, 0), |c| (c.created, c.exited))
            };
            if let Some(seed) = self.goroutines.seeder.seed(tgid, &exe, counter) {
                self.goroutines.seed(tgid, seed.offset());
            }
        }
    }

    /// Sends slow syscalls to OTLP as spans from now on.
    pub fn set_span_sink(&mut self, sink: Arc<dyn SpanOut>) {
        self.span_sink = Some(sink);
    }

    /// Considers a live process for uprobes (targets that opt in); once per process.
    fn consider_uprobes(&mut self, tgid: u32) {
        let Some(u) = self.sources.uprobes.as_mut() else {
            return;
        };
        if self.uprobe_targets.is_seen(tgid) {
            return;
        }
        let Some(facts) = services::ProcessFacts::from_procfs(tgid) else {
            return;
        };
        let target = self.naming.target_of(&facts);
        self.uprobe_targets.on_process(tgid, &facts, target, u);
        self.seed_goroutines();
    }

    /// Names every process in procfs that the table does not know yet (except the agent: the
    /// probes leave it out too).
    fn discover(&mut self) {
        let me = std::process::id();
        let now = Instant::now();
        for tgid in procfs_tgids().into_iter().filter(|&t| t != me) {
            self.processes
                .service_of(tgid, now, &mut self.services, &mut self.naming);
            self.consider_uprobes(tgid);
        }
    }

    /// Applies every event waiting in the ring buffers (process lifecycle first, so other
    /// events find their process named).
    pub fn drain_events(&mut self) {
        self.drain_process_events();
        let now = Instant::now();
        if let Some(maps) = self.sources.syscalls.as_mut() {
            let (processes, services, naming, stats, sink) = (
                &mut self.processes,
                &mut self.services,
                &mut self.naming,
                &mut self.syscalls,
                self.span_sink.as_deref(),
            );
            let offset = self.unix_minus_monotonic_ns;
            let (ok, malformed) = maps.slow_events.drain(|ev| {
                // A slow syscall admits a pending process at once: what it did is worth a
                // name, and none of its counts has been folded yet, so nothing splits.
                let mut service = processes.service_of(ev.tgid, now, services, naming);
                if let Some(admitted) = processes.admit(ev.tgid, now, services) {
                    service = admitted;
                }
                stats.on_slow(service, ev);
                if let Some(sink) = sink {
                    sink.offer(|| {
                        SpanRecord::slow_syscall(&ev, services.name(service), ev.start_ns + offset)
                            .in_container(processes.container_of(ev.tgid).as_deref())
                    });
                }
            });
            self.telemetry
                .add_received(LOSS_SYSCALL_EVENTS, ok, malformed);
        }
        if let Some(probe) = self.sources.tcp.as_mut() {
            let (processes, services, naming, stats, sink) = (
                &mut self.processes,
                &mut self.services,
                &mut self.naming,
                &mut self.tcp,
                self.span_sink.as_deref(),
            );
            let offset = self.unix_minus_monotonic_ns;
            let (ok, malformed) = probe.events.drain(|ev| {
                stats.on_event(&ev);
                if let Some(sink) = sink {
                    // The owner is looked up (maybe in /proc) only for a span that is kept.
                    sink.offer(|| {
                        let service = tcp_stats::owner_service(ev.tgid, |tgid| {
                            processes.service_of(tgid, now, services, naming)
                        });
                        SpanRecord::tcp_retransmit(
                            &ev,
                            services.name(service),
                            ev.timestamp_ns + offset,
                        )
                        .in_container(processes.container_of(ev.tgid).as_deref())
                    });
                }
            });
            self.telemetry.add_received(LOSS_TCP_EVENTS, ok, malformed);
        }
        if let Some(probe) = self.sources.http.as_mut() {
            let (processes, services, naming, stats, sink, policy) = (
                &mut self.processes,
                &mut self.services,
                &mut self.naming,
                &mut self.http,
                self.span_sink.as_deref(),
                self.http_spans,
            );
            let offset = self.unix_minus_monotonic_ns;
            let (ok, malformed) = probe.events.drain(|ev| {
                // HTTP traffic is work worth a name: it admits a pending process at once
                // (else a new server's first requests would land under `short_lived`).
                let done = stats.on_event(&ev, |tgid| {
                    let service = processes.service_of(tgid, now, services, naming);
                    processes.admit(tgid, now, services).unwrap_or(service)
                });
                if let (Some(sink), Some((done, service))) = (sink, done) {
                    if policy.wants(&done) {
                        sink.offer(|| {
                            SpanRecord::http_request(
                                &done,
                                services.name(service),
                                ev.tgid,
                                done.start_ns + offset,
                            )
                            .in_container(processes.container_of(ev.tgid).as_deref())
                        });
                    }
                }
            });
            self.telemetry.add_received(LOSS_HTTP_EVENTS, ok, malformed);
        }
        if let Some(probe) = self.sources.connections.as_mut() {
            let (processes, services, naming, stats) = (
                &mut self.processes,
                &mut self.services,
                &mut self.naming,
                &mut self.connections,
            );
            let (ok, malformed) = probe.events.drain(|ev| {
                // Like HTTP traffic, a connection admits a pending process at once.
                stats.on_event(&ev, |tgid| {
                    let service = processes.service_of(tgid, now, services, naming);
                    processes.admit(tgid, now, services).unwrap_or(service)
                });
            });
            self.telemetry.add_received(LOSS_CONN_EVENTS, ok, malformed);
        }
    }

    /// Applies the process lifecycle events waiting in their ring buffer.
    fn drain_process_events(&mut self) {
        let generation = self.generation;
        let now = Instant::now();
        let mut lifecycle = Vec::new();
        if let Some(ring) = self.sources.process_events.as_mut() {
            let (processes, services, naming) =
                (&mut self.processes, &mut self.services, &mut self.naming);
            let watch = self.sources.uprobes.is_some();
            let tcp = &mut self.tcp;
            let (ok, malformed) = ring.drain(|ev| {
                processes.on_event(&ev, generation, now, services, naming);
                if ev.kind != PROC_EXIT {
                    // A new process with a retired owner's pid.
                    tcp.reused(ev.tgid);
                }
                if watch {
                    lifecycle.push((ev.kind, ev.tgid));
                }
            });
            self.telemetry.add_received(LOSS_PROC_EVENTS, ok, malformed);
        }
        // Uprobes follow processes: detach at exit (or exec: the old image is gone), attach
        // right after exec, while the new image has hardly run.
        for (kind, tgid) in lifecycle {
            if kind != PROC_EXEC && kind != PROC_EXIT {
                continue;
            }
            if let Some(u) = self.sources.uprobes.as_mut() {
                self.uprobe_targets.on_exit(tgid, u);
            }
            self.goroutines.unseed(tgid);
            if kind == PROC_EXEC {
                self.consider_uprobes(tgid);
            }
        }
    }

    /// Collections completed since the agent started (each drains the rings and reads every
    /// kernel map once).
    pub fn collections(&self) -> u64 {
        self.generation
    }

    /// Reads the kernel maps and folds what is new into the cumulative series. Events
    /// submitted before this call are applied first, so every key has its name.
    pub fn collect(&mut self) {
        self.drain_events();
        self.generation += 1;
        let generation = self.generation;
        if let Some(loss) = &self.sources.loss {
            for source in [
                LOSS_PROC_EVENTS,
                LOSS_SYSCALL_EVENTS,
                LOSS_TCP_EVENTS,
                LOSS_HTTP_EVENTS,
                LOSS_CONN_EVENTS,
            ] {
                self.telemetry.set_kernel_lost(source, loss.lost(source));
                self.telemetry.ring_fill[source as usize] = loss.ring_fill(source);
            }
        }
        if let Some(runs) = &self.sources.program_runs {
            self.telemetry.runs_missed = runs.missed();
        }
        // Every kernel key first, then name what they belong to: processes whose comm-derived
        // name is pending are decided from what they did (syscalls) and how long they lived,
        // and the keys of those still pending stay out of this fold (held in the kernel).
        let mut hist = Vec::new();
        let mut errors = Vec::new();
        // Read before the snapshot: every key counted here was inserted before it.
        let mut hist_inserted = 0;
        if let Some(maps) = self.sources.syscalls.as_ref() {
            hist_inserted = maps.hist_inserts.total();
            maps.hist.snapshot(&mut hist);
            maps.errors.snapshot(&mut errors);
        }
        let mut counts = Vec::new();
        if let Some(map) = self.sources.tasks.as_ref() {
            map.snapshot(&mut counts);
        }
        let mut tcp = Vec::new();
        if let Some(probe) = self.sources.tcp.as_ref() {
            probe.counts.snapshot(&mut tcp);
        }
        let (mut allocs, mut go, mut gc) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(u) = self.sources.uprobes.as_ref() {
            u.alloc_counts.snapshot(&mut allocs);
            u.go_counts.snapshot(&mut go);
            u.go_gc.snapshot(&mut gc);
            self.uprobe_missed = u.missed();
        }
        // A process may have started, worked and ended while the maps were read (a full map
        // takes tens of milliseconds): its exec event came after the drain above but before
        // its keys, so read the lifecycle events again, now that the keys are taken, and no
        // key is named before its process is known. Exits read here are of this generation:
        // their last counts may be after the snapshot, so they are forgotten next time.
        self.drain_process_events();
        // Inserted = present + deleted by us + evicted: this counts evictions of keys no
        // snapshot ever saw (a process that lived and ended between two reads of a full map),
        // which `vanished` (keys seen once, then gone) cannot. An estimate from below: a key
        // inserted between the counter's read and the snapshot is present but not counted.
        let evicted = hist_inserted.saturating_sub(hist.len() as u64 + self.hist_keys_removed);
        let now = Instant::now();
        let pending = self.decide_pending(&hist, &errors, &counts, &tcp, &allocs, &go, now);
        let hist_keys = hist.len();
        let held = |tgid: &u32| pending.contains(tgid);
        hist.retain(|(k, _)| !held(&k.tgid));
        errors.retain(|(k, _)| !held(&k.tgid));
        counts.retain(|(k, _)| !held(k));
        tcp.retain(|(k, _)| !held(k));
        allocs.retain(|(k, _)| !held(k));
        go.retain(|(k, _)| !held(k));
        gc.retain(|(k, _)| !held(k));

        let (processes, services, naming) =
            (&mut self.processes, &mut self.services, &mut self.naming);
        let mut service_of = |tgid| processes.service_of(tgid, now, services, naming);
        if self.sources.syscalls.is_some() {
            self.syscalls.fold_latency(&hist, &mut service_of);
            self.syscalls.fold_errors(&errors, &mut service_of);
        }
        if self.sources.tasks.is_some() {
            self.tasks.fold(&counts, &mut service_of);
        }
        if let Some(probe) = self.sources.tcp.as_mut() {
            self.tcp.fold(&tcp, &mut service_of);
            for tgid in self.tcp.expire_retired() {
                probe.counts.remove(&tgid);
            }
        }
        if self.sources.uprobes.is_some() {
            self.allocations.fold(&allocs, &mut service_of);
            self.goroutines.fold(&go, &mut service_of);
            self.goroutines.fold_gc(&gc, &mut service_of);
        }

        // Processes whose exit was drained before this collection's snapshot: their final
        // counts have just been folded, so their kernel keys and names can go. (A straggler
        // syscall of another thread of a process that is exiting may land after this and be
        // reported under `unknown`.)
        for tgid in self.processes.exited_before(generation) {
            self.forget_process(tgid);
        }
        if generation.is_multiple_of(SWEEP_EVERY) {
            let alive = |tgid| std::path::Path::new(&format!("/proc/{tgid}")).exists();
            self.processes.sweep(alive);
            if let Some(u) = self.sources.uprobes.as_mut() {
                self.uprobe_targets.sweep(alive, u);
            }
            self.discover();
        }
        if let Some(map) = self.sources.tasks.as_ref() {
            self.tasks
                .update_live(self.processes.live(), procfs_threads, |tgid| map.get(&tgid));
        }
        self.memory.refresh(Instant::now(), self.processes.live());
        if self.sources.uprobes.is_some() {
            self.allocations.update_live(self.processes.live());
            self.goroutines.update_live(self.processes.live());
        }

        // Names with no process left for the idle time: their series go first, then the name
        // (ids are never reused).
        let in_use = self.processes.services_in_use();
        for id in self.services.release_idle(&in_use, now) {
            self.release_service(id);
        }
        // Containers with no process for as long: their identities and cgroup ids go too.
        let held = self.processes.container_ids();
        self.naming
            .release_idle(&held, now, self.services.idle_release());

        let mut info = self.processes.containers();
        info.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        self.service_info_dropped = info.len().saturating_sub(MAX_SERVICE_INFO);
        info.truncate(MAX_SERVICE_INFO);
        self.service_info = info;

        self.telemetry.tracked_processes = self.processes.len() as u64;
        self.telemetry.syscall_hist_keys = hist_keys as u64;
        self.telemetry.syscall_hist_evicted = self
            .telemetry
            .syscall_hist_evicted
            .max(self.syscalls.hist.vanished())
            .max(evicted);
    }

    /// Names every process with a kernel key, then decides the pending ones; returns the
    /// processes still pending.
    #[allow(clippy::too_many_arguments)]
    fn decide_pending(
        &mut self,
        hist: &[(agent_common::syscall::HistKey, agent_common::syscall::Hist)],
        errors: &[(agent_common::syscall::ErrKey, u64)],
        counts: &[(u32, agent_common::task::TaskCounts)],
        tcp: &[(u32, agent_common::tcp::TcpCounts)],
        allocs: &[(u32, agent_common::uprobe::AllocCounts)],
        go: &[(u32, agent_common::uprobe::GoCounts)],
        now: Instant,
    ) -> HashSet<u32> {
        let tgids = hist
            .iter()
            .map(|(k, _)| k.tgid)
            .chain(errors.iter().map(|(k, _)| k.tgid))
            .chain(counts.iter().map(|(k, _)| *k))
            .chain(tcp.iter().map(|(k, _)| *k).filter(|&t| t != UNKNOWN_OWNER))
            .chain(allocs.iter().map(|(k, _)| *k))
            .chain(go.iter().map(|(k, _)| *k));
        for tgid in tgids {
            self.processes
                .service_of(tgid, now, &mut self.services, &mut self.naming);
        }
        let pending = self.processes.pending();
        if pending.is_empty() {
            return HashSet::new();
        }
        let mut syscalls: HashMap<u32, u64> = HashMap::new();
        for (k, h) in hist {
            *syscalls.entry(k.tgid).or_default() += h.buckets.iter().sum::<u64>();
        }
        pending
            .into_iter()
            .filter(|&tgid| {
                let work = syscalls.get(&tgid).copied().unwrap_or(0);
                self.processes
                    .decide(tgid, work, now, &mut self.services)
                    .is_none()
            })
            .collect()
    }

    /// Drops every series of a released service.
    fn release_service(&mut self, id: ServiceId) {
        self.syscalls.release(id);
        self.tasks.release(id);
        self.tcp.release(id);
        self.memory.release(id);
        self.allocations.release(id);
        self.goroutines.release(id);
        self.http.release(id);
        self.connections.release(id);
    }

    fn forget_process(&mut self, tgid: u32) {
        let (hist_keys, err_keys) = self.syscalls.keys_of(tgid);
        if let Some(maps) = self.sources.syscalls.as_mut() {
            for k in &hist_keys {
                self.hist_keys_removed += u64::from(maps.hist.remove(k));
                self.syscalls.hist.forget(k);
            }
            for k in &err_keys {
                maps.errors.remove(k);
                self.syscalls.errors.forget(k);
            }
        }
        if let Some(map) = self.sources.tasks.as_mut() {
            map.remove(&tgid);
        }
        if let Some(probe) = self.sources.tcp.as_mut() {
            let (processes, services, naming) =
                (&mut self.processes, &mut self.services, &mut self.naming);
            let service = processes.service_of(tgid, Instant::now(), services, naming);
            for gone in self.tcp.retire(tgid, service) {
                probe.counts.remove(&gone);
            }
        }
        self.tasks.forget(tgid);
        if let Some(u) = self.sources.uprobes.as_mut() {
            u.alloc_counts.remove(&tgid);
            u.go_counts.remove(&tgid);
            u.go_gc.remove(&tgid);
        }
        self.allocations.forget(tgid);
        self.goroutines.forget(tgid);
        let (processes, services, naming) =
            (&mut self.processes, &mut self.services, &mut self.naming);
        let now = Instant::now();
        self.http
            .forget(tgid, || processes.service_of(tgid, now, services, naming));
        self.processes.remove(tgid);
    }

    /// Counters of the container identity cache.
    pub fn container_stats(&self) -> containers::ContainerStats {
        self.naming.containers().stats()
    }

    /// Containers whose identity is held now (with a process, or stopped for less than the
    /// idle time).
    pub fn containers_known(&self) -> usize {
        self.naming.containers().len()
    }

    /// Rewrites what can change without reattaching (slow thresholds) from a new config.
    pub fn apply_thresholds(&mut self, config: &Config) -> Result<(), crate::ebpf::ProbeError> {
        match self.sources.syscalls.as_mut() {
            Some(maps) => maps.thresholds.write(&config.probes.syscalls),
            None => Ok(()),
        }
    }
}

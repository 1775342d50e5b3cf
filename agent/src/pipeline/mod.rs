//! From kernel facts to series: process naming, then folding each kernel counter map into
//! per-service series. One `Pipeline` owns the map readers; `collect` runs on every scrape and
//! once a second.

pub mod delta;
pub mod go_elf;
pub mod http_stats;
pub mod memory;
pub mod processes;
pub mod services;
pub mod syscall_stats;
pub mod task_stats;
pub mod tcp_stats;
pub mod uprobe_stats;
pub mod uprobe_targets;

use std::time::{Duration, Instant};

use agent_common::{
    loss::{LOSS_HTTP_EVENTS, LOSS_PROC_EVENTS, LOSS_SYSCALL_EVENTS, LOSS_TCP_EVENTS},
    process::{ProcEvent, PROC_EXEC, PROC_EXIT},
};

use crate::{
    config::Config,
    ebpf::{
        EventRing, HttpProbe, LinkSet, LossCounters, Probes, SyscallMaps, TaskCountMap, TcpProbe,
        Uprobes,
    },
    export::{SpanRecord, SpanSink},
    telemetry::Telemetry,
};
use http_stats::HttpStats;
use memory::Memory;
use processes::{procfs_tgids, ProcessTable};
use services::{Naming, ServiceNames};
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
    pub uprobes: Option<Uprobes>,
    pub http: Option<HttpProbe>,
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
                uprobes: p.uprobes,
                http: p.http,
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
    pub uprobe_targets: UprobeTargets<LinkSet>,
    /// Runs of the (allocation, goroutine) uprobe programs the kernel skipped.
    pub uprobe_missed: (u64, u64),
    pub telemetry: Telemetry,
    generation: u64,
    /// Where slow syscalls go as spans, when OTLP export is on.
    span_sink: Option<SpanSink>,
    /// Unix time minus monotonic time, to date kernel events.
    unix_minus_monotonic_ns: u64,
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
            naming: Naming::new(config.targets.clone()),
            services: ServiceNames::new(config.services.max_services),
            processes: ProcessTable::default(),
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
            uprobe_targets: UprobeTargets::new(
                config.probes.uprobes.max_attachments,
                uprobe_targets::go_check,
            ),
            uprobe_missed: (0, 0),
            telemetry: Telemetry::default(),
            generation: 0,
            span_sink: None,
            unix_minus_monotonic_ns: crate::export::otlp::unix_now_ns()
                .saturating_sub(crate::ebpf::monotonic_ns()),
        };
        if let Some(u) = p.sources.uprobes.as_mut() {
            p.uprobe_targets.start(p.naming.targets(), u);
        }
        p.discover();
        p
    }

    /// Sends slow syscalls to OTLP as spans from now on.
    pub fn set_span_sink(&mut self, sink: SpanSink) {
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
    }

    /// Names every process in procfs that the table does not know yet (except the agent: the
    /// probes leave it out too).
    fn discover(&mut self) {
        let me = std::process::id();
        for tgid in procfs_tgids().into_iter().filter(|&t| t != me) {
            self.processes
                .service_of(tgid, &mut self.services, &mut self.naming);
            self.consider_uprobes(tgid);
        }
    }

    /// Applies every event waiting in the ring buffers (process lifecycle first, so other
    /// events find their process named).
    pub fn drain_events(&mut self) {
        let generation = self.generation;
        let mut lifecycle = Vec::new();
        if let Some(ring) = self.sources.process_events.as_mut() {
            let (processes, services, naming) =
                (&mut self.processes, &mut self.services, &mut self.naming);
            let watch = self.sources.uprobes.is_some();
            let (ok, malformed) = ring.drain(|ev| {
                processes.on_event(&ev, generation, services, naming);
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
            if kind == PROC_EXEC {
                self.consider_uprobes(tgid);
            }
        }
        if let Some(maps) = self.sources.syscalls.as_mut() {
            let (processes, services, naming, stats, sink) = (
                &mut self.processes,
                &mut self.services,
                &mut self.naming,
                &mut self.syscalls,
                self.span_sink.as_ref(),
            );
            let offset = self.unix_minus_monotonic_ns;
            let (ok, malformed) = maps.slow_events.drain(|ev| {
                let service = processes.service_of(ev.tgid, services, naming);
                stats.on_slow(service, ev);
                if let Some(sink) = sink {
                    sink.offer(|| {
                        SpanRecord::slow_syscall(&ev, services.name(service), ev.start_ns + offset)
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
                self.span_sink.as_ref(),
            );
            let offset = self.unix_minus_monotonic_ns;
            let (ok, malformed) = probe.events.drain(|ev| {
                stats.on_event(&ev);
                if let Some(sink) = sink {
                    // The owner is looked up (maybe in /proc) only for a span that is kept.
                    sink.offer(|| {
                        let service = tcp_stats::owner_service(ev.tgid, |tgid| {
                            processes.service_of(tgid, services, naming)
                        });
                        SpanRecord::tcp_retransmit(
                            &ev,
                            services.name(service),
                            ev.timestamp_ns + offset,
                        )
                    });
                }
            });
            self.telemetry.add_received(LOSS_TCP_EVENTS, ok, malformed);
        }
        if let Some(probe) = self.sources.http.as_mut() {
            let (processes, services, naming, stats) = (
                &mut self.processes,
                &mut self.services,
                &mut self.naming,
                &mut self.http,
            );
            let (ok, malformed) = probe.events.drain(|ev| {
                stats.on_event(&ev, |tgid| processes.service_of(tgid, services, naming));
            });
            self.telemetry.add_received(LOSS_HTTP_EVENTS, ok, malformed);
        }
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
            ] {
                self.telemetry.set_kernel_lost(source, loss.lost(source));
                self.telemetry.ring_fill[source as usize] = loss.ring_fill(source);
            }
        }
        let (processes, services, naming) =
            (&mut self.processes, &mut self.services, &mut self.naming);
        let mut service_of = |tgid| processes.service_of(tgid, services, naming);
        if let Some(maps) = self.sources.syscalls.as_ref() {
            let mut hist = Vec::new();
            maps.hist.snapshot(&mut hist);
            self.syscalls.fold_latency(&hist, &mut service_of);
            let mut errors = Vec::new();
            maps.errors.snapshot(&mut errors);
            self.syscalls.fold_errors(&errors, &mut service_of);
        }
        if let Some(map) = self.sources.tasks.as_ref() {
            let mut counts = Vec::new();
            map.snapshot(&mut counts);
            self.tasks.fold(&counts, &mut service_of);
        }
        if let Some(probe) = self.sources.tcp.as_ref() {
            let mut counts = Vec::new();
            probe.counts.snapshot(&mut counts);
            self.tcp.fold(&counts, &mut service_of);
        }
        if let Some(u) = self.sources.uprobes.as_ref() {
            let mut allocs = Vec::new();
            u.alloc_counts.snapshot(&mut allocs);
            self.allocations.fold(&allocs, &mut service_of);
            let mut go = Vec::new();
            u.go_counts.snapshot(&mut go);
            self.goroutines.fold(&go, &mut service_of);
            self.uprobe_missed = u.missed();
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

        self.telemetry.tracked_processes = self.processes.len() as u64;
        self.telemetry.syscall_hist_keys = self.syscalls.hist.len() as u64;
        self.telemetry.syscall_hist_evicted = self.syscalls.hist.vanished();
    }

    fn forget_process(&mut self, tgid: u32) {
        let (hist_keys, err_keys) = self.syscalls.keys_of(tgid);
        if let Some(maps) = self.sources.syscalls.as_mut() {
            for k in &hist_keys {
                maps.hist.remove(k);
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
            if self.tcp.forget(tgid) {
                probe.counts.remove(&tgid);
            }
        }
        self.tasks.forget(tgid);
        if let Some(u) = self.sources.uprobes.as_mut() {
            u.alloc_counts.remove(&tgid);
            u.go_counts.remove(&tgid);
        }
        self.allocations.forget(tgid);
        self.goroutines.forget(tgid);
        let (processes, services, naming) =
            (&mut self.processes, &mut self.services, &mut self.naming);
        self.http
            .forget(tgid, || processes.service_of(tgid, services, naming));
        self.processes.remove(tgid);
    }

    /// Rewrites what can change without reattaching (slow thresholds) from a new config.
    pub fn apply_thresholds(&mut self, config: &Config) -> Result<(), crate::ebpf::ProbeError> {
        match self.sources.syscalls.as_mut() {
            Some(maps) => maps.thresholds.write(&config.probes.syscalls),
            None => Ok(()),
        }
    }
}

//! From kernel facts to series: process naming, then accounting of the syscall histograms.
//! One `Pipeline` owns the map readers; `collect` runs on every scrape and on a timer.

pub mod processes;
pub mod services;
pub mod syscall_stats;
pub mod tcp_stats;

use agent_common::{
    loss::LOSS_PROC_EVENTS,
    process::ProcEvent,
    syscall::{Hist, HistKey},
};

use crate::{
    ebpf::{LossCounters, ProcessEvents, SyscallHistMap, TcpProbe},
    telemetry::Telemetry,
};
use processes::{ProcessTable, Procfs};
use services::ServiceNames;
use syscall_stats::SyscallStats;
use tcp_stats::TcpStats;

/// Every this many collections, forget processes that vanished without an exit event.
const SWEEP_EVERY: u64 = 60;

pub struct Pipeline {
    process_events: Option<ProcessEvents>,
    hist_map: Option<SyscallHistMap>,
    loss: Option<LossCounters>,
    pub services: ServiceNames,
    processes: ProcessTable,
    pub stats: SyscallStats,
    pub telemetry: Telemetry,
    generation: u64,
    scratch: Vec<(HistKey, Hist)>,
    tcp: Option<TcpProbe>,
    pub tcp_stats: TcpStats,
}

impl Pipeline {
    pub fn new(
        process_events: Option<ProcessEvents>,
        hist_map: Option<SyscallHistMap>,
        loss: Option<LossCounters>,
        max_services: usize,
    ) -> Self {
        Self {
            process_events,
            hist_map,
            loss,
            services: ServiceNames::new(max_services),
            processes: ProcessTable::default(),
            stats: SyscallStats::default(),
            telemetry: Telemetry::default(),
            generation: 0,
            scratch: Vec::new(),
            tcp: None,
            tcp_stats: TcpStats::default(),
        }
    }

    /// Adds the TCP retransmit probe's readers; `top_peers` bounds the per-peer series.
    pub fn set_tcp(&mut self, tcp: Option<TcpProbe>, top_peers: usize) {
        self.tcp = tcp;
        self.tcp_stats = TcpStats::new(top_peers);
    }

    /// Applies every process lifecycle event waiting in the ring buffer.
    pub fn drain_process_events(&mut self) {
        let Some(events) = self.process_events.as_mut() else {
            return;
        };
        let (processes, services, generation) =
            (&mut self.processes, &mut self.services, self.generation);
        let (ok, malformed) = events
            .drain(|ev: ProcEvent| processes.on_event(&ev, generation, services, &mut Procfs));
        self.telemetry.add_received(LOSS_PROC_EVENTS, ok, malformed);
    }

    /// Reads the kernel maps and folds what is new into the cumulative series. Process events
    /// submitted before this call are applied first, so every key has its name.
    pub fn collect(&mut self) {
        self.drain_process_events();
        self.generation += 1;
        let generation = self.generation;
        if let Some(loss) = &self.loss {
            self.telemetry
                .set_kernel_lost(LOSS_PROC_EVENTS, loss.lost(LOSS_PROC_EVENTS));
        }
        self.collect_tcp(generation);
        let Some(map) = self.hist_map.as_mut() else {
            return;
        };
        map.snapshot(&mut self.scratch);
        let (processes, services) = (&mut self.processes, &mut self.services);
        self.stats.fold(&self.scratch, |tgid| {
            processes.service_of(tgid, services, &mut Procfs)
        });
        // Processes whose exit came before the previous collection: their final counts have
        // been folded, so their kernel keys and names can go.
        for tgid in self.processes.exited_before(generation - 1) {
            for key in self.stats.keys_of(tgid) {
                map.remove(&key);
                self.stats.forget(&key);
            }
            self.processes.remove(tgid);
        }
        if generation.is_multiple_of(SWEEP_EVERY) {
            self.processes
                .sweep(|tgid| std::path::Path::new(&format!("/proc/{tgid}")).exists());
        }
        self.telemetry.tracked_processes = self.processes.len() as u64;
        self.telemetry.syscall_hist_keys = self.stats.tracked_keys() as u64;
        self.telemetry.syscall_hist_evicted = self.stats.evicted_keys();
    }
}

//! Loading, attaching and reading the kernel probes. This module is the only place that talks
//! to the kernel through BPF syscalls; everything above it sees plain Rust values.

pub mod btf_offsets;
pub mod go_pclntab;
mod http;
mod loss;
mod percpu_table;
mod program_runs;
mod ring;
mod tcp_events;
mod uprobes;

use agent_common::{process::ProcEvent, syscall::SlowSyscallEvent};
use std::sync::{Arc, Mutex};

use aya::{
    maps::{Array, MapData},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};

pub use http::{HttpEvents, HttpProbe};
pub use loss::LossCounters;
pub use percpu_table::{
    KeyInserts, PerCpuTable, SharedTable, SyscallErrorMap, SyscallHistMap, TaskCountMap,
};
pub use program_runs::ProgramRuns;
pub use ring::{decode, EventRing};
pub use tcp_events::{ConnEvents, ConnProbe, TcpCountsMap, TcpEvents, TcpProbe};
pub use uprobes::{libc_in_maps, AllocCountMap, AttachError, GoCountMap, GoSet, LinkSet, Uprobes};

use crate::config::{Config, SyscallProbeConfig};

/// The tracepoints the object's BTF programs attach to, from their ELF section names
/// (`tp_btf/<tracepoint>`, in the section-name string table): aya is handed a BTF with only
/// their `btf_trace_*` typedefs (`btf_offsets::Btf::tracepoint_blob`). Read from the object
/// rather than listed again, so that a new program cannot be missing from the list.
fn btf_tracepoints(object: &[u8]) -> Vec<&str> {
    const PREFIX: &[u8] = b"tp_btf/";
    let mut out: Vec<&str> = object
        .windows(PREFIX.len())
        .enumerate()
        .filter(|(_, w)| *w == PREFIX)
        .filter_map(|(at, _)| {
            let rest = &object[at + PREFIX.len()..];
            let name = &rest[..rest.iter().position(|&b| b == 0)?];
            std::str::from_utf8(name).ok().filter(|n| !n.is_empty())
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The compiled eBPF object, built by `agent/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("STEADFAST_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("reading kernel BTF (the agent needs a kernel with BTF, 5.8+): {0}")]
    Btf(#[from] aya::BtfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("ring buffer {name}: {reason}")]
    Ring { name: &'static str, reason: String },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
}

/// The attached programs and their links. Dropping this (and `Uprobes`, which shares it to
/// attach at run time) detaches every program.
pub struct Attached {
    _ebpf: Arc<Mutex<Ebpf>>,
}

/// The syscall probe's maps.
pub struct SyscallMaps {
    pub hist: SyscallHistMap,
    /// Keys the programs inserted into `hist` (for evictions nobody saw).
    pub hist_inserts: KeyInserts,
    pub errors: SyscallErrorMap,
    pub slow_events: EventRing<SlowSyscallEvent>,
    pub thresholds: SlowThresholds,
}

/// The loaded probes: what stays attached, and the readers of the maps userspace needs.
pub struct Probes {
    pub attached: Attached,
    pub syscalls: Option<SyscallMaps>,
    pub tasks: Option<TaskCountMap>,
    pub process_events: EventRing<ProcEvent>,
    pub loss: LossCounters,
    pub tcp: Option<TcpProbe>,
    /// TCP connections (`probes.connections`), on the retransmit probe's state-change program.
    pub connections: Option<ConnProbe>,
    /// Uprobe programs, loaded when some target opts in; attached per process by the pipeline.
    pub uprobes: Option<Uprobes>,
    pub http: Option<HttpProbe>,
    /// Runs of the tracepoint programs the kernel skipped.
    pub program_runs: ProgramRuns,
}

impl Probes {
    /// Loads the object, sizes its maps from the config and attaches the enabled programs.
    pub fn load(config: &Config) -> Result<Self, ProbeError> {
        raise_memlock_limit();
        raise_nofile_limit();
        let agent_tgid = std::process::id();
        let syscalls = &config.probes.syscalls;
        let tcp = &config.probes.tcp;
        let conn = &config.probes.connections;
        // Offsets of the kernel fields the TCP probes read. A kernel whose layout we do not
        // understand loses these probes, not the agent.
        // `EbpfLoader::new` parses the whole kernel BTF (about 15 MiB while it does), which
        // the loader does not need: the object has no CO-RE relocations. It is dropped at
        // once, first thing, so that the parses below reuse its memory instead of adding to
        // the agent's peak (VmHWM).
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        // The kernel's BTF, parsed by our own parser (see `btf` below for aya's part).
        let kernel = btf_offsets::KernelOffsets::from_sys_fs();
        let tcp_offsets = if tcp.enabled || conn.enabled {
            match kernel.as_ref().map_err(Clone::clone).and_then(|k| k.tcp()) {
                Ok(offsets) => Some(offsets),
                Err(error) => {
                    tracing::warn!(%error, "TCP retransmit and connection probes disabled");
                    None
                }
            }
        } else {
            None
        };
        let tcp_enabled = tcp.enabled && tcp_offsets.is_some();
        let conn_enabled = conn.enabled && tcp_offsets.is_some();
        let conn_on = u32::from(conn_enabled);
        let conn_wakeup = u64::from(conn.wakeup_min_bytes);
        // Zeros when the probe is off: its programs are then neither loaded nor attached.
        let tcp_offsets = tcp_offsets.unwrap_or_default();
        let tcp_wakeup = u64::from(tcp.wakeup_min_bytes);
        let u = &config.probes.uprobes;
        let allocations = config.targets.iter().any(|t| t.allocations);
        let goroutines = config.probes.go.all_processes
            || config.probes.go.gc_all_processes
            || config.targets.iter().any(|t| t.goroutines);
        // Maps of probe sets no target uses stay small (LRU maps need room per CPU).
        let sized = |on: bool, n: u32| if on { n } else { 256 };
        let http = &config.probes.http;
        let http_wakeup = u64::from(http.wakeup_min_bytes);
        let syscall_wakeup = u64::from(syscalls.wakeup_min_bytes);
        // aya's view of the kernel BTF is only asked for the ids of the `btf_trace_*` typedefs
        // of the tracepoints the programs attach to: a blob with just those (at their ids)
        // instead of aya's parse of the whole BTF, which was the agent's peak of memory
        // (VmHWM: about 15 MiB more than its steady state). If our parser cannot read the
        // kernel's BTF, aya parses all of it as before.
        let btf = match kernel {
            Ok(k) => {
                let blob = k.btf().tracepoint_blob(&btf_tracepoints(OBJECT));
                drop(k);
                Btf::parse(&blob, Default::default())?
            }
            Err(_) => Btf::from_sys_fs()?,
        };
        // Socket reads and writes through `sock_recv_length`/`sock_send_length` (6.3+), else
        // by number in the raw syscall programs.
        let http_sock_io = http::has_sock_tracepoints(&btf);
        let syscall_probe_on = u32::from(syscalls.enabled);
        let http_probe_on = u32::from(http.enabled);
        let http_syscall_io = u32::from(!http_sock_io);
        let mut ebpf = loader
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("WAKEUP_MIN_BYTES", &config.probes.wakeup_min_bytes, true)
            .override_global("SYSCALL_WAKEUP_MIN_BYTES", &syscall_wakeup, true)
            .override_global("TCP_OFFSETS", &tcp_offsets, true)
            .override_global("TCP_WAKEUP_MIN_BYTES", &tcp_wakeup, true)
            .map_max_entries("TCP_EVENTS", tcp.ring_buffer_bytes)
            .map_max_entries("TCP_OWNERS", tcp.max_sockets)
            .override_global("CONN_ENABLED", &conn_on, true)
            .override_global("CONN_WAKEUP_MIN_BYTES", &conn_wakeup, true)
            .map_max_entries(
                "CONN_EVENTS",
                if conn_enabled {
                    conn.ring_buffer_bytes
                } else {
                    4096
                },
            )
            .map_max_entries("CONN_SOCKS", sized(conn_enabled, conn.max_connections))
            .map_max_entries("SYSCALL_THREADS", syscalls.max_threads)
            .map_max_entries("SYSCALL_HIST", syscalls.max_histogram_keys)
            .map_max_entries("SYSCALL_ERRORS", syscalls.max_error_keys)
            .map_max_entries("SYSCALL_EVENTS", syscalls.events_ring_buffer_bytes)
            .map_max_entries("TASKS", config.probes.tasks.max_processes)
            .map_max_entries("ALLOC_PENDING", sized(allocations, u.max_threads))
            .map_max_entries("ALLOC_PTRS", sized(allocations, u.max_pointers))
            .map_max_entries("ALLOC_COUNTS", sized(allocations, u.max_processes))
            .map_max_entries("GO_COUNTS", sized(goroutines, u.max_processes))
            .map_max_entries("GO_GC", sized(goroutines, u.max_processes))
            .map_max_entries(
                "PROC_EVENTS",
                config.probes.process_events.ring_buffer_bytes,
            )
            .override_global("SYSCALL_PROBE_ON", &syscall_probe_on, true)
            .override_global("HTTP_PROBE_ON", &http_probe_on, true)
            .override_global("HTTP_SYSCALL_IO", &http_syscall_io, true)
            .override_global("HTTP_WAKEUP_MIN_BYTES", &http_wakeup, true)
            .map_max_entries("HTTP_SOCKS", sized(http.enabled, http.max_connections))
            .map_max_entries("HTTP_IO", sized(http.enabled, http.max_threads))
            .map_max_entries(
                "HTTP_EVENTS",
                if http.enabled {
                    http.ring_buffer_bytes
                } else {
                    4096
                },
            )
            .load(OBJECT)?;

        // Process names first, so the first samples of other probes already have a service.
        attach_btf(&mut ebpf, &btf, "sched_process_exec", "sched_process_exec")?;
        attach_btf(&mut ebpf, &btf, "sched_process_exit", "sched_process_exit")?;
        let process_events = EventRing::new(take_map(&mut ebpf, "PROC_EVENTS")?, "PROC_EVENTS")?;
        let loss = LossCounters::new(
            take_map(&mut ebpf, "EVENTS_LOST")?,
            take_map(&mut ebpf, "RING_FILL")?,
        )?;

        let tasks = if config.probes.tasks.enabled {
            let map = TaskCountMap::new(take_map(&mut ebpf, "TASKS")?, "TASKS")?;
            attach_btf(&mut ebpf, &btf, "task_newtask", "task_newtask")?;
            attach_btf(&mut ebpf, &btf, "task_exit", "sched_process_exit")?;
            Some(map)
        } else {
            None
        };

        let syscall_maps = if syscalls.enabled {
            let mut thresholds = SlowThresholds::new(take_map(&mut ebpf, "SYSCALL_SLOW_NS")?)?;
            thresholds.write(syscalls)?;
            let maps = SyscallMaps {
                hist: SyscallHistMap::new(take_map(&mut ebpf, "SYSCALL_HIST")?, "SYSCALL_HIST")?,
                hist_inserts: KeyInserts::new(
                    take_map(&mut ebpf, "SYSCALL_HIST_INSERTS")?,
                    "SYSCALL_HIST_INSERTS",
                )?,
                errors: SyscallErrorMap::new(
                    take_map(&mut ebpf, "SYSCALL_ERRORS")?,
                    "SYSCALL_ERRORS",
                )?,
                slow_events: EventRing::new(
                    take_map(&mut ebpf, "SYSCALL_EVENTS")?,
                    "SYSCALL_EVENTS",
                )?,
                thresholds,
            };
            // Before the syscall programs: no thread gets a slot that its exit does not free.
            attach_btf(&mut ebpf, &btf, "syscall_thread_exit", "sched_process_exit")?;
            // Before the syscall programs too: a call in flight on a CPU is moved to its
            // thread's slot when the thread leaves the CPU, from the first enter on.
            attach_btf(&mut ebpf, &btf, "syscall_switch", "sched_switch")?;
            Some(maps)
        } else {
            None
        };

        let connections = if conn_enabled {
            Some(ConnProbe {
                events: ConnEvents::new(take_map(&mut ebpf, "CONN_EVENTS")?, "CONN_EVENTS")?,
            })
        } else {
            None
        };
        if tcp_enabled || conn_enabled {
            // Owners first, so sockets connected from now on are attributed. The same
            // program follows connections when `probes.connections` is on.
            attach_btf(
                &mut ebpf,
                &btf,
                "inet_sock_set_state",
                "inet_sock_set_state",
            )?;
        }
        let tcp = if tcp_enabled {
            let probe = TcpProbe {
                events: TcpEvents::new(take_map(&mut ebpf, "TCP_EVENTS")?, "TCP_EVENTS")?,
                counts: TcpCountsMap::new(take_map(&mut ebpf, "TCP_COUNTS")?, "TCP_COUNTS")?,
            };
            attach_btf(&mut ebpf, &btf, "tcp_retransmit_skb", "tcp_retransmit_skb")?;
            attach_btf(
                &mut ebpf,
                &btf,
                "tcp_retransmit_synack",
                "tcp_retransmit_synack",
            )?;
            Some(probe)
        } else {
            None
        };
        // The HTTP probe's ring and socket tracepoints: where they cannot attach, the agent
        // runs without them and says so, instead of not running at all.
        let http = if http.enabled {
            match http::attach(&mut ebpf, &btf, http_sock_io) {
                Ok(probe) => Some(probe),
                Err(error) => {
                    tracing::error!(
                        %error,
                        "HTTP probe off: it could not attach (the other probes run); set \
                         probes.http.enabled: false to silence this"
                    );
                    None
                }
            }
        } else {
            None
        };
        // The raw syscall programs carry the syscall probe and the HTTP probe's syscall part
        // (each behind its load-time flag): attached when either is on. The exit first: an
        // enter that armed something always meets its exit.
        if syscalls.enabled || http_probe_on != 0 {
            attach_btf(&mut ebpf, &btf, "sys_exit", "sys_exit")?;
            attach_btf(&mut ebpf, &btf, "sys_enter", "sys_enter")?;
        }
        let uprobe_maps = if allocations || goroutines {
            Some(Uprobes::load(&mut ebpf, allocations, goroutines)?)
        } else {
            None
        };
        let program_runs = ProgramRuns::new(&ebpf);
        let ebpf = Arc::new(Mutex::new(ebpf));
        let uprobes =
            uprobe_maps.map(|maps| Uprobes::new(ebpf.clone(), maps, allocations, goroutines));
        Ok(Self {
            attached: Attached { _ebpf: ebpf },
            syscalls: syscall_maps,
            tasks,
            process_events,
            loss,
            tcp,
            connections,
            uprobes,
            http,
            program_runs,
        })
    }
}

/// The per-syscall slow thresholds (`SYSCALL_SLOW_NS`), rewritable while attached.
pub struct SlowThresholds {
    map: Array<MapData, u64>,
}

impl SlowThresholds {
    fn new(map: aya::maps::Map) -> Result<Self, ProbeError> {
        let map = Array::try_from(map).map_err(|source| ProbeError::Map {
            name: "SYSCALL_SLOW_NS",
            source,
        })?;
        Ok(Self { map })
    }

    /// Writes the thresholds of `config` (used at load and on reload).
    pub fn write(&mut self, config: &SyscallProbeConfig) -> Result<(), ProbeError> {
        for (nr, ns) in config.slow_thresholds_ns().into_iter().enumerate() {
            self.map
                .set(nr as u32, ns, 0)
                .map_err(|source| ProbeError::Map {
                    name: "SYSCALL_SLOW_NS",
                    source,
                })?;
        }
        Ok(())
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
}

/// Loads program `name` for the BTF tracepoint `tracepoint` and attaches it.
fn attach_btf(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    tracepoint: &str,
) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { name, source };
    let program: &mut BtfTracePoint = program(ebpf, name)?;
    program.load(tracepoint, btf).map_err(err)?;
    program.attach().map_err(err)?;
    Ok(())
}

/// Program `name` of the object, as its kind `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memcg and ignore it.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass; failure is reported through its return value.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

/// Raises the soft limit on open files to the hard limit: every API client (a blocking query
/// or an event stream) holds a connection.
pub fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The system page size (for `/proc/<pid>/statm`).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, so event timestamps
/// can be turned into wall-clock time.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Clock ticks per second (`/proc/<pid>/stat` CPU times are in these).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_tracepoints_are_read_from_the_section_names() {
        let strtab =
            b"\0.text\0tp_btf/sys_exit\0license\0tp_btf/sys_enter\0tp_btf/sys_exit\0tp_btf/\0";
        assert_eq!(btf_tracepoints(strtab), ["sys_enter", "sys_exit"]);
        // The agent's own object: every tracepoint `attach_btf` is called with.
        let ours = btf_tracepoints(OBJECT);
        for tp in [
            "sched_process_exec",
            "sched_process_exit",
            "task_newtask",
            "sched_switch",
            "inet_sock_set_state",
            "tcp_retransmit_skb",
            "tcp_retransmit_synack",
            "sys_enter",
            "sys_exit",
            "sock_recv_length",
            "sock_send_length",
        ] {
            assert!(ours.contains(&tp), "{tp} not in {ours:?}");
        }
    }
}

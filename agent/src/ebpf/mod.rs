//! Loading, attaching and reading the kernel probes. This module is the only place that talks
//! to the kernel through BPF syscalls; everything above it sees plain Rust values.

pub mod btf_offsets;
mod loss;
mod process_events;
mod syscall_latency;
mod tcp_events;

use aya::{programs::BtfTracePoint, Btf, Ebpf, EbpfLoader};

pub use loss::LossCounters;
pub use process_events::ProcessEvents;
pub use syscall_latency::SyscallHistMap;
pub use tcp_events::{TcpCountsMap, TcpEvents, TcpProbe};

use crate::config::Config;

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
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
}

/// The attached programs and their links. Dropping this detaches every program.
pub struct Attached {
    _ebpf: Ebpf,
}

/// The loaded probes: what stays attached, and the readers of the maps userspace needs.
pub struct Probes {
    pub attached: Attached,
    pub syscall_hist: Option<SyscallHistMap>,
    pub process_events: ProcessEvents,
    pub loss: LossCounters,
    pub tcp: Option<TcpProbe>,
}

impl Probes {
    /// Loads the object, sizes its maps from the config and attaches the enabled programs.
    pub fn load(config: &Config) -> Result<Self, ProbeError> {
        raise_memlock_limit();
        let agent_tgid = std::process::id();
        let syscalls = &config.probes.syscalls;
        let tcp = &config.probes.tcp;
        // Offsets of the kernel fields the TCP probe reads. A kernel whose layout we do not
        // understand loses this probe, not the agent.
        let tcp_offsets = if tcp.enabled {
            match btf_offsets::KernelOffsets::from_sys_fs().and_then(|k| k.tcp()) {
                Ok(offsets) => Some(offsets),
                Err(error) => {
                    tracing::warn!(%error, "TCP retransmit probe disabled");
                    None
                }
            }
        } else {
            None
        };
        let tcp_enabled = tcp_offsets.is_some();
        // Zeros when the probe is off: its programs are then neither loaded nor attached.
        let tcp_offsets = tcp_offsets.unwrap_or_default();
        let tcp_wakeup = u64::from(tcp.wakeup_min_bytes);
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("TCP_OFFSETS", &tcp_offsets, true)
            .override_global("TCP_WAKEUP_MIN_BYTES", &tcp_wakeup, true)
            .map_max_entries("TCP_EVENTS", tcp.ring_buffer_bytes)
            .map_max_entries("TCP_OWNERS", tcp.max_sockets)
            .map_max_entries("SYSCALL_THREADS", syscalls.max_threads)
            .map_max_entries("SYSCALL_HIST", syscalls.max_histogram_keys)
            .map_max_entries(
                "PROC_EVENTS",
                config.probes.process_events.ring_buffer_bytes,
            )
            .load(OBJECT)?;
        let btf = Btf::from_sys_fs()?;

        // Process names first, so the first syscall samples already have a service.
        attach_btf(&mut ebpf, &btf, "sched_process_exec")?;
        attach_btf(&mut ebpf, &btf, "sched_process_exit")?;
        let process_events = ProcessEvents::new(take_map(&mut ebpf, "PROC_EVENTS")?)?;
        let loss = LossCounters::new(take_map(&mut ebpf, "EVENTS_LOST")?)?;

        let syscall_hist = if syscalls.enabled {
            let map = SyscallHistMap::new(take_map(&mut ebpf, "SYSCALL_HIST")?)?;
            attach_btf(&mut ebpf, &btf, "sys_enter")?;
            attach_btf(&mut ebpf, &btf, "sys_exit")?;
            Some(map)
        } else {
            None
        };
        let tcp = if tcp_enabled {
            let probe = TcpProbe {
                events: TcpEvents::new(take_map(&mut ebpf, "TCP_EVENTS")?)?,
                counts: TcpCountsMap::new(take_map(&mut ebpf, "TCP_COUNTS")?)?,
            };
            // Owners first, so sockets connected from now on are attributed.
            attach_btf(&mut ebpf, &btf, "inet_sock_set_state")?;
            attach_btf(&mut ebpf, &btf, "tcp_retransmit_skb")?;
            attach_btf(&mut ebpf, &btf, "tcp_retransmit_synack")?;
            Some(probe)
        } else {
            None
        };
        Ok(Self {
            attached: Attached { _ebpf: ebpf },
            syscall_hist,
            process_events,
            loss,
            tcp,
        })
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
}

/// Programs are named after the BTF tracepoint they attach to.
fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, name: &'static str) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { name, source };
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(err)?;
    program.load(name, btf).map_err(err)?;
    program.attach().map_err(err)?;
    Ok(())
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

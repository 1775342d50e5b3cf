//! steadfast: an eBPF host stability agent.
//!
//! Data flows one way: `ebpf` (load, attach, read maps and ring buffers) -> `pipeline`
//! (name processes, account histograms) -> `metrics` (Prometheus exposition). `daemon` wires
//! them together; `config` and `cli` are checked before anything touches the kernel.

pub mod api;
pub mod background;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod config;
pub mod control;
pub mod daemon;
pub mod ebpf;
pub mod errno;
pub mod export;
pub mod input;
pub mod layers;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod random;
pub mod reload;
pub mod rules;
pub mod ruletest;
pub mod store;
pub mod syscalls;
pub mod telemetry;
pub mod yaml;

/// Exit code for a bad configuration or bad usage (sysexits' EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

//! What grows with the size of the host, checked on whatever host (or `cargo xtask vm-test`
//! guest) runs it: the kernel memory the agent's maps lock, and per-CPU kernel threads, which
//! must never push a workload out of its own `service`. Needs root.
//!
//! Both tests print a line `xtask-vm:` that `cargo xtask vm-test` collects into its report.

mod support;

use support::{build_workload, run_to_end, unique_name, Agent};

const MIB: u64 = 1 << 20;

/// CPUs the kernel sizes per-CPU maps for (`/sys/devices/system/cpu/possible`, e.g. `0-63`).
fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// The bound the agent's default config keeps to: 64 MiB up to 64 CPUs, then 1/3 MiB more per
/// CPU (128 MiB at 256 CPUs).
fn bound_bytes(cpus: u64) -> u64 {
    64 * MIB + cpus.saturating_sub(64) * MIB / 3
}

/// One BPF object the agent holds, from `/proc/<pid>/fdinfo/<fd>`.
#[derive(Debug)]
struct Object {
    kind: String,
    max_entries: u64,
    value_size: u64,
    memlock: u64,
}

/// The agent's BPF maps and programs with their locked memory (`memlock:` in fdinfo), each
/// once: the agent may hold two descriptors of one map (`map_id:`, `prog_id:`).
fn bpf_objects(pid: u32) -> Vec<Object> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let Some(memlock) = field("memlock").and_then(|v| v.parse().ok()) else {
            continue;
        };
        let kind = match (field("map_type"), field("prog_type")) {
            (Some(t), _) => format!("map type {t}"),
            (None, Some(t)) => format!("prog type {t}"),
            (None, None) => continue,
        };
        let id = field("map_id").or_else(|| field("prog_id"));
        if let Some(id) = id {
            if !seen.insert((kind.starts_with("map"), id)) {
                continue;
            }
        }
        out.push(Object {
            kind,
            max_entries: field("max_entries")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            value_size: field("value_size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            memlock,
        });
    }
    out.sort_by_key(|o| std::cmp::Reverse(o.memlock));
    out
}

/// With the default config, the maps and programs the agent loads lock at most
/// `bound_bytes(possible CPUs)` of kernel memory (per-CPU maps are sized by the possible CPUs).
#[test]
fn locked_map_memory_stays_within_the_bound_for_this_host() {
    let agent = Agent::start("");
    let objects = bpf_objects(agent.pid());
    let maps = objects.iter().filter(|o| o.kind.starts_with("map")).count();
    assert!(maps >= 10, "the agent holds {maps} maps: {objects:?}");
    let total: u64 = objects.iter().map(|o| o.memlock).sum();
    let cpus = possible_cpus();
    for o in &objects {
        println!(
            "  {:>12} bytes  {:<14} max_entries {:>7}  value_size {:>5}",
            o.memlock, o.kind, o.max_entries, o.value_size
        );
    }
    let bound = bound_bytes(cpus);
    println!(
        "xtask-vm: locked_bytes={total} possible_cpus={cpus} bound_bytes={bound} objects={}",
        objects.len()
    );
    assert!(
        total <= bound,
        "the agent's maps and programs lock {:.1} MiB on {cpus} possible CPUs; the bound is {:.1} MiB",
        total as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
}

/// With the default config, a workload started after the agent is reported under its own
/// `service`, however many per-CPU kernel threads (`ksoftirqd/N`, `migration/N`,
/// `kworker/N:M`, ...) the host runs: exactly its N getppid calls land there.
#[test]
fn a_workload_has_its_own_service_whatever_the_cpu_count() {
    const N: u64 = 20_000;
    // `services:` given: the test agent keeps the default admission (tests/support).
    let agent = Agent::start("services:\n  max_services: 100\n");
    let name = unique_name("sfsz");
    let bin = build_workload("getppid_loop", agent.dir.path(), &name);
    run_to_end(&bin, &[&N.to_string()]);
    let s = agent.scrape();
    let count = |service: &str| {
        s.value(
            "steadfast_syscall_duration_seconds_count",
            &[("syscall", "getppid"), ("service", service)],
        )
        .unwrap_or(0.0)
    };
    let services: std::collections::BTreeSet<&str> =
        s.0.lines()
            .filter(|l| l.starts_with("steadfast_syscall_duration_seconds_count{"))
            .filter_map(|l| l.split("service=\"").nth(1)?.split('"').next())
            .collect();
    println!(
        "xtask-vm: own_service={} other_getppid={} services={} online_cpus={}",
        count(&name),
        count("other"),
        services.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    assert_eq!(
        count(&name),
        N as f64,
        "the workload's getppid calls are not under service={name:?} ({} under \"other\"; \
         {} services: {services:?})",
        count("other"),
        services.len()
    );
}

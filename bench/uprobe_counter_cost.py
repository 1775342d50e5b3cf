#!/usr/bin/env python3
"""What the allocation uprobes' programs cost inside the kernel, for two agent binaries.

Usage (root): bench/uprobe_counter_cost.py OLD_BINARY NEW_BINARY [ROUNDS] [M]

Each round starts each agent in turn (rotating the order) with only the allocation probes on
a target (`tests/workloads/alloc_pattern.c`, built here), runs the pattern with M mallocs,
and reads the kernel's own statistics of each BPF program the agent holds
(`kernel.bpf_stats_enabled=1`: `run_time_ns` and `run_cnt` in `/proc/<agent>/fdinfo/<fd>`)
before and after the pattern. Programs are told apart by how many times they ran during it
(malloc_enter ~M, alloc_return ~M + 2 M/10, free_enter ~M/2, calloc_enter and realloc_enter
~M/10). Prints the median ns per run of each program for each binary: the cost of the
program itself, without the uprobe trap (which is the same for both).

Not a test: it asserts nothing. Used for the atomic-add figures in docs/benchmarks.md.
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def prog_stats(pid):
    """prog_id -> (run_time_ns, run_cnt) of every BPF program `pid` holds."""
    out = {}
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                fields = dict(
                    line.split(":", 1) for line in f.read().splitlines() if ":" in line
                )
        except OSError:
            continue
        if "prog_id" in fields and "run_cnt" in fields:
            out[int(fields["prog_id"])] = (
                int(fields["run_time_ns"]),
                int(fields["run_cnt"]),
            )
    return out


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_for(what, fn, secs=30):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def one_run(binary, workload, m, work):
    port = free_port()
    cfg = os.path.join(work, "steadfast.yaml")
    with open(cfg, "w") as f:
        f.write(
            f"""http:
  listen_address: 127.0.0.1:{port}
probes:
  syscalls:
    enabled: false
  tasks:
    enabled: false
  tcp:
    enabled: false
control:
  api_socket: null
  signals_dir: null
  state_dir: {work}/state
  state_page: null
rules:
  directory: {work}/rules.d
  state_dir: {work}/state
targets:
  - service: allocbench
    exe: {workload}
    allocations: true
"""
        )
    agent = subprocess.Popen(
        [binary, "run", "--config", cfg],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "agent.log"), "w"),
    )
    try:
        wait_for("the agent", lambda: scrape(port) is not None)
        w = subprocess.Popen(
            [workload, str(m)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert w.stdout.readline().strip() == "started"
        attached = 'steadfast_uprobe_attachments{probe="allocations",scope="process"} 1'
        wait_for("the attach", lambda: attached in scrape(port))
        before = prog_stats(agent.pid)
        w.stdin.write("go\n")
        w.stdin.flush()
        assert w.stdout.readline().strip() == "ready"
        after = prog_stats(agent.pid)
        w.stdin.close()
        w.wait()
        runs = []
        for pid, (t1, c1) in after.items():
            t0, c0 = before.get(pid, (0, 0))
            if c1 - c0 >= m // 20:
                runs.append((c1 - c0, (t1 - t0) / (c1 - c0)))
        return sorted(runs, reverse=True)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait()


def main():
    old, new = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    m = int(sys.argv[4]) if len(sys.argv) > 4 else 200_000
    work = tempfile.mkdtemp(prefix="uprobe-cost-")
    os.makedirs(os.path.join(work, "rules.d"))
    workload = os.path.join(work, "allocbench")
    subprocess.check_call(
        ["cc", "-O2", "-o", workload, os.path.join(ROOT, "tests/workloads/alloc_pattern.c")]
    )
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_were = f.read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    results = {"old": [], "new": []}
    try:
        for r in range(rounds):
            order = [("old", old), ("new", new)]
            if r % 2:
                order.reverse()
            for label, binary in order:
                runs = one_run(binary, workload, m, work)
                results[label].append(runs)
                print(label, " ".join(f"{c}x{ns:.1f}ns" for c, ns in runs), flush=True)
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(stats_were)
    print(f"\nmedian ns per run over {rounds} rounds, M = {m} (programs by runs in a round):")
    for label in ("old", "new"):
        per_prog = list(zip(*results[label]))
        cells = []
        for prog in per_prog:
            cells.append(f"{prog[0][0]} runs: {statistics.median(ns for _, ns in prog):.1f}")
        print(label, "; ".join(cells))
    with open("/proc/loadavg") as f:
        print("load average:", f.read().split()[:3])


if __name__ == "__main__":
    main()

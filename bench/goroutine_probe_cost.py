#!/usr/bin/env python3
"""What the goroutine probes cost a Go program that starts and ends goroutines quickly.

Usage (root): bench/goroutine_probe_cost.py AGENT_BINARY [ROUNDS] [RATE] [SECONDS]
(defaults: 7 rounds, 100,000 goroutines a second, 3 s per sample)

Builds `bench/workloads/goroutine_churn.go` with Debian's Go (/usr/lib/go/bin/go), then in each
round runs it twice, in a rotating order: **bare** (no agent running) and **probed** (an agent
with only the uprobe probes' target on: that binary as an `exe` target, goroutines on, so
`runtime.newproc1` and `runtime.goexit0` trap once each per goroutine, and the GC probes
ride along). The agent is started and stopped inside the round; the probed sample starts once
the agent reports the file attachment. The figure is the workload's own CPU time (user + system,
getrusage, around its loop only): the traps and programs run in its threads, so their cost is
in it, and other processes' work on the CPU is not. Prints each sample, then the medians: CPU
time per goroutine bare and probed, their difference (the probes' cost per goroutine: two
traps and two programs), and the share of one core the program uses at RATE, bare and probed.
The probed sample also checks the agent's `steadfast_go_goroutines_created_total` saw every
goroutine.

Not a test: it asserts nothing. Used for the goroutine probe figure in docs/benchmarks.md.
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


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_for(what, fn, secs=60):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def churn(workload, rate, secs):
    """(goroutines, cpu_ns, wall_ns) of one run of the workload."""
    out = subprocess.check_output([workload, str(rate), str(secs)], text=True).split()
    assert out[0] == "done", out
    return int(out[1]), int(out[2]), int(out[3])


def created(port):
    for line in scrape(port).splitlines():
        if line.startswith('steadfast_go_goroutines_created_total{service="churnbench"}'):
            return float(line.split()[-1])
    return 0.0


def probed(binary, workload, rate, secs, work):
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
  - service: churnbench
    exe: {workload}
"""
        )
    agent = subprocess.Popen(
        [binary, "run", "--config", cfg],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "agent.log"), "w"),
    )
    try:
        attached = 'steadfast_uprobe_attachments{probe="goroutines",scope="file"} 1'
        wait_for("the attach", lambda: attached in scrape(port))
        before = created(port)
        sample = churn(workload, rate, secs)
        seen = created(port) - before
        return sample, seen
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait()


def main():
    binary = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    secs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    work = tempfile.mkdtemp(prefix="goroutine-cost-")
    os.makedirs(os.path.join(work, "rules.d"))
    workload = os.path.join(work, "goroutine_churn")
    env = dict(os.environ, HOME=work, GOCACHE=os.path.join(work, "gocache"),
               GOTOOLCHAIN="local", GO111MODULE="off", CGO_ENABLED="0", GOFLAGS="")
    subprocess.check_call(
        ["/usr/lib/go/bin/go", "build", "-o", workload,
         os.path.join(ROOT, "bench/workloads/goroutine_churn.go")],
        env=env,
    )
    with open("/proc/loadavg") as f:
        load0 = f.read().split()[:3]
    per = {"bare": [], "probed": []}
    share = {"bare": [], "probed": []}
    for r in range(rounds):
        order = ["bare", "probed"] if r % 2 == 0 else ["probed", "bare"]
        for case in order:
            if case == "bare":
                (n, cpu, wall), seen = churn(workload, rate, secs), None
            else:
                (n, cpu, wall), seen = probed(binary, workload, rate, secs, work)
            per[case].append(cpu / n)
            share[case].append(cpu / wall)
            extra = "" if seen is None else f", agent saw {seen:.0f} created"
            print(
                f"round {r + 1} {case}: {n} goroutines in {wall / 1e9:.2f} s, "
                f"CPU {cpu / 1e6:.1f} ms = {cpu / n:.0f} ns per goroutine, "
                f"{100 * cpu / wall:.1f}% of a core{extra}",
                flush=True,
            )
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]
    b, p = statistics.median(per["bare"]), statistics.median(per["probed"])
    print(f"\nmedians over {rounds} rounds at {rate} goroutines/s, {secs} s each:")
    print(f"bare   {b:.0f} ns CPU per goroutine (range {min(per['bare']):.0f}-{max(per['bare']):.0f}), "
          f"{100 * statistics.median(share['bare']):.1f}% of a core")
    print(f"probed {p:.0f} ns CPU per goroutine (range {min(per['probed']):.0f}-{max(per['probed']):.0f}), "
          f"{100 * statistics.median(share['probed']):.1f}% of a core")
    print(f"probes {p - b:.0f} ns per goroutine (two traps), "
          f"{100 * (p - b) * rate / 1e9:.1f}% of a core at {rate}/s")
    print("load average before:", load0, "after:", load1)


if __name__ == "__main__":
    main()

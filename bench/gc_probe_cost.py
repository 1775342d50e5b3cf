#!/usr/bin/env python3
"""What the GC probes (probes.go.gc_all_processes) cost a Go program per garbage collection.

Usage (root): bench/gc_probe_cost.py AGENT_BINARY [ROUNDS] [CYCLES] [HEAP_BYTES]
(defaults: 7 rounds, 2,000 cycles, 64 KiB of live heap)

Builds `bench/workloads/gc_loop.go` stripped with Debian's Go (/usr/lib/go/bin/go), then in
each round runs it twice, in a rotating order: **bare** (no agent running) and **probed** (an
agent with no targets and its defaults for Go, so the program, which no target names, gets the
GC probes alone on its file: `runtime.gcMarkTermination`, `runtime.stopTheWorld`,
`runtime.stopTheWorldWithSema`, `runtime.startTheWorldWithSema`). The program starts, waits
until the agent reports the GC file attachment, then calls runtime.GC() CYCLES times. The figure
is its own CPU time (user + system, getrusage, around the loop only) per cycle: the traps and
programs run in its threads. Prints each sample, then the medians: CPU per cycle bare and
probed and their difference (the probes' cost per GC cycle), and the median of each round's
probed minus bare (the two run back to back, so it is less exposed to the machine's load). The probed sample also checks the
agent's `steadfast_go_gc_cycles_total` moved by exactly the program's change of NumGC.

Not a test: it asserts nothing. Used for the GC probe figure in docs/benchmarks.md.
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
NAME = "gcloopbench"


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


def value(text, prefix):
    """The sum of the samples whose line starts with `prefix`."""
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


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


def run(workload, cycles, heap, before_loop=lambda: None):
    """(cycles, cpu_ns, wall_ns) of one run of the workload."""
    p = subprocess.Popen([workload, str(cycles), str(heap)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    before_loop()
    p.stdin.write("\n")
    p.stdin.flush()
    out = p.stdout.readline().split()
    p.stdin.close()
    p.wait()
    assert out[0] == "done", out
    return int(out[1]), int(out[2]), int(out[3])


def probed(binary, workload, cycles, heap, work):
    port = free_port()
    cfg = os.path.join(work, "steadfast.yaml")
    with open(cfg, "w") as f:
        f.write(
            f"""http:
  listen_address: 127.0.0.1:{port}
probes:
  syscalls:
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
"""
        )
    agent = subprocess.Popen(
        [binary, "run", "--config", cfg],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "agent.log"), "w"),
    )
    # Every service's: a process that lives this briefly with the syscall probe off may be
    # named `short_lived` rather than by its comm; it is the only Go process probed here.
    cycles_metric = "steadfast_go_gc_cycles_total{"
    try:
        wait_for("the agent", lambda: "steadfast_collections_total" in scrape(port))
        files0 = value(scrape(port), 'steadfast_uprobe_attachments{probe="gc",scope="file"}')
        seen = {}

        def attached():
            wait_for("the GC attach", lambda: value(
                scrape(port), 'steadfast_uprobe_attachments{probe="gc",scope="file"}') > files0)
            seen["before"] = value(scrape(port), cycles_metric)

        sample = run(workload, cycles, heap, attached)
        # The process is gone; wait until its last counts are folded.
        wait_for("the cycles", lambda: value(scrape(port), cycles_metric) - seen["before"] >= sample[0], 10)
        return sample, value(scrape(port), cycles_metric) - seen["before"]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait()


def main():
    binary = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    cycles = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    heap = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 16
    work = tempfile.mkdtemp(prefix="gc-cost-")
    os.makedirs(os.path.join(work, "rules.d"))
    workload = os.path.join(work, NAME)
    env = dict(os.environ, HOME=work, GOCACHE=os.path.join(work, "gocache"),
               GOTOOLCHAIN="local", GO111MODULE="off", CGO_ENABLED="0", GOFLAGS="")
    subprocess.check_call(
        ["/usr/lib/go/bin/go", "build", "-ldflags=-s -w", "-o", workload,
         os.path.join(ROOT, "bench/workloads/gc_loop.go")],
        env=env,
    )
    with open("/proc/loadavg") as f:
        load0 = f.read().split()[:3]
    per = {"bare": [], "probed": []}
    for r in range(rounds):
        order = ["bare", "probed"] if r % 2 == 0 else ["probed", "bare"]
        for case in order:
            if case == "bare":
                (n, cpu, wall), seen = run(workload, cycles, heap), None
            else:
                (n, cpu, wall), seen = probed(binary, workload, cycles, heap, work)
            per[case].append(cpu / n)
            extra = "" if seen is None else f", agent counted {seen:.0f} cycles"
            print(
                f"round {r + 1} {case}: {n} cycles in {wall / 1e9:.2f} s, "
                f"CPU {cpu / 1e6:.1f} ms = {cpu / n / 1e3:.1f} us per cycle{extra}",
                flush=True,
            )
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]
    b, p = statistics.median(per["bare"]), statistics.median(per["probed"])
    print(f"\nmedians over {rounds} rounds, {cycles} cycles each, {heap} bytes live:")
    print(f"bare   {b / 1e3:.1f} us CPU per cycle (range {min(per['bare']) / 1e3:.1f}-{max(per['bare']) / 1e3:.1f})")
    print(f"probed {p / 1e3:.1f} us CPU per cycle (range {min(per['probed']) / 1e3:.1f}-{max(per['probed']) / 1e3:.1f})")
    pairs = sorted(q - a for a, q in zip(per["bare"], per["probed"]))
    print(f"probes {(p - b) / 1e3:.1f} us per GC cycle (difference of the medians); "
          f"per round: median {statistics.median(pairs) / 1e3:.1f} us "
          f"(range {pairs[0] / 1e3:.1f}-{pairs[-1] / 1e3:.1f})")
    print("load average before:", load0, "after:", load1)


if __name__ == "__main__":
    main()

//! The uprobe-based probes of targets against ground truth: a C program with a known pattern
//! of allocations, and a Go program holding a known number of goroutines. Needs root, gcc and
//! Debian's golang-go (installed by `scripts/setup --test`).

mod support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use support::{build_go, build_workload, promtool_check, unique_name, Agent, Interactive, Scrape};

/// Polls scrapes until `pred` holds (the agent attaches shortly after it reads an exec event).
fn wait_for(agent: &Agent, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = agent.scrape();
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {}\n{}",
            agent.log(),
            s.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `tests/workloads/alloc_pattern.c` does after "started", computed independently.
struct AllocTruth {
    malloc: f64,
    calloc: f64,
    realloc: f64,
    free: f64,
    bytes: f64,
    outstanding: f64,
}

fn alloc_truth(m: u64) -> AllocTruth {
    let k = m / 10;
    let size = |i: u64| 100 + (i * 37) % 1000;
    // The two pointer arrays (8 bytes a pointer), when not empty.
    let arrays: u64 = [m, k].iter().filter(|&&n| n > 0).map(|n| 8 * n).sum();
    let array_calls = [m, k].iter().filter(|&&n| n > 0).count() as u64;
    let mallocs: u64 = (0..m).map(size).sum();
    let kept_mallocs: u64 = (0..m).filter(|i| i % 2 == 1).map(size).sum();
    let callocs: u64 = (0..k).map(|j| (1 + j % 4) * 50).sum();
    let reallocs: u64 = (0..k).map(|j| 2000 + j).sum();
    // realloc(NULL, 300) then realloc(it, 0): two reallocs, 300 bytes, nothing outstanding.
    let pairs = k / 100;
    AllocTruth {
        malloc: (m + array_calls) as f64,
        calloc: k as f64,
        realloc: (k + 2 * pairs) as f64,
        free: m.div_ceil(2) as f64,
        bytes: (mallocs + arrays + callocs + reallocs + 300 * pairs) as f64,
        // realloc releases each calloc'd block; the odd-numbered mallocs are never freed.
        outstanding: (kept_mallocs + arrays + reallocs) as f64,
    }
}

/// Calls by kind, bytes and outstanding bytes the agent reports for `service`.
fn alloc_series(s: &Scrape, service: &str) -> [f64; 6] {
    let v = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("service", service)];
        labels.extend_from_slice(extra);
        s.value(name, &labels).unwrap_or(0.0)
    };
    let calls = |call: &str| v("steadfast_alloc_calls_total", &[("call", call)]);
    [
        calls("malloc"),
        calls("calloc"),
        calls("realloc"),
        calls("free"),
        v("steadfast_alloc_bytes_total", &[]),
        v("steadfast_alloc_outstanding_bytes", &[]),
    ]
}

/// One run of the allocation workload under `service`: what the agent's series gained
/// between "started" (probes attached, process idle) and "ready" (pattern done, idle).
/// Allocations between exec and the attach (the dynamic loader, glibc's and stdio's set-up)
/// fall before the first reading, whether or not the probes saw them.
fn run_alloc_pattern(agent: &Agent, bin: &Path, service: &str, m: u64) -> [f64; 6] {
    let attached = |s: &Scrape| {
        s.value(
            "steadfast_uprobe_attachments",
            &[("probe", "allocations"), ("scope", "process")],
        )
        .unwrap_or(0.0)
    };
    let mut w = Interactive::spawn(bin, &[&m.to_string()]);
    w.expect("started");
    let before = alloc_series(
        &wait_for(agent, "allocation probes attached", |s| attached(s) == 1.0),
        service,
    );
    w.step();
    w.expect("ready");
    let s = agent.scrape();
    promtool_check(&s);
    let after = alloc_series(&s, service);
    let mut out = [0.0; 6];
    for (o, (a, b)) in out.iter_mut().zip(after.iter().zip(before.iter())) {
        *o = a - b;
    }
    w.finish();
    // The process is gone: its outstanding bytes leave the gauge, its probes are detached.
    wait_for(agent, "detached after exit", |s| {
        attached(s) == 0.0
            && s.value("steadfast_alloc_outstanding_bytes", &[("service", service)])
                .unwrap_or(0.0)
                == 0.0
    });
    out
}

/// A target with `allocations: true`, by executable path, configured before the program
/// starts. The program makes M = 10000 mallocs of 100..=1099 bytes, 1000 callocs, 1000
/// reallocs, frees half of the mallocs, and makes 10 realloc(NULL, n) + realloc(p, 0) pairs
/// (glibc's realloc calls malloc and free itself for those: they must count as reallocs);
/// calls, bytes and outstanding bytes gained over the pattern must match it exactly, beyond
/// what the same program does with M = 0 (measured first: allocations glibc makes itself
/// between the two readings; none are expected, since the workload gives stdio static
/// buffers, and the baseline is printed). Tolerance: zero, since both runs are deterministic.
#[test]
fn allocations_match_a_known_pattern() {
    const M: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfal");
    let bin = build_workload("alloc_pattern", dir.path(), &name);
    let service = format!("{name}-svc");
    let agent = Agent::start(&format!(
        "targets:\n  - service: {service}\n    exe: {}\n    allocations: true\n",
        bin.display()
    ));
    let base = run_alloc_pattern(&agent, &bin, &service, 0);
    let run = run_alloc_pattern(&agent, &bin, &service, M);
    let t = alloc_truth(M);
    let mut got = [0.0; 6];
    for (g, (r, b)) in got.iter_mut().zip(run.iter().zip(base.iter())) {
        *g = r - b;
    }
    eprintln!("baseline (M=0) run: {base:?}");
    eprintln!(
        "expected: malloc {} calloc {} realloc {} free {} bytes {} outstanding {}",
        t.malloc, t.calloc, t.realloc, t.free, t.bytes, t.outstanding
    );
    eprintln!("reported beyond baseline: {got:?}");
    // Exact, unless the kernel skipped program runs (it says so): then each skipped run may
    // cost one call and at most one request's bytes (2099 at most in this pattern).
    let missed = missed(&agent.scrape(), "allocations");
    eprintln!("uprobe runs the kernel skipped: {missed}");
    let within = |what: &str, got: f64, want: f64, per_miss: f64| {
        assert!(
            (got - want).abs() <= missed * per_miss,
            "{what}: got {got}, want {want}, skipped runs {missed}"
        );
    };
    within("malloc calls", got[0], t.malloc, 1.0);
    within("calloc calls", got[1], t.calloc, 1.0);
    within("realloc calls", got[2], t.realloc, 1.0);
    within("free calls", got[3], t.free, 1.0);
    within("bytes", got[4], t.bytes, 2099.0);
    within("outstanding bytes", got[5], t.outstanding, 2099.0);
}

/// Runs of `probe`'s uprobe programs the kernel skipped (0 on a quiet machine).
fn missed(s: &Scrape, probe: &str) -> f64 {
    s.value("steadfast_uprobe_missed_total", &[("probe", probe)])
        .expect("steadfast_uprobe_missed_total")
}

/// A Go program started after the agent, matched by executable path, holds exactly G = 1000
/// goroutines. The probes count every goroutine the runtime creates, its own included, so the
/// gauge reads G + R, where R = the main goroutine + forcegchelper, bgsweep, bgscavenge, the
/// finalizer goroutine + one GC mark worker per P: 5 + GOMAXPROCS (7 on 2 CPUs). The program
/// prints runtime.NumGoroutine() (G + 1: it leaves the runtime's goroutines out) and
/// GOMAXPROCS, so R is checked against the program's own view. After the G goroutines end,
/// the gauge falls by exactly G.
#[test]
fn goroutine_gauge_follows_a_go_program() {
    const G: f64 = 1000.0;
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfgo");
    let bin = build_go("goroutines", dir.path(), &name, &[]);
    let service = format!("{name}-svc");
    let agent = Agent::start(&format!(
        "targets:\n  - service: {service}\n    exe: {}\n",
        bin.display()
    ));
    let file_attached = agent
        .scrape()
        .value(
            "steadfast_uprobe_attachments",
            &[("probe", "goroutines"), ("scope", "file")],
        )
        .unwrap_or(0.0);
    assert_eq!(file_attached, 1.0, "{}", agent.log());

    let mut w = Interactive::spawn(&bin, &["1000"]);
    let ready = w.read_line();
    let fields: Vec<&str> = ready.split(' ').collect();
    assert_eq!(fields[0], "ready", "{ready}");
    let num_goroutine: f64 = fields[1].parse().unwrap();
    let gomaxprocs: f64 = fields[2].parse().unwrap();
    assert_eq!(num_goroutine, G + 1.0);
    let r = 1.0 + 4.0 + gomaxprocs;

    let gauge = |s: &Scrape| s.value("steadfast_go_goroutines", &[("service", &service)]);
    let created = |s: &Scrape| {
        s.value(
            "steadfast_go_goroutines_created_total",
            &[("service", &service)],
        )
    };
    let s = agent.scrape();
    eprintln!(
        "ready: gauge {:?}, created {:?}, NumGoroutine {num_goroutine}, GOMAXPROCS {gomaxprocs}, expected G + R = {}, skipped runs {}",
        gauge(&s),
        created(&s),
        G + r,
        missed(&s, "goroutines")
    );
    // Exact; a run the kernel skipped (counted in steadfast_uprobe_missed_total) would show
    // here, with the count in the message.
    assert_eq!(
        gauge(&s),
        Some(G + r),
        "created {:?}; go and uprobe lines of the exposition:\n{}",
        created(&s),
        s.0.lines()
            .filter(|l| l.contains("go_") || l.contains("uprobe"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(created(&s), Some(G + r), "no goroutine has exited yet");

    w.step();
    let done = w.read_line();
    assert_eq!(done, "done 1", "every held goroutine has exited");
    let s = agent.scrape();
    eprintln!("done: gauge {:?}, created {:?}", gauge(&s), created(&s));
    assert_eq!(gauge(&s), Some(r), "the gauge falls by G");
    assert_eq!(created(&s), Some(G + r));

    w.finish();
    wait_for(&agent, "an exited process leaves the gauge", |s| {
        gauge(s).is_none()
    });
}

/// A Go program matched at run time by its comm (no `exe` in the target) gets pid-scoped
/// probes when the agent reads its exec event, a moment after its runtime started: the
/// goroutines created before that are read from its memory at the attach (`go_seed`). So the
/// gauge is exact, G + R, like a program probed from its first instruction; when the G
/// goroutines end it falls by exactly G. The exposition stays promtool-clean with the uprobe
/// families filled.
#[test]
fn goroutines_of_a_go_program_matched_at_run_time() {
    const G: f64 = 1000.0;
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfgp");
    let bin = build_go("goroutines", dir.path(), &name, &[]);
    let service = format!("{name}-svc");
    let agent = Agent::start(&format!(
        "targets:\n  - service: {service}\n    comm: {name}\n"
    ));
    let attached = |s: &Scrape| {
        s.value(
            "steadfast_uprobe_attachments",
            &[("probe", "goroutines"), ("scope", "process")],
        )
        .unwrap_or(0.0)
    };
    let mut w = Interactive::spawn(&bin, &["1000", "wait"]);
    w.expect("started");
    wait_for(&agent, "pid-scoped goroutine probes", |s| {
        attached(s) == 1.0
    });
    w.step();
    let ready = w.read_line();
    let gomaxprocs: f64 = ready.rsplit(' ').next().unwrap().parse().unwrap();
    let r = 1.0 + 4.0 + gomaxprocs;
    let gauge = |s: &Scrape| s.value("steadfast_go_goroutines", &[("service", &service)]);
    let s = agent.scrape();
    promtool_check(&s);
    let at_ready = gauge(&s).unwrap_or_else(|| panic!("no gauge: {}", agent.log()));
    eprintln!("ready: gauge {at_ready}, G {G}, R {r}");
    assert_eq!(at_ready, G + r, "{}", agent.log());
    assert_eq!(
        s.value(
            "steadfast_go_goroutine_seeds_total",
            &[("result", "seeded")]
        ),
        Some(1.0)
    );
    w.step();
    assert_eq!(w.read_line(), "done 1");
    let at_done = gauge(&agent.scrape());
    eprintln!("done: gauge {at_done:?}");
    assert_eq!(at_done, Some(at_ready - G), "the gauge falls by G");
    w.finish();
    wait_for(&agent, "pid-scoped probes detached at exit", |s| {
        attached(s) == 0.0 && gauge(s).is_none()
    });
}

/// The file offset of an ELF section's contents, by `readelf -SW` (binutils).
fn section_offset(bin: &Path, section: &str) -> u64 {
    let out = Command::new("readelf")
        .args(["-SW"])
        .arg(bin)
        .output()
        .expect("readelf (binutils)");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
        .find(|rest| rest.split_whitespace().next() == Some(section))
        .unwrap_or_else(|| panic!("no {section} in {}", bin.display()));
    u64::from_str_radix(line.split_whitespace().nth(3).unwrap(), 16).unwrap()
}

/// A stripped Go binary (`-ldflags=-s -w`: no symbol table) whose Go function table is of a
/// version the agent does not know (its magic set to Go 1.16's, 0xfffffffa) cannot be probed:
/// neither by symbol nor through the table. The failure is counted and logged with both
/// reasons, no gauge appears (never a wrong number), and the agent carries on serving.
#[test]
fn attach_failures_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfst");
    let bin = build_go("goroutines", dir.path(), &name, &["-ldflags=-s -w"]);
    let at = section_offset(&bin, ".gopclntab");
    let mut bytes = std::fs::read(&bin).unwrap();
    assert_eq!(
        bytes[at as usize..at as usize + 4],
        0xffff_fff0_u32.to_le_bytes(),
        "Debian's Go 1.19 table"
    );
    bytes[at as usize..at as usize + 4].copy_from_slice(&0xffff_fffa_u32.to_le_bytes());
    std::fs::write(&bin, bytes).unwrap();
    let agent = Agent::start(&format!(
        "targets:\n  - service: stripped\n    exe: {}\n",
        bin.display()
    ));
    let s = agent.scrape();
    assert_eq!(
        s.value(
            "steadfast_uprobe_attach_failures_total",
            &[("probe", "goroutines")]
        ),
        Some(1.0),
        "{}",
        agent.log()
    );
    assert_eq!(
        s.value(
            "steadfast_uprobe_attachments",
            &[("probe", "goroutines"), ("scope", "file")]
        ),
        Some(0.0)
    );
    let log = agent.log();
    assert!(log.contains("cannot attach uprobes"), "{log}");
    assert!(log.contains("unsupported Go version"), "{log}");
    assert!(
        !agent.scrape().has_label_value("service", "stripped"),
        "no series for it"
    );
}

/// Issue 19, item 4: `probes.go.all_processes`. A Go program that no target names (so its
/// service is its comm) gets no goroutine probes by default; with `all_processes: true` it is
/// probed on its file when its exec is read and seeded from its memory (its runtime's own
/// goroutines were already running), so its gauge is exact (NumGoroutine() - 1 + R) and falls
/// by exactly G when its G goroutines end.
#[test]
fn go_programs_of_no_target_are_counted_only_with_all_processes() {
    const G: f64 = 300.0;
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfga");
    let bin = build_go("goroutines", dir.path(), &name, &["-ldflags=-s -w"]);
    for all in [false, true] {
        let agent = Agent::start(&format!("probes:\n  go:\n    all_processes: {all}\n"));
        let gauge = |s: &Scrape| s.value("steadfast_go_goroutines", &[("service", &name)]);
        let files = |s: &Scrape| {
            s.value(
                "steadfast_uprobe_attachments",
                &[("probe", "goroutines"), ("scope", "file")],
            )
            .unwrap_or(0.0)
        };
        // The program waits (its runtime started, its own goroutines running) until the
        // agent has had its chance to probe it.
        let mut w = Interactive::spawn(&bin, &["300", "wait"]);
        w.expect("started");
        if all {
            // Other Go programs on the host (builds, promtool, other tests' workloads) get
            // probed too: wait for this one's gauge (its seed), not for a count of files.
            wait_for(
                &agent,
                "file-wide probes on the untargeted Go program",
                |s| gauge(s).is_some(),
            );
        } else {
            agent.await_collections(2);
        }
        w.step();
        let ready = w.read_line();
        let f: Vec<&str> = ready.split(' ').collect();
        let (num, procs): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert_eq!(num, G + 1.0);
        let r = 1.0 + 4.0 + procs;
        if !all {
            agent.await_collections(2);
            let s = agent.scrape();
            eprintln!(
                "all_processes off: gauge {:?}, file attachments {}",
                gauge(&s),
                files(&s)
            );
            assert_eq!(gauge(&s), None, "not probed: {}", agent.log());
            assert_eq!(files(&s), 0.0);
            assert!(
                s.value("steadfast_process_tasks", &[("service", &name)])
                    .is_some(),
                "the process itself is seen"
            );
            w.finish();
            continue;
        }
        let s = agent.scrape();
        let at_ready = gauge(&s);
        w.step();
        assert_eq!(w.read_line(), "done 1");
        let at_done = gauge(&agent.scrape());
        eprintln!(
            "all_processes on: gauge {at_ready:?} (want {}), after the G end {at_done:?} (want {r}), file attachments {}",
            num - 1.0 + r,
            files(&s)
        );
        assert!(files(&s) >= 1.0);
        assert_eq!(at_ready, Some(num - 1.0 + r), "{}", agent.log());
        assert_eq!(at_done, Some(r));
        assert!(
            s.value(
                "steadfast_go_goroutine_seeds_total",
                &[("result", "seeded")]
            )
            .is_some_and(|n| n >= 1.0),
            "this one at least"
        );
        promtool_check(&s);
        w.finish();
    }
}

/// A Go program running before the agent whose build information names a Go version with no
/// known layout of `runtime.g` (its version string patched from `go1.X` to `go1.99`) is not
/// read from memory: the refusal is counted (`unknown_go_version`) and logged, and its gauge
/// only counts from the attach (so it never shows a guessed number: here it stays absent
/// until a goroutine starts or ends, then 0).
#[test]
fn an_unknown_go_version_is_not_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfgu");
    let bin = build_go("goroutines", dir.path(), &name, &["-ldflags=-s -w"]);
    let mut image = std::fs::read(&bin).unwrap();
    let magic = b"\xff Go buildinf:";
    let at = image
        .windows(magic.len())
        .position(|w| w == magic)
        .expect("build information");
    let version = at + 33; // 32-byte header, a one-byte length
    assert_eq!(
        &image[version..version + 4],
        b"go1.",
        "{:?}",
        &image[at..at + 48]
    );
    let minor = version + 4;
    assert!(image[minor].is_ascii_digit() && image[minor + 1].is_ascii_digit());
    image[minor..minor + 2].copy_from_slice(b"99");
    std::fs::write(&bin, &image).unwrap();

    let mut w = Interactive::spawn(&bin, &["100"]);
    assert!(w.read_line().starts_with("ready "));
    let service = format!("{name}-svc");
    let agent = Agent::start(&format!(
        "targets:\n  - service: {service}\n    exe: {}\n",
        bin.display()
    ));
    let s = agent.scrape();
    let seeds = |s: &Scrape, r: &str| {
        s.value("steadfast_go_goroutine_seeds_total", &[("result", r)])
            .unwrap_or(0.0)
    };
    assert_eq!(seeds(&s, "unknown_go_version"), 1.0, "{}", agent.log());
    assert_eq!(seeds(&s, "seeded"), 0.0);
    assert!(agent.log().contains("go1.99"), "logged: {}", agent.log());
    let gauge = |s: &Scrape| s.value("steadfast_go_goroutines", &[("service", &service)]);
    assert_eq!(gauge(&s), None, "no guessed number");
    w.step();
    assert_eq!(w.read_line(), "done 1");
    assert_eq!(
        gauge(&agent.scrape()),
        Some(0.0),
        "100 exits seen, clamped at 0"
    );
    w.finish();
}

/// A Go program that starts and ends goroutines without a pause, running before the agent:
/// the kernel's counters move during every read of its memory, so no seed can be checked
/// and it is refused (`busy`), counted and logged, never taken. (Should the program stall long
/// enough for a quiet read on a loaded machine, the seed is taken, and then it must be exact:
/// NumGoroutine() - 1 + R once the churn stopped.)
#[test]
fn a_go_program_that_never_stops_starting_goroutines_is_not_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("sfgc");
    let bin = build_go("goroutine_churn", dir.path(), &name, &[]);
    let mut w = Interactive::spawn(&bin, &[]);
    let line = w.read_line();
    let procs: f64 = line
        .strip_prefix("churning ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let service = format!("{name}-svc");
    let agent = Agent::start(&format!(
        "log:\n  level: \"info,steadfast::pipeline::go_seed=debug\"\ntargets:\n  - service: {service}\n    exe: {}\n",
        bin.display()
    ));
    let s = agent.scrape();
    let seeds = |s: &Scrape, r: &str| {
        s.value("steadfast_go_goroutine_seeds_total", &[("result", r)])
            .unwrap_or(0.0)
    };
    let (busy, seeded) = (seeds(&s, "busy"), seeds(&s, "seeded"));
    eprintln!("busy {busy}, seeded {seeded}");
    assert_eq!(busy + seeded, 1.0, "{}", agent.log());
    w.step();
    let stopped = w.read_line();
    let num: f64 = stopped
        .strip_prefix("stopped ")
        .unwrap_or_else(|| panic!("{stopped}"))
        .parse()
        .unwrap();
    let s = agent.scrape();
    let gauge = s.value("steadfast_go_goroutines", &[("service", &service)]);
    // Runs of the probes the kernel skipped (a map syscall held that CPU's guard): each is a
    // goroutine start or end not counted, which no seed can make up for.
    let missed = missed(&s, "goroutines");
    eprintln!("stopped: NumGoroutine {num}, gauge {gauge:?}, missed {missed}");
    if seeded == 1.0 && missed == 0.0 {
        assert_eq!(
            gauge,
            Some(num - 1.0 + 5.0 + procs),
            "a seed taken is exact: {}",
            agent.log()
        );
    } else {
        assert!(
            agent.log().contains("goroutines kept starting or ending"),
            "{}",
            agent.log()
        );
        // Counted from the attach (exits probed before creations): never above the truth.
        assert!(
            gauge.unwrap_or(0.0) <= num - 1.0 + 5.0 + procs,
            "gauge {gauge:?} above the truth"
        );
    }
    w.finish();
}

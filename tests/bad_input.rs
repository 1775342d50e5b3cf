//! Bad rule and config input against the real agent (root): expressions nested too deep or too
//! long, too many rules, huge ranges, huge and strange files (over the size cap, one enormous
//! line, garbage, invalid UTF-8, empty, a directory, a FIFO, unreadable), rule files that
//! change and vanish while the agent reloads in a loop, and symlink swaps of a single file.
//! What is refused is named by file:line:column, by a live reload and by `steadfast check`
//! alike; the running rules keep their state and keep evaluating; nothing panics or hangs.

mod support;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use support::{request, vm_rss_kib, wait_for, Agent, Endpoint};

/// An alert that needs 3 s pending to fire: a rule recreated by a reload would be pending
/// again, so while it reads firing every reload kept its state.
const KEEP: &str =
    "groups:\n  - name: keep\n    rules:\n      - alert: Keep\n        expr: vector(1)\n        for: 3s\n";

/// A group `name` with one alert `alert` on `expr`.
fn one_rule(name: &str, alert: &str, expr: &str) -> String {
    format!(
        "groups:\n  - name: {name}\n    rules:\n      - alert: {alert}\n        expr: '{expr}'\n"
    )
}

/// An agent evaluating every 200 ms with `keep.yaml` in its rules directory, `Keep` firing.
fn start(extra: &str) -> (Agent, PathBuf) {
    let agent = Agent::start(&format!(
        "rules:\n  directory: @AGENT_DIR@/rules.d\n  state_dir: @AGENT_DIR@/state\n  evaluation_interval_ms: 200\n{extra}"
    ));
    let dir = agent.dir.path().join("rules.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.yaml"), KEEP).unwrap();
    assert_eq!(reload(&agent).0, 200);
    wait_for(10, "Keep firing", || firing(&agent, "Keep").then_some(()));
    (agent, dir)
}

/// `POST /-/reload` (on the API socket: the TCP listener refuses changes): status and body.
fn reload(agent: &Agent) -> (u16, String) {
    request(
        &Endpoint::Unix(agent.api_socket()),
        "POST",
        "/-/reload",
        b"",
    )
    .unwrap()
}

fn firing(agent: &Agent, alert: &str) -> bool {
    agent.scrape().value(
        "steadfast_alerts",
        &[("alertname", alert), ("state", "firing")],
    ) == Some(1.0)
}

fn metric(agent: &Agent, name: &str) -> f64 {
    let s = agent.scrape();
    s.value(name, &[])
        .unwrap_or_else(|| panic!("no {name} in\n{}", s.0))
}

/// The agent runs, `Keep` still fires (its state survived), evaluations go on, no panic.
fn assert_healthy(agent: &mut Agent) {
    assert!(agent.is_running(), "{}", agent.log());
    assert!(firing(agent, "Keep"), "{}", agent.scrape().0);
    let evals = "steadfast_rules_evaluation_duration_seconds_count";
    let before = metric(agent, evals);
    wait_for(5, "evaluations to go on", || {
        (metric(agent, evals) >= before + 2.0).then_some(())
    });
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}

/// `steadfast <args>` with a deadline: exit code, stdout and stderr, and how long it took. The
/// output is read while the command runs (a full pipe would stall it: thousands of warnings
/// are more than a pipe holds).
fn steadfast(args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the child's pid, which is not reaped before the thread's
            // wait returns.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("steadfast {args:?} still running after 20 s");
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, started.elapsed())
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "{path:?}");
}

/// Removes a file, FIFO, symlink or directory.
fn remove(path: &Path) {
    if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path).unwrap();
    } else {
        std::fs::remove_file(path).unwrap();
    }
}

/// Writes `text` to `path` by a rename, as editors and config management should.
fn write_atomic(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a bad rule file is.
enum Content {
    Bytes(Vec<u8>),
    Dir,
    Fifo,
}

/// One bad rule file: its name, what it is, what a reload says (with the agent's `keep.yaml`
/// loaded first) and what `check rules` on it alone says (None: it is not a file to check).
struct Case {
    name: &'static str,
    content: Content,
    live: String,
    check: Option<String>,
}

/// A case where a reload and `check rules` say the same.
fn case(name: &'static str, content: Content, error: impl Into<String>) -> Case {
    let error = error.into();
    Case {
        name,
        content,
        check: Some(error.clone()),
        live: error,
    }
}

fn bytes(b: impl Into<Vec<u8>>) -> Content {
    Content::Bytes(b.into())
}

fn cases() -> Vec<Case> {
    let deep = format!("{}vector(1){}", "abs(".repeat(200), ")".repeat(200));
    let chain = vec!["vector(1)"; 200].join(" + ");
    let minus = format!("{}vector(1)", "-".repeat(100_000));
    let nested = "bad expression: nested more than 128 levels deep";
    let many: String = (0..10_001)
        .map(|i| format!("      - alert: M{i}\n        expr: vector({i})\n"))
        .collect();
    // one line of 4 MiB less a little: a flow mapping around one enormous expression
    let line = format!(
        "{{groups: [{{name: line, rules: [{{alert: Line, expr: 'vector(1) > {}'}}]}}]}}",
        "1".repeat((4 << 20) - 100)
    );
    vec![
        case(
            "deep.yaml",
            bytes(one_rule("deep", "Deep", &deep)),
            format!("deep.yaml:5:15: expr: {nested}"),
        ),
        case(
            "chain.yaml",
            bytes(one_rule("chain", "Chain", &chain)),
            format!("chain.yaml:5:15: expr: {nested}"),
        ),
        case(
            "minus.yaml",
            bytes(one_rule("minus", "Minus", &minus)),
            "minus.yaml:5:15: expr: the expression is 100009 bytes long, more than the limit of 16384",
        ),
        // promql-parser panics converting this range: a parse error, and no panic message
        case(
            "float.yaml",
            bytes(one_rule("float", "Float", "rate(x[1e300])")),
            "float.yaml:5:15: expr: bad expression: the expression could not be parsed (parser failure)",
        ),
        case(
            "subquery.yaml",
            bytes(one_rule("sub", "Sub", "max_over_time(rate(x[5m])[1h:1m])")),
            "subquery.yaml:5:15: expr: bad expression: not supported: subqueries",
        ),
        // keep.yaml's rule comes first in a reload: the 10,001st is M9999 (line 4 + 2 * 9999)
        Case {
            live: "many.yaml:20002:9: more than 10000 rules".into(),
            ..case(
                "many.yaml",
                bytes(format!("groups:\n  - name: many\n    rules:\n{many}")),
                "many.yaml:20004:9: more than 10000 rules",
            )
        },
        case(
            "line.yaml",
            bytes(line),
            "line.yaml:1:52: expr: the expression is 4194216 bytes long",
        ),
        case(
            "over.yaml",
            bytes(format!("groups: []\n{}", "#".repeat(4 << 20))),
            "over.yaml:0:0: larger than 4194304 bytes",
        ),
        case(
            "elf.yaml",
            bytes(*b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x00\x01"),
            "elf.yaml:1:11: not UTF-8: invalid byte at line 1, column 11",
        ),
        case(
            "latin1.yaml",
            bytes(*b"groups:\n  - name: caf\xe9\n"),
            "latin1.yaml:2:14: not UTF-8",
        ),
        case(
            "garbage.yaml",
            bytes("groups: [[[{{{ :\n\t- - -\n"),
            "garbage.yaml:2:2: YAML: tabs disallowed",
        ),
        case(
            "types.yaml",
            bytes("groups:\n  - name: [1]\n    interval: soon\n    rules: {a: 1}\n"),
            "types.yaml:2:11: group name: expected a non-empty string",
        ),
        // `check rules DIR` checks the rule files in DIR: no case for the CLI
        Case {
            check: None,
            ..case(
                "dir.yaml",
                Content::Dir,
                "dir.yaml:0:0: not a regular file but a directory",
            )
        },
        case(
            "fifo.yaml",
            Content::Fifo,
            "fifo.yaml:0:0: not a regular file but a FIFO",
        ),
    ]
}

/// Every refused rule file: a reload answers 400 at once with file:line:column, the running
/// rules stay (and keep firing), `check rules` says the same with exit 1; an empty file is
/// no rules. Then the config file: huge, garbage, not UTF-8, a FIFO, a device, for `check
/// config` (exit 64) and for a live SIGHUP (the agent keeps running with its config).
#[test]
fn refused_input_is_named_and_the_running_state_is_kept() {
    let (mut agent, dir) = start("");
    for case in cases() {
        let path = dir.join(case.name);
        match &case.content {
            Content::Bytes(b) => std::fs::write(&path, b).unwrap(),
            Content::Dir => std::fs::create_dir(&path).unwrap(),
            Content::Fifo => mkfifo(&path),
        }
        let started = Instant::now();
        let (status, body) = reload(&agent);
        let took = started.elapsed();
        assert_eq!(status, 400, "{}: {body}", case.name);
        assert!(body.contains(&case.live), "{}: {body}", case.name);
        assert!(took < Duration::from_secs(5), "{}: {took:?}", case.name);
        eprintln!("{}: reload refused in {took:?}", case.name);
        assert_eq!(
            metric(&agent, "steadfast_rules_last_reload_successful"),
            0.0
        );
        assert!(firing(&agent, "Keep"), "{}", case.name);
        if let Some(check) = &case.check {
            let (code, out, took) = steadfast(&["check", "rules", path.to_str().unwrap()]);
            assert_eq!(code, 1, "{}: {out}", case.name);
            assert!(out.contains(check), "{}: {out}", case.name);
            assert!(!out.contains("panicked"), "{}: {out}", case.name);
            eprintln!("{}: check rules exit 1 in {took:?}", case.name);
        }
        remove(&path);
    }
    assert_healthy(&mut agent);
    assert!(agent.log().contains("rules rejected"), "{}", agent.log());

    // An empty file is a file without rules.
    std::fs::write(dir.join("empty.yaml"), "").unwrap();
    assert_eq!(reload(&agent).0, 200);
    assert_eq!(
        metric(&agent, "steadfast_rules_last_reload_successful"),
        1.0
    );

    // Unreadable: root reads anything, so `check rules` runs as nobody.
    let secret = agent.dir.path().join("secret.yaml");
    std::fs::write(&secret, KEEP).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_steadfast"))
        .args(["check", "rules"])
        .arg(&secret)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("secret.yaml:0:0: cannot read: Permission denied"),
        "{err}"
    );

    // The config file.
    let bad = agent.dir.path().join("bad-config");
    std::fs::create_dir(&bad).unwrap();
    let config = |n: &str| bad.join(n).to_str().unwrap().to_string();
    std::fs::write(config("huge.yaml"), "#".repeat((1 << 20) + 1)).unwrap();
    std::fs::write(config("latin1.yaml"), b"log:\n  level: d\xe9bug\n").unwrap();
    std::fs::write(config("garbage.yaml"), "log: [[[\n  {{ :\n").unwrap();
    std::fs::write(config("types.yaml"), "rules:\n  max_series: lots\n").unwrap();
    mkfifo(&bad.join("fifo.yaml"));
    for (file, want) in [
        (config("huge.yaml"), "huge.yaml: larger than 1048576 bytes"),
        (
            config("latin1.yaml"),
            "latin1.yaml: not UTF-8: invalid byte at line 2, column 11",
        ),
        (config("garbage.yaml"), "garbage.yaml: while parsing a node, did not find expected node content at line 3 column 1"),
        (config("types.yaml"), "types.yaml: rules.max_series: invalid type: string \"lots\", expected usize at line 2 column 15"),
        (config("fifo.yaml"), "fifo.yaml: not a regular file but a FIFO"),
        (
            "/dev/zero".into(),
            "/dev/zero: not a regular file but a character device",
        ),
    ] {
        let (code, out, took) = steadfast(&["check", "config", &file]);
        assert_eq!(code, 64, "{file}: {out}");
        assert!(out.contains(want), "{file}: {out}");
        eprintln!("check config {file}: exit 64 in {took:?}");
    }
    // A live SIGHUP with the config file swapped for a FIFO: refused, nothing blocks.
    let path = agent.config_path();
    let good = std::fs::read(&path).unwrap();
    std::fs::rename(bad.join("fifo.yaml"), &path).unwrap();
    agent.signal(libc::SIGHUP);
    wait_for(5, "the config reload to be refused", || {
        agent
            .log()
            .contains("not a regular file but a FIFO")
            .then_some(())
    });
    assert_healthy(&mut agent);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, good).unwrap();
    assert!(agent.stop().success());
}

/// Huge ranges and offsets load (a Prometheus user expects them to): the store keeps at
/// most `rules.max_retention_secs` of history and `rules.max_series` series whatever the rules
/// ask, the load warns about the retention, evaluations never fail, and memory stays small.
#[test]
fn huge_ranges_load_and_memory_stays_bounded() {
    let (mut agent, dir) = start("  max_series: 50\n  max_retention_secs: 600\n");
    let evals = "steadfast_rules_evaluation_duration_seconds_count";
    let rules = [
        ("CountAll", format!("count_over_time({evals}[100y]) > 0")),
        ("MaxAll", format!("max_over_time({evals}[9999999d]) > 0")),
        ("RateAll", format!("rate({evals}[100y]) > 0")),
        ("Past", format!("{evals} offset 1000y")),
        ("Future", format!("{evals} offset -1000y")),
        ("Far", format!("rate({evals}[1e18] offset 1e18)")),
    ];
    let mut text = String::from("groups:\n  - name: ranges\n    rules:\n");
    for (alert, expr) in &rules {
        text.push_str(&format!("      - alert: {alert}\n        expr: '{expr}'\n"));
    }
    std::fs::write(dir.join("ranges.yaml"), &text).unwrap();
    let (code, out, _) = steadfast(&["check", "rules", dir.join("ranges.yaml").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (status, body) = reload(&agent);
    assert_eq!(status, 200, "{body}");
    assert!(
        agent.log().contains("need a longer retention"),
        "{}",
        agent.log()
    );
    for alert in ["CountAll", "MaxAll", "RateAll"] {
        wait_for(10, alert, || firing(&agent, alert).then_some(()));
    }
    // A rule over every series of the agent, for ever: the store takes 50 and refuses the
    // rest (series it holds already keep their samples).
    let all = r#"count(count_over_time({__name__=~"steadfast_.+"}[100y])) > 0"#;
    std::fs::write(dir.join("all.yaml"), one_rule("all", "Everything", all)).unwrap();
    assert_eq!(reload(&agent).0, 200);
    wait_for(10, "Everything", || {
        firing(&agent, "Everything").then_some(())
    });
    // The other rules go on being evaluated beside it.
    let evaluations = metric(&agent, "steadfast_rules_evaluation_duration_seconds_count");
    wait_for(10, "two more evaluations", || {
        (metric(&agent, "steadfast_rules_evaluation_duration_seconds_count") >= evaluations + 2.0)
            .then_some(())
    });
    assert!(firing(&agent, "CountAll"));
    for alert in ["Past", "Future", "Far"] {
        assert!(!firing(&agent, alert), "{alert}");
    }
    assert_eq!(
        metric(&agent, "steadfast_rules_evaluation_failures_total"),
        0.0
    );
    let series = metric(&agent, "steadfast_store_series");
    assert!(series <= 50.0, "{series} series");
    assert!(metric(&agent, "steadfast_store_refused_samples_total") > 0.0);
    let rss = vm_rss_kib(agent.pid());
    eprintln!("store: {series} series, agent RSS {rss} KiB");
    assert!(rss < 256 << 10, "RSS {rss} KiB");
    assert_healthy(&mut agent);
}

/// 10,000 rules (the limit) in a file of 1 MiB: `check rules` and a reload take well under
/// the evaluation interval's worth of seconds, and the agent's memory grows by tens of MiB.
#[test]
fn the_largest_rule_set_loads_in_bounded_time_and_memory() {
    let (mut agent, dir) = start("");
    let rss_before = vm_rss_kib(agent.pid());
    let mut text = String::from("groups:\n  - name: big\n    rules:\n");
    for i in 0..9_999 {
        text.push_str(&format!(
            "      - alert: Big{i}\n        expr: steadfast_rules_alerting_rules{{job=\"j{i}\"}} > {i}\n        labels: {{team: t{i}}}\n"
        ));
    }
    let file = dir.join("big.yaml");
    std::fs::write(&file, &text).unwrap();
    let (code, out, took) = steadfast(&["check", "rules", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    eprintln!("check rules, {} bytes, 9,999 rules: {took:?}", text.len());
    let started = Instant::now();
    let (status, body) = reload(&agent);
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric(&agent, "steadfast_rules_alerting_rules"), 10_000.0);
    assert!(took < Duration::from_secs(10), "reload took {took:?}");
    let evaluations = |a: &Agent| {
        let s = a.scrape();
        let v = |n: &str| s.value(n, &[]).unwrap();
        (
            v("steadfast_rules_evaluation_duration_seconds_sum"),
            v("steadfast_rules_evaluation_duration_seconds_count"),
        )
    };
    let (sum, n) = evaluations(&agent);
    assert_healthy(&mut agent);
    let (sum2, n2) = evaluations(&agent);
    let rss = vm_rss_kib(agent.pid());
    eprintln!(
        "reload of 10,000 rules: {took:?}; RSS {rss_before} -> {rss} KiB; an evaluation of them takes {:.4} s",
        (sum2 - sum) / (n2 - n)
    );
    assert!(
        rss < rss_before + (200 << 10),
        "RSS {rss_before} -> {rss} KiB"
    );
    // one more rule is refused, at its position
    std::fs::write(
        dir.join("one-more.yaml"),
        one_rule("more", "More", "vector(1)"),
    )
    .unwrap();
    let (status, body) = reload(&agent);
    assert_eq!(status, 400);
    assert!(
        body.contains("one-more.yaml:4:9: more than 10000 rules"),
        "{body}"
    );
}

/// Rule files appear, change, vanish, turn into FIFOs and are written non-atomically while
/// SIGHUPs and POST /-/reload come in a tight loop: every reload applies a consistent set or
/// is refused, `Keep` keeps its state throughout, nothing hangs or panics, and the next reload
/// after the churn applies the final state.
#[test]
fn files_changing_while_the_agent_reloads_in_a_loop() {
    let (mut agent, dir) = start("");
    let stop = AtomicBool::new(false);
    let (mut sighups, mut posts, mut churns) = (0, 0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = i % 5;
                let f = dir.join(format!("churn-{n}.yaml"));
                match i % 4 {
                    0 => write_atomic(
                        &f,
                        one_rule(&format!("c{n}"), &format!("Churn{n}"), "vector(1)").as_bytes(),
                    ),
                    1 => {
                        let _ = std::fs::remove_file(&f);
                    }
                    2 => {
                        // removed, then written in two steps: a reload may read half a file
                        // (removed first: opening a FIFO left here for writing would block)
                        let _ = std::fs::remove_file(&f);
                        let mut w = std::fs::File::create(&f).unwrap();
                        w.write_all(b"groups:\n  - name: half\n").unwrap();
                        std::thread::sleep(Duration::from_millis(1));
                        w.write_all(b"    rules:\n      - alert: Half\n        expr: vector(1)\n")
                            .unwrap();
                    }
                    _ => {
                        let tmp = dir.join(".fifo");
                        mkfifo(&tmp);
                        std::fs::rename(&tmp, &f).unwrap();
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            churns = i;
        });
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            agent.signal(libc::SIGHUP);
            sighups += 1;
            if sighups % 5 == 0 {
                let (status, _) = reload(&agent);
                assert!(status == 200 || status == 400, "{status}");
                posts += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!("{churns} file changes, {sighups} SIGHUPs, {posts} POST /-/reload in 4 s");
    assert!(metric(&agent, "steadfast_rules_reloads_failed_total") > 0.0);
    for n in 0..5 {
        let f = dir.join(format!("churn-{n}.yaml"));
        if f.exists() || f.is_symlink() {
            remove(&f);
        }
    }
    write_atomic(
        &dir.join("final.yaml"),
        one_rule("final", "Final", "vector(1)").as_bytes(),
    );
    agent.signal(libc::SIGHUP);
    wait_for(10, "the final state", || {
        let s = agent.scrape();
        (s.value("steadfast_rules_last_reload_successful", &[]) == Some(1.0)
            && s.value("steadfast_rules_alerting_rules", &[]) == Some(2.0))
        .then_some(())
    });
    wait_for(5, "Final firing", || firing(&agent, "Final").then_some(()));
    // Keep fired all along: had any reload recreated it, it would be pending for 3 s
    assert_healthy(&mut agent);
}

/// A rule file that is a symlink, swapped atomically to another target: the directory watch
/// applies the new target. Swapped to a missing target (dangling): the reload is refused with
/// the file's name, the running rules stay; swapped back, it loads again.
#[test]
fn a_symlinked_rule_file_swapped_and_left_dangling() {
    let (mut agent, dir) = start("");
    let targets = agent.dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    for v in ["V1", "V2"] {
        std::fs::write(
            targets.join(format!("{v}.yaml")),
            one_rule("linked", v, "vector(1)"),
        )
        .unwrap();
    }
    let link = dir.join("linked.yaml");
    let swap = |target: &str| {
        let tmp = dir.join(".linked.new");
        std::os::unix::fs::symlink(targets.join(target), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    };
    swap("V1.yaml");
    wait_for(10, "V1 firing (directory watch)", || {
        firing(&agent, "V1").then_some(())
    });
    swap("V2.yaml");
    wait_for(10, "V2 firing after the swap (directory watch)", || {
        (firing(&agent, "V2") && !firing(&agent, "V1")).then_some(())
    });
    swap("missing.yaml");
    let (status, body) = reload(&agent);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("linked.yaml:0:0: cannot read: No such file or directory"),
        "{body}"
    );
    assert!(firing(&agent, "V2"));
    let (code, out, _) = steadfast(&["check", "rules", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("linked.yaml:0:0: cannot read: No such file"),
        "{out}"
    );
    swap("V1.yaml");
    wait_for(10, "V1 firing again", || {
        (firing(&agent, "V1") && !firing(&agent, "V2")).then_some(())
    });
    assert_healthy(&mut agent);
}

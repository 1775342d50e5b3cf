//! The suite's work that need not come before the tests, run beside them.
//!
//! `cargo xtask test` checks formatting, builds the test binaries, and then runs the tests
//! while, at the lowest CPU priority (`nice -n 19`), a background chain builds the release
//! binary that `tests/packaging.rs` packages and then runs clippy, the fuzz targets' check,
//! `go vet` and the eBPF crate's clippy. Many tests spend their time waiting on the clock
//! (scrape intervals, rule windows, timeouts): on a 2-core machine that idle CPU went unused
//! while the release build (about 6 minutes from nothing) and the lints (about 8) waited
//! their turn. Each job has a target directory of its own (`target/package`,
//! `target/clippy`, ...), so no job waits for the lock that `cargo test` holds on `target`;
//! the packaging test's own `cargo xtask package` waits for the release build's lock and
//! then finds the binary built. A job's output goes to `target/suite/<job>.log`; a failed job
//! fails the suite at the end, with the log's tail.
//!
//! Tests that measure the agent's latency with a tight bound (in `tests/reliability.rs`: a
//! scrape's 95th percentile under process churn, scrapes and API calls under 1,100 open
//! connections) must not measure the build beside them instead: nice 19 only orders the CPUs'
//! run queues, and a 2-core machine's caches and memory bandwidth are shared (CI failed once
//! with a p95 of 120 ms against 100). Such a test holds `support::quiet()`: it writes a request
//! file into the directory named by [`QUIET_ENV`], and while any request is there a watcher
//! stops the running job's process group (SIGSTOP) and acknowledges with a `paused` file;
//! when the last request is gone it continues the group (SIGCONT). The suite continues any
//! stopped job before it waits for the jobs at the end, so a request left behind by a crashed
//! test cannot hang it. A job in a process group of its own does not get the terminal's
//! Ctrl-C: an interrupted suite leaves its build or lint running to its end.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::package;

/// One background job's result.
struct Outcome {
    name: &'static str,
    log: PathBuf,
    took: Duration,
    ok: bool,
}

/// The environment variable that tells the tests where to ask for quiet.
pub const QUIET_ENV: &str = "STEADFAST_SUITE_QUIET_DIR";

/// The file the watcher writes while the jobs are stopped.
const PAUSED: &str = "paused";

/// The running chain of background jobs.
pub struct Background {
    handle: JoinHandle<Vec<Outcome>>,
    quiet: Quiet,
}

/// The process group of the job running now, if any.
type Running = Arc<Mutex<Option<u32>>>;

/// Where the release build for the package goes while the suite runs.
pub fn package_target_dir(root: &Path) -> PathBuf {
    root.join("target/package")
}

impl Background {
    /// Starts the jobs, one after the other on one thread: the release build first (when
    /// `release`, i.e. the packaging test will run), then the lints (when `lint`).
    pub fn start(root: &Path, release: bool, lint: bool) -> Result<Self> {
        let dir = root.join("target/suite");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut jobs: Vec<(&'static str, Command)> = Vec::new();
        if release {
            jobs.push((
                "release-build",
                package::release_build(root, &package_target_dir(root)),
            ));
        }
        if lint {
            let mut cmd = Command::new(std::env::current_exe().context("xtask's own path")?);
            cmd.current_dir(root).arg("lint-code");
            jobs.push(("lint", cmd));
        }
        let running = Running::default();
        let quiet = Quiet::start(&dir.join("quiet"), running.clone())?;
        let handle = std::thread::spawn(move || {
            jobs.into_iter()
                .map(|(name, cmd)| run_niced(name, cmd, &dir, &running))
                .collect()
        });
        Ok(Self { handle, quiet })
    }

    /// The directory the tests write their requests for quiet into ([`QUIET_ENV`]).
    pub fn quiet_dir(&self) -> &Path {
        &self.quiet.dir
    }

    /// Waits for every job; reports each one's time, and fails with the tail of the log of
    /// each job that failed.
    pub fn finish(self) -> Result<()> {
        self.quiet.stop();
        let outcomes = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the background jobs' thread panicked"))?;
        let mut failed = Vec::new();
        for o in &outcomes {
            eprintln!(
                "xtask: background job {}: {} in {:.0} s (log: {})",
                o.name,
                if o.ok { "ok" } else { "FAILED" },
                o.took.as_secs_f64(),
                o.log.display()
            );
            if !o.ok {
                eprintln!("---- last lines of {} ----", o.log.display());
                eprintln!("{}", tail(&o.log, 60));
                failed.push(o.name);
            }
        }
        if !failed.is_empty() {
            bail!("background jobs failed: {}", failed.join(", "));
        }
        Ok(())
    }
}

/// The watcher that stops the running job while a test asks for quiet.
struct Quiet {
    dir: PathBuf,
    done: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Quiet {
    fn start(dir: &Path, running: Running) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let done = Arc::new(AtomicBool::new(false));
        let handle = std::thread::spawn({
            let (dir, done) = (dir.to_path_buf(), done.clone());
            move || watch(&dir, &running, &done)
        });
        Ok(Self {
            dir: dir.to_path_buf(),
            done,
            handle,
        })
    }

    /// Ends the watch, continuing a stopped job.
    fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        if self.handle.join().is_err() {
            eprintln!("xtask: the quiet watcher panicked");
        }
    }
}

/// Every 20 ms: while a request is in `dir`, the running job's group is stopped (and a new
/// job's group as soon as it starts) and `paused` exists; otherwise it runs.
fn watch(dir: &Path, running: &Running, done: &AtomicBool) {
    let paused = dir.join(PAUSED);
    let mut stopped: Option<u32> = None;
    let mut acknowledged = false;
    while !done.load(Ordering::Relaxed) {
        let wanted = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().any(|e| e.file_name() != PAUSED))
            .unwrap_or(false);
        let now = *running.lock().unwrap();
        if wanted {
            if now != stopped {
                if let Some(group) = now {
                    eprintln!("xtask: a test asked for quiet: stopping background job {group}");
                    signal_group(group, "STOP");
                }
                stopped = now;
            }
            if !acknowledged {
                acknowledged = std::fs::write(&paused, b"").is_ok();
            }
        } else {
            if let Some(group) = stopped.take() {
                eprintln!("xtask: continuing background job {group}");
                signal_group(group, "CONT");
            }
            if acknowledged {
                let _ = std::fs::remove_file(&paused);
                acknowledged = false;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(group) = stopped {
        signal_group(group, "CONT");
    }
}

/// Sends SIGSTOP or SIGCONT to a whole process group (cargo and the compilers it runs).
fn signal_group(group: u32, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{group}"))
        .status();
    if !matches!(sent, Ok(s) if s.success()) {
        eprintln!("xtask: could not send SIG{signal} to process group {group}: {sent:?}");
    }
}

/// Runs `cmd` under `nice -n 19` in a process group of its own, with its output in
/// `<dir>/<name>.log`; `running` holds the group while it runs.
fn run_niced(name: &'static str, cmd: Command, dir: &Path, running: &Running) -> Outcome {
    let log = dir.join(format!("{name}.log"));
    let started = Instant::now();
    let ok = (|| -> Result<bool> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut niced = Command::new("nice");
        niced
            .args(["-n", "19"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdout(out)
            .stderr(err);
        if let Some(d) = cmd.get_current_dir() {
            niced.current_dir(d);
        }
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => niced.env(k, v),
                None => niced.env_remove(k),
            };
        }
        niced.process_group(0);
        eprintln!("xtask: background job {name}: {niced:?}");
        let mut child = niced.spawn()?;
        *running.lock().unwrap() = Some(child.id());
        let status = child.wait();
        *running.lock().unwrap() = None;
        Ok(status?.success())
    })()
    .unwrap_or_else(|e| {
        let _ = std::fs::write(&log, format!("could not run: {e:#}\n"));
        false
    });
    Outcome {
        name,
        log,
        took: started.elapsed(),
        ok,
    }
}

/// The last `n` lines of a file (or why it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_niced_and_a_failure_keeps_its_output() {
        let dir = std::env::temp_dir().join(format!("xtask-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut fail = Command::new("sh");
        fail.args(["-c", "echo the reason >&2; exit 3"]);
        let none = Running::default();
        let bad = run_niced("bad", fail, &dir, &none);
        assert!(!bad.ok);
        assert_eq!(tail(&bad.log, 5), "the reason");
        let mut pass = Command::new("sh");
        pass.args(["-c", "test \"$(nice)\" = 19 && echo niced"]);
        let good = run_niced("good", pass, &dir, &none);
        assert!(good.ok, "{}", tail(&good.log, 5));
        assert_eq!(tail(&good.log, 5), "niced");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A job that counts stops counting while a request for quiet is there, and goes on
    /// after it is gone.
    #[test]
    fn a_request_for_quiet_stops_the_running_job_until_it_is_gone() {
        let dir = std::env::temp_dir().join(format!("xtask-quiet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("count");
        let running = Running::default();
        let quiet = Quiet::start(&dir.join("quiet"), running.clone()).unwrap();
        let end = dir.join("end");
        let mut job = Command::new("sh");
        job.arg("-c").arg(format!(
            "i=0; while [ ! -e {} ]; do i=$((i+1)); echo $i > {}; sleep 0.01; done",
            end.display(),
            count.display()
        ));
        let job = std::thread::spawn({
            let (dir, running) = (dir.clone(), running.clone());
            move || run_niced("counter", job, &dir, &running)
        });
        let read = || std::fs::read_to_string(&count).unwrap_or_default();
        let until = |what: &str, ok: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ok() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        until("the job to count", &|| !read().is_empty());
        let request = quiet.dir.join("a-test");
        std::fs::write(&request, b"").unwrap();
        until("the pause", &|| quiet.dir.join(PAUSED).exists());
        let at_pause = read();
        // The job would have counted about 20 more in this time.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(read(), at_pause, "the job ran while paused");
        std::fs::remove_file(&request).unwrap();
        until("the job to go on", &|| read() != at_pause);
        until("the acknowledgement to go", &|| {
            !quiet.dir.join(PAUSED).exists()
        });
        // A request left behind does not hold the job when the suite ends.
        std::fs::write(&request, b"").unwrap();
        until("the second pause", &|| quiet.dir.join(PAUSED).exists());
        quiet.stop();
        std::fs::write(&end, b"").unwrap();
        assert!(
            job.join().unwrap().ok,
            "{}",
            tail(&dir.join("counter.log"), 5)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

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

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
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

/// The running chain of background jobs.
pub struct Background {
    handle: JoinHandle<Vec<Outcome>>,
}

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
        let handle = std::thread::spawn(move || {
            jobs.into_iter()
                .map(|(name, cmd)| run_niced(name, cmd, &dir))
                .collect()
        });
        Ok(Self { handle })
    }

    /// Waits for every job; reports each one's time, and fails with the tail of the log of
    /// each job that failed.
    pub fn finish(self) -> Result<()> {
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

/// Runs `cmd` under `nice -n 19` with its output in `<dir>/<name>.log`.
fn run_niced(name: &'static str, cmd: Command, dir: &Path) -> Outcome {
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
        eprintln!("xtask: background job {name}: {niced:?}");
        Ok(niced.status()?.success())
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
        let bad = run_niced("bad", fail, &dir);
        assert!(!bad.ok);
        assert_eq!(tail(&bad.log, 5), "the reason");
        let mut pass = Command::new("sh");
        pass.args(["-c", "test \"$(nice)\" = 19 && echo niced"]);
        let good = run_niced("good", pass, &dir);
        assert!(good.ok, "{}", tail(&good.log, 5));
        assert_eq!(tail(&good.log, 5), "niced");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

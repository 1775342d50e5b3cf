//! `cargo xtask <task>`: the developer tasks behind `scripts/test`.
//!
//! - `lint`: `cargo fmt --check` and `cargo clippy -D warnings` on the userspace workspace and
//!   on the eBPF crate (with Debian's clippy, which has the bpf target's core library).
//! - `test`: `lint` and the whole test suite (`cargo test --workspace`; the root
//!   integration tests under `tests/` load real probes and need root), then the Go client's
//!   `go test` (with its allocation and timing checks). Formatting is checked first; clippy
//!   and the package's release build run beside the tests (see `suite.rs`).
//! - `package`: the Debian package `target/deb/steadfast_<version>_<arch>.deb` from a release
//!   build (see `package.rs`); prints its path on stdout.
//! - `bench`: benchmarks (see `bench.rs`): overhead per syscall against bare and bpftrace,
//!   agent CPU and memory, event throughput, scale. Prints numbers; not part of `test`.
//! - `k8s-rules`: `packaging/kubernetes/rules.yaml` from `packaging/rules.d` (see `k8s.rs`).
//! - `soak`: the agent for an hour under mixed load with reloads and exporter outages,
//!   sampling RSS, open fds, threads and CPU (see `soak.rs`). Not part of `test`.
//! - `vm-test`: the root tests that load probes, inside Debian kernels under QEMU and on the
//!   running kernel (see `vm.rs`; `scripts/setup --vm` fetches the kernels).
mod bench;
mod bench_clients;
mod bench_decision;
mod bench_http;
mod bench_series;
mod coverage;
mod fuzz;
mod k8s;
mod package;
mod soak;
mod suite;
mod vm;

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let task = env::args().nth(1).unwrap_or_default();
    let rest: Vec<String> = env::args().skip(2).collect();
    let root = workspace_root();
    match task.as_str() {
        "lint" => lint(&root),
        // `test` runs this beside the tests, at the lowest CPU priority.
        "lint-code" => lint_code(&root),
        "test" => test(&root, &rest, true),
        "test-only" => test(&root, &rest, false),
        "fuzz" => fuzz::run(&root, &rest),
        "coverage" => coverage::run(&root, &rest),
        "bench" => bench::bench(&root, &rest),
        "soak" => soak::run(&root, &rest),
        "k8s-rules" => k8s::write_rules_configmap(&root),
        "vm-test" => vm::run(&root, &rest),
        "package" => {
            let deb = package::build(&root)?;
            println!("{}", deb.display());
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <lint|test|test-only|package|fuzz|bench|soak|coverage|vm-test|k8s-rules> [args...]"
            );
            bail!("unknown task {task:?}")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Where `scripts/setup` installs helper tools: `$STEADFAST_TOOLS`, else
/// `~/.cache/steadfast/tools`.
pub(crate) fn tools_dir() -> PathBuf {
    env::var("STEADFAST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(&env::var("HOME").unwrap_or_default()).join(".cache/steadfast/tools")
        })
}

/// Installs `krate` (a cargo subcommand) into the tools directory if `bin` is not there yet,
/// and returns a PATH with the tools directory first.
pub(crate) fn tool_path(krate: &str, bin: &str) -> Result<String> {
    let tools = tools_dir();
    if !tools.join("bin").join(bin).exists() {
        run(cargo()
            .args(["install", "--locked", krate, "--root"])
            .arg(&tools))?;
    }
    Ok(format!(
        "{}:{}",
        tools.join("bin").display(),
        env::var("PATH").unwrap_or_default()
    ))
}

pub(crate) fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The eBPF crate is built by Debian's rustc (and linted by Debian's clippy), never by the
/// rustup toolchain, which has no core library for bpfel-unknown-none.
fn ebpf_cargo(root: &Path) -> Command {
    let mut cmd = Command::new("/usr/bin/cargo-clippy");
    let tools = tools_dir();
    let path = format!(
        "{}:{}",
        tools.join("bin").display(),
        env::var("PATH").unwrap_or_default()
    );
    cmd.current_dir(root.join("agent-ebpf"))
        .env("PATH", path)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

fn lint(root: &Path) -> Result<()> {
    format_check(root)?;
    lint_code(root)
}

/// `cargo fmt --check` on both crates: seconds, so `test` runs it before anything else.
fn format_check(root: &Path) -> Result<()> {
    run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .current_dir(root.join("agent-ebpf"))
        .args(["fmt", "--check"]))
}

/// Clippy, the fuzz targets, `go vet` and the eBPF crate's clippy. Each in a target directory
/// of its own, so that `test` can run them while `cargo test` holds the workspace's.
fn lint_code(root: &Path) -> Result<()> {
    run(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--target-dir",
        "target/clippy",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The fuzz targets are a crate of their own (built with nightly by `cargo xtask fuzz`):
    // checked here on stable, so an API change in the agent cannot leave them broken.
    run(cargo().current_dir(root).args([
        "check",
        "--locked",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--target-dir",
        "target/fuzz-check",
    ]))?;
    // The Go client: formatted, and `go vet` clean (Debian's golang-go, from scripts/setup --test).
    let gofmt = Command::new("gofmt")
        .args(["-l", "."])
        .current_dir(root.join("clients/go"))
        .output()
        .context("gofmt (scripts/setup --test installs Debian's golang-go)")?;
    let unformatted = String::from_utf8_lossy(&gofmt.stdout);
    if !gofmt.status.success() || !unformatted.trim().is_empty() {
        bail!("gofmt: these Go files need formatting:\n{unformatted}");
    }
    run(go(root).args(["vet", "./..."]))?;
    let target_dir = root.join("target/ebpf-clippy");
    run(ebpf_cargo(root)
        .args([
            "clippy",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-D", "warnings"]))
}

/// `cargo xtask test` (`lint` true) and `test-only`: formatting first, then the test
/// binaries are built, then the tests run while the lints and the package's release build
/// run beside them at the lowest CPU priority (`suite.rs`); a failure of either fails it.
fn test(root: &Path, extra: &[String], lint: bool) -> Result<()> {
    if !is_root() {
        bail!("the test suite loads eBPF programs: run it as root");
    }
    let started = std::time::Instant::now();
    if lint {
        format_check(root)?;
    }
    run(cargo()
        .current_dir(root)
        .args(["test", "--workspace", "--locked", "--no-run"])
        .args(extra))?;
    let built = started.elapsed();
    // The packaging test runs only in the whole suite (no filter).
    let background = suite::Background::start(root, extra.is_empty(), lint)?;
    let tests = test_run(root, extra, background.quiet_dir());
    let tested = started.elapsed();
    let background = background.finish();
    eprintln!(
        "xtask: test binaries built after {:.0} s, tests done after {:.0} s, all done after {:.0} s",
        built.as_secs_f64(),
        tested.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    tests.and(background)
}

/// Runs the built tests and the Go client's; prints one closing line over all of them. Tests
/// that measure latency pause the background jobs through `quiet` (`suite.rs`).
fn test_run(root: &Path, extra: &[String], quiet: &Path) -> Result<()> {
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(extra)
        .env(package::TARGET_DIR_ENV, suite::package_target_dir(root))
        .env(suite::QUIET_ENV, quiet)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd.spawn().context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    // The Go client's tests, counted with the rest (`--- PASS` / `--- FAIL` lines of -v);
    // not when cargo test was given a filter.
    let go_status = if extra.is_empty() {
        let mut cmd = go(root);
        cmd.args(["test", "-count=1", "-v", "./..."])
            .stdout(std::process::Stdio::piped());
        eprintln!("xtask: {cmd:?}");
        let mut child = cmd.spawn().context("running go test")?;
        let stdout = child.stdout.take().context("go test stdout")?;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line?;
            println!("{line}");
            let line = line.trim_start();
            if line.starts_with("--- PASS") {
                passed += 1;
            } else if line.starts_with("--- FAIL") {
                failed += 1;
            }
        }
        Some(child.wait()?)
    } else {
        None
    };
    // One closing line over every test binary (cargo prints one result line per binary).
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if let Some(s) = go_status.filter(|s| !s.success()) {
        bail!("go test failed: {s}");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `test result: ok. 14 passed; 0 failed; ...` -> (14, 0).
fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let num = |word: &str| {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((num(" passed")?, num(" failed")?))
}

/// `go` in the Go client's module (Debian's golang-go, installed by scripts/setup --test).
pub(crate) fn go(root: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(root.join("clients/go"));
    cmd
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn result_lines_are_parsed() {
        assert_eq!(
            parse_result("test result: ok. 14 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"),
            Some((14, 0))
        );
        assert_eq!(
            parse_result("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured"),
            Some((3, 1))
        );
        assert_eq!(parse_result("running 4 tests"), None);
    }
}

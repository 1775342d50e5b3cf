//! Section 6 of the benchmark: what `Allow` costs in the Go and Rust clients, on a page with one
//! breaker and on a page with 1,000 (pages written by the clients' own tests from the
//! documented layout; the reader does the same work whoever wrote the page).
//!
//! - Go: `go test -bench` (`testing.B`, `-benchmem`): wall ns/op, the process's CPU ns/op
//!   (`cpu-ns/op`: on a busy shared machine wall time also counts waiting for a CPU), and
//!   allocations per call.
//! - Rust: the crate's `allow_is_allocation_free_and_fast` test built with `--release`: the
//!   thread's CPU time per call over a million calls, and a counting allocator's total.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::cargo;

/// (benchmark, wall ns, cpu ns, allocs) from `go test -bench` lines.
fn go_benchmarks(text: &str) -> Vec<(String, f64, Option<f64>, f64)> {
    text.lines()
        .filter(|l| l.starts_with("Benchmark"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let value = |unit: &str| {
                f.windows(2)
                    .find(|w| w[1] == unit)
                    .and_then(|w| w[0].parse().ok())
            };
            let name = f[0].rsplit_once('-').map_or(f[0], |(n, _)| n).to_string();
            Some((
                name,
                value("ns/op")?,
                value("cpu-ns/op"),
                value("allocs/op")?,
            ))
        })
        .collect()
}

pub fn clients(root: &Path, out: &mut String) -> Result<()> {
    let go = Command::new("go")
        .args([
            "test",
            "-count=1",
            "-run",
            "^$",
            "-bench",
            "Allow|Signal",
            "-benchmem",
            "./...",
        ])
        .current_dir(root.join("clients/go"))
        .output()
        .context("go test -bench (Debian's golang-go)")?;
    let go_text = String::from_utf8_lossy(&go.stdout).into_owned();
    if !go.status.success() {
        bail!("go test -bench failed:\n{go_text}");
    }
    let rust = cargo()
        .current_dir(root)
        .args([
            "test",
            "--release",
            "--locked",
            "-p",
            "steadfast-client",
            "--lib",
            "allow_is_allocation_free_and_fast",
            "--",
            "--nocapture",
        ])
        .output()
        .context("cargo test --release -p steadfast-client")?;
    let rust_text =
        String::from_utf8_lossy(&rust.stderr).into_owned() + &String::from_utf8_lossy(&rust.stdout);
    if !rust.status.success() {
        bail!("the Rust client's timing test failed:\n{rust_text}");
    }

    writeln!(out, "\n## 6. Client `Allow` cost\n")?;
    writeln!(
        out,
        "One call of `Allow` on a shedding breaker (0 allocations is checked by the clients' tests too).\n"
    )?;
    writeln!(
        out,
        "| client | call | breakers on the page | ns per call (wall) | ns per call (CPU) | allocations | target |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for (name, wall, cpu, allocs) in go_benchmarks(&go_text) {
        let (call, breakers) = match name.as_str() {
            "BenchmarkAllow" => ("`Allow`", "1"),
            "BenchmarkAllow1000" => ("`Allow`", "1,000"),
            "BenchmarkAllowParallel" => ("`Allow`, 2 goroutines", "1,000"),
            "BenchmarkSignal" => ("`Signal`", "1,000"),
            _ => continue,
        };
        writeln!(
            out,
            "| Go | {call} | {breakers} | {wall:.1} | {} | {allocs} | <= 50 ns, 0 allocs |",
            cpu.map_or("-".into(), |c| format!("{c:.1}"))
        )?;
    }
    for line in rust_text.lines() {
        // "allow with 1000 breakers: 12.3 ns per call (this build)"
        let Some(rest) = line.strip_prefix("allow with ") else {
            continue;
        };
        let (n, rest) = rest.split_once(" breakers: ").context("timing line")?;
        let ns = rest.split_whitespace().next().context("timing line")?;
        let n = if n == "1000" { "1,000" } else { n };
        writeln!(
            out,
            "| Rust | `allow` | {n} | - | {ns} (thread CPU time) | 0 | <= 50 ns, 0 allocs |"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_benchmark_lines_are_read() {
        let text = "BenchmarkAllow-2   \t63084456\t        22.24 ns/op\t         7.051 cpu-ns/op\t       0 B/op\t       0 allocs/op\nBenchmarkAllowParallel-2   \t30081477\t        72.85 ns/op\t       0 B/op\t       0 allocs/op\nPASS\n";
        let b = super::go_benchmarks(text);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0], ("BenchmarkAllow".into(), 22.24, Some(7.051), 0.0));
        assert_eq!(b[1], ("BenchmarkAllowParallel".into(), 72.85, None, 0.0));
    }
}

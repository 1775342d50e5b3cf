//! `cargo xtask coverage [cargo llvm-cov args...]`: line coverage of the userspace crates with
//! cargo-llvm-cov (installed into the tools directory on first use) and Debian's LLVM 22 tools,
//! which match the stable rustc's profile format. With no arguments it runs the whole test
//! suite (root: the integration tests run the instrumented agent, whose profiles count too)
//! and prints the summary; `--lib` measures the unit tests alone.

use std::{path::Path, process::Command};

use anyhow::Result;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let path = crate::tool_path("cargo-llvm-cov", "cargo-llvm-cov")?;
    let mut cmd = Command::new(crate::cargo().get_program());
    cmd.current_dir(root)
        .env("PATH", path)
        // Without these it would ask rustup for llvm-tools, which is not to be had here.
        .env("LLVM_COV", "/usr/bin/llvm-cov-22")
        .env("LLVM_PROFDATA", "/usr/bin/llvm-profdata-22")
        .args([
            "llvm-cov",
            "--workspace",
            "--exclude",
            "xtask",
            "--summary-only",
            "--ignore-filename-regex",
            "(xtask|tests/|fuzz/)",
        ])
        .args(args);
    crate::run(&mut cmd)
}

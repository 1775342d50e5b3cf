//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs each cargo-fuzz target (fuzz/) for N
//! seconds (default 60) with the nightly toolchain. cargo-fuzz is installed into the tools
//! directory on first use. A crash leaves its input under fuzz/artifacts/<target>/; turn it
//! into a regression test next to the code it broke.

use std::{path::Path, process::Command};

use anyhow::{bail, Result};

const TARGETS: &[&str] = &[
    "config",
    "exposition",
    "event_decoder",
    "rule_file",
    "expression",
];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--seconds takes a number"))?
            }
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => bail!("unknown fuzz target or option {other:?} (targets: {TARGETS:?})"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let path = crate::tool_path("cargo-fuzz", "cargo-fuzz")?;
    for t in targets {
        crate::run(
            Command::new("rustup")
                .args(["run", "nightly", "cargo", "fuzz", "run", &t, "--"])
                .arg(format!("-max_total_time={seconds}"))
                .current_dir(root.join("fuzz"))
                .env("PATH", &path),
        )?;
    }
    Ok(())
}

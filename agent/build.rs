//! Builds the eBPF object (`agent-ebpf`) for `bpfel-unknown-none` with Debian's rustc-web and
//! bpf-linker (installed by `scripts/setup`), and hands its path to the agent as
//! `STEADFAST_EBPF_OBJECT`. The nested cargo gets a clean environment: nothing of the outer
//! build (RUSTFLAGS, coverage instrumentation, wrappers, target dir) may leak into it.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("agent/ has no parent")?
        .to_path_buf();
    let ebpf_dir = root.join("agent-ebpf");
    for p in [
        "agent-ebpf/src",
        "agent-ebpf/Cargo.toml",
        "agent-ebpf/Cargo.lock",
        "agent-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=STEADFAST_EBPF_RUSTC");

    let rustc = env::var("STEADFAST_EBPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    println!("cargo:rerun-if-env-changed=STEADFAST_TOOLS");
    let tools_bin = tools_dir()?.join("bin");
    if !Path::new(&rustc).exists() || !tools_bin.join("bpf-linker").exists() {
        bail!(
            "the eBPF toolchain is missing ({rustc} or {}/bpf-linker): run scripts/setup first",
            tools_bin.display()
        );
    }
    let target_dir = root.join("target/ebpf");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let path = format!(
        "{}:{}",
        tools_bin.display(),
        env::var("PATH").unwrap_or_default()
    );

    let mut cmd = Command::new(cargo);
    cmd.env_clear();
    for keep in [
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "TMPDIR",
        "LANG",
        "CARGO_NET_OFFLINE",
    ] {
        if let Ok(v) = env::var(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.env("PATH", path)
        .env("RUSTC", &rustc)
        // aya-ebpf uses #![feature(asm_experimental_arch)] on the bpf target; this build only.
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args([
            "--config",
            "target.bpfel-unknown-none.linker=\"bpf-linker\"",
        ]);
    let status = cmd.status().context("running cargo for agent-ebpf")?;
    if !status.success() {
        bail!("building agent-ebpf failed ({status})");
    }
    let object = target_dir.join("bpfel-unknown-none/release/agent-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("steadfast.bpf.o");
    std::fs::copy(&object, &out).with_context(|| format!("copying {}", object.display()))?;
    println!("cargo:rustc-env=STEADFAST_EBPF_OBJECT={}", out.display());
    Ok(())
}

/// Where `scripts/setup` installs bpf-linker: `$STEADFAST_TOOLS`, else
/// `$HOME/.cache/steadfast/tools`.
fn tools_dir() -> Result<PathBuf> {
    if let Ok(dir) = env::var("STEADFAST_TOOLS") {
        return Ok(dir.into());
    }
    let home = env::var("HOME").context("HOME is not set (needed to find bpf-linker)")?;
    Ok(Path::new(&home).join(".cache/steadfast/tools"))
}

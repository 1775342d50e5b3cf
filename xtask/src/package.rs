//! `cargo xtask package`: the Debian package, assembled with Debian's own tools and nothing
//! else to install (`dpkg-deb`, `dpkg-shlibdeps` from dpkg-dev, `strip` from binutils).
//!
//! The tree is staged as `target/deb/build/debian/steadfast/` (the layout dpkg-shlibdeps
//! expects), from the files listed in `FILES`; `docs/operations.md` lists the same paths and
//! `tests/packaging.rs` checks both against what `dpkg -L` says after a real install.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, run};

/// The workspace version (xtask inherits it).
const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAME: &str = "steadfast";

/// The binary's installed path; it comes from the release build's target directory.
const BINARY: &str = "usr/bin/steadfast";

/// Where the release binary is built: `$STEADFAST_PACKAGE_TARGET_DIR` if set (`cargo xtask
/// test` builds it there, in a directory of its own, beside the tests), else `target`.
pub const TARGET_DIR_ENV: &str = "STEADFAST_PACKAGE_TARGET_DIR";

/// The rest: (source relative to the workspace root, installed path, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "packaging/systemd/steadfast.service",
        "lib/systemd/system/steadfast.service",
        0o644,
    ),
    (
        "packaging/steadfast.yaml",
        "etc/steadfast/steadfast.yaml",
        0o644,
    ),
    (
        "packaging/rules.d/host.yaml",
        "etc/steadfast/rules.d/host.yaml",
        0o644,
    ),
    (
        "packaging/rules.d/http.yaml",
        "etc/steadfast/rules.d/http.yaml",
        0o644,
    ),
    (
        "packaging/rules.d/leaks.yaml",
        "etc/steadfast/rules.d/leaks.yaml",
        0o644,
    ),
    (
        "packaging/examples/dependency-breaker.yaml",
        "usr/share/doc/steadfast/examples/dependency-breaker.yaml",
        0o644,
    ),
    ("docs/rules.md", "usr/share/doc/steadfast/rules.md", 0o644),
    ("README.md", "usr/share/doc/steadfast/README.md", 0o644),
    (
        "docs/operations.md",
        "usr/share/doc/steadfast/operations.md",
        0o644,
    ),
    (
        "docs/metrics.md",
        "usr/share/doc/steadfast/metrics.md",
        0o644,
    ),
    (
        "docs/state-page.md",
        "usr/share/doc/steadfast/state-page.md",
        0o644,
    ),
    (
        "packaging/grafana/steadfast.json",
        "usr/share/steadfast/grafana/steadfast.json",
        0o644,
    ),
    (
        "packaging/debian/copyright",
        "usr/share/doc/steadfast/copyright",
        0o644,
    ),
];

/// Files under /etc that dpkg must treat as the administrator's (kept on upgrade if changed,
/// removed on purge).
const CONFFILES: &[&str] = &[
    "/etc/steadfast/steadfast.yaml",
    "/etc/steadfast/rules.d/host.yaml",
    "/etc/steadfast/rules.d/http.yaml",
    "/etc/steadfast/rules.d/leaks.yaml",
];

/// Maintainer scripts under packaging/debian/.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// The release build of the agent into `target_dir`.
pub fn release_build(root: &Path, target_dir: &Path) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "-p", NAME, "--target-dir"])
        .arg(target_dir);
    cmd
}

/// Builds the release binary and the package; returns the .deb's path.
pub fn build(root: &Path) -> Result<PathBuf> {
    let target_dir = std::env::var_os(TARGET_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    run(&mut release_build(root, &target_dir))?;

    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let work = root.join("target/deb/build");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = work.join("debian").join(NAME);
    install(
        &target_dir.join("release").join(NAME),
        &tree.join(BINARY),
        0o755,
    )?;
    for (src, dest, mode) in FILES {
        install(&root.join(src), &tree.join(dest), *mode)?;
    }
    run(Command::new("strip")
        .arg("--strip-unneeded")
        .arg(tree.join(BINARY)))?;

    // Shared-library dependencies as Debian computes them (libc6 and libgcc-s1 versions).
    fs::write(
        work.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: {arch}\n"),
    )?;
    let shlibs = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&work)
            .args(["-O", "-e"])
            .arg(format!("debian/{NAME}/usr/bin/steadfast")),
    )?;
    let shlibs = shlibs
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?
        .to_string();

    let control_dir = tree.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    let installed_kib = du_kib(&tree)?;
    fs::write(
        control_dir.join("control"),
        control(&arch, &shlibs, installed_kib),
    )?;
    fs::write(
        control_dir.join("conffiles"),
        CONFFILES
            .iter()
            .map(|c| format!("{c}\n"))
            .collect::<String>(),
    )?;
    for script in SCRIPTS {
        install(
            &root.join("packaging/debian").join(script),
            &control_dir.join(script),
            0o755,
        )?;
    }
    let md5 = output(Command::new("sh").current_dir(&tree).args([
        "-c",
        "find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z | xargs -0 md5sum",
    ]))?;
    fs::write(control_dir.join("md5sums"), md5 + "\n")?;

    fix_dir_modes(&tree)?;
    let deb = root.join(format!("target/deb/{NAME}_{VERSION}_{arch}.deb"));
    // Its progress line goes to stderr: stdout carries only the package's path.
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&tree)
        .arg(&deb)
        .stdout(std::io::stderr()))?;
    Ok(deb)
}

fn control(arch: &str, shlibs: &str, installed_kib: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: steadfast developers <steadfast@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {shlibs}, passwd\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://example.invalid/steadfast\n\
         Description: eBPF host stability agent\n \
         steadfast watches what processes ask of the kernel with eBPF probes (syscall\n \
         latency today) and exports it as Prometheus metrics. It runs as a systemd\n \
         service with CAP_BPF and CAP_PERFMON only, and needs a kernel with BTF.\n"
    )
}

/// Copies `src` to `dest` (creating parents) with `mode`.
fn install(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dest.parent().context("destination has no parent")?)?;
    fs::copy(src, dest).with_context(|| format!("copying {}", src.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Every directory of the tree 0755, whatever the umask was.
fn fix_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fix_dir_modes(&entry.path())?;
        }
    }
    Ok(())
}

fn du_kib(dir: &Path) -> Result<u64> {
    let out = output(Command::new("du").args(["-sk", "--apparent-size"]).arg(dir))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")
}

/// Runs a command and returns its stdout (trimmed); fails with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

//! The Debian package and the systemd unit, for real: `cargo xtask package` builds the .deb;
//! it is installed with `dpkg -i` on this machine, checked against the file list in
//! docs/operations.md, removed and purged until nothing is left; the unit passes
//! `systemd-analyze verify`; and in a booted systemd container (debootstrap + systemd-nspawn)
//! the service starts, serves metrics, reloads, stops and purges. Needs root.
//!
//! Every test that touches this machine's dpkg database holds `DPKG` and purges the package
//! before it starts and when it ends (also on failure), so the machine is left as it was.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use support::require_root;

const PKG: &str = "steadfast";
const CONFIG: &str = "/etc/steadfast/steadfast.yaml";
const UNIT: &str = "/lib/systemd/system/steadfast.service";

static DPKG: Mutex<()> = Mutex::new(());
static DEB: OnceLock<PathBuf> = OnceLock::new();

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the package once per test run with `cargo xtask package`.
fn deb() -> &'static Path {
    DEB.get_or_init(|| {
        let started = Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace())
            .args(["xtask", "package"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo xtask package");
        assert!(out.status.success(), "cargo xtask package failed");
        let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert!(path.is_file(), "{} was not built", path.display());
        eprintln!("built {} in {:?}", path.display(), started.elapsed());
        path
    })
}

fn sh(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    let o = sh(cmd);
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runtime and state directories an agent started outside the package (`scripts/run`, a test)
/// may leave behind; they are not the package's traces.
const AGENT_DIRS: [&str; 2] = ["/run/steadfast", "/var/lib/steadfast"];

/// Holds the dpkg lock of this test binary; purges the package on creation and on drop. What an
/// agent run outside the package left in [`AGENT_DIRS`] is moved aside (beside itself, so on the
/// same file system) while the test runs and put back afterwards, untouched.
struct Installed<'a> {
    _lock: MutexGuard<'a, ()>,
    stashed: Vec<(PathBuf, PathBuf)>,
}

impl Installed<'_> {
    fn new() -> Self {
        require_root();
        let lock = DPKG.lock().unwrap_or_else(|e| e.into_inner());
        purge();
        let mut stashed = Vec::new();
        for dir in AGENT_DIRS.map(PathBuf::from) {
            if dir.symlink_metadata().is_ok() {
                let aside = dir.with_file_name(format!(
                    ".steadfast-before-packaging-test.{}",
                    std::process::id()
                ));
                std::fs::rename(&dir, &aside)
                    .unwrap_or_else(|e| panic!("moving {} aside: {e}", dir.display()));
                stashed.push((dir, aside));
            }
        }
        Installed {
            _lock: lock,
            stashed,
        }
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        purge();
        for (dir, aside) in &self.stashed {
            let _ = std::fs::remove_dir_all(dir);
            if let Err(e) = std::fs::rename(aside, dir) {
                eprintln!("putting {} back: {e}", dir.display());
            }
        }
    }
}

fn purge() {
    let _ = Command::new("dpkg")
        .args(["--purge", PKG])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn getent(db: &str, key: &str) -> bool {
    sh(Command::new("getent").args([db, key])).status.success()
}

/// The installed files docs/operations.md promises, from its `installed-files` block.
fn documented_files() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(workspace().join("docs/operations.md")).unwrap();
    let block = doc
        .split_once("<!-- installed-files -->")
        .and_then(|(_, rest)| rest.split_once("<!-- /installed-files -->"))
        .expect("docs/operations.md has an installed-files block")
        .0;
    let files: BTreeSet<String> = block
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(path, _)| path.to_string())
        .collect();
    assert!(files.len() >= 5, "too few documented files: {files:?}");
    files
}

/// Files (not directories) dpkg says the package installed.
fn dpkg_files() -> BTreeSet<String> {
    ok(Command::new("dpkg").args(["-L", PKG]))
        .lines()
        .filter(|p| Path::new(p).is_file())
        .map(str::to_string)
        .collect()
}

/// Everything the package, its scripts or its service could have created on a host.
fn traces() -> Vec<String> {
    let mut left = Vec::new();
    for p in [
        "/usr/bin/steadfast",
        UNIT,
        "/etc/steadfast",
        "/usr/share/doc/steadfast",
        "/usr/share/steadfast",
        "/var/lib/steadfast",
        "/run/steadfast",
        "/etc/systemd/system/steadfast.service.d",
        "/etc/systemd/system/multi-user.target.wants/steadfast.service",
    ] {
        if Path::new(p).symlink_metadata().is_ok() {
            left.push(p.to_string());
        }
    }
    for entry in std::fs::read_dir("/var/lib/dpkg/info").unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("steadfast.") {
            left.push(format!("/var/lib/dpkg/info/{name}"));
        }
    }
    if getent("passwd", "steadfast") {
        left.push("user steadfast".into());
    }
    if getent("group", "steadfast") {
        left.push("group steadfast".into());
    }
    left
}

#[test]
fn deb_installs_checks_and_purges_without_a_trace() {
    let deb = deb();
    let _installed = Installed::new();
    assert_eq!(traces(), Vec::<String>::new(), "left over before the test");

    ok(Command::new("dpkg").arg("-i").arg(deb));

    // The installed binary accepts the installed config.
    let out = ok(Command::new("/usr/bin/steadfast").args(["check", "config", CONFIG]));
    assert!(out.contains(": ok"), "{out}");
    let version = ok(Command::new("/usr/bin/steadfast").arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // Every file the docs list is installed, and the package installs nothing else.
    let documented = documented_files();
    for f in &documented {
        assert!(Path::new(f).is_file(), "documented {f} is not installed");
    }
    assert_eq!(dpkg_files(), documented, "dpkg -L vs docs/operations.md");
    let meta = std::fs::metadata("/usr/bin/steadfast").unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o755
    );

    // The config is a conffile; the user and group exist; the service is not enabled.
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", PKG]));
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    assert!(getent("group", "steadfast"));
    let user = ok(Command::new("getent").args(["passwd", "steadfast"]));
    assert!(user.trim_end().ends_with(":/usr/sbin/nologin"), "{user}");
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/steadfast.service").exists());

    // What a running service and an administrator would add: state, a changed conffile, an
    // enabled unit.
    std::fs::create_dir_all("/var/lib/steadfast").unwrap();
    std::fs::write("/var/lib/steadfast/state", "x").unwrap();
    let mut config = std::fs::read_to_string(CONFIG).unwrap();
    config.push_str("# changed by the administrator\n");
    std::fs::write(CONFIG, &config).unwrap();
    std::fs::create_dir_all("/etc/systemd/system/multi-user.target.wants").unwrap();
    std::os::unix::fs::symlink(
        UNIT,
        "/etc/systemd/system/multi-user.target.wants/steadfast.service",
    )
    .unwrap();

    // dpkg -r: program and unit gone, the enablement symlink too, the changed config kept.
    ok(Command::new("dpkg").args(["-r", PKG]));
    for gone in ["/usr/bin/steadfast", UNIT, "/usr/share/doc/steadfast"] {
        assert!(!Path::new(gone).exists(), "{gone} survived dpkg -r");
    }
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/steadfast.service")
            .symlink_metadata()
            .is_err()
    );
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), config);

    // dpkg -P: nothing at all.
    ok(Command::new("dpkg").args(["-P", PKG]));
    assert_eq!(traces(), Vec::<String>::new(), "left after dpkg -P");
    let status = sh(Command::new("dpkg-query").args(["-W", "-f", "${Status}", PKG]));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "dpkg still knows the package: {status}"
    );
}

/// `systemd-analyze verify` on a unit: an error exit or any diagnostic is a failure (unknown
/// keys only produce a warning and exit 0, so the output must be empty too).
fn verify(unit: &Path) -> Result<(), String> {
    let o = sh(Command::new("systemd-analyze").arg("verify").arg(unit));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let deb = deb();
    let _installed = Installed::new();
    // verify checks that ExecStart's binary exists: install the package first.
    ok(Command::new("dpkg").arg("-i").arg(deb));
    let repo_unit = workspace().join("packaging/systemd/steadfast.service");
    verify(&repo_unit).unwrap_or_else(|e| panic!("packaging/systemd/steadfast.service: {e}"));
    verify(Path::new(UNIT)).unwrap_or_else(|e| panic!("{UNIT}: {e}"));

    // The check can fail: a misspelt directive is caught.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("steadfast.service");
    let unit = std::fs::read_to_string(&repo_unit).unwrap();
    std::fs::write(
        &bad,
        unit.replace("Type=notify", "Type=notify\nNotifyAcess=main"),
    )
    .unwrap();
    let err = verify(&bad).expect_err("a misspelt key must fail the check");
    assert!(err.contains("NotifyAcess"), "{err}");
}

// ------------------------------------------------------------------------------------------------
// A booted systemd container.

/// `$STEADFAST_CACHE`, else `~/.cache/steadfast` (shared by every clone, like the tools).
fn cache_dir() -> PathBuf {
    std::env::var_os("STEADFAST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/steadfast")
        })
}

const ROOTFS_MARK: &str = ".steadfast-rootfs-complete";

/// The Debian mirror this machine's apt uses for bookworm main.
fn apt_mirror() -> String {
    let mut found = None;
    if let Ok(list) = std::fs::read_to_string("/etc/apt/sources.list") {
        found = list.lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[0] == "deb" && w[2] == "bookworm").then(|| w[1].to_string())
        });
    }
    if found.is_none() {
        for entry in std::fs::read_dir("/etc/apt/sources.list.d")
            .into_iter()
            .flatten()
        {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "sources") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for stanza in text.split("\n\n") {
                let field = |name: &str| {
                    stanza.lines().find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|r| r.strip_prefix(':'))
                            .map(str::trim)
                    })
                };
                let suites = field("Suites").unwrap_or_default();
                if suites.split_whitespace().any(|s| s == "bookworm") {
                    found =
                        field("URIs").and_then(|u| u.split_whitespace().next().map(String::from));
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
    }
    found.expect("no apt source for bookworm in /etc/apt/sources.list{,.d}")
}

/// A minbase bookworm with systemd, debootstrapped once and cached (about 50 s, 241 MB); the
/// container boots it with a volatile overlay, so the cache is never modified.
fn rootfs() -> PathBuf {
    let root = cache_dir().join("nspawn-bookworm");
    if root.join(ROOTFS_MARK).exists() {
        return root;
    }
    let tmp = cache_dir().join(format!("nspawn-bookworm.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(cache_dir()).unwrap();
    let started = Instant::now();
    ok(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus",
            "bookworm",
        ])
        .arg(&tmp)
        .arg(apt_mirror()));
    std::fs::write(tmp.join(ROOTFS_MARK), "").unwrap();
    if std::fs::rename(&tmp, &root).is_err() {
        // Another run finished first (or a broken copy is in the way).
        if !root.join(ROOTFS_MARK).exists() {
            let _ = std::fs::remove_dir_all(&root);
            std::fs::rename(&tmp, &root).unwrap();
        } else {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    eprintln!(
        "debootstrapped {} in {:?}",
        root.display(),
        started.elapsed()
    );
    root
}

/// A booted container; powered off (or killed) on drop.
struct Container {
    nspawn: Child,
    init: u32,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Container {
    fn boot(root: &Path, deb_dir: &Path) -> Container {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("nspawn.log");
        let name = format!("sftest{}", std::process::id());
        let nspawn = Command::new("setsid")
            .arg("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args(["-M", &name, "--boot", "--volatile=overlay"])
            // No host systemd or dbus here: do not register, stay in our cgroup.
            .args(["--register=no", "--keep-unit", "--console=pipe"])
            // Its own loopback: port 9477 inside cannot collide with anything on the host.
            .arg("--private-network")
            // nspawn's defaults drop CAP_BPF and CAP_PERFMON and filter out bpf().
            .args([
                "--capability=CAP_BPF,CAP_PERFMON",
                "--system-call-filter=bpf perf_event_open",
            ])
            .arg(format!("--bind-ro={}:/mnt/deb", deb_dir.display()))
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("nspawn.err")).unwrap(),
            ))
            .spawn()
            .expect("systemd-nspawn (scripts/setup --test installs systemd-container)");
        let mut c = Container {
            nspawn,
            init: 0,
            log,
            _dir: dir,
        };
        // setsid forks nothing when it is not a group leader: nspawn is our child. Its children
        // are first a short-lived helper, then the container's systemd: wait for the latter.
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.init == 0 {
            if let Some(s) = c.nspawn.try_wait().unwrap() {
                panic!("systemd-nspawn exited ({s}): {}", c.logs());
            }
            assert!(Instant::now() < deadline, "no container init: {}", c.logs());
            let pid = c.nspawn.id();
            c.init = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .find(|p: &u32| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "systemd")
                })
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Wait for boot to finish (degraded is fine: minbase lacks some units' dependencies).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = c.run(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "boot stuck in {state:?}: {}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("nspawn.err");
        format!(
            "nspawn stderr:\n{}\nconsole:\n{}",
            std::fs::read_to_string(err).unwrap_or_default(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Runs a command in every namespace of the container (as systemd's child would not be:
    /// use it to drive systemctl and dpkg, never to test the agent's privileges).
    fn run(&self, args: &[&str]) -> Output {
        sh(Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a"])
            .args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} in the container failed: {}\njournal:\n{}",
            text(&o),
            self.journal()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn journal(&self) -> String {
        let o = self.run(&["journalctl", "--no-pager", "-u", "steadfast", "-n", "60"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn show(&self, prop: &str) -> String {
        self.ok(&["systemctl", "show", "steadfast", "-p", prop, "--value"])
            .trim()
            .to_string()
    }

    /// Waits (up to 10 s) for the unit to reach `state`: `systemctl reload` returns once the
    /// signal is sent, and the agent's RELOADING=1 ... READY=1 follows a moment later.
    fn wait_state(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.show("ActiveState");
            if now == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {now}, not {state}:\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 10 s) for the unit's journal to contain `needle`.
    fn wait_journal(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.journal().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "journal never said {needle:?}:\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET /metrics on the container's loopback, with the host's curl in its network namespace.
    fn metrics(&self) -> String {
        let o = sh(Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-n"])
            .args([
                "curl",
                "-sf",
                "--max-time",
                "10",
                "http://127.0.0.1:9477/metrics",
            ]));
        assert!(
            o.status.success(),
            "curl: {}\njournal:\n{}",
            text(&o),
            self.journal()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.init != 0 {
            let _ = self.run(&["systemctl", "poweroff"]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.nspawn.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: kill with the pid of our own child.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGKILL) };
        let _ = self.nspawn.wait();
    }
}

#[test]
fn service_runs_for_real_in_a_systemd_container() {
    require_root();
    let deb = deb();
    let started = Instant::now();
    let root = rootfs();
    let c = Container::boot(&root, deb.parent().unwrap());
    eprintln!("container booted in {:?}", started.elapsed());
    let deb_in = format!("/mnt/deb/{}", deb.file_name().unwrap().to_string_lossy());
    c.ok(&["dpkg", "-i", &deb_in]);

    // Type=notify: start returns once the agent sent READY=1 (probes attached, serving).
    c.ok(&["systemctl", "start", "steadfast"]);
    assert_eq!(c.show("ActiveState"), "active", "{}", c.journal());
    assert!(c.show("StatusText").contains("probes attached"));
    assert_eq!(c.show("WatchdogUSec"), "30s");
    let metrics = c.metrics();
    assert!(
        metrics.contains("steadfast_syscall_duration_seconds_count{"),
        "no syscall histogram in:\n{metrics}"
    );
    // This container has no tracefs and the hardened service cannot mount one: the HTTP probe
    // is off, and says so in the log and in the metrics, while every other probe runs.
    for line in [
        "steadfast_probe_attached{probe=\"syscalls\"} 1",
        "steadfast_probe_attached{probe=\"tasks\"} 1",
        "steadfast_probe_attached{probe=\"tcp\"} 1",
        "steadfast_probe_attached{probe=\"connections\"} 1",
        "steadfast_probe_attached{probe=\"http\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
    assert!(c.journal().contains("HTTP probe off"), "{}", c.journal());
    // The hardened service writes its state page: mode 0640, group steadfast (its members read
    // it), a page the clients accept (magic, status 0 running).
    let page = c.ok(&[
        "sh",
        "-c",
        "stat -c '%a %U %G' /run/steadfast/state.page; head -c 8 /run/steadfast/state.page; echo; od -An -tu4 -j12 -N4 /run/steadfast/state.page",
    ]);
    let page: Vec<&str> = page.lines().map(str::trim).collect();
    assert_eq!(
        page,
        ["640 steadfast steadfast", "STDFPAGE", "0"],
        "{}",
        c.journal()
    );

    // Least privilege, as the kernel sees it: the steadfast user with exactly CAP_BPF and
    // CAP_PERFMON (bits 39 and 38) effective, permitted and bounding.
    let pid = c.show("MainPID");
    let status = c.ok(&["cat", &format!("/proc/{pid}/status")]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .trim()
            .to_string()
    };
    for cap in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(cap), "000000c000000000", "{cap} of the agent");
    }
    let uid = c.ok(&["id", "-u", "steadfast"]);
    assert_eq!(
        field("Uid:").split_whitespace().next(),
        Some(uid.trim()),
        "runs as steadfast"
    );
    assert_eq!(field("NoNewPrivs:"), "1");

    // Reload with a valid file: same process, still active, the log says so.
    c.ok(&["systemctl", "reload", "steadfast"]);
    c.wait_state("active");
    assert_eq!(c.show("MainPID"), pid, "reload must not restart the agent");
    c.wait_journal("reload: configuration valid and unchanged");

    // Reload with a broken file: ExecReload's check refuses it, the agent keeps running.
    c.ok(&["cp", CONFIG, "/root/steadfast.yaml.good"]);
    c.ok(&["sh", "-c", &format!("echo 'bogus_key: 1' >> {CONFIG}")]);
    let o = c.run(&["systemctl", "reload", "steadfast"]);
    assert!(!o.status.success(), "reload of a broken config succeeded");
    c.wait_state("active");
    assert_eq!(c.show("MainPID"), pid);
    assert!(
        c.journal().contains("unknown field `bogus_key`"),
        "{}",
        c.journal()
    );
    c.ok(&["cp", "/root/steadfast.yaml.good", CONFIG]);
    assert!(c.metrics().contains("steadfast_syscall_duration_seconds"));

    // An upgrade (the same package again) restarts the running agent: postinst try-restart.
    c.ok(&["dpkg", "-i", &deb_in]);
    c.wait_state("active");
    let new_pid = c.show("MainPID");
    assert_ne!(new_pid, pid, "the upgrade did not restart the agent");
    assert!(c.metrics().contains("steadfast_syscall_duration_seconds"));

    // A broken config stops a (re)start in ExecStartPre, with the reason in the journal.
    c.ok(&[
        "sh",
        "-c",
        &format!("echo 'bogus_start_key: 1' >> {CONFIG}"),
    ]);
    let o = c.run(&["systemctl", "restart", "steadfast"]);
    assert!(
        !o.status.success(),
        "restart with a broken config succeeded"
    );
    c.wait_journal("unknown field `bogus_start_key`");
    c.ok(&["cp", "/root/steadfast.yaml.good", CONFIG]);
    c.ok(&["systemctl", "reset-failed", "steadfast"]);
    c.ok(&["systemctl", "restart", "steadfast"]);
    c.wait_state("active");

    // The exposure systemd computes for the hardening (docs/operations.md quotes it).
    let security = c.ok(&["systemd-analyze", "security", "--no-pager", "steadfast"]);
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for steadfast.service: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{security}"));
    eprintln!("systemd-analyze security: exposure {exposure}; still counted:");
    for line in security.lines().filter(|l| l.starts_with('✗')) {
        eprintln!(
            "  {}",
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    assert!(exposure <= 1.6, "exposure rose to {exposure}:\n{security}");

    // Stop: STOPPING, probes detached, clean exit; no restarts happened.
    c.ok(&["systemctl", "stop", "steadfast"]);
    assert_eq!(c.show("ActiveState"), "inactive");
    assert_eq!(c.show("Result"), "success");
    assert_eq!(c.show("NRestarts"), "0");
    c.wait_journal("probes detached, exiting");

    // Enabled and running, then purged: the agent is stopped and nothing is left in the
    // container either.
    c.ok(&["systemctl", "enable", "--now", "steadfast"]);
    c.wait_state("active");
    c.ok(&["dpkg", "-P", PKG]);
    let running = c.run(&[
        "sh",
        "-c",
        "grep -lx steadfast /proc/[0-9]*/comm 2>/dev/null; true",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).trim(),
        "",
        "an agent survived the purge"
    );
    let left = c.run(&[
        "sh",
        "-c",
        "ls -d /usr/bin/steadfast /etc/steadfast /var/lib/steadfast /run/steadfast \
         /lib/systemd/system/steadfast.service \
         /etc/systemd/system/multi-user.target.wants/steadfast.service 2>/dev/null; \
         getent passwd steadfast; getent group steadfast; true",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "left after purge"
    );
    eprintln!("container test done in {:?}", started.elapsed());
}

//! Helpers for the root integration tests: run the real agent binary (under a unique name, so
//! its own comm is recognisable), scrape it, build and run C workloads with known behaviour.
#![allow(dead_code)]

pub mod alertmanager;
pub mod http_server;
pub mod otlp_receiver;
pub mod promtool;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The Go build cache for the tests' Go programs: one shared by every test and kept between
/// runs, under cargo's `CARGO_TARGET_TMPDIR`. Go keys its cache by toolchain, build flags and
/// sources, and builds into it concurrently without harm, so a program built from it is the
/// program an empty cache gives; but each toolchain compiles its runtime once per build mode
/// (10 to 16 s on 2 cores), not once per test. `fallback` where that directory cannot be
/// written (a read-only target directory, as in a VM guest).
pub fn go_cache(fallback: &Path) -> PathBuf {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
    if std::fs::create_dir_all(&shared).is_ok() && tempfile::tempfile_in(&shared).is_ok() {
        shared
    } else {
        fallback.to_path_buf()
    }
}

/// Builds `tests/workloads/<src>.go` with Debian's go (and `flags`) into `dir/<name>`, with
/// the shared Go cache ([`go_cache`]).
pub fn build_go(src: &str, dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let source = repo(&format!("tests/workloads/{src}.go"));
    let out = dir.join(name);
    let home = dir.join("gohome");
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .env("HOME", &home)
        .env("GOCACHE", go_cache(&home.join("cache")))
        .env("GOPATH", home.join("path"))
        .env("GOFLAGS", "")
        .env("GO111MODULE", "")
        .status()
        .expect("go (golang-go, installed by scripts/setup --test)");
    assert!(status.success(), "go build failed on {}", source.display());
    out
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test process and call (comm keeps 15 bytes): the prefix, the
/// process id modulo 36^3 and a sequence number, both in base 36, so that a 9-byte prefix still
/// fits at any process id and after hundreds of calls.
pub fn unique_name(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = base36(std::process::id() % 36u32.pow(3));
    let name = format!("{prefix}{pid}x{}", base36(n));
    assert!(name.len() <= 15, "comm would truncate {name}");
    name
}

fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(n % 36, 36).expect("a base-36 digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests load eBPF programs: run them as root");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    /// The agent's comm (its binary was copied under this name).
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `extra` appended to a config that sets the listen address.
    pub fn start(extra: &str) -> Agent {
        Agent::start_with_env(extra, &[])
    }

    /// Like `start`, with extra environment variables (e.g. `NOTIFY_SOCKET`).
    ///
    /// `free_port` can race with other tests (a port it saw free can be taken as an ephemeral
    /// port by any connection before the agent binds it): an agent that exits with "Address
    /// already in use" is started again on another port.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Agent {
        require_root();
        let mut dir = tempfile::tempdir().unwrap();
        let name = unique_name("sfagent");
        let bin = dir.path().join(&name);
        std::fs::copy(env!("CARGO_BIN_EXE_steadfast"), &bin).unwrap();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let config = dir.path().join("steadfast.yaml");
            // Each agent gets its own API socket, signal files and state, unless the test
            // configures `control:` itself.
            let d = dir.path().display();
            let mut control = if extra.contains("\ncontrol:") || extra.starts_with("control:") {
                String::new()
            } else {
                format!(
                    "control:\n  api_socket: {d}/api.sock\n  signals_dir: {d}/signals\n  state_dir: {d}/state\n  state_page: {d}/state.page\n"
                )
            };
            // Nothing of a test agent may land in the host's /etc/steadfast or /var/lib/steadfast.
            if !(extra.contains("\nrules:") || extra.starts_with("rules:")) {
                control.push_str(&format!(
                    "rules:\n  directory: {d}/rules.d\n  state_dir: {d}/state\n"
                ));
            }
            // Test workloads are one-off commands (milliseconds, tens of syscalls) that the
            // default admission would count as `short_lived`: name them at once, as before,
            // unless the test configures `services:` itself (tests/service.rs checks the
            // defaults).
            if !(extra.contains("\nservices:") || extra.starts_with("services:")) {
                control.push_str("services:\n  admit_after_syscalls: 0\n");
            }
            let mut extra = extra.replace("@AGENT_DIR@", &dir.path().display().to_string());
            // A test's own `control:` section keeps its state page in the agent's directory
            // too, unless it names one: never the host's /run/steadfast/state.page.
            if !extra.contains("state_page:") {
                let page = format!("control:\n  state_page: {d}/state.page\n");
                if extra.starts_with("control:\n") {
                    extra = extra.replacen("control:\n", &page, 1);
                } else {
                    extra = extra.replacen("\ncontrol:\n", &format!("\n{page}"), 1);
                }
            }
            std::fs::write(
                &config,
                format!("http:\n  listen_address: 127.0.0.1:{port}\n{control}{extra}"),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args(["run", "--config"])
                .arg(&config)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log);
            let child = spawn_fresh_binary(&mut cmd);
            let mut agent = Agent {
                child,
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
                name: name.clone(),
                dir,
            };
            match agent.wait_ready() {
                Ok(()) => return agent,
                Err(e) if e.contains("Address already in use") && attempts < 5 => {
                    dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("agent exited early ({status}): {}", self.log()));
            }
            // The answer must come from our agent, not from whoever else holds the port.
            if http_get(self.addr, "/-/healthy", None).is_ok()
                && self.child.try_wait().unwrap().is_none()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("agent not ready after 30 s: {}", self.log()))
    }

    /// The agent's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn scrape(&self) -> Scrape {
        Scrape(http_get(self.addr, "/metrics", None).expect("scrape"))
    }

    /// Waits until the agent has completed `n` more collections than when called: whatever the
    /// kernel recorded before the call has then been drained and folded into the series (for
    /// checking that nothing more arrives after the expected counts, without a fixed sleep).
    pub fn await_collections(&self, n: u64) {
        const C: &str = "steadfast_collections_total";
        let start = self.scrape().sum(C, &[]);
        wait_until(
            &format!("{n} more collections"),
            Duration::from_secs(10 + 2 * n),
            || self.scrape().sum(C, &[]) >= start + n as f64,
        );
    }

    /// The config file the agent was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("steadfast.yaml")
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// Spawns a binary this process has just written. Another test thread that forks while the
/// copy's write descriptor is open keeps it open until its exec, and exec then fails with
/// ETXTBSY ("Text file busy"): retry for a while.
pub fn spawn_fresh_binary(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawning {cmd:?}: {e}"),
        }
    }
}

/// While held, `cargo xtask test` keeps the jobs it runs beside the tests (the release build,
/// the lints) stopped, so a test that measures the agent's latency measures the agent and
/// not a compiler on the other core (`xtask/src/suite.rs`). Outside the suite it does nothing.
pub struct Quiet(Option<PathBuf>);

/// Asks for quiet and waits until the suite says its jobs are stopped.
pub fn quiet() -> Quiet {
    let Some(dir) = std::env::var_os("STEADFAST_SUITE_QUIET_DIR").map(PathBuf::from) else {
        return Quiet(None);
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let request = dir.join(format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&request, b"").unwrap();
    wait_until(
        "the suite's background jobs to stop",
        Duration::from_secs(10),
        || dir.join("paused").exists(),
    );
    Quiet(Some(request))
}

impl Drop for Quiet {
    fn drop(&mut self) {
        if let Some(request) = &self.0 {
            let _ = std::fs::remove_file(request);
        }
    }
}

/// Polls `f` every 100 ms until it returns Some, or panics after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll(Duration::from_secs(secs), what, f)
}

/// Polls `ok` every 100 ms until it holds, or panics after `timeout` with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    poll(timeout, what, || ok().then_some(()))
}

fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Minimal HTTP/1.0 GET: returns the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<String> {
    http_get_full(addr, path, accept).map(|(_, body)| body)
}

/// Minimal HTTP/1.0 GET: returns the head (status line and headers) and body of a 200 answer.
pub fn http_get_full(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n{accept}\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("answer: {head}")));
    }
    Ok((head.to_string(), body.to_string()))
}

/// One `/metrics` answer.
pub struct Scrape(pub String);

impl Scrape {
    /// Values of the samples named `name` whose labels include every `labels` pair.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.0.lines().filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
    }

    /// Value of the first sample named `name` whose labels include every `labels` pair.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels).next()
    }

    /// Sum of the samples named `name` whose labels include every `labels` pair.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).sum()
    }

    pub fn has_label_value(&self, label: &str, value: &str) -> bool {
        self.0.contains(&format!("{label}=\"{value}\""))
    }
}

/// Compiles `tests/workloads/<src>.c` with gcc into `dir/<name>`.
pub fn build_workload(src: &str, dir: &Path, name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workloads")
        .join(format!("{src}.c"));
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc (the test suite builds its C workloads with it)");
    assert!(status.success(), "gcc failed on {}", source.display());
    out
}

pub fn run_to_end(bin: &Path, args: &[&str]) {
    let status = Command::new(bin).args(args).status().unwrap();
    assert!(status.success(), "{} failed: {status}", bin.display());
}

/// A workload that talks over stdin/stdout: it prints a line when it reaches a state and
/// waits for a line before moving on.
pub struct Interactive {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Interactive {
    pub fn spawn(bin: &Path, args: &[&str]) -> Interactive {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Interactive { child, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the workload to print `line`.
    pub fn expect(&mut self, line: &str) {
        use std::io::BufRead;
        let mut got = String::new();
        self.out.read_line(&mut got).unwrap();
        assert_eq!(got.trim_end(), line, "workload said {got:?}");
    }

    /// Reads one line the workload printed (without its newline).
    pub fn read_line(&mut self) -> String {
        use std::io::BufRead;
        let mut got = String::new();
        self.out.read_line(&mut got).unwrap();
        got.trim_end().to_string()
    }

    /// Sends one line to the workload.
    pub fn step(&mut self) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
    }

    /// Sends `line` and a newline to the workload.
    pub fn send(&mut self, line: &str) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Closes stdin and waits for a successful exit.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "workload failed: {status}");
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where an HTTP request goes: the loopback listener or a unix socket.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One HTTP/1.0 request; returns the status code and the body, whatever the status.
pub fn request(
    to: &Endpoint,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    fn exchange(
        mut s: impl Read + Write,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        Ok((status, body.to_string()))
    }
    match to {
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect_timeout(addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            exchange(s, method, path, body)
        }
        Endpoint::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            exchange(s, method, path, body)
        }
    }
}

impl Agent {
    /// The agent's API unix socket (as configured by `start`).
    pub fn api_socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// The agent's state page (as configured by `start`, unless the test names one).
    pub fn state_page(&self) -> PathBuf {
        self.dir.path().join("state.page")
    }
}

/// `VmRSS` of a process, in KiB (the kernel's own resident-memory figure).
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// `promtool check metrics` accepts the exposition (Debian's prometheus package).
pub fn promtool_check(s: &Scrape) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup --test installs Debian's prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(s.0.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A BPF map that process `pid` holds open, found by name (as the kernel keeps it: 15 bytes
/// at most) through `/proc/<pid>/fdinfo` (`map_id:`), so a test reads what is in the kernel,
/// not what the agent says, and never another agent's map of the same name.
pub fn kernel_map_of(pid: u32, name: &str) -> Option<aya::maps::Map> {
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().find_map(|id| {
        let data = aya::maps::MapData::from_id(id).ok()?;
        if data.info().ok()?.name_as_str() != Some(name) {
            return None;
        }
        aya::maps::Map::from_map_data(data).ok()
    })
}

/// Loads an nftables table `inet <table>` whose input hook holds `rule`, inside network
/// namespace `ns` (nftables, installed by scripts/setup --test).
pub fn nft_input_rule(ns: &str, table: &str, rule: &str) {
    nft_rule(ns, table, "input", rule);
}

/// Adds `rule` to the chain of hook `hook` (`input`, `output`) of table `inet <table>` in
/// network namespace `ns`, creating both as needed.
pub fn nft_rule(ns: &str, table: &str, hook: &str, rule: &str) {
    use std::io::Write;
    let rules = format!(
        "table inet {table} {{\n chain {hook} {{\n  type filter hook {hook} priority 0;\n  \
         {rule}\n }}\n}}\n"
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (nftables)");
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft rejected {rules}");
}

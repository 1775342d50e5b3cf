//! Container identity (issue 20 item 1) against ground truth: processes in real cgroups laid
//! out as the kubelet and the container runtimes lay them out (systemd and cgroupfs drivers,
//! burstable and besteffort pods, cgroup v2 and v1), with the runtimes' metadata files in their
//! formats, and a real Podman container made from a local tarball. Each workload makes a known
//! number of getppid calls, all with the same comm: each container is its own service, exactly
//! counted, and `steadfast_service_info` gives its names and id. Needs root.

mod support;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use support::{build_workload, require_root, unique_name, vm_rss_kib, wait_for, Agent, Scrape};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The tests of this file run one at a time: each one's agent sees every container on the
/// host, and the churn test's 300 would take the others' names (and theirs its slots).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A container id (64 hex) and a pod UID unique to this test process and call.
fn ids() -> (String, String) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    (
        // The sequence number first: `container-<first 12>` differs between containers.
        format!("{n:04x}{pid:08x}{:052x}", 0xabcdef_u64),
        format!("{pid:08x}-{n:04x}-4000-8000-00000000c0de"),
    )
}

/// Spans of a process in a Kubernetes container carry the OpenTelemetry semantic-convention
/// attributes of its container and pod (`container.id`, `container.name`, `k8s.namespace.name`,
/// `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`), from the runtime's files: ten slow
/// nanosleeps of a process in a kubelet-style cgroup with containerd's metadata become ten
/// spans, each with exactly those values.
#[test]
fn spans_of_a_pods_container_carry_its_semantic_attributes() {
    use support::otlp_receiver::{attr, otlp_config, Attr, Receiver, EXECUTABLE};
    require_root();
    let _serial = serial();
    let v2 = cgroup_root(None).expect("a cgroup2 mount");
    let meta = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let receiver = Receiver::grpc(addr);
    let agent = Agent::start(&otlp_config(
        &format!("http://{addr}"),
        "grpc",
        &format!(
            "services:\n  admit_after_syscalls: 0\n  container_metadata_root: {}\n",
            meta.path().display()
        ),
    ));
    let comm = unique_name("sfks");
    let bin = build_workload("nanosleep_mix", agent.dir.path(), &comm);
    let (id, uid) = ids();
    write(
        meta.path(),
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
        &format!(
            r#"{{"ociVersion":"1.1.0","process":{{"args":["/srv"]}},"annotations":{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"server","io.kubernetes.cri.sandbox-name":"checkout-7d9f8b6c5d-x2x4z","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{uid}","io.kubernetes.cri.image-name":"registry.example/srv:1"}}}}"#
        ),
    );
    let u = uid.replace('-', "_");
    let cg = Cgroup::make(
        &v2,
        &format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{id}.scope"),
    );
    let mut cmd = Command::new(&bin);
    cmd.args(["0", "10", "20"]);
    cg.move_at_exec(&mut cmd);
    let status = cmd.status().unwrap();
    assert!(status.success());
    let spans = wait_for(15, "ten spans", || {
        let spans = receiver.spans_with(EXECUTABLE, &comm);
        (spans.len() >= 10).then_some(spans)
    });
    assert_eq!(spans.len(), 10, "{}", agent.log());
    let text =
        |s: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| match attr(&s.attributes, key)
        {
            Some(Attr::Str(v)) => v,
            other => panic!("{key}: {other:?} in {:?}", s.attributes),
        };
    for s in &spans {
        assert_eq!(text(s, "container.id"), id);
        assert_eq!(text(s, "container.name"), "server");
        assert_eq!(text(s, "k8s.container.name"), "server");
        assert_eq!(text(s, "k8s.namespace.name"), "shop");
        assert_eq!(text(s, "k8s.pod.name"), "checkout-7d9f8b6c5d-x2x4z");
        assert_eq!(text(s, "k8s.pod.uid"), uid);
        assert_eq!(text(s, "steadfast.service"), "shop/checkout");
    }
}

/// Where a cgroup hierarchy is mounted: the v2 one (`None`) or the v1 one with `controller`.
fn cgroup_root(controller: Option<&str>) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        let fs = post.next()?;
        let options = post.nth(1)?;
        let ok = match controller {
            None => fs == "cgroup2",
            Some(c) => fs == "cgroup" && options.split(',').any(|o| o == c),
        };
        ok.then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
    })
}

/// Cgroup directories made for the test, removed (innermost first) at drop.
struct Cgroup {
    made: Vec<PathBuf>,
    leaf: PathBuf,
}

impl Cgroup {
    fn make(root: &Path, rel: &str) -> Cgroup {
        let mut made = Vec::new();
        let mut dir = root.to_path_buf();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                made.push(dir.clone());
            }
        }
        Cgroup { made, leaf: dir }
    }
}

impl Cgroup {
    /// Makes `cmd`'s child move itself into this cgroup between fork and exec, so everything
    /// the program does is the container's.
    fn move_at_exec(&self, cmd: &mut Command) {
        let procs = std::ffi::CString::new(
            self.leaf
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) on
        // memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A workload that says "ready", waits for a line, makes its getppid calls and exits.
struct Workload {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Workload {
    /// Starts `cmd`, moved into `cgroup` (when given) at its exec; returns once it said
    /// "ready".
    fn start(mut cmd: Command, cgroup: Option<&Cgroup>) -> Workload {
        if let Some(cg) = cgroup {
            cg.move_at_exec(&mut cmd);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "workload said {line:?}");
        Workload { child, out }
    }

    /// Lets it make its calls and waits for its successful exit.
    fn go(mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "workload failed: {status} {rest}");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn getppid_count(s: &Scrape, service: &str) -> f64 {
    s.value(
        "steadfast_syscall_duration_seconds_count",
        &[("syscall", "getppid"), ("service", service)],
    )
    .unwrap_or(0.0)
}

/// The `steadfast_service_info` line of a container.
fn info_line(s: &Scrape, id: &str) -> Option<String> {
    s.0.lines()
        .find(|l| {
            l.starts_with("steadfast_service_info{")
                && l.contains(&format!("container_id=\"{id}\""))
        })
        .map(str::to_string)
}

/// What one container should look like in the agent's series.
struct Expected {
    id: String,
    service: String,
    labels: Vec<(&'static str, String)>,
    calls: u64,
}

/// Waits until the agent has named the container's process (its info row is there; it waits
/// for its line, after its exec), lets the workload work, then checks the row and that the
/// service's count grew by exactly the workload's calls. Returns the calls counted before (the
/// container runtime's own, in the container's process before its exec), at most `before`.
fn check(agent: &Agent, w: Workload, e: &Expected, before: u64) -> u64 {
    let line = wait_for(10, &format!("a service_info row for {}", e.id), || {
        info_line(&agent.scrape(), &e.id)
    });
    for (k, v) in std::iter::once(&("service", e.service.clone())).chain(&e.labels) {
        assert!(
            line.contains(&format!("{k}=\"{v}\"")),
            "{k}={v:?} not in {line}"
        );
    }
    assert!(line.ends_with(" 1"), "{line}");
    let base = getppid_count(&agent.scrape(), &e.service) as u64;
    assert!(base <= before, "{base} getppid calls before the workload's");
    w.go();
    let want = base + e.calls;
    let s = wait_for(
        10,
        &format!("{want} getppid calls of {}", e.service),
        || {
            let s = agent.scrape();
            (getppid_count(&s, &e.service) >= want as f64).then_some(s)
        },
    );
    assert_eq!(
        getppid_count(&s, &e.service),
        want as f64,
        "exactly the workload's calls under {}",
        e.service
    );
    base
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Five "containers" running the same program (same comm), in the cgroups the kubelet makes:
/// systemd driver (burstable and besteffort pods, containerd's `cri-containerd-<id>.scope`),
/// cgroupfs driver on cgroup v2 (CRI-O's files) and on cgroup v1 (no runtime files: named by
/// id), and a second container of the first pod that a `targets` entry names (by namespace,
/// workload and container). Each is its own service, with its exact getppid count; none is
/// named by the comm.
#[test]
fn kubelet_cgroups_give_each_container_its_service() {
    require_root();
    let _serial = serial();
    let v2 = cgroup_root(None).expect("a cgroup2 mount");
    let meta = tempfile::tempdir().unwrap();
    // A target for one container of the first pod: it wins over the container's own name.
    let agent = Agent::start(&format!(
        "services:\n  admit_after_syscalls: 0\n  container_metadata_root: {}\ntargets:\n  - service: checkout-proxy\n    namespace: shop\n    pod: checkout\n    container: proxy\n",
        meta.path().display()
    ));
    let comm = unique_name("srv");
    let bin = build_workload("getppid_on_go", agent.dir.path(), &comm);
    let containerd = |id: &str, uid: &str, ns: &str, pod: &str, container: &str| {
        write(
            meta.path(),
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            &format!(
                r#"{{"ociVersion":"1.1.0","process":{{"args":["/srv"]}},"annotations":{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"{container}","io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.sandbox-namespace":"{ns}","io.kubernetes.cri.sandbox-uid":"{uid}","io.kubernetes.cri.image-name":"registry.example/srv:1"}}}}"#
            ),
        );
    };
    let mut cases = Vec::new();

    // Systemd driver, burstable pod, containerd CRI.
    let (id, uid) = ids();
    containerd(&id, &uid, "shop", "checkout-7d9f8b6c5d-x2x4z", "server");
    let u = uid.replace('-', "_");
    cases.push((
        Cgroup::make(
            &v2,
            &format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{id}.scope"),
        ),
        Expected {
            service: "shop/checkout".into(),
            labels: vec![
                ("namespace", "shop".into()),
                ("pod", "checkout-7d9f8b6c5d-x2x4z".into()),
                ("container", "server".into()),
            ],
            id,
            calls: 1100,
        },
    ));
    // Its second container, named by the target.
    let (id, _) = ids();
    containerd(&id, &uid, "shop", "checkout-7d9f8b6c5d-x2x4z", "proxy");
    cases.push((
        Cgroup::make(
            &v2,
            &format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{id}.scope"),
        ),
        Expected {
            service: "checkout-proxy".into(),
            labels: vec![
                ("namespace", "shop".into()),
                ("pod", "checkout-7d9f8b6c5d-x2x4z".into()),
                ("container", "proxy".into()),
            ],
            id,
            calls: 1500,
        },
    ));
    // Systemd driver, besteffort pod of another Deployment, same container name and comm.
    let (id, uid) = ids();
    containerd(&id, &uid, "pay", "ledger-5c8d7f9b6-q2w9k", "server");
    let u = uid.replace('-', "_");
    cases.push((
        Cgroup::make(
            &v2,
            &format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{id}.scope"),
        ),
        Expected {
            service: "pay/ledger".into(),
            labels: vec![
                ("namespace", "pay".into()),
                ("pod", "ledger-5c8d7f9b6-q2w9k".into()),
                ("container", "server".into()),
            ],
            id,
            calls: 1200,
        },
    ));
    // Cgroupfs driver on cgroup v2, a StatefulSet pod, CRI-O's files.
    let (id, uid) = ids();
    write(
        meta.path(),
        &format!("run/containers/storage/overlay-containers/{id}/userdata/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.pod.name":"db-0","io.kubernetes.pod.namespace":"data","io.kubernetes.container.name":"postgres","io.kubernetes.pod.uid":"{uid}"}}}}"#
        ),
    );
    cases.push((
        Cgroup::make(&v2, &format!("kubepods/besteffort/pod{uid}/{id}")),
        Expected {
            service: "data/db".into(),
            labels: vec![
                ("namespace", "data".into()),
                ("pod", "db-0".into()),
                ("container", "postgres".into()),
            ],
            id,
            calls: 1300,
        },
    ));
    // Cgroupfs driver on cgroup v1 (the pids hierarchy; v2 where there is no v1), burstable
    // pod, no runtime files: named by its id.
    let (id, uid) = ids();
    let v1 = cgroup_root(Some("pids")).unwrap_or_else(|| v2.clone());
    cases.push((
        Cgroup::make(&v1, &format!("kubepods/burstable/pod{uid}/{id}")),
        Expected {
            service: format!("container-{}", &id[..12]),
            labels: vec![
                ("namespace", String::new()),
                ("pod", String::new()),
                ("container", String::new()),
            ],
            id,
            calls: 1400,
        },
    ));

    for (cgroup, expected) in &cases {
        let mut cmd = Command::new(&bin);
        cmd.arg(expected.calls.to_string());
        let w = Workload::start(cmd, Some(cgroup));
        check(&agent, w, expected, 0);
    }
    let s = agent.scrape();
    for (_, e) in &cases {
        assert_eq!(
            getppid_count(&s, &e.service),
            e.calls as f64,
            "{}",
            e.service
        );
    }
    assert_eq!(
        getppid_count(&s, &comm),
        0.0,
        "a container's process never takes its comm as service"
    );
    assert!(!s.has_label_value("service", &comm), "{comm} has series");
    assert_eq!(
        s.value("steadfast_container_lookup_errors_total", &[]),
        Some(0.0)
    );
    assert!(s.value("steadfast_container_lookups_total", &[]).unwrap() >= 5.0);
    // Innermost cgroups first: the later cases' directories sit in the earlier ones'.
    while cases.pop().is_some() {}
}

/// A container's short-lived processes (one-off commands, as `kubectl exec` or a job's steps
/// run them) take the container's service too, also those gone before the agent read their
/// exec event (named from the cgroup id the event carries, which a live process of the
/// container taught the agent): 20 one-offs of 300 getppid calls each and a long-lived process
/// of 700, all counted under the container's service, none under their comm.
#[test]
fn short_lived_processes_of_a_container_take_its_service() {
    require_root();
    let _serial = serial();
    const RUNS: u64 = 20;
    const EACH: u64 = 300;
    let v2 = cgroup_root(None).expect("a cgroup2 mount");
    let meta = tempfile::tempdir().unwrap();
    // The agent reads events at its 1 s tick only (not woken per event), so the one-offs
    // (milliseconds) are gone when their exec events are read.
    let agent = Agent::start(&format!(
        "services:\n  admit_after_syscalls: 0\n  container_metadata_root: {}\nprobes:\n  wakeup_min_bytes: 65536\n",
        meta.path().display()
    ));
    let (id, uid) = ids();
    write(
        meta.path(),
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-name":"report","io.kubernetes.cri.sandbox-name":"report-28912345-b2c4d","io.kubernetes.cri.sandbox-namespace":"jobs","io.kubernetes.cri.sandbox-uid":"{uid}"}}}}"#
        ),
    );
    let u = uid.replace('-', "_");
    let cgroup = Cgroup::make(
        &v2,
        &format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{id}.scope"),
    );
    let main = build_workload("getppid_on_go", agent.dir.path(), &unique_name("sfmain"));
    let one_off = unique_name("sfone");
    let one_off_bin = build_workload("getppid_loop", agent.dir.path(), &one_off);
    let mut cmd = Command::new(&main);
    cmd.arg("700");
    let w = Workload::start(cmd, Some(&cgroup));
    let service = "jobs/report";
    wait_for(10, "the container's info row", || {
        info_line(&agent.scrape(), &id).filter(|l| l.contains(&format!("service=\"{service}\"")))
    });
    for _ in 0..RUNS {
        let mut cmd = Command::new(&one_off_bin);
        cmd.arg(EACH.to_string());
        cgroup.move_at_exec(&mut cmd);
        let status = cmd.status().unwrap();
        assert!(status.success(), "{status}");
    }
    w.go();
    // A container that only ever runs one-offs: no live process teaches the agent its cgroup,
    // which is found from the id the events carry.
    let (only, uid) = ids();
    write(
        meta.path(),
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{only}/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-name":"sweep","io.kubernetes.cri.sandbox-name":"cleanup-28912346-x2x4z","io.kubernetes.cri.sandbox-namespace":"jobs","io.kubernetes.cri.sandbox-uid":"{uid}"}}}}"#
        ),
    );
    let u = uid.replace('-', "_");
    let only_cgroup = Cgroup::make(
        &v2,
        &format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{only}.scope"),
    );
    for _ in 0..10 {
        let mut cmd = Command::new(&one_off_bin);
        cmd.arg("400");
        only_cgroup.move_at_exec(&mut cmd);
        let status = cmd.status().unwrap();
        assert!(status.success(), "{status}");
    }
    let want = (RUNS * EACH + 700) as f64;
    let s = wait_for(10, "every call counted", || {
        let s = agent.scrape();
        (getppid_count(&s, service) >= want && getppid_count(&s, "jobs/cleanup") >= 4000.0)
            .then_some(s)
    });
    assert_eq!(getppid_count(&s, service), want);
    assert_eq!(getppid_count(&s, "jobs/cleanup"), 4000.0);
    assert!(
        !s.has_label_value("service", &one_off),
        "a one-off named by its comm"
    );
    assert_eq!(
        getppid_count(&s, "short_lived") + getppid_count(&s, "unknown"),
        0.0
    );
    // Innermost first.
    drop(only_cgroup);
    drop(cgroup);
}

/// A root filesystem holding only the workload, built static, as `/<name>`.
fn static_rootfs(dir: &Path, name: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/getppid_on_go.c");
    let status = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(rootfs.join(name))
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "gcc -static (libc6-dev has libc.a)");
    rootfs
}

/// Every mounted cgroup hierarchy (v1 and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            matches!(post.split_whitespace().next()?, "cgroup" | "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .collect()
}

/// A containerd daemon of the test's own (Debian's containerd, its CRI plugin off), its
/// state under `dir/run/containerd` as on a host, so the agent reads it with
/// `container_metadata_root: dir`. Stopped at drop; the cgroups it made are removed.
struct Containerd {
    child: std::process::Child,
    socket: PathBuf,
    /// The program in the rootfs.
    program: String,
    /// Cgroup paths (relative) to remove at drop, innermost first.
    cgroups: Vec<String>,
}

impl Containerd {
    fn start(dir: &Path, program: &str) -> Containerd {
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let socket = dir.join("containerd.sock");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--address")
            .arg(&socket)
            .arg("--root")
            .arg(dir.join("var/lib/containerd"))
            .arg("--state")
            .arg(dir.join("run/containerd"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd (scripts/setup --test installs Debian's)");
        let d = Containerd {
            child,
            socket,
            program: program.to_string(),
            cgroups: Vec::new(),
        };
        wait_for(20, "containerd's socket", || {
            d.socket.exists().then_some(())
        });
        d
    }

    /// `ctr run` of the static rootfs as container `id`, with OCI annotations and a cgroup
    /// path when given (else containerd's own, `/<namespace>/<id>`).
    fn run(
        &mut self,
        rootfs: &Path,
        id: &str,
        notes: &[(&str, &str)],
        cgroup: Option<&str>,
        calls: u64,
    ) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["run", "--rm", "--rootfs"]);
        for (k, v) in notes {
            cmd.args(["--annotation", &format!("{k}={v}")]);
        }
        match cgroup {
            Some(path) => {
                cmd.args(["--cgroup", path]);
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                for n in (1..=parts.len()).rev() {
                    self.cgroups.push(parts[..n].join("/"));
                }
            }
            None => self
                .cgroups
                .extend([format!("default/{id}"), "default".into()]),
        }
        cmd.arg(rootfs)
            .args([id, &format!("/{}", self.program), &calls.to_string()]);
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for root in cgroup_mounts() {
            for rel in &self.cgroups {
                let _ = std::fs::remove_dir(root.join(rel));
            }
        }
    }
}

/// A real containerd (Debian's, run by the test with `ctr run` of a local rootfs: no image, no
/// registry) runs two containers of the same program: one in containerd's own cgroup
/// (`/default/<id>`) without names, named `container-<id>`; one placed as the kubelet's
/// cgroupfs driver places a pod's container (`/kubepods/besteffort/pod<uid>/<id>`) with the
/// annotations containerd's CRI plugin writes into the bundle, named `<namespace>/<workload>`
/// from the real bundle's `config.json`. Exact getppid counts for each. The CRI plugin itself
/// is not run (it needs a kubelet, or crictl, and a pause image from a registry).
#[test]
fn containerd_containers_are_named_from_their_bundles() {
    require_root();
    let _serial = serial();
    assert!(
        have("ctr"),
        "containerd is not installed (scripts/setup --test installs Debian's)"
    );
    let dir = tempfile::tempdir().unwrap();
    let program = unique_name("sfctd");
    let rootfs = static_rootfs(dir.path(), &program);
    let mut containerd = Containerd::start(dir.path(), &program);
    let agent = Agent::start(&format!(
        "services:\n  admit_after_syscalls: 0\n  container_metadata_root: {}\n",
        dir.path().display()
    ));

    let (plain, _) = ids();
    let cmd = containerd.run(&rootfs, &plain, &[], None, 1700);
    let w = Workload::start(cmd, None);
    let runtime_calls = check(
        &agent,
        w,
        &Expected {
            service: format!("container-{}", &plain[..12]),
            labels: vec![("container", String::new()), ("pod", String::new())],
            id: plain.clone(),
            calls: 1700,
        },
        5,
    );
    eprintln!("getppid calls of runc in the container before exec: {runtime_calls}");

    let (id, uid) = ids();
    let notes = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", "indexer"),
        (
            "io.kubernetes.cri.sandbox-name",
            "search-indexer-6f7c9d8b5-m4n7p",
        ),
        ("io.kubernetes.cri.sandbox-namespace", "search"),
        ("io.kubernetes.cri.sandbox-uid", uid.as_str()),
    ];
    let cgroup = format!("/kubepods/besteffort/pod{uid}/{id}");
    let cmd = containerd.run(&rootfs, &id, &notes, Some(&cgroup), 1800);
    let w = Workload::start(cmd, None);
    check(
        &agent,
        w,
        &Expected {
            service: "search/search-indexer".into(),
            labels: vec![
                ("namespace", "search".into()),
                ("pod", "search-indexer-6f7c9d8b5-m4n7p".into()),
                ("container", "indexer".into()),
            ],
            id: id.clone(),
            calls: 1800,
        },
        5,
    );
    let s = agent.scrape();
    assert!(!s.has_label_value("service", &program), "named by comm");
    assert_eq!(
        s.value("steadfast_container_lookup_errors_total", &[]),
        Some(0.0)
    );
}

/// Whether `program` runs (is on PATH).
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A real Podman container (Debian's podman, an image imported from a local tarball holding
/// only the static workload, no registry): its process is counted exactly under the container's
/// name, and `steadfast_service_info` carries the name and the id Podman gave it.
#[test]
fn podman_container_is_named_and_counted() {
    require_root();
    let _serial = serial();
    assert!(
        have("podman"),
        "podman is not installed (scripts/setup --test installs Debian's)"
    );
    const CALLS: u64 = 2500;
    let agent = Agent::start("services:\n  admit_after_syscalls: 0\n");
    let work = tempfile::tempdir().unwrap();
    let program = unique_name("sfpdw");
    let rootfs = static_rootfs(work.path(), &program);
    let tarball = work.path().join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let name = unique_name("sfpod");
    let image = format!("localhost/steadfast-test-{name}:1");
    let out = Command::new("podman")
        .args(["import", "--quiet"])
        .arg(&tarball)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _cleanup = Podman {
        name: name.clone(),
        image: image.clone(),
    };

    let cidfile = work.path().join("cid");
    let mut cmd = Command::new("podman");
    // runc: crun refuses this kind of host (cgroup v1 hierarchies with a controller left on the
    // v2 one: "cgroups in hybrid mode not supported"). The ulimits: podman raises
    // RLIMIT_NOFILE/NPROC by default, which a sandboxed host may not allow.
    if have("runc") {
        cmd.args(["--runtime", "runc"]);
    }
    cmd.args([
        "run",
        "-i",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--name",
        &name,
        "--cidfile",
    ])
    .arg(&cidfile)
    .args([&image, &format!("/{program}"), &CALLS.to_string()]);
    cmd.stderr(Stdio::inherit());
    let w = Workload::start(cmd, None);
    let id = std::fs::read_to_string(&cidfile)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    // runc's init makes two getppid calls in the container's process before its exec (it
    // checks its parent): counted under the container too, before the workload's.
    let runtime_calls = check(
        &agent,
        w,
        &Expected {
            service: name.clone(),
            labels: vec![
                ("container", name.clone()),
                ("namespace", String::new()),
                ("pod", String::new()),
            ],
            id: id.clone(),
            calls: CALLS,
        },
        5,
    );
    eprintln!("getppid calls of the runtime in the container before exec: {runtime_calls}");
    let s = agent.scrape();
    let by_comm: Vec<_> =
        s.0.lines()
            .filter(|l| l.contains(&format!("service=\"{program}\"")))
            .collect();
    assert!(
        by_comm.is_empty(),
        "named by comm: {by_comm:#?}\n{}",
        agent.log()
    );
}

/// Removes the test's container and image.
struct Podman {
    name: String,
    image: String,
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("podman").args(["rmi", &self.image]).output();
    }
}

/// The value of label `key` in one exposition line.
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let labels = &line[line.find('{')? + 1..line.rfind('}')?];
    labels.split("\",").find_map(|kv| {
        let (k, v) = kv.split_once("=\"")?;
        (k == key).then(|| v.trim_end_matches('"'))
    })
}

/// One container of the churn test: a kubelet pod cgroup with its runtime's metadata file and
/// one process that makes `calls` getppid calls when told to.
struct Churned {
    id: String,
    service: String,
    calls: u64,
    /// Its own service (else `other`), from its `steadfast_service_info` row.
    admitted: bool,
    /// Where its runtime's metadata file is (removed when it stops, as the runtime does).
    spec: PathBuf,
    workload: Option<Workload>,
    cgroup: Option<Cgroup>,
}

impl Churned {
    /// Makes the calls, waits for the process's exit, then removes the container's cgroups and
    /// files (as the runtime and the kubelet do).
    fn stop(&mut self) {
        self.workload.take().expect("running").go();
        drop(self.cgroup.take());
        let _ = std::fs::remove_dir_all(self.spec.parent().unwrap());
    }
}

impl Drop for Churned {
    fn drop(&mut self) {
        // The process first (killed and reaped), then its cgroups.
        drop(self.workload.take());
        drop(self.cgroup.take());
    }
}

/// What one scrape of the churn test says about the test's containers (namespace `churn`).
struct ChurnView {
    scrape: Scrape,
    /// Distinct `service` values of the test's containers on any series.
    services: HashSet<String>,
    /// `steadfast_service_info` rows of the test's containers: container id -> service.
    rows: HashMap<String, String>,
    /// getppid calls by service.
    getppid: HashMap<String, f64>,
}

impl ChurnView {
    fn of(scrape: Scrape) -> ChurnView {
        let mut services = HashSet::new();
        let mut rows = HashMap::new();
        let mut getppid = HashMap::new();
        for line in scrape.0.lines().filter(|l| !l.starts_with('#')) {
            let Some(service) = label(line, "service") else {
                continue;
            };
            if service.starts_with("churn/") {
                services.insert(service.to_string());
            }
            if line.starts_with("steadfast_service_info{")
                && label(line, "namespace") == Some("churn")
            {
                let id = label(line, "container_id").unwrap();
                rows.insert(id.to_string(), service.to_string());
            }
            if line.starts_with("steadfast_syscall_duration_seconds_count{")
                && label(line, "syscall") == Some("getppid")
            {
                let v: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
                getppid.insert(service.to_string(), v);
            }
        }
        ChurnView {
            scrape,
            services,
            rows,
            getppid,
        }
    }

    fn calls(&self, service: &str) -> f64 {
        self.getppid.get(service).copied().unwrap_or(0.0)
    }
}

/// Issue 20's container churn: 300 containers in kubelet pod cgroups (systemd driver with
/// containerd's files, cgroupfs driver with CRI-O's), each one process with its own known
/// number of getppid calls and its own pod (so its own `<namespace>/<workload>` service),
/// started and stopped in 5 waves of 60 with `services.max_services: 40`. Most live about a
/// second (stopped at the end of their wave); 8 of each wave (4 with a name, 4 without) live
/// on through the next wave, holding their names. Against ground truth, at every scrape: the
/// test's `service` values and named `steadfast_service_info` rows never exceed the cap, and
/// there is a row for no more containers than have a process. Each wave names exactly the
/// slots free (40 minus the 4 still held), the rest are `other` with their rows saying so;
/// every named container's count is exact, the `other` ones' calls are all under `other`, and
/// each process past the cap is counted in `steadfast_services_overflow_total`. After the last
/// stop and the idle time (3 s): no series nor row of any of them, `steadfast_containers_known`
/// back to 0 (the identity cache forgets stopped containers), each container read from its
/// files exactly once, no cgroup the test made left on the host, and the agent's RSS within
/// the README's figure.
#[test]
fn container_churn_keeps_names_bounded_and_leaves_nothing_behind() {
    require_root();
    let _serial = serial();
    const WAVES: usize = 5;
    const PER_WAVE: usize = 60;
    const CAP: usize = 40;
    const CARRY: usize = 4;
    const IDLE_SECS: u64 = 3;
    /// The README's figure for the agent's RSS after container churn (Containers and
    /// Kubernetes).
    const RSS_BOUND_KIB: u64 = 64 << 10;
    let started = std::time::Instant::now();
    let v2 = cgroup_root(None).expect("a cgroup2 mount");
    let meta = tempfile::tempdir().unwrap();
    // Comm-derived names are admitted only for old processes, so that the host's own commands
    // rarely take `other` too (they have a cap of their own).
    let agent = Agent::start(&format!(
        "services:\n  max_services: {CAP}\n  idle_release_seconds: {IDLE_SECS}\n  admit_after_syscalls: 1000000\n  admit_after_seconds: 3600\n  container_metadata_root: {}\n",
        meta.path().display()
    ));
    let bin = build_workload("getppid_on_go", agent.dir.path(), &unique_name("sfchurn"));
    // The kubelet's QoS parents (made here if the host has none), kept for the whole test.
    let systemd_qos = Cgroup::make(&v2, "kubepods.slice/kubepods-burstable.slice");
    let cgroupfs_qos = Cgroup::make(&v2, "kubepods/burstable");
    let mut made: Vec<PathBuf> = systemd_qos
        .made
        .iter()
        .chain(&cgroupfs_qos.made)
        .cloned()
        .collect();

    agent.await_collections(2);
    let first = agent.scrape();
    let counter = |s: &Scrape, name: &str| s.value(name, &[]).unwrap_or(0.0);
    let (overflow0, lookups0, other0) = (
        counter(&first, "steadfast_services_overflow_total"),
        counter(&first, "steadfast_container_lookups_total"),
        getppid_count(&first, "other"),
    );
    let rss0 = vm_rss_kib(agent.pid());
    let mut rss_max = rss0;
    let mut known_max = 0.0_f64;
    // Every scrape checks the bounds; `alive` is how many of the test's containers may have a
    // process the agent still knows.
    let mut observe = |alive: usize| {
        let v = ChurnView::of(agent.scrape());
        assert!(
            v.services.len() <= CAP,
            "{} service values of containers, cap {CAP}",
            v.services.len()
        );
        let named = v.rows.values().filter(|s| *s != "other").count();
        assert!(named <= CAP, "{named} named service_info rows, cap {CAP}");
        assert!(
            v.rows.len() <= alive,
            "{} rows for {alive} containers",
            v.rows.len()
        );
        assert_eq!(
            v.scrape.value("steadfast_service_info_dropped", &[]),
            Some(0.0)
        );
        known_max = known_max.max(v.scrape.value("steadfast_containers_known", &[]).unwrap());
        rss_max = rss_max.max(vm_rss_kib(agent.pid()));
        v
    };

    let mut n = 0;
    let mut carried: Vec<Churned> = Vec::new();
    let (mut overflowed, mut other_calls) = (0usize, 0u64);
    for wave in 0..WAVES {
        let held = carried.iter().filter(|c| c.admitted).count();
        let mut batch: Vec<Churned> = (0..PER_WAVE)
            .map(|_| {
                let (id, uid) = ids();
                let pod = format!("w{n:03}-7d9f8b6c5d-x2x4z");
                let calls = 300 + n as u64;
                // Odd ones: kubelet cgroupfs driver and CRI-O's files; even: systemd driver and
                // containerd's.
                let (rel, spec, notes) = if n % 2 == 1 {
                    (
                        format!("kubepods/burstable/pod{uid}/{id}"),
                        format!("run/containers/storage/overlay-containers/{id}/userdata/config.json"),
                        format!(r#"{{"annotations":{{"io.kubernetes.pod.name":"{pod}","io.kubernetes.pod.namespace":"churn","io.kubernetes.container.name":"app","io.kubernetes.pod.uid":"{uid}"}}}}"#),
                    )
                } else {
                    let u = uid.replace('-', "_");
                    (
                        format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{id}.scope"),
                        format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
                        format!(r#"{{"annotations":{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.sandbox-namespace":"churn","io.kubernetes.cri.sandbox-uid":"{uid}"}}}}"#),
                    )
                };
                write(meta.path(), &spec, &notes);
                let cgroup = Cgroup::make(&v2, &rel);
                made.extend(cgroup.made.iter().cloned());
                let mut cmd = Command::new(&bin);
                cmd.arg(calls.to_string());
                let workload = Workload::start(cmd, Some(&cgroup));
                n += 1;
                Churned {
                    service: format!("churn/w{:03}", n - 1),
                    id,
                    calls,
                    admitted: false,
                    spec: meta.path().join(spec),
                    workload: Some(workload),
                    cgroup: Some(cgroup),
                }
            })
            .collect();

        // Every container of the wave has its row: its own service, or `other`.
        let alive = PER_WAVE + carried.len();
        let v = wait_for(20, &format!("wave {wave}'s {PER_WAVE} rows"), || {
            let v = observe(alive);
            batch
                .iter()
                .all(|c| v.rows.contains_key(&c.id))
                .then_some(v)
        });
        for c in &mut batch {
            let service = &v.rows[&c.id];
            c.admitted = *service != "other";
            assert!(
                !c.admitted || *service == c.service,
                "{} named {service}, not {}",
                c.id,
                c.service
            );
        }
        let admitted = batch.iter().filter(|c| c.admitted).count();
        assert_eq!(
            admitted,
            CAP - held,
            "wave {wave}: the free slots ({CAP} minus {held} held) are named"
        );
        for c in batch.iter().filter(|c| !c.admitted) {
            overflowed += 1;
            other_calls += c.calls;
            assert!(!v.services.contains(&c.service), "{} has series", c.service);
        }

        // The wave's first named and first unnamed ones live on; the rest, and the previous
        // wave's survivors, stop.
        let mut keep = Vec::new();
        let (mut named, mut unnamed) = (0, 0);
        let mut stopping = std::mem::take(&mut carried);
        for c in batch {
            let slot = if c.admitted { &mut named } else { &mut unnamed };
            if *slot < CARRY {
                *slot += 1;
                keep.push(c);
            } else {
                stopping.push(c);
            }
        }
        for c in &mut stopping {
            c.stop();
        }
        // Exact counts of the named ones (seen before their names go after the idle time:
        // counters only grow, so the first reading that reaches the count is the count).
        let mut seen: HashMap<String, f64> = HashMap::new();
        wait_for(20, &format!("wave {wave}'s counts"), || {
            let v = observe(alive);
            for c in stopping.iter().filter(|c| c.admitted) {
                let got = v.calls(&c.service);
                if got >= c.calls as f64 {
                    seen.entry(c.service.clone()).or_insert(got);
                }
            }
            (seen.len() == stopping.iter().filter(|c| c.admitted).count()).then_some(())
        });
        for c in stopping.iter().filter(|c| c.admitted) {
            assert_eq!(seen[&c.service], c.calls as f64, "{}", c.service);
        }
        // The stopped ones' names are released after the idle time and their rows go: what
        // is left is the survivors'.
        let kept_ids: HashSet<&str> = keep.iter().map(|c| c.id.as_str()).collect();
        let kept_names: HashSet<String> = keep
            .iter()
            .filter(|c| c.admitted)
            .map(|c| c.service.clone())
            .collect();
        wait_for(
            IDLE_SECS + 10,
            &format!("wave {wave}'s stopped containers gone"),
            || {
                let v = observe(alive);
                (v.services == kept_names
                    && v.rows.keys().map(String::as_str).collect::<HashSet<_>>() == kept_ids)
                    .then_some(())
            },
        );
        drop(stopping);
        carried = keep;
    }

    // The last survivors stop.
    for c in &mut carried {
        c.stop();
    }
    let last: Vec<&Churned> = carried.iter().filter(|c| c.admitted).collect();
    let v = wait_for(20, "the last counts", || {
        let v = observe(CARRY * 2);
        last.iter()
            .all(|c| v.calls(&c.service) >= c.calls as f64)
            .then_some(v)
    });
    for c in &last {
        assert_eq!(v.calls(&c.service), c.calls as f64, "{}", c.service);
    }
    for c in carried.iter().filter(|c| !c.admitted) {
        assert!(v.rows.get(&c.id).is_none_or(|s| s == "other"));
    }
    // Nothing left behind: no series, no row, no identity held, once the idle time passed.
    let v = wait_for(IDLE_SECS + 10, "every container forgotten", || {
        let v = observe(CARRY * 2);
        (v.services.is_empty()
            && v.rows.is_empty()
            && v.scrape.value("steadfast_containers_known", &[]) == Some(0.0))
        .then_some(v)
    });
    let s = &v.scrape;
    let total = WAVES * PER_WAVE;
    assert_eq!(
        counter(s, "steadfast_container_lookups_total") - lookups0,
        total as f64,
        "each container read from its files once"
    );
    assert_eq!(
        s.value("steadfast_container_lookup_errors_total", &[]),
        Some(0.0)
    );
    assert!(
        known_max >= (PER_WAVE + CARRY * 2) as f64,
        "steadfast_containers_known peaked at {known_max}"
    );
    // Every process past the cap is counted (at most twice: a process seen before its exec
    // event is named at first sight and again at its exec), and, unless the host's own
    // commands overflowed their cap too, all the unnamed containers' calls are `other`'s.
    let overflow = counter(s, "steadfast_services_overflow_total") - overflow0;
    assert!(
        overflow >= overflowed as f64 && overflow <= 2.0 * overflowed as f64,
        "overflow counted {overflow} for {overflowed} processes past the cap"
    );
    let other = getppid_count(s, "other") - other0;
    let comm_overflow = agent.log().contains("comm-derived names are in use");
    if !comm_overflow {
        assert_eq!(other, other_calls as f64, "the unnamed containers' calls");
    } else {
        assert!(other >= other_calls as f64, "{other} calls under other");
    }
    drop(carried);
    drop(cgroupfs_qos);
    drop(systemd_qos);
    let left: Vec<_> = made.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "cgroups left on the host: {left:#?}");
    let rss = vm_rss_kib(agent.pid());
    eprintln!(
        "churn of {total} containers in {:?}: {overflowed} past the cap, overflow counter +{overflow}; \
         containers known at most {known_max}; agent RSS {rss0} KiB at start, {rss_max} KiB at \
         most, {rss} KiB after",
        started.elapsed()
    );
    assert!(
        rss_max <= RSS_BOUND_KIB,
        "agent RSS {rss_max} KiB, documented bound {RSS_BOUND_KIB} KiB"
    );
}

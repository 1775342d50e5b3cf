//! Container identity: which container (and Kubernetes pod) a process runs in, from its
//! `/proc/<pid>/cgroup`, and the container's names from the files the container runtimes keep
//! on the host (no runtime socket, no API server).
//!
//! Cgroup layouts recognised (cgroup v2 `0::` line first, then every v1 line):
//! - containerd: CRI `cri-containerd-<id>.scope` (systemd driver), plain `/<namespace>/<id>`;
//! - CRI-O: `crio-<id>.scope` (its `crio-conmon-<id>.scope` is not the container);
//! - Docker: `docker-<id>.scope` (systemd driver), `/docker/<id>` (cgroupfs);
//! - Podman: `libpod-<id>.scope` (systemd manager, the container's processes may sit in a
//!   `container` child), `/libpod_parent/libpod-<id>` (cgroupfs); conmon (`libpod-conmon-<id>`,
//!   `/libpod_parent/conmon`) is not the container;
//! - the kubelet's pod cgroups: `kubepods-<qos>-pod<uid_with_underscores>.slice` and
//!   `kubepods-pod<uid>.slice` (systemd driver; guaranteed pods have no QoS level),
//!   `/kubepods/<qos>/pod<uid>/<id>` and `/kubepods/pod<uid>/<id>` (cgroupfs driver).
//!
//! Components are matched from the innermost outwards, so a path seen through a private cgroup
//! namespace (`/../../kubepods.slice/...`) is recognised too.
//!
//! Names are read once per container, when its first process is named (never per event), from:
//! - containerd: the task bundle `run/containerd/io.containerd.runtime.v2.task/<ns>/<id>/config.json`
//!   (the CRI plugin's `io.kubernetes.cri.*` annotations; nerdctl's `nerdctl/name`). The
//!   `io.kubernetes.*` *labels* are in containerd's bolt database, which is not read;
//! - CRI-O: `run/containers/storage/overlay-containers/<id>/userdata/config.json` (annotations
//!   `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`, `io.kubernetes.container.name`);
//! - Docker: `var/lib/docker/containers/<id>/config.v2.json` (`Name`, and `Config.Labels` with
//!   the `io.kubernetes.*` labels of cri-dockerd);
//! - Podman: `var/lib/containers/storage/<driver>-containers/containers.json` (`names`).
//!
//! all under `services.container_metadata_root` (`/`; `/proc/1/root` for an agent in a
//! container with the host's PID namespace).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Containers whose identity is kept at once (see [`Containers`]).
pub const CACHE_CAPACITY: usize = 4096;

/// The container runtime a cgroup path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A kubelet cgroupfs-driver path (`/kubepods/.../pod<uid>/<id>`): any CRI runtime.
    Cri,
}

impl Runtime {
    pub fn label(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Cri => "cri",
        }
    }
}

/// What a cgroup path says about a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// 64 lowercase hex digits.
    pub id: String,
    /// The kubelet's pod UID (with dashes), when the container is in a pod cgroup.
    pub pod_uid: Option<String>,
    pub runtime: Runtime,
}

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A systemd-driver scope `<prefix><id>.scope`.
fn scope_id<'a>(component: &'a str, prefix: &str) -> Option<&'a str> {
    component
        .strip_prefix(prefix)?
        .strip_suffix(".scope")
        .filter(|id| is_id(id))
}

/// A kubelet pod cgroup: `kubepods[-<qos>]-pod<uid_>.slice` or `pod<uid>` (cgroupfs).
fn pod_uid(component: &str) -> Option<String> {
    let uid = if let Some(rest) = component.strip_prefix("kubepods-") {
        let rest = rest.strip_suffix(".slice")?;
        let rest = rest
            .strip_prefix("burstable-")
            .or_else(|| rest.strip_prefix("besteffort-"))
            .unwrap_or(rest);
        rest.strip_prefix("pod")?.replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_string()
    };
    let ok = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(uid)
}

/// The container in one cgroup path, if any.
pub fn parse_path(path: &str) -> Option<ContainerRef> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let pod = || parts.iter().find_map(|c| pod_uid(c));
    let in_kubepods = parts
        .iter()
        .any(|c| *c == "kubepods" || c.starts_with("kubepods.") || c.starts_with("kubepods-"));
    for (i, c) in parts.iter().enumerate().rev() {
        // conmon (Podman's and CRI-O's monitor) runs next to the container, not in it.
        if c.starts_with("libpod-conmon-") || c.starts_with("crio-conmon-") || *c == "conmon" {
            return None;
        }
        let found = [
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
            ("docker-", Runtime::Docker),
            ("libpod-", Runtime::Podman),
        ]
        .into_iter()
        .find_map(|(prefix, rt)| scope_id(c, prefix).map(|id| (id, rt)));
        let found = found.or_else(|| {
            // cgroupfs layouts: the bare id (Podman's `libpod-<id>`) under its parent.
            let parent = i.checked_sub(1).map(|p| parts[p]);
            if let Some(id) = c.strip_prefix("libpod-").filter(|id| is_id(id)) {
                return Some((id, Runtime::Podman));
            }
            if !is_id(c) {
                return None;
            }
            let rt = match parent {
                Some("docker") => Runtime::Docker,
                Some("libpod_parent") => Runtime::Podman,
                _ if in_kubepods => Runtime::Cri,
                // `/<namespace>/<id>`: containerd's default cgroup for a task.
                Some(_) => Runtime::Containerd,
                None => return None,
            };
            Some((c, rt))
        });
        if let Some((id, runtime)) = found {
            return Some(ContainerRef {
                id: id.to_string(),
                pod_uid: pod(),
                runtime,
            });
        }
    }
    None
}

/// The container of a `/proc/<pid>/cgroup` file: the unified (v2) line first, then each v1
/// line (hybrid hosts keep containers in the v1 hierarchies).
pub fn parse_cgroup_file(text: &str) -> Option<ContainerRef> {
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
    v2.and_then(|p| parse_path(p.trim())).or_else(|| {
        text.lines()
            .filter(|l| !l.starts_with("0::"))
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .find_map(|p| parse_path(p.trim()))
    })
}

/// Where the unified (v2) cgroup hierarchy is mounted, read once.
fn cgroup2_mount() -> Option<&'static Path> {
    static MOUNT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            info.lines().find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let mount = pre.split_whitespace().nth(4)?;
                (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
            })
        })
        .as_deref()
}

/// The kernel's id of the v2 cgroup of a `/proc/<pid>/cgroup` file (what
/// `bpf_get_current_cgroup_id` gives its tasks: the cgroup directory's inode), when that cgroup
/// is a container's; `None` otherwise (or on a host without cgroup v2). A path seen through a
/// cgroup namespace (`/../..`) is looked up from the mount's root.
pub fn container_cgroup_id(text: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    parse_path(path)?;
    let rel: PathBuf = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "..")
        .collect();
    std::fs::metadata(cgroup2_mount()?.join(rel))
        .ok()
        .map(|m| m.ino())
}

/// The path (from the v2 hierarchy's root) of the cgroup with kernel id `id`, through
/// `open_by_handle_at` on the cgroup2 mount (a cgroup's id is its kernfs file handle). Needs
/// `CAP_DAC_READ_SEARCH`; `None` without it, without cgroup v2, or once the cgroup is gone.
pub fn cgroup_path_of_id(id: u64) -> Option<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    static MOUNT_FD: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let mount = cgroup2_mount()?;
    let dir = MOUNT_FD
        .get_or_init(|| std::fs::File::open(mount).ok())
        .as_ref()?;
    /// `struct file_handle` with the 8 bytes of a kernfs handle.
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        id: u64,
    }
    /// FILEID_KERNFS (include/linux/exportfs.h).
    const FILEID_KERNFS: i32 = 0xfe;
    let mut handle = Handle {
        bytes: 8,
        kind: FILEID_KERNFS,
        id,
    };
    // SAFETY: the handle is a `struct file_handle` header followed by its 8 bytes, as
    // `handle_bytes` says; the kernel reads it and returns a new descriptor or -1.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            (&mut handle as *mut Handle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just returned to us, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let rel = target.strip_prefix(mount).ok()?;
    Some(format!("/{}", rel.display()))
}

/// A container with the names its runtime gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub runtime: Runtime,
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl Identity {
    fn unnamed(r: &ContainerRef) -> Self {
        Self {
            id: r.id.clone(),
            runtime: r.runtime,
            pod_uid: r.pod_uid.clone(),
            namespace: None,
            pod: None,
            container: None,
        }
    }

    /// The `service` of its processes (unless a target names them): `<namespace>/<workload>`
    /// in Kubernetes, else the container's name, else `container-<first 12 of id>`.
    pub fn service(&self) -> String {
        match (&self.namespace, &self.pod, &self.container) {
            (Some(ns), Some(pod), _) => format!("{ns}/{}", workload_of(pod)),
            (_, _, Some(name)) => name.clone(),
            _ => format!("container-{}", &self.id[..12]),
        }
    }

    /// Fills names from Kubernetes-style keys (annotations or labels).
    fn take_kubernetes(&mut self, get: impl Fn(&str) -> Option<String>) {
        let first = |keys: &[&str]| keys.iter().find_map(|k| get(k).filter(|v| !v.is_empty()));
        if self.pod.is_none() {
            self.pod = first(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
        }
        if self.namespace.is_none() {
            self.namespace = first(&[
                "io.kubernetes.cri.sandbox-namespace",
                "io.kubernetes.pod.namespace",
            ]);
        }
        if self.container.is_none() {
            self.container = first(&[
                "io.kubernetes.cri.container-name",
                "io.kubernetes.container.name",
                "nerdctl/name",
            ]);
        }
        if self.pod_uid.is_none() {
            self.pod_uid = first(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]);
        }
    }
}

/// Pod name to workload name: the ReplicaSet's pod-template hash and the pod's random suffix
/// (Deployments: `web-7d9f8b6c5d-x2x4z`), a DaemonSet's or Job's suffix (`agent-x2x4z`), a
/// CronJob's scheduled time (`backup-28912345-x2x4z`) and a StatefulSet's ordinal (`db-0`) are
/// stripped.
pub fn workload_of(pod: &str) -> &str {
    // The alphabet of the kubelet's random suffixes and hashes (k8s.io/apimachinery rand).
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let safe = |s: &str| s.bytes().all(|b| SAFE.contains(&b));
    fn split(s: &str) -> Option<(&str, &str)> {
        s.rsplit_once('-').filter(|(head, _)| !head.is_empty())
    }
    let mut name = pod;
    if let Some((head, tail)) = split(name) {
        if tail.len() == 5 && safe(tail) {
            name = head;
            if let Some((head, tail)) = split(name) {
                let hash = (6..=10).contains(&tail.len()) && safe(tail);
                let scheduled = tail.len() >= 8 && tail.bytes().all(|b| b.is_ascii_digit());
                if hash || scheduled {
                    name = head;
                }
            }
            return name;
        }
        if tail.bytes().all(|b| b.is_ascii_digit()) && !tail.is_empty() {
            return head;
        }
    }
    name
}

/// Counters of the container cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ContainerStats {
    /// Containers whose metadata was looked up.
    pub lookups: u64,
    /// Metadata files that existed but could not be read or parsed.
    pub errors: u64,
    /// Containers not kept in the cache because it was full of containers still in use.
    pub uncached: u64,
}

/// Container identities by id, bounded: past the capacity, entries no process holds any more
/// are dropped, and if none can be, the new one is not kept (and will be looked up again).
/// A container that no process has had for the idle time is forgotten
/// ([`Containers::release_idle`]), so the cache follows the containers that run now.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
    capacity: usize,
    /// Identity, and when a process last had the container.
    cache: HashMap<String, (Arc<Identity>, Instant)>,
    stats: ContainerStats,
}

impl Default for Containers {
    fn default() -> Self {
        Self::new("/", CACHE_CAPACITY)
    }
}

impl Containers {
    pub fn new(root: impl Into<PathBuf>, capacity: usize) -> Self {
        Self {
            root: root.into(),
            capacity: capacity.max(1),
            cache: HashMap::new(),
            stats: ContainerStats::default(),
        }
    }

    pub fn stats(&self) -> ContainerStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The identity of a container, from the cache or its runtime's files.
    pub fn identify(&mut self, r: &ContainerRef) -> Arc<Identity> {
        if let Some((i, _)) = self.cache.get(&r.id) {
            return i.clone();
        }
        self.stats.lookups += 1;
        let identity = Arc::new(self.read_names(r));
        if self.cache.len() >= self.capacity {
            self.cache.retain(|_, (i, _)| Arc::strong_count(i) > 1);
        }
        if self.cache.len() < self.capacity {
            self.cache
                .insert(r.id.clone(), (identity.clone(), Instant::now()));
        } else {
            self.stats.uncached += 1;
        }
        identity
    }

    /// Whether the identity of container `id` is kept.
    pub fn contains(&self, id: &str) -> bool {
        self.cache.contains_key(id)
    }

    /// Forgets the containers that no process (none in `held`, by container id) has had for
    /// `idle`: stopped containers leave nothing behind; if one runs again its files are read
    /// again. Returns how many were forgotten.
    pub fn release_idle(&mut self, held: &HashSet<&str>, now: Instant, idle: Duration) -> usize {
        let before = self.cache.len();
        self.cache.retain(|id, (_, last)| {
            if held.contains(id.as_str()) {
                *last = now;
                true
            } else {
                now.saturating_duration_since(*last) < idle
            }
        });
        before - self.cache.len()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A JSON file: `None` if it does not exist; unreadable or malformed ones are counted.
    fn json(&mut self, path: &Path) -> Option<serde_json::Value> {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.stats.errors += 1;
                    tracing::debug!(path = %path.display(), error = %e, "container metadata");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.stats.errors += 1;
                tracing::debug!(path = %path.display(), error = %e, "container metadata");
                None
            }
        }
    }

    fn read_names(&mut self, r: &ContainerRef) -> Identity {
        let mut identity = Identity::unnamed(r);
        let sources: &[fn(&mut Self, &mut Identity)] = match r.runtime {
            Runtime::Containerd => &[Self::containerd],
            Runtime::CriO => &[Self::crio],
            Runtime::Docker => &[Self::docker],
            Runtime::Podman => &[Self::podman],
            Runtime::Cri => &[Self::containerd, Self::crio, Self::docker],
        };
        for source in sources {
            source(self, &mut identity);
            if identity.container.is_some() || identity.pod.is_some() {
                break;
            }
        }
        identity
    }

    /// An OCI runtime spec's annotations.
    fn annotations(&mut self, path: &Path, identity: &mut Identity) -> bool {
        let Some(spec) = self.json(path) else {
            return false;
        };
        let notes = &spec["annotations"];
        identity.take_kubernetes(|k| notes[k].as_str().map(str::to_string));
        true
    }

    fn containerd(&mut self, identity: &mut Identity) {
        let tasks = self.path("run/containerd/io.containerd.runtime.v2.task");
        let Ok(namespaces) = std::fs::read_dir(&tasks) else {
            return;
        };
        for ns in namespaces.flatten() {
            let spec = ns.path().join(&identity.id).join("config.json");
            if self.annotations(&spec, identity) {
                return;
            }
        }
    }

    fn crio(&mut self, identity: &mut Identity) {
        for base in ["run/containers/storage", "var/lib/containers/storage"] {
            let spec = self.path(&format!(
                "{base}/overlay-containers/{}/userdata/config.json",
                identity.id
            ));
            if self.annotations(&spec, identity) {
                return;
            }
        }
    }

    fn docker(&mut self, identity: &mut Identity) {
        let path = self.path(&format!(
            "var/lib/docker/containers/{}/config.v2.json",
            identity.id
        ));
        let Some(config) = self.json(&path) else {
            return;
        };
        let labels = &config["Config"]["Labels"];
        identity.take_kubernetes(|k| labels[k].as_str().map(str::to_string));
        if identity.container.is_none() {
            identity.container = config["Name"]
                .as_str()
                .map(|n| n.trim_start_matches('/').to_string())
                .filter(|n| !n.is_empty());
        }
    }

    fn podman(&mut self, identity: &mut Identity) {
        let storage = self.path("var/lib/containers/storage");
        let Ok(dir) = std::fs::read_dir(&storage) else {
            return;
        };
        let lists: Vec<PathBuf> = dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-containers"))
            .map(|e| e.path().join("containers.json"))
            .collect();
        for list in lists {
            let Some(serde_json::Value::Array(all)) = self.json(&list) else {
                continue;
            };
            let name = all
                .iter()
                .find(|c| c["id"].as_str() == Some(identity.id.as_str()))
                .and_then(|c| c["names"][0].as_str());
            if let Some(name) = name {
                identity.container = Some(name.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e2c1b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
    const UID: &str = "0d7a8c52-3f1e-4b6a-9c2d-5e8f7a6b4c3d";

    fn uid_() -> String {
        UID.replace('-', "_")
    }

    #[test]
    fn cgroup_layouts() {
        let u = uid_();
        let pod = Some(UID);
        // (file, expected runtime, expected pod uid); every file's container is ID.
        let cases: Vec<(String, Runtime, Option<&str>)> = vec![
            // containerd CRI, kubelet systemd driver, cgroup v2, each QoS class.
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n"),
                Runtime::Containerd,
                pod,
            ),
            (
                format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope\n"),
                Runtime::Containerd,
                pod,
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope\n"),
                Runtime::Containerd,
                pod,
            ),
            // Seen through a private cgroup namespace.
            (
                format!("0::/../../kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n"),
                Runtime::Containerd,
                pod,
            ),
            // CRI-O, systemd driver, v2.
            (
                format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope\n"),
                Runtime::CriO,
                pod,
            ),
            // Kubelet cgroupfs driver, cgroup v1 (hybrid: the unified line is /).
            (
                format!("12:pids:/kubepods/burstable/pod{UID}/{ID}\n4:memory:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"),
                Runtime::Cri,
                pod,
            ),
            (
                format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
                Runtime::Cri,
                pod,
            ),
            (format!("0::/kubepods/pod{UID}/{ID}\n"), Runtime::Cri, pod),
            // Kubelet systemd driver on cgroup v1.
            (
                format!("11:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n"),
                Runtime::Containerd,
                pod,
            ),
            // Plain containerd (nerdctl, ctr): /<namespace>/<id>.
            (format!("0::/default/{ID}\n"), Runtime::Containerd, None),
            (format!("5:memory:/k8s.io/{ID}\n0::/\n"), Runtime::Containerd, None),
            // Docker: systemd driver (v2), cgroupfs (v1).
            (
                format!("0::/system.slice/docker-{ID}.scope\n"),
                Runtime::Docker,
                None,
            ),
            (
                format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"),
                Runtime::Docker,
                None,
            ),
            // Podman: systemd manager (v2, the container's processes in a `container` child
            // with --cgroups=split), cgroupfs (v1 and v2).
            (
                format!("0::/machine.slice/libpod-{ID}.scope\n"),
                Runtime::Podman,
                None,
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                Runtime::Podman,
                None,
            ),
            (
                format!("0::/libpod_parent/libpod-{ID}\n"),
                Runtime::Podman,
                None,
            ),
            (
                format!("7:pids:/libpod_parent/libpod-{ID}\n1:name=systemd:/libpod_parent/libpod-{ID}\n"),
                Runtime::Podman,
                None,
            ),
        ];
        for (file, runtime, pod_uid) in cases {
            let got = parse_cgroup_file(&file);
            assert_eq!(
                got,
                Some(ContainerRef {
                    id: ID.into(),
                    pod_uid: pod_uid.map(Into::into),
                    runtime
                }),
                "{file}"
            );
        }
        // Not containers: conmon, systemd units and sessions, the pod cgroup itself, ids of
        // the wrong length or case, a bare id at the root.
        for file in [
            format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
            "0::/libpod_parent/conmon\n".to_string(),
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{ID}.scope\n"),
            "0::/system.slice/nginx.service\n".to_string(),
            "0::/user.slice/user-0.slice/session-3.scope\n".to_string(),
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice\n"),
            format!("0::/system.slice/docker-{}.scope\n", &ID[..63]),
            format!("0::/docker/{}\n", ID.to_uppercase()),
            format!("0::/{ID}\n"),
            "12:pids:/\n0::/\n".to_string(),
            String::new(),
        ] {
            assert_eq!(parse_cgroup_file(&file), None, "{file}");
        }
    }

    #[test]
    fn cgroup_ids_to_paths_and_back() {
        use std::os::unix::fs::MetadataExt;
        let Some(mount) = cgroup2_mount() else {
            panic!("no cgroup2 mount");
        };
        // The root cgroup, and a container-named one made here.
        assert_eq!(
            cgroup_path_of_id(std::fs::metadata(mount).unwrap().ino()).as_deref(),
            Some("/")
        );
        let rel = format!("steadfast-unit-{}/docker-{ID}.scope", std::process::id());
        let dir = mount.join(&rel);
        std::fs::create_dir_all(&dir).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        let path = cgroup_path_of_id(id);
        let from_file = container_cgroup_id(&format!("0::/{rel}\n"));
        std::fs::remove_dir(&dir).unwrap();
        std::fs::remove_dir(dir.parent().unwrap()).unwrap();
        assert_eq!(path, Some(format!("/{rel}")));
        assert_eq!(from_file, Some(id));
        assert_eq!(parse_path(&path.unwrap()).unwrap().id, ID);
        assert_eq!(cgroup_path_of_id(id), None, "gone with its cgroup");
        assert_eq!(
            container_cgroup_id("0::/user.slice\n"),
            None,
            "not a container's"
        );
    }

    #[test]
    fn workloads_from_pod_names() {
        for (pod, workload) in [
            ("checkout-7d9f8b6c5d-x2x4z", "checkout"),
            ("coredns-5d78c9869d-7bfkr", "coredns"),
            ("web-frontend-84b6d9cf7-q2w9k", "web-frontend"),
            ("kube-proxy-x2x4z", "kube-proxy"),
            ("backup-28912345-x2x4z", "backup"),
            ("db-0", "db"),
            ("redis-node-12", "redis-node"),
            ("etcd-control-plane", "etcd-control-plane"),
            ("standalone", "standalone"),
            // `abcde` is not a kubelet suffix (vowels): kept.
            ("app-abcde", "app-abcde"),
        ] {
            assert_eq!(workload_of(pod), workload, "{pod}");
        }
    }

    #[test]
    fn services_of_identities() {
        let r = ContainerRef {
            id: ID.into(),
            pod_uid: None,
            runtime: Runtime::Docker,
        };
        let mut i = Identity::unnamed(&r);
        assert_eq!(i.service(), "container-3f4e2c1b0a9d");
        i.container = Some("api".into());
        assert_eq!(i.service(), "api");
        i.namespace = Some("shop".into());
        assert_eq!(
            i.service(),
            "api",
            "a namespace without a pod is not Kubernetes"
        );
        i.pod = Some("checkout-7d9f8b6c5d-x2x4z".into());
        assert_eq!(i.service(), "shop/checkout");
    }

    #[test]
    fn names_from_runtime_files_cached_and_bounded() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let id = |n: u8| format!("{:064x}", n);
        write(
            &format!(
                "run/containerd/io.containerd.runtime.v2.task/k8s.io/{}/config.json",
                id(1)
            ),
            r#"{"ociVersion":"1.1.0","annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"server","io.kubernetes.cri.sandbox-name":"checkout-7d9f8b6c5d-x2x4z","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"0d7a8c52-3f1e-4b6a-9c2d-5e8f7a6b4c3d"}}"#,
        );
        write(
            &format!(
                "run/containers/storage/overlay-containers/{}/userdata/config.json",
                id(2)
            ),
            r#"{"annotations":{"io.kubernetes.pod.name":"db-0","io.kubernetes.pod.namespace":"data","io.kubernetes.container.name":"postgres"}}"#,
        );
        write(
            &format!("var/lib/docker/containers/{}/config.v2.json", id(3)),
            r#"{"ID":"x","Name":"/nightly-report","Config":{"Labels":{}}}"#,
        );
        write(
            "var/lib/containers/storage/overlay-containers/containers.json",
            &format!(
                r#"[{{"id":"{}","names":["other"]}},{{"id":"{}","names":["ledger"],"image":"x"}}]"#,
                id(9),
                id(4)
            ),
        );
        write(
            &format!("var/lib/docker/containers/{}/config.v2.json", id(5)),
            "{not json",
        );
        let r = |n: u8, runtime| ContainerRef {
            id: id(n),
            pod_uid: None,
            runtime,
        };
        let mut c = Containers::new(root.path(), 3);
        let k8s = c.identify(&r(1, Runtime::Containerd));
        assert_eq!(
            (
                k8s.namespace.as_deref(),
                k8s.pod.as_deref(),
                k8s.container.as_deref()
            ),
            (
                Some("shop"),
                Some("checkout-7d9f8b6c5d-x2x4z"),
                Some("server")
            )
        );
        assert_eq!(k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(k8s.service(), "shop/checkout");
        // The kubelet cgroupfs layout does not say which runtime: each is tried.
        let crio = c.identify(&r(2, Runtime::Cri));
        assert_eq!(crio.service(), "data/db");
        let docker = c.identify(&r(3, Runtime::Docker));
        assert_eq!(docker.service(), "nightly-report");
        assert_eq!(c.stats().lookups, 3);
        assert!(
            Arc::ptr_eq(&k8s, &c.identify(&r(1, Runtime::Containerd))),
            "cached"
        );
        assert_eq!(c.stats().lookups, 3);
        // Full of identities still held: the next is looked up but not kept.
        let podman = c.identify(&r(4, Runtime::Podman));
        assert_eq!(podman.service(), "ledger");
        assert_eq!((c.len(), c.stats().uncached), (3, 1));
        // Once nothing holds one, it makes room.
        drop(docker);
        let broken = c.identify(&r(5, Runtime::Docker));
        assert_eq!(broken.service(), format!("container-{}", &id(5)[..12]));
        assert_eq!(c.stats().errors, 1, "a malformed file is counted");
        assert_eq!((c.len(), c.stats().uncached), (3, 1));
        assert!(Arc::ptr_eq(&broken, &c.identify(&r(5, Runtime::Docker))));
        drop(crio);
        // No files at all: named by id, no error.
        let bare = Containers::new(root.path().join("nothing"), 3).identify(&r(6, Runtime::Podman));
        assert_eq!(bare.service(), format!("container-{}", &id(6)[..12]));
    }
}

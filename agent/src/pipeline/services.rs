//! Service names: the systemd unit when a process runs in a `*.service` cgroup, else its comm;
//! a bounded set of distinct names, the rest reported as `other`.

use std::{collections::HashMap, sync::Arc};

use crate::config::Target;

/// Index of a service name in [`ServiceNames`].
pub type ServiceId = u32;

/// Label for processes past the cap.
pub const OTHER: ServiceId = 0;
/// Label for processes that were gone before anything named them.
pub const UNKNOWN: ServiceId = 1;

/// Interned service names with a cap on distinct values. Names are never forgotten, so
/// cumulative series keep their labels for the life of the agent.
#[derive(Debug)]
pub struct ServiceNames {
    cap: usize,
    ids: HashMap<Arc<str>, ServiceId>,
    names: Vec<Arc<str>>,
}

impl ServiceNames {
    pub fn new(cap: usize) -> Self {
        let mut s = Self {
            cap,
            ids: HashMap::new(),
            names: Vec::new(),
        };
        for reserved in ["other", "unknown"] {
            let name: Arc<str> = reserved.into();
            s.ids.insert(name.clone(), s.names.len() as ServiceId);
            s.names.push(name);
        }
        s
    }

    /// The id of `name`, admitting it if the cap allows, else [`OTHER`].
    pub fn intern(&mut self, name: &str) -> ServiceId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        // The two reserved names do not count against the cap.
        if self.names.len() - 2 >= self.cap {
            return OTHER;
        }
        let id = self.names.len() as ServiceId;
        let name: Arc<str> = name.into();
        self.ids.insert(name.clone(), id);
        self.names.push(name);
        id
    }

    pub fn name(&self, id: ServiceId) -> &str {
        self.names.get(id as usize).map_or("unknown", |n| n)
    }
}

/// The cgroup path in a `/proc/<pid>/cgroup` file, preferring the unified (v2) hierarchy and
/// falling back to the v1 `name=systemd` one.
pub fn cgroup_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            text.lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })
        .map(str::trim)
}

/// The innermost `*.service` unit of a cgroup path.
pub fn innermost_unit(path: &str) -> Option<&str> {
    path.rsplit('/')
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
}

/// The innermost `*.service` unit in a `/proc/<pid>/cgroup` file.
pub fn unit_from_cgroup_file(text: &str) -> Option<&str> {
    cgroup_path(text).and_then(innermost_unit)
}

/// What is known about a process when naming it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub comm: String,
    /// `/proc/<pid>/exe`, when the process is alive and readable.
    pub exe: Option<String>,
    /// Cgroup v2 path (or the v1 `name=systemd` one).
    pub cgroup: Option<String>,
}

impl ProcessFacts {
    /// Reads a live process from procfs; `None` if it has gone.
    pub fn from_procfs(tgid: u32) -> Option<Self> {
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok()?;
        let cgroup = std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
            .ok()
            .and_then(|t| cgroup_path(&t).map(str::to_string));
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        Some(Self {
            comm: comm.trim_end_matches('\n').to_string(),
            exe,
            cgroup,
        })
    }

    pub fn unit(&self) -> Option<&str> {
        self.cgroup.as_deref().and_then(innermost_unit)
    }
}

/// Names processes: the first matching target's service, else the systemd unit, else comm.
#[derive(Debug, Default, Clone)]
pub struct Naming {
    targets: Vec<Target>,
}

impl Naming {
    pub fn new(targets: Vec<Target>) -> Self {
        Self { targets }
    }

    /// The first target a process matches, with its index in the configured list.
    pub fn target_of(&self, facts: &ProcessFacts) -> Option<(usize, &Target)> {
        self.targets
            .iter()
            .enumerate()
            .find(|(_, t)| matches(t, facts))
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn name(&self, facts: &ProcessFacts) -> String {
        if let Some(t) = self.targets.iter().find(|t| matches(t, facts)) {
            return t.service.clone();
        }
        facts.unit().unwrap_or(&facts.comm).to_string()
    }
}

/// Every criterion the target gives must match; a fact that is unknown does not match.
fn matches(t: &Target, f: &ProcessFacts) -> bool {
    t.comm.as_ref().is_none_or(|c| *c == f.comm)
        && t.exe.as_ref().is_none_or(|e| f.exe.as_ref() == Some(e))
        && t.cgroup.as_ref().is_none_or(|c| {
            f.cgroup.as_deref().is_some_and(|p| {
                p == c || (p.starts_with(c.as_str()) && p.as_bytes().get(c.len()) == Some(&b'/'))
            })
        })
        && t.unit.as_ref().is_none_or(|u| f.unit() == Some(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sends_the_rest_to_other() {
        let mut s = ServiceNames::new(2);
        let a = s.intern("a");
        let b = s.intern("b");
        assert_ne!(a, b);
        assert_eq!(s.intern("c"), OTHER);
        assert_eq!(s.intern("a"), a);
        assert_eq!(s.name(a), "a");
        assert_eq!(s.name(OTHER), "other");
        assert_eq!(s.name(UNKNOWN), "unknown");
    }

    #[test]
    fn targets_win_over_units_and_comm() {
        let target =
            |service: &str, comm: Option<&str>, exe: Option<&str>, cgroup: Option<&str>| Target {
                service: service.into(),
                comm: comm.map(Into::into),
                exe: exe.map(Into::into),
                cgroup: cgroup.map(Into::into),
                ..Target::named(service)
            };
        let naming = Naming::new(vec![
            target("api", Some("api-bin"), Some("/usr/bin/api-bin"), None),
            target("batch", None, None, Some("/system.slice/batch")),
        ]);
        let facts = |comm: &str, exe: Option<&str>, cgroup: Option<&str>| ProcessFacts {
            comm: comm.into(),
            exe: exe.map(Into::into),
            cgroup: cgroup.map(Into::into),
        };
        assert_eq!(
            naming.name(&facts("api-bin", Some("/usr/bin/api-bin"), None)),
            "api"
        );
        assert_eq!(
            naming.name(&facts("api-bin", Some("/opt/api-bin"), None)),
            "api-bin",
            "every given criterion must match"
        );
        assert_eq!(
            naming.name(&facts("x", None, Some("/system.slice/batch/job.service"))),
            "batch"
        );
        assert_eq!(
            naming.name(&facts("x", None, Some("/system.slice/batchy.service"))),
            "batchy.service",
            "a prefix matches whole path components only"
        );
        assert_eq!(naming.name(&facts("sh", None, Some("/user.slice"))), "sh");
    }

    #[test]
    fn units_from_cgroup_files() {
        assert_eq!(
            unit_from_cgroup_file("0::/system.slice/nginx.service\n"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_from_cgroup_file(
                "0::/user.slice/user-0.slice/user@0.service/app.slice/x.service\n"
            ),
            Some("x.service")
        );
        assert_eq!(
            unit_from_cgroup_file("12:cpu:/\n1:name=systemd:/system.slice/cron.service\n0::/\n"),
            None,
            "the unified line wins when present"
        );
        assert_eq!(
            unit_from_cgroup_file("1:name=systemd:/system.slice/cron.service\n"),
            Some("cron.service")
        );
        assert_eq!(
            unit_from_cgroup_file("0::/user.slice/session-1.scope\n"),
            None
        );
        assert_eq!(unit_from_cgroup_file(""), None);
    }
}

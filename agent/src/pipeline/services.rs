//! Service names: the systemd unit when a process runs in a `*.service` cgroup, else its comm;
//! a bounded set of distinct names, the rest reported as `other`.

use std::{collections::HashMap, sync::Arc};

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

/// The innermost `*.service` unit in a `/proc/<pid>/cgroup` file, preferring the unified
/// (v2) hierarchy and falling back to the v1 `name=systemd` one.
pub fn unit_from_cgroup_file(text: &str) -> Option<&str> {
    let path_of = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim())
    };
    let path = path_of("0::").or_else(|| {
        text.lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p.trim()))
    })?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
}

/// Service name for a live process, from procfs; `None` if it has gone.
pub fn resolve_from_procfs(tgid: u32) -> Option<String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok();
    if let Some(unit) = cgroup.as_deref().and_then(unit_from_cgroup_file) {
        return Some(unit.to_string());
    }
    let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
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

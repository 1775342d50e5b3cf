//! Test HTTP servers (tests/workloads' Python and Go servers) started under a name of the
//! test's choosing, and stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::wait_until;

/// `dir/name` -> `target`: a process started through it has comm `name`.
pub fn alias(dir: &Path, target: &str, name: &str) -> PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink(target, &link).unwrap();
    link
}

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd server PORT_FILE` and waits for its port.
pub fn start_server(mut cmd: Command, dir: &Path) -> Server {
    let port_file = dir.join("port");
    let child = cmd
        .arg("server")
        .arg(&port_file)
        .stdout(Stdio::null())
        .spawn()
        .expect("the server workload");
    let mut port = 0;
    wait_until("the server to listen", Duration::from_secs(120), || {
        port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        port != 0
    });
    Server { child, port }
}

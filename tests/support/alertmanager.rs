//! A real Alertmanager (Debian's `prometheus-alertmanager`) for tests, and how to read what
//! it holds.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
};

use super::{free_port, http_get, wait_for};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

pub struct Alertmanager {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} missing: scripts/setup --test installs Debian's prometheus-alertmanager"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("am.yaml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        wait_for(30, "Alertmanager ready", || {
            http_get(am.addr, "/-/ready", None).ok()
        });
        am
    }

    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let body = http_get(self.addr, "/api/v2/alerts", None).unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alertmanager holds the alert and it has not ended (`status.state` is not used: it reads
/// `unprocessed` for a moment after each re-post).
pub fn is_active(alerts: &[serde_json::Value], name: &str, severity: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    alerts.iter().any(|a| {
        a["labels"]["alertname"] == name
            && a["labels"]["severity"] == severity
            && ends_after(a["endsAt"].as_str().unwrap_or(""), now)
    })
}

/// endsAt (RFC 3339, UTC) is later than `now` (epoch seconds).
fn ends_after(ends: &str, now: u64) -> bool {
    let out = Command::new("date")
        .args(["-u", "-d", ends, "+%s"])
        .output()
        .unwrap();
    let t: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    t > now
}

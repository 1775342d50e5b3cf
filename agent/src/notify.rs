//! The systemd notification protocol (`sd_notify`): datagrams of `KEY=VALUE` lines sent to the
//! unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
//! `@`). Outside systemd the variable is unset and every call is a no-op.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is not a usable socket address: {1}")]
    Address(String, std::io::Error),
    #[error("sending {message:?} to NOTIFY_SOCKET: {source}")]
    Send {
        message: String,
        source: std::io::Error,
    },
}

/// `READY=1`: start-up is complete (or a reload finished).
pub const READY: &str = "READY=1";
/// `STOPPING=1`: the service is shutting down.
pub const STOPPING: &str = "STOPPING=1";
/// `WATCHDOG=1`: keep-alive for `WatchdogSec=`.
pub const WATCHDOG: &str = "WATCHDOG=1";

/// `RELOADING=1` with the `CLOCK_MONOTONIC` time systemd asks for (in microseconds).
pub fn reloading(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

/// `STATUS=` text shown by `systemctl status`; one line (newlines would start a new field).
pub fn status(text: &str) -> String {
    format!("STATUS={}", text.replace('\n', " "))
}

/// Now on `CLOCK_MONOTONIC`, in microseconds.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Parses a `$NOTIFY_SOCKET` value: `@name` is an abstract socket, anything else a path.
pub fn socket_address(value: &str) -> Result<SocketAddr, NotifyError> {
    let result = match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if value.starts_with('/') => SocketAddr::from_pathname(value),
        None => Err(std::io::Error::other("neither an absolute path nor @name")),
    };
    result.map_err(|e| NotifyError::Address(value.to_string(), e))
}

/// Half of the watchdog period systemd set for this process (`$WATCHDOG_USEC`, and
/// `$WATCHDOG_PID` naming us when set), or `None` when there is no watchdog.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Where notifications go; `None` inside when not started by systemd with `Type=notify`.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a missing variable gives a notifier that sends nothing.
    pub fn from_env() -> Result<Self, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(v) if !v.is_empty() => Self::to(&v),
            _ => Ok(Self::disabled()),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// A notifier for an explicit `$NOTIFY_SOCKET`-style address.
    pub fn to(value: &str) -> Result<Self, NotifyError> {
        let addr = socket_address(value)?;
        let socket =
            UnixDatagram::unbound().map_err(|e| NotifyError::Address(value.to_string(), e))?;
        Ok(Self {
            target: Some((socket, addr)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram (several fields are separated by newlines).
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        let Some((socket, addr)) = &self.target else {
            return Ok(());
        };
        socket
            .send_to_addr(message.as_bytes(), addr)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                message: message.to_string(),
                source,
            })
    }

    /// Like `send`, but a failure is only logged: systemd's absence must not stop the agent.
    pub fn send_or_log(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_formatted_as_systemd_expects() {
        assert_eq!(READY, "READY=1");
        assert_eq!(STOPPING, "STOPPING=1");
        assert_eq!(WATCHDOG, "WATCHDOG=1");
        assert_eq!(reloading(1234567), "RELOADING=1\nMONOTONIC_USEC=1234567");
        assert_eq!(status("a\nb"), "STATUS=a b");
    }

    #[test]
    fn monotonic_clock_is_monotonic_and_in_microseconds() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(20));
        let b = monotonic_usec();
        assert!((19_000..1_000_000).contains(&(b - a)), "{a} -> {b}");
    }

    #[test]
    fn addresses_paths_and_abstract_names() {
        use std::os::linux::net::SocketAddrExt;
        let a = socket_address("@/org/test/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"/org/test/notify"[..]));
        let p = socket_address("/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(socket_address("relative").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_the_period_and_only_for_us() {
        let me = std::process::id().to_string();
        assert_eq!(
            watchdog_interval(Some("30000000"), None),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some(&me)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("1")), None);
        assert_eq!(watchdog_interval(None, None), None);
        assert_eq!(watchdog_interval(Some("0"), None), None);
        assert_eq!(watchdog_interval(Some("x"), None), None);
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.send(READY).unwrap();
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        n.send(READY).unwrap();
        n.send(&reloading(42)).unwrap();
        assert_eq!(recv(&server), "READY=1");
        assert_eq!(recv(&server), "RELOADING=1\nMONOTONIC_USEC=42");
    }

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("steadfast-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::to(&format!("@{name}")).unwrap();
        n.send(STOPPING).unwrap();
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn a_vanished_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        assert!(matches!(n.send(READY), Err(NotifyError::Send { .. })));
    }
}

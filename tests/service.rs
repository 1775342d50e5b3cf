//! The agent as a systemd `Type=notify` service, without systemd: the test binds the unix
//! datagram socket systemd would (`$NOTIFY_SOCKET`) and reads what the real agent sends on
//! start-up, SIGHUP (valid and invalid config on disk), the watchdog, and SIGTERM. Needs root.

mod support;

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use support::Agent;

/// Reads datagrams until one contains `field`, returning it (panics after `within`).
fn expect(sock: &UnixDatagram, field: &str, within: Duration, agent: &Agent) -> String {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == field) {
                    return msg;
                }
                seen.push(msg);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!(
        "no {field:?} within {within:?}; got {seen:?}; agent log:\n{}",
        agent.log()
    );
}

/// Drains whatever is queued so the next `expect` sees only new messages.
fn drain(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    sock.set_nonblocking(false).unwrap();
    out
}

#[test]
fn notifies_ready_reloading_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A 400 ms watchdog period: the agent must ping every 200 ms.
    let mut agent = Agent::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = expect(&sock, "READY=1", Duration::from_secs(10), &agent);
    assert!(ready.contains("STATUS=probes attached"), "{ready}");
    // The listener serves once READY was sent.
    assert!(agent
        .scrape()
        .0
        .contains("steadfast_syscall_duration_seconds"));

    // Watchdog: at least 4 pings in 1.2 s (one every 200 ms).
    drain(&sock);
    std::thread::sleep(Duration::from_millis(1200));
    let pings = drain(&sock).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((4..=8).contains(&pings), "{pings} watchdog pings in 1.2 s");

    // SIGHUP with a valid, unchanged file: RELOADING=1 with a monotonic timestamp, then READY=1.
    let before = now_monotonic_usec();
    agent.signal(libc::SIGHUP);
    let reloading = expect(&sock, "RELOADING=1", Duration::from_secs(5), &agent);
    let stamp: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        stamp >= before && stamp < before + 5_000_000,
        "{stamp} vs {before}"
    );
    let ready = expect(&sock, "READY=1", Duration::from_secs(5), &agent);
    assert!(ready.contains("unchanged"), "{ready}");
    assert!(agent.is_running(), "SIGHUP must not kill the agent");

    // SIGHUP with a broken file: the agent logs every problem and keeps running.
    let config = agent.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{good}services:\n  max_services: 0\nprobes:\n  process_events:\n    ring_buffer_bytes: 1000\n"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    expect(&sock, "RELOADING=1", Duration::from_secs(5), &agent);
    let ready = expect(&sock, "READY=1", Duration::from_secs(5), &agent);
    assert!(ready.contains("rejected"), "{ready}");
    assert!(agent.is_running());
    assert!(agent
        .scrape()
        .0
        .contains("steadfast_syscall_duration_seconds"));
    let log = agent.log();
    for key in ["services.max_services", "ring_buffer_bytes", "old one"] {
        assert!(log.contains(key), "log does not mention {key}:\n{log}");
    }

    // A valid but different file: accepted; the log says what applies now and what at restart.
    std::fs::write(&config, format!("{good}services:\n  max_services: 5\n")).unwrap();
    agent.signal(libc::SIGHUP);
    let ready = expect(&sock, "READY=1", Duration::from_secs(5), &agent);
    assert!(ready.contains("restart"), "{ready}");
    assert!(agent.log().contains("other changes"));

    // SIGTERM: STOPPING=1, exit 0.
    drain(&sock);
    let status = agent.stop();
    assert!(status.success(), "{status}");
    let msgs = drain(&sock);
    assert!(msgs.iter().any(|m| m == "STOPPING=1"), "{msgs:?}");
}

/// Without `$NOTIFY_SOCKET` (run by hand or by the tests) the agent runs as before and SIGHUP
/// does not kill it.
#[test]
fn sighup_without_systemd_keeps_running() {
    let mut agent = Agent::start("");
    agent.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.is_running(), "log:\n{}", agent.log());
    assert!(agent.log().contains("unchanged"), "{}", agent.log());
    assert!(agent.stop().success());
}

fn now_monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

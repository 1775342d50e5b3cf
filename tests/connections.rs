//! TCP connection probe (`probes.connections`) against workloads with known outcomes: a client
//! in one network namespace, a server (or nothing, or a black hole) in another, joined by a
//! veth pair; `steadfast_tcp_connections_total`, `steadfast_tcp_connect_duration_seconds` and
//! `steadfast_tcp_open_connections` compared with what the workload did (it checks each
//! outcome itself: ECONNREFUSED, ETIMEDOUT, ECONNRESET, EOF). Needs root, iproute2, nftables.
//!
//! Every agent sees every connection on the host: series are picked by the workloads' unique
//! service names (comm), and by peer.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use support::{build_workload, unique_name, wait_until, Agent, Scrape};

const CONNS: &str = "steadfast_tcp_connections_total";
const DURATION: &str = "steadfast_tcp_connect_duration_seconds";
const OPEN: &str = "steadfast_tcp_open_connections";

/// One test at a time: each copies binaries and spawns them while others fork (ETXTBSY).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces `a` (clients) and `b` (servers) joined by a veth pair, deleted on drop.
struct Netns {
    a: String,
    b: String,
    ip_b: String,
    ip6_b: String,
}

impl Netns {
    fn new() -> Netns {
        let a = unique_name("sfcna");
        let b = unique_name("sfcnb");
        static PAIRS: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let pair = PAIRS.fetch_add(1, Ordering::Relaxed);
        let net = format!("10.{}.{}", 150 + pid % 50, (pid / 50 * 8 + pair) % 250);
        let net6 = |host| {
            std::net::Ipv6Addr::new(0xfd00, 0x5e, pid as u16, pair as u16, 0, 0, 0, host)
                .to_string()
        };
        ip(&["netns", "add", &a]);
        let ns = Netns {
            a,
            b,
            ip_b: format!("{net}.2"),
            ip6_b: net6(2),
        };
        ip(&["netns", "add", &ns.b]);
        ip(&[
            "-n", &ns.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &ns.b,
        ]);
        for (n, dev, addr, addr6) in [
            (&ns.a, "va", format!("{net}.1"), net6(1)),
            (&ns.b, "vb", ns.ip_b.clone(), ns.ip6_b.clone()),
        ] {
            ip(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            let a6 = format!("{addr6}/64");
            ip(&["-n", n, "-6", "addr", "add", &a6, "dev", dev, "nodad"]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// Adds `rule` to the input hook of `ns` (table `inet sfconn`).
    fn input_rule(&self, ns: &str, rule: &str) {
        support::nft_input_rule(ns, "sfconn", rule);
    }

    fn sysctl(&self, ns: &str, setting: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-w", setting])
            .status()
            .unwrap();
        assert!(status.success(), "sysctl {setting}");
    }

    fn spawn(&self, ns: &str, bin: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc { child, out }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A workload in a namespace, driven through stdin and stdout.
struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn line(&mut self) -> String {
        let mut got = String::new();
        self.out.read_line(&mut got).unwrap();
        got.trim_end().to_string()
    }

    fn expect(&mut self, line: &str) {
        assert_eq!(self.line(), line);
    }

    fn go(&mut self) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
    }

    /// Waits for "done" and a successful exit.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        loop {
            let l = self.line();
            if l.is_empty() || l == "done" {
                rest.push_str(&l);
                break;
            }
        }
        let status = self.child.wait().unwrap();
        // A few lines at most (perror, or where it was stuck): read after the exit.
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "workload failed: {status}: {err}");
        assert_eq!(rest, "done", "workload stderr: {err}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's agent, namespaces and two workload binaries (client and server service names).
struct Bench {
    agent: Agent,
    ns: Netns,
    client: String,
    server: String,
    client_bin: PathBuf,
    server_bin: PathBuf,
}

impl Bench {
    fn new(config: &str) -> Bench {
        let agent = Agent::start(config);
        let ns = Netns::new();
        let client = unique_name("sfcc");
        let server = unique_name("sfcs");
        let client_bin = build_workload("conn_mix", agent.dir.path(), &client);
        let server_bin = build_workload("conn_mix", agent.dir.path(), &server);
        Bench {
            agent,
            ns,
            client,
            server,
            client_bin,
            server_bin,
        }
    }

    fn server(&self, port: u16, n: u32, mode: &str, v6: bool) -> Proc {
        let (port, n) = (port.to_string(), n.to_string());
        let mut args = vec!["server", &port, &n, mode];
        if v6 {
            args.push("6");
        }
        let mut p = self.ns.spawn(&self.ns.b, &self.server_bin, &args);
        p.expect("ready");
        p
    }

    fn client(&self, addr: &str, port: u16, n: u32, mode: &str, timeout_ms: u32) -> Proc {
        let (port, n, t) = (port.to_string(), n.to_string(), timeout_ms.to_string());
        self.ns.spawn(
            &self.ns.a,
            &self.client_bin,
            &["client", addr, &port, &n, mode, &t],
        )
    }

    /// Connections of `service` in `direction` with `outcome` (all peers if `peer` is None).
    fn count(
        &self,
        s: &Scrape,
        service: &str,
        dir: &str,
        peer: Option<&str>,
        outcome: &str,
    ) -> f64 {
        let mut l = vec![
            ("service", service),
            ("direction", dir),
            ("outcome", outcome),
        ];
        if let Some(p) = peer {
            l.push(("peer", p));
        }
        s.sum(CONNS, &l)
    }

    /// Polls until `service`'s counts in `dir` reach `want` (outcome, count) pairs, then
    /// checks them and that every other outcome is 0.
    fn expect_counts(&self, service: &str, dir: &str, peer: &str, want: &[(&str, f64)]) -> Scrape {
        let outcomes = ["established", "refused", "timeout", "reset", "closed"];
        let get = |s: &Scrape| {
            outcomes
                .iter()
                .map(|o| {
                    let n = self.count(s, service, dir, Some(peer), o);
                    let w = want.iter().find(|w| w.0 == *o).map_or(0.0, |w| w.1);
                    (*o, n, w)
                })
                .collect::<Vec<_>>()
        };
        let mut last = Scrape(String::new());
        let reached = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(
                &format!("{service} {dir} counts {want:?}"),
                Duration::from_secs(15),
                || {
                    last = self.agent.scrape();
                    get(&last).iter().all(|(_, n, w)| n >= w)
                },
            )
        }));
        let got = get(&last);
        eprintln!("{service} {dir} peer {peer}: {got:?}");
        assert!(
            reached.is_ok() && got.iter().all(|(_, n, w)| n == w),
            "{service} {dir} peer {peer}: got (outcome, agent, expected) {got:?}; agent log:\n{}",
            self.agent.log()
        );
        last
    }
}

fn lost(s: &Scrape) -> f64 {
    s.sum("steadfast_events_lost_total", &[("source", "connections")])
}

fn peer(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// N connections established and closed normally, over IPv4 and IPv6: the client's outbound
/// and the server's inbound counts are exact, by peer (the server's address and port for
/// both), and neither is left open.
#[test]
fn established_and_closed_connections_count_exactly_both_ways() {
    let _serial = serial();
    let b = Bench::new("");
    const N: u32 = 25;
    for (addr, port, v6) in [
        (b.ns.ip_b.clone(), 5101, false),
        (b.ns.ip6_b.clone(), 5102, true),
    ] {
        let before = b.agent.scrape();
        let srv = b.server(port, N, "close", v6);
        let cli = b.client(&addr, port, N, "close", 0);
        cli.finish();
        srv.finish();
        let p = peer(&addr, port);
        let n = f64::from(N);
        b.expect_counts(
            &b.client,
            "outbound",
            &p,
            &[("established", n), ("closed", n)],
        );
        let s = b.expect_counts(
            &b.server,
            "inbound",
            &p,
            &[("established", n), ("closed", n)],
        );
        for (svc, dir) in [(&b.client, "outbound"), (&b.server, "inbound")] {
            assert_eq!(
                s.sum(OPEN, &[("service", svc), ("direction", dir)]),
                0.0,
                "{svc} {dir} open"
            );
        }
        assert_eq!(lost(&s), lost(&before), "connection events lost");
        // Every established outbound connect has its duration. (Not checked against a bound:
        // the first IPv6 connect over the fresh veth was seen taking 1.03 s, its SYN
        // retransmitted while the neighbour was being resolved.)
        let dur = [("service", b.client.as_str()), ("peer", p.as_str())];
        assert_eq!(s.sum(&format!("{DURATION}_count"), &dur), n);
        eprintln!(
            "durations: sum {} s, {} of {N} under 1 ms",
            s.sum(&format!("{DURATION}_sum"), &dur),
            s.sum(
                &format!("{DURATION}_bucket"),
                &[dur[0], dur[1], ("le", "0.001")]
            )
        );
    }
}

/// Connects to a port nothing listens on: the server's kernel answers each SYN with a RST,
/// and each is `refused` (the workload checked ECONNREFUSED), over IPv4 and IPv6.
#[test]
fn connects_to_a_closed_port_are_refused() {
    let _serial = serial();
    let b = Bench::new("");
    const N: u32 = 30;
    for (addr, port) in [(b.ns.ip_b.clone(), 5201), (b.ns.ip6_b.clone(), 5202)] {
        b.client(&addr, port, N, "refused", 0).finish();
        b.expect_counts(
            &b.client,
            "outbound",
            &peer(&addr, port),
            &[("refused", f64::from(N))],
        );
    }
}

/// Connects into a black hole (nftables drops every packet to the port in the server's
/// namespace): with `net.ipv4.tcp_syn_retries=1` in the client's namespace the kernel gives up
/// after the SYN and one retransmit (~3 s) with ETIMEDOUT; connects the client abandons
/// (closes after 300 ms, still in SYN_SENT) count as `timeout` too.
#[test]
fn black_holed_connects_time_out() {
    let _serial = serial();
    let b = Bench::new("");
    b.ns.sysctl(&b.ns.a, "net.ipv4.tcp_syn_retries=1");
    b.ns.input_rule(&b.ns.b, "tcp dport { 5301, 5302, 5303 } drop");
    const N: u32 = 8;
    let addr = b.ns.ip_b.clone();
    let mut kernel = b.client(&addr, 5301, N, "timeout", 0);
    let mut abandoned = b.client(&addr, 5302, N, "timeout", 300);
    let mut v6 = b.client(&b.ns.ip6_b, 5303, N, "timeout", 0);
    assert_eq!(kernel.line(), format!("timed_out {N} abandoned 0"));
    assert_eq!(abandoned.line(), format!("timed_out 0 abandoned {N}"));
    assert_eq!(v6.line(), format!("timed_out {N} abandoned 0"));
    for p in [kernel, abandoned, v6] {
        p.finish();
    }
    let n = f64::from(N);
    b.expect_counts(&b.client, "outbound", &peer(&addr, 5301), &[("timeout", n)]);
    b.expect_counts(&b.client, "outbound", &peer(&addr, 5302), &[("timeout", n)]);
    b.expect_counts(
        &b.client,
        "outbound",
        &peer(&b.ns.ip6_b, 5303),
        &[("timeout", n)],
    );
}

/// The server aborts each connection (SO_LINGER 0, so its kernel sends a RST): the client,
/// whose read saw ECONNRESET, counts `reset`; the server that aborted counts `closed` (its
/// side ended without an error of its own).
#[test]
fn a_reset_by_the_peer_counts_reset() {
    let _serial = serial();
    let b = Bench::new("");
    const N: u32 = 20;
    let addr = b.ns.ip_b.clone();
    let srv = b.server(5401, N, "reset", false);
    b.client(&addr, 5401, N, "reset", 0).finish();
    srv.finish();
    let p = peer(&addr, 5401);
    let n = f64::from(N);
    b.expect_counts(
        &b.client,
        "outbound",
        &p,
        &[("established", n), ("reset", n)],
    );
    b.expect_counts(
        &b.server,
        "inbound",
        &p,
        &[("established", n), ("closed", n)],
    );
}

/// N connections held open on both sides: the gauge reads N for the client (outbound) and the
/// server (inbound), then 0 once they are closed.
#[test]
fn open_connections_gauge_follows_held_connections() {
    let _serial = serial();
    let b = Bench::new("");
    const N: u32 = 12;
    let addr = b.ns.ip_b.clone();
    let mut srv = b.server(5501, N, "hold", false);
    let mut cli = b.client(&addr, 5501, N, "hold", 0);
    cli.expect("held");
    srv.expect("held");
    let open =
        |s: &Scrape, svc: &str, dir: &str| s.sum(OPEN, &[("service", svc), ("direction", dir)]);
    let want = f64::from(N);
    let mut s = b.agent.scrape();
    wait_until("N open connections", Duration::from_secs(10), || {
        s = b.agent.scrape();
        open(&s, &b.client, "outbound") >= want && open(&s, &b.server, "inbound") >= want
    });
    eprintln!(
        "held: client outbound {} server inbound {}",
        open(&s, &b.client, "outbound"),
        open(&s, &b.server, "inbound")
    );
    assert_eq!(open(&s, &b.client, "outbound"), want);
    assert_eq!(open(&s, &b.server, "inbound"), want);
    cli.go();
    srv.go();
    cli.finish();
    srv.finish();
    wait_until("no open connections", Duration::from_secs(10), || {
        s = b.agent.scrape();
        open(&s, &b.client, "outbound") == 0.0 && open(&s, &b.server, "inbound") == 0.0
    });
    let p = peer(&addr, 5501);
    b.expect_counts(
        &b.client,
        "outbound",
        &p,
        &[("established", want), ("closed", want)],
    );
}

/// Connect durations through an added delay: this kernel has no netem, so the delay is the
/// kernel's own SYN retransmit timer: nftables drops every other SYN to the port (the first
/// SYN of each sequential connect), and each connect completes on the retransmitted SYN, 1 s
/// (TCP_TIMEOUT_INIT) after the first: every one lands in the (1 s, 2.5 s] bucket.
#[test]
fn connect_duration_through_a_delay_lands_in_its_bucket() {
    let _serial = serial();
    let b = Bench::new("");
    b.ns.input_rule(
        &b.ns.b,
        "tcp dport 5601 tcp flags & (syn|ack) == syn numgen inc mod 2 == 0 drop",
    );
    const N: u32 = 3;
    let addr = b.ns.ip_b.clone();
    let srv = b.server(5601, N, "close", false);
    b.client(&addr, 5601, N, "close", 0).finish();
    srv.finish();
    let p = peer(&addr, 5601);
    let n = f64::from(N);
    let s = b.expect_counts(
        &b.client,
        "outbound",
        &p,
        &[("established", n), ("closed", n)],
    );
    let labels = [("service", b.client.as_str()), ("peer", p.as_str())];
    let bucket = |le: &'static str| {
        let mut l = labels.to_vec();
        l.push(("le", le));
        s.sum(&format!("{DURATION}_bucket"), &l)
    };
    let sum = s.sum(&format!("{DURATION}_sum"), &labels);
    eprintln!(
        "delayed connects: le=0.75 {} le=1 {} le=2.5 {} sum {sum}",
        bucket("0.75"),
        bucket("1"),
        bucket("2.5")
    );
    assert_eq!(s.sum(&format!("{DURATION}_count"), &labels), n);
    // Prometheus text writes the bound as `1`: the series must exist for the check to mean
    // anything.
    assert!(s.0.contains(&format!("peer=\"{p}\",le=\"1\"")));
    assert_eq!(bucket("1"), 0.0, "a delayed connect took 1 s or less");
    assert_eq!(bucket("2.5"), n);
    assert!(sum > n && sum < n * 1.5, "sum of durations {sum}");
}

/// `probes.connections.ports`: only connections to listed ports count. The retransmit probe
/// is off here: the connection probe runs on its own (same program, its own switch).
#[test]
fn the_port_allow_list_leaves_other_ports_out() {
    let _serial = serial();
    let b = Bench::new("probes:\n  tcp:\n    enabled: false\n  connections:\n    ports: [5701]\n");
    let addr = b.ns.ip_b.clone();
    b.client(&addr, 5702, 5, "refused", 0).finish();
    b.client(&addr, 5701, 5, "refused", 0).finish();
    b.expect_counts(
        &b.client,
        "outbound",
        &peer(&addr, 5701),
        &[("refused", 5.0)],
    );
    let s = b.agent.scrape();
    assert_eq!(
        b.count(&s, &b.client, "outbound", None, "refused"),
        5.0,
        "port 5702 is not in the allow-list"
    );
    assert!(s
        .0
        .lines()
        .any(|l| l == "steadfast_probe_attached{probe=\"connections\"} 1"));
    assert!(!s.0.contains("steadfast_probe_attached{probe=\"tcp\"}"));
}

/// 10,000 connects to a closed port as fast as one client makes them (~20 µs each), with the
/// default ring buffer and with a one-page one (46 events; the reader is woken only when it is
/// full). Nothing may be counted that did not happen, and every connect is either counted
/// `refused` or lost and counted as lost (the lost counter is host-wide: other connections'
/// losses add to it).
#[test]
fn ten_thousand_refused_connects_are_counted_or_counted_lost() {
    let _serial = serial();
    for (config, tiny) in [
        ("", false),
        (
            "probes:\n  connections:\n    ring_buffer_bytes: 4096\n    wakeup_min_bytes: 4096\n",
            true,
        ),
    ] {
        let b = Bench::new(config);
        const N: u32 = 10_000;
        let addr = b.ns.ip_b.clone();
        let before = b.agent.scrape();
        b.client(&addr, 5801, N, "refused", 0).finish();
        let p = peer(&addr, 5801);
        let n = f64::from(N);
        let mut s = b.agent.scrape();
        wait_until("every event read", Duration::from_secs(15), || {
            s = b.agent.scrape();
            b.count(&s, &b.client, "outbound", Some(&p), "refused") + lost(&s) - lost(&before) >= n
        });
        let refused = b.count(&s, &b.client, "outbound", Some(&p), "refused");
        let lost = lost(&s) - lost(&before);
        eprintln!("{N} refused connects (tiny ring: {tiny}): counted {refused}, lost {lost}");
        assert!(refused <= n, "{refused} refused counted for {N}");
        assert!(refused > 0.0);
        if tiny {
            assert!(lost > 0.0, "a one-page ring lost nothing");
        }
        for o in ["established", "timeout", "reset", "closed"] {
            assert_eq!(b.count(&s, &b.client, "outbound", None, o), 0.0, "{o}");
        }
    }
}

/// Connections made before the agent started: their first state was not seen, so their end is
/// not counted either, and the open gauge does not go below zero; a connection made after
/// the agent started, by the same processes, counts as usual.
#[test]
fn connections_older_than_the_agent_are_not_counted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let client = unique_name("sfco");
    let server = unique_name("sfso");
    let client_bin = build_workload("conn_mix", dir.path(), &client);
    let server_bin = build_workload("conn_mix", dir.path(), &server);
    const N: u32 = 5;
    let (port, n) = ("5901".to_string(), N.to_string());
    let mut srv = ns.spawn(&ns.b, &server_bin, &["server", &port, &n, "hold"]);
    srv.expect("ready");
    let mut cli = ns.spawn(&ns.a, &client_bin, &["client", &ns.ip_b, &port, &n, "hold"]);
    cli.expect("held");
    srv.expect("held");
    let agent = Agent::start("");
    cli.go();
    srv.go();
    cli.finish();
    srv.finish();
    // Then one new connection from a new client process under the same name.
    let mut srv = ns.spawn(&ns.b, &server_bin, &["server", "5902", "1", "close"]);
    srv.expect("ready");
    ns.spawn(
        &ns.a,
        &client_bin,
        &["client", &ns.ip_b, "5902", "1", "close"],
    )
    .finish();
    srv.finish();
    let p = peer(&ns.ip_b, 5902);
    let mut s = agent.scrape();
    wait_until("the new connection's end", Duration::from_secs(15), || {
        s = agent.scrape();
        s.sum(
            CONNS,
            &[("service", &client), ("peer", &p), ("outcome", "closed")],
        ) >= 1.0
    });
    let old = peer(&ns.ip_b, 5901);
    for svc in [&client, &server] {
        assert_eq!(
            s.sum(CONNS, &[("service", svc), ("peer", &old)]),
            0.0,
            "{svc}: a connection older than the agent was counted"
        );
        assert_eq!(s.sum(OPEN, &[("service", svc)]), 0.0, "{svc} open");
    }
    for (svc, dir) in [(&client, "outbound"), (&server, "inbound")] {
        for o in ["established", "closed"] {
            let l = [
                ("service", svc.as_str()),
                ("direction", dir),
                ("peer", &p),
                ("outcome", o),
            ];
            assert_eq!(s.sum(CONNS, &l), 1.0, "{svc} {dir} {o}");
        }
    }
}

//! HTTP/1.x request metrics against ground truth: a real Python `http.server` answers a known
//! mix (200s, 503s, slow 202s after 300 ms, HEADs) over one keep-alive connection from
//! Python's `http.client` and over fresh connections from curl, and garbage, an HTTP/2
//! preface and a request cut off mid-line arrive on the same port. The server's and each
//! client's series must equal the mix exactly, by method and status code; the slow requests
//! must sit in the bucket that holds 300 ms; nothing else may be counted. The same over IPv6
//! and against Go's net/http; the edge cases (pipelining, vectored and message I/O, sendfile, chunked,
//! byte-per-write answers, `100 Continue`, a request cut off mid-headers); hostile traffic
//! against small bounds; the probe with the syscall probe off, and no `syscalls:*`
//! tracepoint attached. Needs root, python3, go and curl.
//!
//! Every process is started through a symlink with a unique name, so its comm (and service)
//! is its own: the agent sees every process on the host, other tests' included.

mod support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use support::{
    build_go,
    http_server::{alias, start_server},
    unique_name, wait_until, Agent, Scrape,
};

const SERVER: &str = "steadfast_http_server_request_duration_seconds";
const CLIENT: &str = "steadfast_http_client_request_duration_seconds";

fn workload() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/http_mix.py")
}

fn count(s: &Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
    s.sum(&format!("{family}_count"), labels)
}

fn bucket(s: &Scrape, family: &str, labels: &[(&str, &str)], le: &str) -> f64 {
    let mut l = labels.to_vec();
    l.push(("le", le));
    s.sum(&format!("{family}_bucket"), &l)
}

fn curl(bin: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
}

/// Sends `bytes` on a fresh connection and reads whatever comes back until the server closes.
fn raw(port: u16, bytes: &[u8], read: bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    if read {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// A fresh agent and the Python workload's server listening on `host`, after the workload's
/// client sent its mix (`n_ok` 200s, `n_fail` 503s, `n_slow` slow 202s) over one keep-alive
/// connection. Process names: `{prefix}srv`, `{prefix}cli` and, for the caller's curl,
/// `{prefix}curl`.
struct PythonMix {
    agent: Agent,
    dir: tempfile::TempDir,
    server: support::http_server::Server,
    port: String,
    srv: String,
    cli: String,
    crl: String,
}

fn python_mix(prefix: &str, host: &str, n_ok: u32, n_fail: u32, n_slow: u32) -> PythonMix {
    let agent = Agent::start("");
    let dir = tempfile::tempdir().unwrap();
    let srv = unique_name(&format!("{prefix}srv"));
    let cli = unique_name(&format!("{prefix}cli"));
    let crl = unique_name(&format!("{prefix}curl"));
    let mut cmd = Command::new(alias(dir.path(), "/usr/bin/python3", &srv));
    cmd.arg(workload()).env("HTTP_MIX_HOST", host);
    let server = start_server(cmd, dir.path());
    let port = server.port.to_string();
    let out = Command::new(alias(dir.path(), "/usr/bin/python3", &cli))
        .arg(workload())
        .args(["client", &port])
        .args([n_ok, n_fail, n_slow].map(|n| n.to_string()))
        .env("HTTP_MIX_HOST", host)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "{out:?}"
    );
    PythonMix {
        agent,
        dir,
        server,
        port,
        srv,
        cli,
        crl,
    }
}

#[test]
fn python_server_and_clients_match_the_mix() {
    // Keep-alive: one connection, every request on it.
    let (n_ok, n_fail, n_slow) = (12u32, 5u32, 3u32);
    let m = python_mix("http", "127.0.0.1", n_ok, n_fail, n_slow);
    let (agent, port, srv, cli, crl) = (&m.agent, &m.port, &m.srv, &m.cli, &m.crl);
    let base = format!("http://127.0.0.1:{port}");

    // Fresh connections: one curl process per request.
    let curl_bin = alias(m.dir.path(), "/usr/bin/curl", crl);
    let (c_ok, c_fail, c_slow, c_head) = (4u32, 2u32, 1u32, 2u32);
    for _ in 0..c_ok {
        curl(&curl_bin, &[&format!("{base}/ok")]);
    }
    for _ in 0..c_fail {
        curl(&curl_bin, &[&format!("{base}/fail")]);
    }
    for _ in 0..c_slow {
        curl(&curl_bin, &[&format!("{base}/slow")]);
    }
    for _ in 0..c_head {
        curl(&curl_bin, &["-I", &format!("{base}/ok")]);
    }

    // Not HTTP/1 requests: garbage (answered 400 by the server), binary bytes, the HTTP/2
    // preface (answered 505).
    raw(m.server.port, b"hello there, not http\r\n\r\n", true);
    raw(
        m.server.port,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage",
        false,
    );
    raw(m.server.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true);
    // A client that closes before the answer: unanswered on its side; the server still
    // writes its (slow) answer into the closed connection, which is a request served.
    raw(
        m.server.port,
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    let c_slow_server = c_slow + 1;
    // A request written one byte per write (Nagle off), its answer read one byte per read.
    {
        let mut s = TcpStream::connect(("127.0.0.1", m.server.port)).unwrap();
        s.set_nodelay(true).unwrap();
        for b in b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" {
            s.write_all(&[*b]).unwrap();
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = s.read(&mut byte) {
            answer.push(byte[0]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }
    let n_bytewise = 1u32;

    let server_total =
        f64::from(n_ok + n_fail + n_slow + c_ok + c_fail + c_slow_server + c_head + n_bytewise);
    let srv_l = [("service", srv.as_str())];
    let mut scrape = agent.scrape();
    wait_until("the server's requests", Duration::from_secs(60), || {
        scrape = agent.scrape();
        count(&scrape, SERVER, &srv_l) >= server_total
            && count(&scrape, CLIENT, &[("service", crl.as_str())])
                >= f64::from(c_ok + c_fail + c_slow + c_head)
    });
    // Give stragglers (anything wrongly counted after the expected ones) two collections.
    agent.await_collections(2);
    let s = agent.scrape();

    // Server side, exactly the mix.
    let get200 = [
        ("service", srv.as_str()),
        ("method", "GET"),
        ("status_code", "200"),
    ];
    let get503 = [
        ("service", srv.as_str()),
        ("method", "GET"),
        ("status_code", "503"),
    ];
    let head200 = [
        ("service", srv.as_str()),
        ("method", "HEAD"),
        ("status_code", "200"),
    ];
    let get202 = [
        ("service", srv.as_str()),
        ("method", "GET"),
        ("status_code", "202"),
    ];
    assert_eq!(
        count(&s, SERVER, &get200),
        f64::from(n_ok + c_ok + n_bytewise),
        "{}",
        s.0
    );
    assert_eq!(count(&s, SERVER, &get503), f64::from(n_fail + c_fail));
    assert_eq!(count(&s, SERVER, &head200), f64::from(c_head));
    assert_eq!(
        count(&s, SERVER, &get202),
        f64::from(n_slow + c_slow_server)
    );
    assert_eq!(
        count(&s, SERVER, &srv_l),
        server_total,
        "nothing else counted"
    );
    // The slow ones (300 ms, answered 202) land in the bucket (0.25, 0.5].
    assert_eq!(bucket(&s, SERVER, &get202, "0.25"), 0.0);
    assert_eq!(
        bucket(&s, SERVER, &get202, "0.5"),
        f64::from(n_slow + c_slow_server)
    );

    // Client side: Python's keep-alive connection, with its peer.
    let peer = format!("127.0.0.1:{port}");
    let cli_get = |status| {
        [
            ("service", cli.as_str()),
            ("peer", peer.as_str()),
            ("method", "GET"),
            ("status_code", status),
        ]
    };
    assert_eq!(count(&s, CLIENT, &cli_get("200")), f64::from(n_ok));
    assert_eq!(count(&s, CLIENT, &cli_get("202")), f64::from(n_slow));
    assert_eq!(count(&s, CLIENT, &cli_get("503")), f64::from(n_fail));
    assert_eq!(
        count(&s, CLIENT, &[("service", cli.as_str())]),
        f64::from(n_ok + n_slow + n_fail)
    );
    assert_eq!(bucket(&s, CLIENT, &cli_get("202"), "0.25"), 0.0);
    assert_eq!(
        bucket(&s, CLIENT, &cli_get("202"), "0.5"),
        f64::from(n_slow)
    );
    // curl, one connection each.
    let crl_l = |method, status| {
        [
            ("service", crl.as_str()),
            ("peer", peer.as_str()),
            ("method", method),
            ("status_code", status),
        ]
    };
    assert_eq!(count(&s, CLIENT, &crl_l("GET", "200")), f64::from(c_ok));
    assert_eq!(count(&s, CLIENT, &crl_l("GET", "202")), f64::from(c_slow));
    assert_eq!(count(&s, CLIENT, &crl_l("GET", "503")), f64::from(c_fail));
    assert_eq!(count(&s, CLIENT, &crl_l("HEAD", "200")), f64::from(c_head));
    // The test's own raw connections: one request, closed before its answer (its scrapes
    // of the agents are requests answered in full), and the byte-by-byte one.
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    let me = me.trim();
    assert_eq!(
        count(
            &s,
            CLIENT,
            &[
                ("service", me),
                ("peer", peer.as_str()),
                ("status_code", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.sum(
            "steadfast_http_requests_unanswered_total",
            &[("service", me), ("side", "client")]
        ),
        1.0
    );
    assert_eq!(
        s.sum("steadfast_events_lost_total", &[("source", "http")]),
        0.0
    );
}

/// The same over IPv6 (`::1`): Python's server, Python's client on one keep-alive connection
/// and curl on fresh ones. Every request is counted on both sides, and the client's `peer` is
/// the bracketed address.
#[test]
fn ipv6_requests_match_exactly() {
    let (n_ok, n_fail) = (7u32, 3u32);
    let m = python_mix("http6", "::1", n_ok, n_fail, 0);
    let (agent, port) = (&m.agent, &m.port);
    let curl_bin = alias(m.dir.path(), "/usr/bin/curl", &m.crl);
    let c_ok = 2u32;
    for _ in 0..c_ok {
        curl(&curl_bin, &["-g", &format!("http://[::1]:{port}/ok")]);
    }

    let total = f64::from(n_ok + n_fail + c_ok);
    let srv_l = [("service", m.srv.as_str())];
    wait_until("the IPv6 requests", Duration::from_secs(60), || {
        let s = agent.scrape();
        count(&s, SERVER, &srv_l) >= total
            && count(&s, CLIENT, &[("service", m.crl.as_str())]) >= f64::from(c_ok)
    });
    agent.await_collections(2);
    let s = agent.scrape();
    let server_get = |status: &str| {
        count(
            &s,
            SERVER,
            &[
                ("service", m.srv.as_str()),
                ("method", "GET"),
                ("status_code", status),
            ],
        )
    };
    assert_eq!(server_get("200"), f64::from(n_ok + c_ok), "{}", s.0);
    assert_eq!(server_get("503"), f64::from(n_fail));
    assert_eq!(count(&s, SERVER, &srv_l), total, "nothing else counted");
    let peer = format!("[::1]:{port}");
    let client_get = |service: &str, status: &str| {
        count(
            &s,
            CLIENT,
            &[
                ("service", service),
                ("peer", peer.as_str()),
                ("method", "GET"),
                ("status_code", status),
            ],
        )
    };
    assert_eq!(client_get(&m.cli, "200"), f64::from(n_ok), "{}", s.0);
    assert_eq!(client_get(&m.cli, "503"), f64::from(n_fail));
    assert_eq!(client_get(&m.crl, "200"), f64::from(c_ok));
    assert_eq!(
        s.sum("steadfast_events_lost_total", &[("source", "http")]),
        0.0
    );
}

/// Go's net/http on both ends: the server reads and writes with plain `read`/`write`, the
/// client too, over one keep-alive connection.
#[test]
fn go_server_and_client_match_the_mix() {
    let agent = Agent::start("");
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go("http_mix", dir.path(), "http_mix", &[]);
    let srv = unique_name("gohttpsrv");
    let cli = unique_name("gohttpcli");
    let server = start_server(
        Command::new(alias(dir.path(), bin.to_str().unwrap(), &srv)),
        dir.path(),
    );
    let port = server.port.to_string();
    let (n_ok, n_fail, n_slow) = (9u32, 4u32, 2u32);
    let out = Command::new(alias(dir.path(), bin.to_str().unwrap(), &cli))
        .args(["client", &port])
        .args([n_ok, n_fail, n_slow].map(|n| n.to_string()))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "{out:?}"
    );
    raw(server.port, b"GARBAGE\r\n\r\n", true);

    let total = f64::from(n_ok + n_fail + n_slow);
    wait_until("the Go requests", Duration::from_secs(60), || {
        let s = agent.scrape();
        count(&s, SERVER, &[("service", srv.as_str())]) >= total
            && count(&s, CLIENT, &[("service", cli.as_str())]) >= total
    });
    agent.await_collections(2);
    let s = agent.scrape();
    let get = |service: &str, status: &'static str| -> f64 {
        count(
            &s,
            if service == srv { SERVER } else { CLIENT },
            &[
                ("service", service),
                ("method", "GET"),
                ("status_code", status),
            ],
        )
    };
    assert_eq!(get(&srv, "200"), f64::from(n_ok), "{}", s.0);
    assert_eq!(get(&srv, "202"), f64::from(n_slow));
    assert_eq!(get(&srv, "503"), f64::from(n_fail));
    assert_eq!(count(&s, SERVER, &[("service", srv.as_str())]), total);
    assert_eq!(get(&cli, "200"), f64::from(n_ok));
    assert_eq!(get(&cli, "202"), f64::from(n_slow));
    assert_eq!(get(&cli, "503"), f64::from(n_fail));
    assert_eq!(count(&s, CLIENT, &[("service", cli.as_str())]), total);
    let peer = format!("127.0.0.1:{port}");
    // The slow ones (300 ms, answered 202) land in the bucket (0.25, 0.5].
    let slow = [
        ("service", srv.as_str()),
        ("method", "GET"),
        ("status_code", "202"),
    ];
    assert_eq!(bucket(&s, SERVER, &slow, "0.25"), 0.0);
    assert_eq!(bucket(&s, SERVER, &slow, "0.5"), f64::from(n_slow));
    let cslow = [
        ("service", cli.as_str()),
        ("peer", peer.as_str()),
        ("status_code", "202"),
    ];
    assert_eq!(bucket(&s, CLIENT, &cslow, "0.25"), 0.0);
    assert_eq!(bucket(&s, CLIENT, &cslow, "0.5"), f64::from(n_slow));

    // Hostile traffic: 10,000 connections opened and dropped without a byte, then a 1 MiB
    // header (net/http accepts up to 1 MiB + 4 KiB of header: a request like any other).
    let mix = s;
    for _ in 0..10_000 {
        drop(TcpStream::connect(("127.0.0.1", server.port)).unwrap());
    }
    let mut big = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(big.len() + (1 << 20), b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let mut c = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // The server answers (and closes) before it read it all: a failed write is expected.
    let _ = c.write_all(&big);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let status = String::from_utf8_lossy(&answer[9..12]).to_string();
    drop(c);
    let mut s = agent.scrape();
    wait_until(
        "the 431 and the dropped connections",
        Duration::from_secs(30),
        || {
            s = agent.scrape();
            count(&s, SERVER, &[("service", srv.as_str())]) > total
                && s.value("steadfast_http_connections_tracked", &[])
                    .unwrap_or(f64::MAX)
                    < 1000.0
        },
    );
    let big = [
        ("service", srv.as_str()),
        ("method", "GET"),
        ("status_code", status.as_str()),
    ];
    assert_eq!(
        count(&s, SERVER, &big),
        count(&mix, SERVER, &big) + 1.0,
        "{}",
        s.0
    );
    assert_eq!(count(&s, SERVER, &[("service", srv.as_str())]), total + 1.0);
    assert_eq!(
        s.sum("steadfast_http_connections_evicted_total", &[]),
        0.0,
        "closed connections leave, they are not evicted"
    );
    assert_eq!(
        s.sum("steadfast_events_lost_total", &[("source", "http")]),
        0.0
    );
    drop(server);
}

fn edge_workload() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/http_edge.py")
}

/// Runs `http_edge.py MODE PORT ARGS...` as process `name`; returns the N of its "done N".
fn edge_client(dir: &Path, name: &str, mode: &str, port: u16, args: &[&str]) -> u32 {
    let out = Command::new(alias(dir, "/usr/bin/python3", name))
        .arg(edge_workload())
        .arg(mode)
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{mode}: {out:?}");
    stdout
        .trim()
        .strip_prefix("done ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{mode}: {stdout}"))
}

/// The shapes a byte-level probe gets wrong, against real clients and a real server
/// (`tests/workloads/http_edge.py`): pipelined requests (five in one write), writev/readv and
/// sendmsg/recvmsg on both ends, a body sent by sendfile, chunked bodies (one with a status
/// line inside), an answer written one byte per write, `100 Continue` before the final status,
/// and a request cut off mid-headers whose connection closes (client side: the cutting
/// client; server side: the test itself accepts it and closes without answering). Each series
/// must equal what the processes did, exactly.
#[test]
fn edge_cases_match_exactly() {
    let agent = Agent::start("");
    let dir = tempfile::tempdir().unwrap();
    let srv = unique_name("edgesrv");
    let mut cmd = Command::new(alias(dir.path(), "/usr/bin/python3", &srv));
    cmd.arg(edge_workload());
    let server = start_server(cmd, dir.path());
    let port = server.port;
    let base = format!("http://127.0.0.1:{port}");

    let (pipe, vec, msg, cut, crl) = (
        unique_name("edgepipe"),
        unique_name("edgevec"),
        unique_name("edgemsg"),
        unique_name("edgecut"),
        unique_name("edgecurl"),
    );
    let n_pipe = 5u32;
    assert_eq!(
        edge_client(dir.path(), &pipe, "pipeline", port, &[&n_pipe.to_string()]),
        n_pipe
    );
    let n_vec = 4u32;
    assert_eq!(
        edge_client(dir.path(), &vec, "vectored", port, &[&n_vec.to_string()]),
        n_vec
    );
    assert_eq!(
        edge_client(dir.path(), &msg, "msg", port, &[&n_vec.to_string()]),
        n_vec
    );
    // curl, a fresh connection each: chunked, sendfile, byte-per-write and one-sendmsg
    // answers, and uploads that wait for `100 Continue`.
    let curl_bin = alias(dir.path(), "/usr/bin/curl", &crl);
    let paths = ["/chunked", "/file", "/bytes", "/vec"];
    let per_path = 2u32;
    for path in paths {
        for _ in 0..per_path {
            curl(&curl_bin, &[&format!("{base}{path}")]);
        }
    }
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'b'; 3000]).unwrap();
    let n_upload = 2u32;
    for _ in 0..n_upload {
        curl(
            &curl_bin,
            &[
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                &format!("@{}", body.display()),
                &format!("{base}/upload"),
            ],
        );
    }
    // A request cut off mid-headers: the test accepts it, reads it and closes unanswered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cut_port = listener.local_addr().unwrap().port();
    let cutter = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        let cut = cut.clone();
        move || edge_client(&dir, &cut, "cut", cut_port, &[])
    });
    {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"GET /ok HTTP/1.1\r\nHo");
    }
    assert_eq!(cutter.join().unwrap(), 0);

    let get200 = n_pipe + 2 * n_vec + per_path * paths.len() as u32;
    let server_total = f64::from(get200 + n_upload);
    let srv_l = [("service", srv.as_str())];
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    let me = me.trim().to_string();
    let unanswered = |s: &Scrape, service: &str, side: &str| {
        s.sum(
            "steadfast_http_requests_unanswered_total",
            &[("service", service), ("side", side)],
        )
    };
    let mut s = agent.scrape();
    wait_until("the edge requests", Duration::from_secs(60), || {
        s = agent.scrape();
        count(&s, SERVER, &srv_l) >= server_total
            && count(&s, CLIENT, &[("service", crl.as_str())])
                >= f64::from(per_path * paths.len() as u32 + n_upload)
            && unanswered(&s, &me, "server") >= 1.0
    });
    // Give stragglers (anything wrongly counted after the expected ones) two collections.
    agent.await_collections(2);
    let s = agent.scrape();

    let series = |service: &str, method: &'static str, status: &'static str| {
        let family = if service == srv { SERVER } else { CLIENT };
        count(
            &s,
            family,
            &[
                ("service", service),
                ("method", method),
                ("status_code", status),
            ],
        )
    };
    // Server: one request per answer, the pipelined ones included; no 100.
    assert_eq!(series(&srv, "GET", "200"), f64::from(get200), "{}", s.0);
    assert_eq!(series(&srv, "POST", "201"), f64::from(n_upload));
    assert_eq!(series(&srv, "POST", "100"), 0.0);
    assert_eq!(count(&s, SERVER, &srv_l), server_total, "nothing else");
    assert_eq!(unanswered(&s, &srv, "server"), 0.0);
    // Clients: writev/readv and sendmsg/recvmsg exactly; curl by method.
    assert_eq!(series(&vec, "GET", "200"), f64::from(n_vec));
    assert_eq!(
        count(&s, CLIENT, &[("service", vec.as_str())]),
        f64::from(n_vec)
    );
    assert_eq!(series(&msg, "GET", "200"), f64::from(n_vec));
    assert_eq!(
        count(&s, CLIENT, &[("service", msg.as_str())]),
        f64::from(n_vec)
    );
    assert_eq!(
        series(&crl, "GET", "200"),
        f64::from(per_path * paths.len() as u32)
    );
    assert_eq!(series(&crl, "POST", "201"), f64::from(n_upload));
    assert_eq!(
        count(&s, CLIENT, &[("service", crl.as_str())]),
        f64::from(per_path * paths.len() as u32 + n_upload)
    );
    // The pipelining client reads several answers per read: only those whose status line
    // starts a read are seen (documented); never more than it sent.
    let piped = count(&s, CLIENT, &[("service", pipe.as_str())]);
    assert!(
        (1.0..=f64::from(n_pipe)).contains(&piped),
        "pipelining client counted {piped}"
    );
    // The cut request: unanswered on both ends, counted as a request on neither.
    assert_eq!(unanswered(&s, &cut, "client"), 1.0);
    assert_eq!(count(&s, CLIENT, &[("service", cut.as_str())]), 0.0);
    assert_eq!(unanswered(&s, &me, "server"), 1.0);
    assert_eq!(count(&s, SERVER, &[("service", me.as_str())]), 0.0);
    assert_eq!(
        s.sum("steadfast_events_lost_total", &[("source", "http")]),
        0.0
    );
    drop(server);
}

/// Hostile traffic against small bounds (`max_connections: 1024`, the least allowed, and a
/// 16 KiB event ring): 1,500 connections held open at once (3,000 ends), each carrying a
/// request, then 10,000 opened and dropped, then a 1 MiB header. The agent stays up, the connections it tracks never exceed the bound
/// (the rest are evictions, counted), ring overflows are counted as losses, and afterwards a
/// known mix is counted exactly again.
#[test]
fn hostile_traffic_stays_bounded_and_losses_are_counted() {
    let cap = 1024.0;
    let mut agent = Agent::start(
        "probes:\n  http:\n    max_connections: 1024\n    ring_buffer_bytes: 16384\n    \
         wakeup_min_bytes: 4096\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go("http_mix", dir.path(), "http_mix", &[]);
    let srv = unique_name("hostsrv");
    let server = start_server(
        Command::new(alias(dir.path(), bin.to_str().unwrap(), &srv)),
        dir.path(),
    );
    let port = server.port;
    let tracked_ok = |s: &Scrape| {
        let t = s
            .value("steadfast_http_connections_tracked", &[])
            .expect("steadfast_http_connections_tracked");
        assert!(t <= cap, "{t} connections tracked, bound {cap}");
    };

    let mut held = Vec::new();
    for i in 0..1_500 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        held.push(c);
        if i % 300 == 299 {
            tracked_ok(&agent.scrape());
        }
    }
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    tracked_ok(&agent.scrape());
    drop(held);
    for i in 0..10_000 {
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
        if i % 2_000 == 1_999 {
            tracked_ok(&agent.scrape());
        }
    }
    let mut big = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(big.len() + (1 << 20), b'a');
    big.extend_from_slice(b"\r\n\r\n");
    {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = c.write_all(&big);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 "));
    }
    assert!(agent.is_running(), "{}", agent.log());
    let s = agent.scrape();
    tracked_ok(&s);
    assert!(
        s.sum("steadfast_events_lost_total", &[("source", "http")]) > 0.0,
        "a 16 KiB ring cannot hold the storm: losses must show\n{}",
        s.0
    );
    assert!(
        s.sum("steadfast_http_connections_evicted_total", &[]) > 0.0,
        "3,000 connection ends open at once over a bound of 1,024: evictions must show"
    );

    // Afterwards: a known mix on one keep-alive connection is counted exactly.
    let srv_l = [("service", srv.as_str())];
    let before = count(&agent.scrape(), SERVER, &srv_l);
    let lost_before = agent
        .scrape()
        .sum("steadfast_events_lost_total", &[("source", "http")]);
    let cli = unique_name("hostcli");
    let out = Command::new(alias(dir.path(), bin.to_str().unwrap(), &cli))
        .args(["client", &port.to_string(), "6", "2", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut s = agent.scrape();
    wait_until("the mix after the storm", Duration::from_secs(60), || {
        s = agent.scrape();
        count(&s, SERVER, &srv_l) >= before + 8.0
    });
    agent.await_collections(2);
    let s = agent.scrape();
    if s.sum("steadfast_events_lost_total", &[("source", "http")]) == lost_before {
        assert_eq!(count(&s, SERVER, &srv_l), before + 8.0, "{}", s.0);
        assert_eq!(count(&s, CLIENT, &[("service", cli.as_str())]), 8.0);
    } else {
        eprintln!("events were lost during the mix after the storm: its exact check is skipped");
    }
    tracked_ok(&s);
    drop(server);
}

/// What the agent holds: BPF links of raw/BTF tracepoints only, no perf event (a
/// `syscalls:*` tracepoint is attached through one, and turns on the kernel's per-syscall
/// dispatcher for every syscall on the host).
fn assert_no_perf_events(agent: &Agent) {
    let pid = agent.pid();
    let mut links = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        assert!(
            !target.contains("perf_event"),
            "the agent holds a perf event ({target})"
        );
        if target.contains("bpf_link") || target.contains("bpf-link") {
            links += 1;
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            assert!(
                !info.contains("perf"),
                "a perf-event link (a classic tracepoint): {info}"
            );
        }
    }
    assert!(links > 0, "no BPF link found in /proc/{pid}/fd");
}

/// The HTTP probe with the syscall probe off: the raw syscall programs are attached for the
/// HTTP part only (no syscall series), the mix is exact, and neither this config nor the
/// default one attaches a per-syscall (`syscalls:*`) tracepoint.
#[test]
fn http_without_the_syscall_probe_and_without_syscall_tracepoints() {
    assert_no_perf_events(&Agent::start(""));
    let agent = Agent::start("probes:\n  syscalls:\n    enabled: false\n");
    assert_no_perf_events(&agent);
    let dir = tempfile::tempdir().unwrap();
    let srv = unique_name("nosyssrv");
    let cli = unique_name("nosyscli");
    let mut cmd = Command::new(alias(dir.path(), "/usr/bin/python3", &srv));
    cmd.arg(workload());
    let server = start_server(cmd, dir.path());
    let port = server.port.to_string();
    let (n_ok, n_fail) = (7u32, 3u32);
    let out = Command::new(alias(dir.path(), "/usr/bin/python3", &cli))
        .arg(workload())
        .args(["client", &port])
        .args([n_ok, n_fail, 0].map(|n| n.to_string()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let total = f64::from(n_ok + n_fail);
    let srv_l = [("service", srv.as_str())];
    let cli_l = [("service", cli.as_str())];
    let mut s = agent.scrape();
    wait_until("the requests", Duration::from_secs(60), || {
        s = agent.scrape();
        count(&s, SERVER, &srv_l) >= total && count(&s, CLIENT, &cli_l) >= total
    });
    agent.await_collections(2);
    let s = agent.scrape();
    for (family, l) in [(SERVER, srv.as_str()), (CLIENT, cli.as_str())] {
        let get = |status| {
            count(
                &s,
                family,
                &[("service", l), ("method", "GET"), ("status_code", status)],
            )
        };
        assert_eq!(get("200"), f64::from(n_ok), "{}", s.0);
        assert_eq!(get("503"), f64::from(n_fail));
        assert_eq!(count(&s, family, &[("service", l)]), total);
    }
    assert_eq!(
        s.sum("steadfast_syscall_duration_seconds_count", &[]),
        0.0,
        "the syscall probe is off"
    );
    drop(server);
}

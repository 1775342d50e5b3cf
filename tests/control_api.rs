//! The local API over the unix socket and the loopback listener: snapshots with an index,
//! blocking queries, server-sent events, overrides, clear 4xx answers, the socket's group
//! permission, signal files, and the built-in host-protection signal. Needs root.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    time::{Duration, Instant},
};

use support::{request, Agent, Endpoint};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn endpoints(agent: &Agent) -> [Endpoint; 2] {
    [
        Endpoint::Unix(agent.api_socket()),
        Endpoint::Tcp(agent.addr),
    ]
}

#[test]
fn snapshots_and_the_host_protection_signal() {
    let agent = Agent::start("");
    for to in endpoints(&agent) {
        let (status, body) = request(&to, "GET", "/v1/signals", b"").unwrap();
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert!(v["index"].as_u64().unwrap() >= 1);
        let level = v["signals"]["host_protection"]["level"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&level));
        let (status, body) = request(&to, "GET", "/v1/breakers", b"").unwrap();
        assert_eq!(status, 200);
        assert!(json(&body)["breakers"].is_object());
    }
    // The signal's file holds the same single number.
    let file = agent.dir.path().join("signals/host_protection");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !file.exists() {
        assert!(Instant::now() < deadline, "no signal file");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let v: f64 = text.trim().parse().unwrap();
    assert!((0.0..=1.0).contains(&v) && text.ends_with('\n'), "{text:?}");
    // And the metrics.
    let s = agent.scrape();
    assert!(s
        .value("steadfast_signal_level", &[("signal", "host_protection")])
        .is_some());
    assert!(s.value("steadfast_control_snapshot_index", &[]).unwrap() >= 1.0);
}

/// An agent whose snapshot index moves only when a client changes something (host
/// protection off), and its index now.
fn quiet_agent() -> (Agent, u64) {
    let agent = Agent::start(&format!(
        "control:\n  api_socket: {d}/api.sock\n  signals_dir: {d}/signals\n  state_dir: {d}/state\n  host_protection:\n    enabled: false\n",
        d = agent_dir_placeholder()
    ));
    let to = Endpoint::Unix(agent.api_socket());
    let (_, body) = request(&to, "GET", "/v1/snapshot", b"").unwrap();
    let index = json(&body)["index"].as_u64().unwrap();
    (agent, index)
}

#[test]
fn a_blocking_query_waits_for_a_newer_index_or_its_deadline() {
    // Host protection off: nothing changes by itself, so the query must wait it out.
    let (agent, index) = quiet_agent();
    let to = Endpoint::Unix(agent.api_socket());

    let t = Instant::now();
    let (status, body) = request(
        &to,
        "GET",
        &format!("/v1/snapshot?index={index}&wait=1500ms"),
        b"",
    )
    .unwrap();
    let waited = t.elapsed();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["index"].as_u64(), Some(index));
    assert!(
        waited >= Duration::from_millis(1400),
        "returned after {waited:?}"
    );

    // An older index answers at once.
    let t = Instant::now();
    let (_, body) = request(&to, "GET", "/v1/snapshot?index=0&wait=30s", b"").unwrap();
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(json(&body)["index"].as_u64(), Some(index));
}

/// SIGTERM while clients hold blocking queries and an event stream on both listeners: each
/// gets its answer (the control's last snapshot) and the end of its connection, and the agent
/// exits 0 without waiting for the queries' deadline.
#[test]
fn held_queries_and_streams_end_when_the_agent_stops() {
    use std::{io::Read, os::unix::net::UnixStream};
    let (agent, index) = quiet_agent();
    // The agent's sockets by inode (not its other descriptors: collection opens /proc files).
    // New ones are the held connections: one still closing from an earlier request is old.
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with("socket:"))
            .collect::<std::collections::HashSet<_>>()
    };
    let before = sockets();
    let query = format!("GET /v1/snapshot?index={index}&wait=300s HTTP/1.1\r\nHost: test\r\n\r\n");
    let stream = "GET /v1/watch HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut held: Vec<(&str, Box<dyn Read>)> = Vec::new();
    for (what, request) in [("TCP query", &query[..]), ("TCP stream", stream)] {
        let mut s = std::net::TcpStream::connect(agent.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        held.push((what, Box::new(s)));
    }
    for (what, request) in [("unix query", &query[..]), ("unix stream", stream)] {
        let mut s = UnixStream::connect(agent.api_socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        held.push((what, Box::new(s)));
    }
    support::wait_until(
        "the agent holds the four connections",
        Duration::from_secs(10),
        || sockets().difference(&before).count() >= 4,
    );

    let t = Instant::now();
    let status = agent.stop();
    let took = t.elapsed();
    assert!(status.success(), "exit {status:?} after {took:?}");
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
    for (what, mut s) in held {
        let mut got = Vec::new();
        // To the end: the agent closed the connection (a read timeout fails here).
        s.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("{what}: {e} after {:?}", String::from_utf8_lossy(&got)));
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "{what}: {got:?}");
        if what.ends_with("query") {
            let body = got.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert_eq!(json(body)["index"].as_u64(), Some(index), "{what}: {got:?}");
        }
    }
}

/// The test's agents configure their own paths; `Agent::start` replaces this marker.
fn agent_dir_placeholder() -> &'static str {
    "@AGENT_DIR@"
}

#[test]
fn bad_requests_get_clear_4xx_answers() {
    let agent = Agent::start("");
    for to in endpoints(&agent) {
        let tcp = matches!(to, Endpoint::Tcp(_));
        for (method, path, body, want) in [
            ("GET", "/v1/nothing-here", &b""[..], 404),
            ("GET", "/v1/breakers/unknown", b"", 404),
            ("DELETE", "/v1/signals", b"", 405),
            ("POST", "/v1/breakers/unknown/force-open", b"", 404),
            ("POST", "/v1/breakers/unknown/explode", b"", 400),
            ("GET", "/v1/signals?wait=forever&index=1", b"", 400),
            // Overflows u64 when turned into seconds: a 400, not a panic or a wrapped wait.
            (
                "GET",
                "/v1/signals?wait=99999999999999999m&index=1",
                b"",
                400,
            ),
            ("GET", "/v1/signals?colour=red", b"", 400),
            ("POST", "/v1/breakers/x/reset", &[b'x'; 10_000][..], 413),
        ] {
            // On the loopback listener every change is refused before anything else.
            let want = if tcp && method != "GET" { 403 } else { want };
            let (status, answer) = request(&to, method, path, body).unwrap();
            assert_eq!(status, want, "{method} {path} over {to:?}: {answer}");
            if (400..500).contains(&status) && status != 405 && status != 413 {
                assert!(json(&answer)["error"].is_string(), "{answer}");
            }
            if path.contains("99999") {
                assert!(answer.contains("too long"), "{answer}");
            }
        }
    }
    assert!(
        agent.scrape().0.contains("steadfast_signal_level"),
        "still serving"
    );
}

#[test]
fn server_sent_events_stream_snapshots() {
    let agent = Agent::start("control:\n  api_socket: null\n  signals_dir: null\n  state_dir: @AGENT_DIR@/state\n  interval_ms: 100\n");
    let mut s = std::net::TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /v1/watch HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut events = 0;
    let mut last_id = 0;
    while events < 1 {
        let line = lines.next().unwrap().unwrap();
        if let Some(id) = line.strip_prefix("id: ") {
            last_id = id.parse().unwrap();
        }
        if let Some(data) = line.strip_prefix("data: ") {
            assert_eq!(json(data)["index"].as_u64(), Some(last_id));
            events += 1;
        }
    }
    assert!(last_id >= 1);
}

/// The socket is mode 0660 with the configured group: a user in that group may use it, a
/// user outside it is refused by the kernel at connect.
#[test]
fn the_socket_refuses_users_outside_its_group() {
    // `daemon` (gid 1) exists on every Debian system.
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("api.sock");
    let agent = Agent::start(&format!(
        "control:\n  api_socket: {}\n  api_socket_group: daemon\n  signals_dir: null\n  state_dir: {}\n",
        sock.display(),
        dir.path().join("state").display()
    ));
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 1, "group daemon");
    let curl_as = |gid: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                &format!("--regid={gid}"),
                "--clear-groups",
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&sock)
            .arg("http://local/v1/signals")
            .output()
            .expect("setpriv and curl")
    };
    let member = curl_as("1");
    assert_eq!(String::from_utf8_lossy(&member.stdout), "200", "{member:?}");
    let outsider = curl_as("65534");
    assert!(!outsider.status.success(), "{outsider:?}");
    assert!(
        String::from_utf8_lossy(&outsider.stderr).contains("ermission denied")
            || String::from_utf8_lossy(&outsider.stderr).contains("Couldn't connect"),
        "{outsider:?}"
    );
    drop(agent);
}

/// Changes belong to the unix socket. Over TCP, as user `nobody` (and as root), force-open and
/// `POST /-/reload` answer 403 and change nothing: the breaker stays admit, unforced, and the
/// rules' last reload time stays put. Over the socket (mode 0660, group `daemon`) a user
/// outside the group is refused at connect and changes nothing; a user in it forces the
/// breaker open and resets it. `GET /v1/breakers/{name}` reads the one breaker on both.
#[test]
fn changes_only_on_the_socket_and_only_for_its_group() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rules = dir.path().join("rules.d");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("db.yaml"),
        "groups:\n  - name: db\n    interval: 1s\n    breakers:\n      - name: db\n        failure_ratio: vector(0)\n        volume: vector(0)\n",
    )
    .unwrap();
    let sock = dir.path().join("api.sock");
    let agent = Agent::start(&format!(
        "rules:\n  directory: {r}\n  state_dir: {d}/rules-state\ncontrol:\n  api_socket: {s}\n  api_socket_group: daemon\n  signals_dir: null\n  state_dir: {d}/state\n",
        r = rules.display(),
        d = dir.path().display(),
        s = sock.display(),
    ));
    let tcp = format!("http://{}", agent.addr);
    // curl as uid `nobody` with one group; `--unix-socket` if given. Status code, or the
    // error curl printed.
    let curl_as = |gid: &str, method: &str, unix: bool, path: &str| -> String {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            &format!("--regid={gid}"),
            "--clear-groups",
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
        ]);
        if unix {
            cmd.arg("--unix-socket").arg(&sock);
            cmd.arg(format!("http://local{path}"));
        } else {
            cmd.arg(format!("{tcp}{path}"));
        }
        let out = cmd.output().expect("setpriv and curl");
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            format!("failed: {}", String::from_utf8_lossy(&out.stderr))
        }
    };
    let root_tcp = Endpoint::Tcp(agent.addr);
    let breaker = || {
        let (status, body) = request(&root_tcp, "GET", "/v1/breakers/db", b"").unwrap();
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert!(v["index"].as_u64().is_some(), "{body}");
        (
            v["breaker"]["state"].as_str().unwrap().to_string(),
            v["breaker"]["forced"].clone(),
        )
    };
    let unforced = || ("admit".to_string(), serde_json::Value::Null);
    wait_for_breaker(&root_tcp);
    assert_eq!(breaker(), unforced());
    let reloaded_at = || {
        agent
            .scrape()
            .value("steadfast_rules_last_reload_success_timestamp_seconds", &[])
            .unwrap()
    };
    let loaded = reloaded_at();

    // TCP: refused for nobody and for root alike, nothing changed.
    for action in ["force-open", "force-close", "reset"] {
        let path = format!("/v1/breakers/db/{action}");
        assert_eq!(curl_as("65534", "POST", false, &path), "403");
        let (status, body) = request(&root_tcp, "POST", &path, b"").unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap()
                .contains("unix socket"),
            "{body}"
        );
        assert_eq!(breaker(), unforced(), "after {action} over TCP");
    }
    assert_eq!(curl_as("65534", "POST", false, "/-/reload"), "403");
    assert_eq!(request(&root_tcp, "POST", "/-/reload", b"").unwrap().0, 403);
    // Reading stays open on TCP.
    assert_eq!(curl_as("65534", "GET", false, "/v1/breakers/db"), "200");
    assert_eq!(reloaded_at(), loaded, "a refused reload reloaded");
    assert_eq!(breaker(), unforced());

    // The socket: outside the group refused by the kernel, nothing changed.
    let outsider = curl_as("65534", "POST", true, "/v1/breakers/db/force-open");
    assert!(
        outsider.contains("ermission denied") || outsider.contains("Couldn't connect"),
        "{outsider}"
    );
    assert_eq!(breaker(), unforced());
    // In the group: accepted.
    assert_eq!(curl_as("1", "GET", true, "/v1/breakers/db"), "200");
    assert_eq!(
        curl_as("1", "POST", true, "/v1/breakers/db/force-open"),
        "200"
    );
    assert_eq!(breaker(), ("shed".to_string(), serde_json::json!("open")));
    assert_eq!(curl_as("1", "POST", true, "/v1/breakers/db/reset"), "200");
    assert_eq!(breaker(), unforced());
    assert_eq!(curl_as("1", "POST", true, "/-/reload"), "200");
    assert!(reloaded_at() > loaded, "the socket's reload reloads");
    drop(agent);
}

/// The rules are loaded before the agent serves, but poll anyway: the breaker must exist.
fn wait_for_breaker(to: &Endpoint) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = request(to, "GET", "/v1/breakers/db", b"").unwrap();
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "no breaker db: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

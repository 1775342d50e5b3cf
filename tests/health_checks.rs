//! The ready endpoint as the systems around a host use it: a real HAProxy (Debian's) balances
//! two upstreams, each on a "host" with its own agent, and health-checks each upstream through
//! its host's `GET /v1/ready?breaker=upstream`. When one host's breaker sheds, HAProxy takes
//! that upstream out of rotation and every request goes to the other; when the breaker is reset,
//! it comes back. Needs root (the agents load probes).

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use support::{free_port, request, wait_until, Agent, Endpoint};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-line HTTP server answering every request with its `name` (Python's http.server).
fn upstream(name: &str, port: u16) -> Killed {
    let script = format!(
        "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        b=b'{name}'\n        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n    def log_message(self, *a): pass\nhttp.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("upstream listening", Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok()
    });
    Killed(child)
}

/// The body of `GET /` through the balancer.
fn get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: lb\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(raw)
}

/// Which upstreams answered `n` requests in a row.
fn spread(addr: SocketAddr, n: usize) -> (usize, usize) {
    let answers: Vec<String> = (0..n).map(|_| get(addr)).collect();
    (
        answers.iter().filter(|a| *a == "alpha").count(),
        answers.iter().filter(|a| *a == "beta").count(),
    )
}

const RULES: &str = "groups:\n  - name: lb\n    interval: 1s\n    breakers:\n      - name: upstream\n        failure_ratio: vector(0)\n        volume: vector(0)\n";

/// An agent with the breaker `upstream` defined; the rules directory lives as long as it.
fn host_agent() -> (Agent, tempfile::TempDir) {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("lb.yaml"), RULES).unwrap();
    let agent = Agent::start(&format!(
        "rules:\n  directory: {}\n  state_dir: @AGENT_DIR@/state\n",
        rules.path().display()
    ));
    let tcp = Endpoint::Tcp(agent.addr);
    wait_until("breaker defined", Duration::from_secs(10), || {
        request(&tcp, "GET", "/v1/ready?breaker=upstream", b"").is_ok_and(|(s, _)| s == 200)
    });
    (agent, rules)
}

#[test]
fn haproxy_takes_a_host_out_while_its_breaker_sheds() {
    let (a_port, b_port, lb_port) = (free_port(), free_port(), free_port());
    let _alpha = upstream("alpha", a_port);
    let _beta = upstream("beta", b_port);
    let (host_a, _rules_a) = host_agent();
    let (host_b, _rules_b) = host_agent();

    // Each upstream is checked through its own host's agent, every 200 ms.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  log stdout format raw local0 err\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\nfrontend lb\n  bind 127.0.0.1:{lb_port}\n  default_backend app\nbackend app\n  balance roundrobin\n  option httpchk\n  http-check send meth GET uri /v1/ready?breaker=upstream\n  http-check expect status 200\n  default-server inter 200ms fall 2 rise 2\n  server alpha 127.0.0.1:{a_port} check port {}\n  server beta 127.0.0.1:{b_port} check port {}\n",
            host_a.addr.port(),
            host_b.addr.port()
        ),
    )
    .unwrap();
    let check = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(&cfg)
        .output()
        .expect("haproxy (scripts/setup --test installs Debian's haproxy)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _lb = Killed(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lb: SocketAddr = format!("127.0.0.1:{lb_port}").parse().unwrap();
    wait_until(
        "both upstreams in rotation",
        Duration::from_secs(20),
        || {
            TcpStream::connect(lb).is_ok() && {
                let (a, b) = spread(lb, 10);
                a > 0 && b > 0
            }
        },
    );

    // Host A's breaker sheds: the check fails there, and A leaves the rotation.
    let sock_a = Endpoint::Unix(host_a.api_socket());
    let (status, body) = request(&sock_a, "POST", "/v1/breakers/upstream/force-open", b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(
        &Endpoint::Tcp(host_a.addr),
        "GET",
        "/v1/ready?breaker=upstream",
        b"",
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("breaker upstream sheds"), "{body}");
    wait_until("alpha out of rotation", Duration::from_secs(10), || {
        spread(lb, 10) == (0, 10)
    });
    assert_eq!(spread(lb, 40), (0, 40), "every request goes to beta");

    // Reset: the check passes again and A is back.
    let (status, _) = request(&sock_a, "POST", "/v1/breakers/upstream/reset", b"").unwrap();
    assert_eq!(status, 200);
    wait_until("alpha back in rotation", Duration::from_secs(10), || {
        let (a, b) = spread(lb, 10);
        a > 0 && b > 0
    });
}

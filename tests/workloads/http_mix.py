"""HTTP workloads with known answers for tests/http.rs.

server PORT_FILE: a Python http.server on 127.0.0.1, HTTP/1.1 keep-alive, one thread per
connection; GET /ok answers 200, /fail 503, /slow sleeps 300 ms then answers 202 (its own series), HEAD /ok
answers 200 without a body. Writes its port to PORT_FILE once listening.

client PORT N_OK N_FAIL N_SLOW: http.client over ONE keep-alive connection sends N_OK
GET /ok, N_FAIL GET /fail and N_SLOW GET /slow (interleaved), reading every answer, and
prints "done".

Both listen on and connect to HTTP_MIX_HOST when it is set (default 127.0.0.1; an IPv6
address such as ::1 makes both IPv6).
"""
import http.client
import http.server
import os
import socket
import socketserver
import sys
import time

HOST = os.environ.get("HTTP_MIX_HOST", "127.0.0.1")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body):
        if self.path == "/ok":
            code = 200
        elif self.path == "/fail":
            code = 503
        elif self.path == "/slow":
            time.sleep(0.3)
            code = 202
        else:
            code = 404
        payload = b"x" * 64
        self.send_response(code)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if ":" in HOST else socket.AF_INET

    def handle_error(self, request, client_address):
        # A client that closed before the body (the test does once on purpose).
        if not isinstance(sys.exc_info()[1], BrokenPipeError):
            super().handle_error(request, client_address)


def server(port_file):
    srv = Server((HOST, 0), Handler)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, port_file)
    srv.serve_forever()


def client(port, n_ok, n_fail, n_slow):
    conn = http.client.HTTPConnection(HOST, port)
    plan = ["/ok"] * n_ok + ["/fail"] * n_fail + ["/slow"] * n_slow
    for path in plan:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
    conn.close()
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))

"""HTTP/1.x edge cases with known answers for tests/http.rs (the shapes a byte-level probe
gets wrong: pipelining, vectored and message I/O, sendfile, chunked bodies, 100 Continue, a
request cut off mid-headers).

server PORT_FILE: a Python http.server on 127.0.0.1, HTTP/1.1 keep-alive, one thread per
connection. GET /ok answers 200 (64-byte body); GET /chunked 200 with a chunked body, each
chunk its own write; GET /file 200 with its body sent by sendfile(2) (socket.sendfile);
GET /bytes 200 written one byte per write; GET /vec 200 written by ONE sendmsg(2) of three iovecs (status line, headers, body); POST
/upload reads its Content-Length body and answers 201 (and, asked with `Expect:
100-continue`, answers `100 Continue` first: BaseHTTPRequestHandler does). Writes its port to
PORT_FILE once listening.

Clients (each prints "done N" with N the final status lines it read):
- pipeline PORT N: N `GET /ok` in ONE write on one connection (the last asks to close), then
  reads until the server closes.
- vectored PORT N: N `GET /ok` on one keep-alive connection, each written by writev(2) of two
  iovecs and its answer read by readv(2).
- msg PORT N: the same with sendmsg(2) and recvmsg(2) (socket.recvmsg_into).
- cut PORT: sends a request line and half a header line, then closes without reading.
"""
import http.server
import os
import socket
import socketserver
import sys
import tempfile

BODY = b"x" * 64


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in [b"first chunk", b"HTTP/1.1 200 in a body", b"x" * 300]:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/file":
            with tempfile.TemporaryFile() as f:
                f.write(b"f" * 10000)
                f.flush()
                f.seek(0)
                self.send_response(200)
                self.send_header("Content-Length", "10000")
                self.end_headers()
                self.connection.sendfile(f)
        elif self.path == "/bytes":
            # The whole answer one byte per write.
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY):
                self.wfile.write(bytes([b]))
        elif self.path == "/vec":
            self.connection.sendmsg(
                [
                    b"HTTP/1.1 200 OK\r\n",
                    b"Content-Length: %d\r\n\r\n" % len(BODY),
                    BODY,
                ]
            )
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The cut client closed before the answer (on purpose).
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def server(port_file):
    srv = Server(("127.0.0.1", 0), Handler)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, port_file)
    srv.serve_forever()


def read_answer(recv):
    """Reads one answer with a Content-Length body through `recv()` (-> bytes); returns
    its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = recv()
        if not chunk:
            raise EOFError("closed mid-answer")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = recv()
        if not chunk:
            raise EOFError("closed mid-body")
        rest += chunk
    assert len(rest) == length, "one answer at a time"
    return head.split(b"\r\n")[0]


def pipeline(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    reqs = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * (n - 1)
    reqs += b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    s.sendall(reqs)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.count(b"HTTP/1.1 200 ")


def vectored(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    fd = s.fileno()
    done = 0
    for _ in range(n):
        req = [b"GET /ok HTTP/1.1\r\n", b"Host: x\r\n\r\n"]
        assert os.writev(fd, req) == sum(map(len, req))

        def recv():
            a, b = bytearray(4096), bytearray(4096)
            got = os.readv(fd, [a, b])
            return bytes((a + b)[:got])

        if read_answer(recv).startswith(b"HTTP/1.1 200 "):
            done += 1
    s.close()
    return done


def msg(port, n):
    s = socket.create_connection(("127.0.0.1", port))
    done = 0
    for _ in range(n):
        req = [b"GET /ok HTTP/1.1\r\n", b"Host: x\r\n\r\n"]
        assert s.sendmsg(req) == sum(map(len, req))

        def recv():
            buf = bytearray(4096)
            got = s.recvmsg_into([buf])[0]
            return bytes(buf[:got])

        if read_answer(recv).startswith(b"HTTP/1.1 200 "):
            done += 1
    s.close()
    return done


def cut(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /ok HTTP/1.1\r\nHo")
    s.close()
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        server(sys.argv[2])
    else:
        port = int(sys.argv[2])
        args = [int(a) for a in sys.argv[3:]]
        n = {"pipeline": pipeline, "vectored": vectored, "msg": msg, "cut": cut}[mode](
            port, *args
        )
        print("done", n, flush=True)

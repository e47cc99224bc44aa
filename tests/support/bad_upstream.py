"""A deliberately misbehaving upstream on a raw socket, for the HTTP hardening tests.

It reads requests (head, then a Content-Length body) on keep-alive connections and answers
each from a script keyed by the request path's last segment: exact bytes, so a test can send
what no well-behaved server would (bytes beyond Content-Length, a body to HEAD, CL + TE,
101 to an h2c upgrade...). Every request it sees is recorded with the connection it came on,
so a test can tell whether the gateway pooled a connection it should have discarded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field

POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"


@dataclass
class Seen:
    conn_id: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]


def echo(seen: Seen) -> bytes:
    """A well-formed answer describing the request (the default for unknown paths)."""
    body = json.dumps({
        "method": seen.method.decode(), "target": seen.target.decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in seen.headers],
        "body": seen.body.decode("latin-1"), "conn": seen.conn_id,
    }).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


# path segment -> raw answer (for HEAD the same bytes: the body is the misbehaviour)
SCRIPTS: dict[bytes, bytes] = {
    b"overflow": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + POISON,
    b"head-body": b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned",
    b"no-content-body": b"HTTP/1.1 204 No Content\r\n\r\n" + POISON,
    b"not-modified-body": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n" + POISON,
    b"cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
    b"same-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello",
    b"bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"huge-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n",
}


@dataclass
class BadUpstream:
    # A deep accept queue: the slow-body test opens ~1,000 upstream connections at once.
    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0), backlog=4096))
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed: int = 0

    def __post_init__(self) -> None:
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def requests_to(self, segment: str) -> list[Seen]:
        return [s for s in list(self.seen) if s.target.split(b"?")[0].rsplit(b"/", 1)[-1] == segment.encode()]

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                conn_id = self.connections
            threading.Thread(target=self._serve, args=(conn, conn_id), daemon=True).start()

    def _serve(self, conn: socket.socket, conn_id: int) -> None:
        buf = b""
        try:
            with conn:
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    raw, buf = buf.split(b"\r\n\r\n", 1)
                    lines = raw.split(b"\r\n")
                    method, target, _ = lines[0].split(b" ", 2)
                    headers = [tuple(x.strip() for x in line.split(b":", 1)) for line in lines[1:]]
                    if any(k.lower() == b"transfer-encoding" for k, _ in headers):
                        body, buf = self._chunked(conn, buf)
                    else:
                        length = sum(int(v) for k, v in headers if k.lower() == b"content-length")
                        buf = self._fill(conn, buf, length)
                        body, buf = buf[:length], buf[length:]
                    seen = Seen(conn_id, method, target, headers, body)
                    self.seen.append(seen)
                    if not self._answer(conn, seen, buf):
                        return
                    buf = b""
        except OSError:
            pass
        finally:
            with self.lock:
                self.closed += 1

    @staticmethod
    def _fill(conn: socket.socket, buf: bytes, n: int) -> bytes:
        while len(buf) < n:
            data = conn.recv(65536)
            if not data:
                raise OSError("closed inside a body")
            buf += data
        return buf

    def _chunked(self, conn: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
        """A chunked body (RFC 9112 7.1; the gateway sends no extensions or trailers)."""
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf = self._fill(conn, buf, len(buf) + 1)
            line, buf = buf.split(b"\r\n", 1)
            size = int(line, 16)
            buf = self._fill(conn, buf, size + 2)
            if size == 0:
                return body, buf[2:]
            body, buf = body + buf[:size], buf[size + 2:]

    def _answer(self, conn: socket.socket, seen: Seen, early: bytes) -> bool:
        """Write the scripted answer; False ends the connection (after a tunnel)."""
        segment = seen.target.split(b"?")[0].rsplit(b"/", 1)[-1]
        upgrade = seen.header(b"upgrade")
        if upgrade:  # any Upgrade offered: accept it (a naive upstream), then serve raw bytes
            token = upgrade[0].split(b",")[0].strip()
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %b\r\nConnection: Upgrade\r\n\r\n" % token)
            self._tunnel(conn, early)
            return False
        if segment == b"stream":  # endless body: a client that stops reading backs it up
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000000\r\n\r\n")
            block = b"x" * 65536
            while True:
                conn.sendall(block)
        if segment == b"slow":
            time.sleep(float(seen.header(b"x-delay")[0]) if seen.header(b"x-delay") else 1.0)
        conn.sendall(SCRIPTS.get(segment) or echo(seen))
        return True

    def _tunnel(self, conn: socket.socket, early: bytes) -> None:
        """What a smuggler hopes for: requests inside the tunnel reach us unrouted."""
        buf = early
        while True:
            while b"\r\n\r\n" in buf:
                raw, buf = buf.split(b"\r\n\r\n", 1)
                method, target, _ = raw.split(b"\r\n")[0].split(b" ", 2)
                self.seen.append(Seen(0, method, target, [], b""))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            data = conn.recv(65536)
            if not data:
                return
            buf += data

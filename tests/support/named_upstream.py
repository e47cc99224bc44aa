"""A loopback upstream that says who it is, and that a test can break, kill and revive.

Every answer's body is the upstream's name, so a test counts which endpoint served each
request. ``mode`` switches what requests get (``"ok"``: 200, ``"fail"``: 500); ``kill()``
closes the listener (connections are then refused) and ``revive()`` listens on the same port
again. ``/healthz`` answers 200 unless ``healthy`` is False (503); ``/slow?s=N`` holds its
answer N seconds. It counts requests (health checks apart) and keeps the times they came.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class NamedUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "ok"
        self.healthy = True
        self.lock = threading.Lock()
        self.hits: list[float] = []  # monotonic times of the requests served (not health checks)
        self.checks = 0
        self.in_flight = 0
        self.connections: set[socket.socket] = set()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with upstream.lock:
                    upstream.connections.add(self.connection)

            def finish(self) -> None:
                with upstream.lock:
                    upstream.connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                upstream._answer(self)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        if length:
            handler.rfile.read(length)
        parts = urlsplit(handler.path)
        if parts.path == "/healthz":
            with self.lock:
                self.checks += 1
            self._send(handler, 200 if self.healthy else 503, b"ok" if self.healthy else b"sick")
            return
        with self.lock:
            self.hits.append(time.monotonic())
            self.in_flight += 1
        try:
            hold = float(parse_qs(parts.query).get("s", ["0"])[0]) if parts.path == "/slow" else 0.0
            if hold:
                time.sleep(hold)
            self._send(handler, 500 if self.mode == "fail" else 200, self.name.encode())
        finally:
            with self.lock:
                self.in_flight -= 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def served_since(self, since: float) -> int:
        with self.lock:
            return sum(1 for t in self.hits if t >= since)

    def kill(self) -> None:
        """Stop listening: new connections are refused (kept-alive ones are cut)."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:
            cut = list(self.connections)
        for conn in cut:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def revive(self) -> None:
        if self.server is None:
            self._listen()

    def close(self) -> None:
        self.kill()

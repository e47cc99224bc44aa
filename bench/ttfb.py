"""Time to first SSE event through a proxy, measured by a tiny sequential raw-socket client.

wrk cannot say when the first event of a stream arrived, only when the whole response did, and a
proxy that buffers a stream hurts exactly there. One keep-alive connection, one request at a time,
so the number is the proxy's added latency and not queueing under load.
"""

from __future__ import annotations

import math
import socket
import time

from bodies import Request


class _StreamClient:
    """A keep-alive HTTP/1.1 client that notes when the head and the first SSE event arrive."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection mid-response")
        self.buf += data

    def _read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def _read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def request(self, raw: bytes) -> tuple[float, float, int]:
        """Send one request; return (head seconds, first-event seconds, status), reading the whole body."""
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf.clear()
        start = time.perf_counter()
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head_at = time.perf_counter() - start
        status_line, *header_lines = self._read_exact(self.buf.find(b"\r\n\r\n") + 4).decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        first_event: float | None = None
        body = bytearray()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self._read_line().split(b";")[0], 16):
                body += self._read_exact(size)
                self._read_exact(2)
                if first_event is None and b"data:" in body:
                    first_event = time.perf_counter() - start
            while self._read_line():  # trailers end with an empty line
                pass
        elif "content-length" in headers:  # the pre-built upstream's streams: time the first event in the body
            remaining = int(headers["content-length"])
            while remaining:
                if not self.buf:
                    self._fill()
                piece = self._read_exact(min(remaining, len(self.buf)))
                body += piece
                remaining -= len(piece)
                if first_event is None and b"data:" in body:
                    first_event = time.perf_counter() - start
        else:  # delimited by close: time the first body bytes, then drain
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
                if first_event is None and b"data:" in self.buf:
                    first_event = time.perf_counter() - start
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        if first_event is None:
            raise ValueError(f"response {status} carried no SSE event")
        return head_at, first_event, status


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: no interpolation, so p99 of 300 samples is a sample that happened."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def measure(host: str, port: int, request: Request, requests: int, warmup: int,
            timeout: float = 10.0) -> dict[str, object]:
    """Sequential streams on one connection; times in milliseconds."""
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    raw = (f"POST {request.path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
           f"Content-Length: {len(request.body)}\r\n\r\n").encode() + request.body
    client = _StreamClient(host, port, timeout)
    heads: list[float] = []
    events: list[float] = []
    bad_status = 0
    try:
        for i in range(warmup + requests):
            head_at, event_at, status = client.request(raw)
            if i < warmup:
                continue
            bad_status += not 200 <= status < 300
            heads.append(head_at * 1e3)
            events.append(event_at * 1e3)
    finally:
        client.close()
    return {
        "requests": requests,
        "warmup": warmup,
        "non2xx": bad_status,
        "p50_ms": percentile(events, 50),
        "p99_ms": percentile(events, 99),
        "mean_ms": sum(events) / len(events),
        "head_p50_ms": percentile(heads, 50),
        "head_p99_ms": percentile(heads, 99),
    }

"""An in-process gateway for unit tests: a real HttpConnection over a fake transport.

``Harness(config)`` builds a config generation exactly as a worker does and lends the
connection a WorkerServices of its own (counters, an access log that writes to a list),
so filters and handlers are tested without processes. The built-in ``mock`` provider
answers in-process; plain routes may point at a loopback server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastgw.ai.health import ProviderHealth
from fastgw.config import load_text
from fastgw.generation import Generation, Resources
from fastgw.http.errors import END
from fastgw.http.parser import ResponseParser
from fastgw.limits.local import LocalLimitStore
from fastgw.obs.accesslog import AccessLog
from fastgw.proxy.upstream import PoolSet
from fastgw.server.admission import Admission
from fastgw.server.connection import HttpConnection


class FakeTransport(asyncio.Transport):
    """Records what the connection writes; reading can be paused like a socket's."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Services:
    """A WorkerServices for one test: one generation, counters to assert on."""

    def __init__(self, config: str | dict, loop: asyncio.AbstractEventLoop, log_path: Path | None = None) -> None:
        self.loop = loop
        normalised = load_text(config if isinstance(config, str) else json.dumps(config))
        self.resources = Resources(PoolSet(loop), ProviderHealth(), LocalLimitStore(slots=64, quota_slots=32))
        self.generation = Generation(1, normalised, self.resources)
        self.log_path = log_path
        self.access_log = AccessLog(str(log_path) if log_path else None, worker=0)
        self.usage_sink = None
        self.connections: set = set()
        self.admission = Admission()
        self.active = 0
        self.upstream_errors = 0
        self.rejected = 0

    def close(self) -> None:
        """Release what a worker would keep for its lifetime: warm upstream connections, the
        shared-memory limit store, the access log's file (tests that build many gateways)."""
        self.resources.pools.close()
        self.resources.limit_store.close()
        self.access_log.close()

    def log_lines(self) -> list[dict]:
        """The access-log lines written so far."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()] if self.log_path else []

    def current_generation(self) -> Generation:
        return self.generation

    def connection_opened(self, conn: Any) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: Any) -> None:
        self.connections.discard(conn)

    def request_started(self) -> None:
        self.active += 1

    def request_finished(self) -> None:
        self.active -= 1

    def count_upstream_error(self) -> None:
        self.upstream_errors += 1

    def count_rejected(self) -> None:
        self.rejected += 1


class Response:
    def __init__(self, head: Any, body: bytes) -> None:
        self.status = head.status
        self.headers = {k.decode().lower(): v.decode() for k, v in head.headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        """The ``data:`` payloads of an SSE body."""
        return [line[6:] for line in self.body.decode().split("\n") if line.startswith("data: ")]


class Client:
    """One client connection to the harness's gateway."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.transport = FakeTransport()
        self.conn = HttpConnection(services)
        self.conn.connection_made(self.transport)
        self._read = 0

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {len(raw)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + raw)

    async def response(self, timeout: float = 5.0, method: bytes = b"POST") -> Response:
        """The next complete response the connection wrote."""
        deadline = self.services.loop.time() + timeout
        while True:
            parsed = self._parse(method)
            if parsed is not None:
                return parsed
            if self.services.loop.time() > deadline:
                raise AssertionError(f"no complete response; got {bytes(self.transport.out[self._read:])[:500]!r}")
            await asyncio.sleep(0.002)

    def _parse(self, method: bytes) -> Response | None:
        parser = ResponseParser()
        parser.start(method)
        data = bytes(self.transport.out[self._read :])
        parser.feed(data)
        if self.transport.closed:
            parser.feed_eof()
        head, body = None, []
        while True:
            event = parser.next_event()
            if event is None:
                return None
            if event is END:
                self._read += len(data) - parser.buffered
                return Response(head, b"".join(body))
            if head is None:
                head = event
            else:
                body.append(bytes(event))


async def settle() -> None:
    """Let callbacks scheduled by the connection run (mock attempts, spawned filter work)."""
    for _ in range(5):
        await asyncio.sleep(0)

"""Upstream connections and their keep-alive pools.

A pool per ``(scheme, host, port)`` is shared by every route and every config
generation of a worker, so a config push keeps warm connections. Idle connections are
reused LIFO (the most recently used is the least likely to have been closed by the
peer) and swept after ``idle_timeout``.

An :class:`UpstreamConnection` parses responses itself and hands them to its current
*owner* (the downstream side of one exchange) through a handful of callbacks; it does no
policy of its own.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from fastgw._speedups import ResponseParser


class UpstreamOwner(Protocol):
    """What an exchange implements to receive its upstream's events."""

    def on_upstream_data(self, conn: UpstreamConnection) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_upstream_eof(self, conn: UpstreamConnection) -> None: ...
    def on_upstream_lost(self, conn: UpstreamConnection, exc: BaseException | None) -> None: ...
    def on_upstream_pause(self) -> None: ...
    def on_upstream_resume(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "owner", "reused", "idle_since", "closed", "tunnel", "reading_paused")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.owner: UpstreamOwner | None = None
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self.tunnel = False  # after 101 Switching Protocols: bytes pass unparsed
        self.reading_paused = False

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # An idle connection must stay silent; anything else means it is unusable.
            self.close()
            return
        if self.tunnel:
            owner.on_tunnel_data(data)
            return
        self.parser.feed(data)
        owner.on_upstream_data(self)

    def eof_received(self) -> bool:
        owner = self.owner
        if owner is not None:
            owner.on_upstream_eof(self)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.on_upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.on_upstream_pause()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.on_upstream_resume()

    # -- used by the exchange ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def pause_reading(self) -> None:
        """The client can't keep up: stop reading the upstream (back-pressure end to end)."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.owner = None
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one endpoint."""

    __slots__ = ("loop", "scheme", "host", "port", "ssl_context", "max_idle", "idle_timeout", "idle", "open")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        scheme: str,
        host: str,
        port: int,
        *,
        max_idle: int = 64,
        idle_timeout: float = 60.0,
    ) -> None:
        self.loop = loop
        self.scheme = scheme
        self.host = host
        self.port = port
        self.ssl_context = ssl.create_default_context() if scheme == "https" else None
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []
        self.open = 0

    def take_idle(self) -> UpstreamConnection | None:
        """The most recently released live connection, or None."""
        idle = self.idle
        deadline = self.loop.time() - self.idle_timeout
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > deadline:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        """A new connection; raises OSError or asyncio.TimeoutError."""
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: UpstreamConnection(self),
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
            ),
            timeout,
        )
        self.open += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange finished cleanly."""
        conn.owner = None
        if conn.closed:
            return
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        # A response can end while the client still applies back-pressure; an idle
        # connection must be reading, or its next response would never be seen.
        conn.resume_reading()
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Called when a connection is lost, idle or not."""
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self) -> None:
        """Close idle connections older than ``idle_timeout`` (runs on a worker timer)."""
        deadline = self.loop.time() - self.idle_timeout
        keep = []
        for conn in self.idle:
            if conn.idle_since > deadline and not conn.closed:
                keep.append(conn)
            else:
                conn.close()
        self.idle[:] = keep

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class PoolSet:
    """All pools of a worker, keyed by endpoint; outlives config generations."""

    __slots__ = ("loop", "pools")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pools: dict[tuple[str, str, int], Pool] = {}

    def get(self, scheme: str, host: str, port: int, max_idle: int, idle_timeout: float) -> Pool:
        key = (scheme, host, port)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(
                self.loop, scheme, host, port, max_idle=max_idle, idle_timeout=idle_timeout
            )
        else:  # the newest generation's settings win
            pool.max_idle = max_idle
            pool.idle_timeout = idle_timeout
        return pool

    def sweep(self) -> None:
        for pool in self.pools.values():
            pool.sweep()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

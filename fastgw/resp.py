"""A minimal pipelined RESP2 client for the worker's hot paths: the limiter (``fastgw/limits/cluster.py``)
and the response cache's Redis store (``fastgw/cache/store.py``).

Each limited request costs two Redis commands (reserve, settle). redis-py's asyncio client
spends ~100 µs of CPU per command here (connection pool, locks, retry wrappers, parser
objects), which made the limits cost more than the whole stream conversion. This client
keeps one connection per worker, pipelines every command on it, and parses replies in a
single pass over the buffer. It is for the workers only; the supervisor's admin calls
keep using redis-py.

A command that times out closes the connection: replies are matched to commands by order,
so once one is abandoned, later replies could be taken for the wrong command.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class RespError(Exception):
    """Redis answered with an error reply (``-ERR ...``, ``-NOSCRIPT ...``)."""


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


def encode(args: tuple) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = repr(arg).encode()  # numbers, as redis-py writes them
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at ``pos``: ``(value, next position)``; raises _Incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 0x3A:  # ':' integer
        return int(line), pos
    if kind == 0x24:  # '$' bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + size]), pos + size + 2
    if kind == 0x2A:  # '*' array
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 0x2B:  # '+' simple string
        return line, pos
    if kind == 0x2D:  # '-' error
        return RespError(line.decode(errors="replace")), pos
    raise ConnectionError(f"not a RESP reply: {bytes(buf[pos - len(line) - 3 : pos])!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiters: deque[asyncio.Future] = deque()
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        try:
            while pos < len(buffer):
                value, pos = parse(buffer, pos)
                waiter = self.waiters.popleft()
                if not waiter.done():
                    if isinstance(value, RespError):
                        waiter.set_exception(value)
                    else:
                        waiter.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, IndexError, ValueError) as exc:  # garbage or a reply nobody asked for
            self.transport.abort()
            self.connection_lost(ConnectionError(f"Redis protocol error: {exc}"))
            return
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("Redis closed the connection")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(str(self.lost)))


class RespClient:
    """``await client.call("EVALSHA", sha, 2, k1, k2, arg...)``; errors raise, replies are
    ints, bytes, lists or None. Supports redis://, rediss:// and unix:// URLs with a password
    (and user) and a database number."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.path = parts.path
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        db = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else "0"])[0]
        self.db = int(db or 0)
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self.scheme == "unix":
            connect = loop.create_unix_connection(_Connection, self.path)
        else:
            context = ssl.create_default_context() if self.scheme == "rediss" else None
            connect = loop.create_connection(_Connection, self.host, self.port, ssl=context)
        _, conn = await asyncio.wait_for(connect, self.timeout)
        self._conn = conn
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            await self._send(conn, auth)
        if self.db:
            await self._send(conn, ("SELECT", self.db))
        return conn

    async def call(self, *args: Any) -> Any:
        conn = await self._connection()
        return await self._send(conn, args)

    async def _send(self, conn: _Connection, args: tuple) -> Any:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        conn.waiters.append(waiter)
        conn.transport.write(encode(args))
        timer = loop.call_later(self.timeout, self._expire, conn, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _expire(self, conn: _Connection, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(asyncio.TimeoutError(f"Redis did not answer within {self.timeout}s"))
            # Later replies could be matched to the wrong commands: drop the connection now
            # (connection_lost only runs on a later loop turn; the next call must not reuse it).
            conn.lost = asyncio.TimeoutError("a command timed out")
            if conn.transport is not None:
                conn.transport.abort()

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None

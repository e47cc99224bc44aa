"""One try of a provider call: over a pooled upstream connection, or in-process (mock).

Both report to their exchange through the same four calls, so failover, timeouts and
conversion are written once:

* ``attempt_head(attempt, status, retry_after)``
* ``attempt_body(attempt, chunk)``
* ``attempt_end(attempt)``
* ``attempt_failed(attempt, status, message)`` — the call broke (connect error, garbage,
  cut connection); ``status`` is 502 or 504.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from fastgw.ai.providers.base import UpstreamCall
from fastgw.http.encoding import DECODABLE, Decoder
from fastgw.http.errors import END, ParseError
from fastgw.mock.core import MockLLM, MockReply
from fastgw.proxy.upstream import Pool, UpstreamConnection


class AttemptOwner(Protocol):
    """What an attempt reports to (the AI handler)."""

    loop: asyncio.AbstractEventLoop

    def attempt_head(self, attempt: Any, status: int, retry_after: float | None) -> None: ...
    def attempt_body(self, attempt: Any, chunk: bytes | memoryview) -> None: ...
    def attempt_end(self, attempt: Any) -> None: ...
    def attempt_failed(self, attempt: Any, status: int, message: str) -> None: ...


def request_bytes(call: UpstreamCall, host_header: bytes) -> bytes:
    """The provider request; it asks for an unencoded answer (the framer and the filters
    read it; the gateway compresses for its own client)."""
    head = [
        b"%b %b HTTP/1.1\r\nHost: %b\r\nAccept-Encoding: identity\r\nContent-Length: %d\r\n"
        % (call.method, call.path, host_header, len(call.body))
    ]
    head.extend(b"%b: %b\r\n" % pair for pair in call.headers)
    head.append(b"\r\n")
    head.append(call.body)
    return b"".join(head)


def _decoder(coding: bytes | None) -> Decoder | None:
    """What undoes a provider's Content-Encoding; a coding we can't undo is a broken answer."""
    name = (coding or b"").strip().lower().decode("latin-1")
    if not name or name == "identity":
        return None
    if name not in DECODABLE:
        raise ParseError(502, f"the answer is in content coding {name!r}, which the gateway did not ask for")
    return Decoder(name)


def retry_after_seconds(value: bytes | None) -> float | None:
    """A ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date) as seconds from now;
    None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value.decode("latin-1"))
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None


class NetworkAttempt:
    """A provider call over a keep-alive connection from the worker's pool."""

    __slots__ = (
        "exchange",
        "pool",
        "payload",
        "connect_timeout",
        "conn",
        "got_bytes",
        "done",
        "fresh_retry",
        "interim",
        "keep_alive",
        "decoder",
    )

    def __init__(self, exchange: AttemptOwner, pool: Pool, payload: bytes, connect_timeout: float) -> None:
        self.exchange = exchange
        self.pool = pool
        self.payload = payload
        self.connect_timeout = connect_timeout
        self.conn: UpstreamConnection | None = None
        self.got_bytes = False
        self.done = False
        self.fresh_retry = True  # one transparent resend when a pooled connection turns out dead
        self.interim = False  # inside a 1xx response, whose END is not the answer's
        self.keep_alive = False
        self.decoder: Decoder | None = None  # a provider that encoded its answer although asked not to

    def start(self) -> None:
        conn = self.pool.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.exchange.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await self.pool.connect(self.connect_timeout)
        except asyncio.TimeoutError:
            if not self.done:
                self._fail(504, f"connecting to {self.pool.host}:{self.pool.port} timed out")
            return
        except OSError as exc:
            if not self.done:
                self._fail(502, f"cannot connect to {self.pool.host}:{self.pool.port}: {exc.strerror or exc}")
            return
        if self.done:
            self.pool.release(conn)
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.owner = self
        conn.parser.start(b"POST")
        conn.write(self.payload)

    def _fail(self, status: int, message: str) -> None:
        self.done = True
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        self.exchange.attempt_failed(self, status, message)

    def _resend_fresh(self) -> bool:
        """A reused connection died before answering: try once more on a new one."""
        if not (self.fresh_retry and self.conn is not None and self.conn.reused and not self.got_bytes):
            return False
        self.fresh_retry = False
        self.conn.abort()
        self.conn = None
        self.exchange.loop.create_task(self._connect())
        return True

    # -- UpstreamOwner ------------------------------------------------------------------

    def on_upstream_data(self, conn: UpstreamConnection) -> None:
        """Everything one read brought is handed over as one body piece (one write downstream)."""
        self.got_bytes = True
        parser = conn.parser
        exchange = self.exchange
        body: list = []
        try:
            while not self.done:
                event = parser.next_event()
                if event is None:
                    break
                if event is END:
                    if self.interim:
                        self.interim = False
                        continue
                    if self.decoder is not None and (tail := self.decoder.finish()):
                        body.append(tail)
                    self._flush(body)
                    if self.done:
                        return
                    self.done = True
                    self.conn = None
                    if self.keep_alive and parser.buffered == 0:
                        conn.pool.release(conn)
                    else:
                        conn.close()
                    exchange.attempt_end(self)
                    return
                if isinstance(event, bytes | memoryview | bytearray):
                    body.append(event if self.decoder is None else self.decoder.decode(event))
                elif event.status < 200:
                    self.interim = True
                else:
                    self.keep_alive = event.keep_alive
                    self.decoder = _decoder(event.get(b"content-encoding"))
                    exchange.attempt_head(self, event.status, retry_after_seconds(event.get(b"retry-after")))
        except ParseError as exc:
            self._flush(body)
            if not self.done:
                self._fail(502, f"provider sent an invalid HTTP response: {exc.reason}")
            return
        self._flush(body)

    def _flush(self, body: list) -> None:
        if body and not self.done:
            self.exchange.attempt_body(self, body[0] if len(body) == 1 else b"".join(body))
            body.clear()

    def on_upstream_eof(self, conn: UpstreamConnection) -> None:
        try:
            conn.parser.feed_eof()
        except ParseError as exc:
            if not self.done and not self._resend_fresh():
                self._fail(502, f"provider closed the connection: {exc.reason}")
            return
        self.on_upstream_data(conn)

    def on_upstream_lost(self, conn: UpstreamConnection, exc: BaseException | None) -> None:
        if self.done or conn is not self.conn:
            return
        self.conn = conn  # so _resend_fresh sees it
        if not self._resend_fresh():
            self.conn = None
            self._fail(502, "provider closed the connection")

    def on_tunnel_data(self, data: bytes) -> None:  # providers never switch protocols
        self._fail(502, "provider switched protocols")

    def on_upstream_pause(self) -> None:
        """Request bodies are small and sent at once; nothing to pause."""

    def on_upstream_resume(self) -> None:
        """See on_upstream_pause."""

    # -- from the exchange ----------------------------------------------------------------

    def pause(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def resume(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def cancel(self) -> None:
        self.done = True
        if self.conn is not None:
            self.conn.abort()
            self.conn = None


class MockAttempt:
    """The in-process ``mock`` provider: a MockReply played with its delays and failures."""

    __slots__ = ("exchange", "reply", "timer", "next_event", "done")

    def __init__(self, exchange: AttemptOwner, mock: MockLLM, call: UpstreamCall) -> None:
        self.exchange = exchange
        path, _, query = call.path.decode().partition("?")
        headers = {k.decode().lower(): v.decode() for k, v in call.headers}
        self.reply: MockReply = mock.respond(call.method.decode(), path, query, headers, call.body)
        self.timer: asyncio.TimerHandle | None = None
        self.next_event = 0
        self.done = False

    def start(self) -> None:
        self.timer = self.exchange.loop.call_later(self.reply.first_byte_delay, self._head)

    def _head(self) -> None:
        reply = self.reply
        if reply.action in ("close", "garbage"):
            self.done = True
            self.exchange.attempt_failed(
                self,
                502,
                f"provider {'closed the connection' if reply.action == 'close' else 'sent garbage'}",
            )
            return
        retry_after = next((float(v) for k, v in reply.headers if k.lower() == "retry-after"), None)
        self.exchange.attempt_head(self, reply.status, retry_after)
        if self.done:
            return
        if reply.events is None:
            if reply.body:
                self.exchange.attempt_body(self, reply.body)
            self._end()
        else:
            self._events()

    def _events(self) -> None:
        self.timer = None
        reply = self.reply
        events = reply.events
        if reply.chunk_delay <= 0:  # all due now: one piece, as one network read would bring them
            self.next_event = len(events)
            self.exchange.attempt_body(self, b"".join(events))
        while not self.done and self.next_event < len(events):
            self.exchange.attempt_body(self, events[self.next_event])
            self.next_event += 1
            if self.next_event < len(events):
                self.timer = self.exchange.loop.call_later(reply.chunk_delay, self._events)
                return
        if self.done:
            return
        if reply.action == "cut":
            self.done = True
            self.exchange.attempt_failed(self, 502, "provider closed the connection mid-stream")
        else:
            self._end()

    def _end(self) -> None:
        self.done = True
        self.exchange.attempt_end(self)

    def pause(self) -> None:
        """Mock events are small and already in memory."""

    def resume(self) -> None:
        """See pause."""

    def cancel(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

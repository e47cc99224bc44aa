"""The mock LLM on the wire: `MockLLM` replies framed as HTTP/1.1 by a bare asyncio `Protocol` + `httptools`.

httptools (not fastgw's own parser) on purpose: an independent parser, so the tests cross-check ours, and
fast enough on uvloop that the mock is never the bottleneck when the bench puts fastgw next to nginx.
Replies go out strictly in request order; the common case (no delay, no back-pressure) is one write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus

import httptools

from fastgw.mock.core import JSON_BODY, JSON_REPLY, MockLLM, MockReply

__all__ = ["Connection", "start_server"]

_STATUS_LINES: dict[int, bytes] = {}
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_QUEUED = 64  # pipelined requests held before we stop reading from that client


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


def _head(reply: MockReply, framing: bytes, connection: bytes) -> bytes:
    lines = [f"{k}: {v}\r\n".encode("latin-1") for k, v in reply.headers]
    return b"".join([_status_line(reply.status), *lines, framing, connection, b"\r\n"])


def _connection_header(keep_alive: bool, http10: bool) -> bytes:
    if not keep_alive:
        return _CLOSE
    return _KEEP_ALIVE if http10 else b""


def _frame_stream(
    reply: MockReply, keep_alive: bool, http10: bool
) -> tuple[bytes, list[bytes], bytes | None]:
    """Head, framed events and trailer; trailer None means close instead (a cut, or HTTP/1.0 which has
    no chunked encoding and so delimits the body by closing)."""
    events = reply.events or []
    if http10:
        return _head(reply, b"", _CLOSE), list(events), None
    head = _head(reply, b"transfer-encoding: chunked\r\n", _connection_header(keep_alive, False))
    framed = [b"%x\r\n%s\r\n" % (len(e), e) for e in events if e]  # an empty chunk would end the body
    return head, framed, None if reply.action == "cut" else b"0\r\n\r\n"


_JSON_WIRE = _head(JSON_REPLY, b"content-length: %d\r\n" % len(JSON_BODY), b"") + JSON_BODY

# (reply, keep_alive, head_only, http10)
_Item = tuple[MockReply, bool, bool, bool]


class Connection(asyncio.Protocol):
    """One client connection: httptools parses, MockLLM answers, replies go out strictly in request order
    (pipelined requests queue; a connection never interleaves two answers)."""

    def __init__(self, mock: MockLLM) -> None:
        self._mock = mock
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] = {}
        self._decoded: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._queue: deque[_Item] = deque()
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._continue_waiting = False
        self._reading_paused = False
        self._stopped = False

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._stopped or self._transport.is_closing():  # type: ignore[union-attr]
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            reply = MockReply(0, [], action="close")  # we speak no upgrades
        except httptools.HttpParserCallbackError:
            reply = self._mock.error_reply(500, "mock-llm failed to answer")
        except httptools.HttpParserError as exc:
            reply = self._mock.error_reply(400, f"malformed HTTP request: {exc}")
        else:
            return
        self._stopped = True  # the parser cannot go on: answer what is owed, then this, then close
        self._enqueue((reply, False, False, False))

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._raw = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        headers: dict[str, str] = {}
        decoded = []
        for raw_name, raw_value in self._raw:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            decoded.append((name, value))
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self._headers, self._decoded = headers, decoded
        if headers.get("expect", "").lower() == "100-continue":
            if self._task is None and not self._queue:
                self._transport.write(_CONTINUE)  # type: ignore[union-attr]
            else:
                self._continue_waiting = True  # after the answers still owed, never in the middle of one

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._continue_waiting = False
        if self._transport.is_closing():  # type: ignore[union-attr]
            return  # pipelined behind a request that closed the connection
        parser = self._parser
        method = parser.get_method().decode("latin-1")
        url = httptools.parse_url(self._url)
        path = url.path.decode("latin-1") if url.path else "/"
        query = url.query.decode("latin-1") if url.query else ""
        reply = self._mock.respond(method, path, query, self._headers, b"".join(self._body), self._decoded)
        self._enqueue(
            (reply, parser.should_keep_alive(), method == "HEAD", parser.get_http_version() == "1.0")
        )

    # -- answering
    def _enqueue(self, item: _Item) -> None:
        reply = item[0]
        if (
            self._task is None
            and not self._queue
            and self._writable is None
            and not reply.first_byte_delay
            and (reply.events is None or not reply.chunk_delay)
        ):
            self._send_now(item)  # the common case: no task, no await
            return
        self._queue.append(item)
        if len(self._queue) >= _MAX_QUEUED and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Answer queued requests one after another."""
        while self._queue:
            if self._writable is not None:
                await self._writable  # back-pressure: the client is not reading what we sent
            item = self._queue.popleft()
            if self._reading_paused and len(self._queue) < _MAX_QUEUED // 2:
                self._reading_paused = False
                self._transport.resume_reading()  # type: ignore[union-attr]
            if not await self._send_later(item):
                self._queue.clear()
                return
        self._task = None
        if self._continue_waiting:
            self._continue_waiting = False
            self._transport.write(_CONTINUE)  # type: ignore[union-attr]

    def _send_now(self, item: _Item) -> bool:
        """Write a whole reply at once; False when the connection is now closed."""
        reply, keep_alive, head_only, http10 = item
        transport = self._transport
        assert transport is not None
        if reply is JSON_REPLY and keep_alive and not http10 and not head_only:
            transport.write(_JSON_WIRE)
            return True
        if reply.action == "close":
            transport.close()
            return False
        if reply.action == "garbage":
            transport.write(reply.body or b"")
            transport.close()
            return False
        if reply.events is None or head_only:
            body = reply.body or b""
            head = _head(reply, b"content-length: %d\r\n" % len(body), _connection_header(keep_alive, http10))
            transport.write(head if head_only else head + body)
            return self._finish(b"", keep_alive)
        head, framed, trailer = _frame_stream(reply, keep_alive, http10)
        transport.write(b"".join([head, *framed]))
        return self._finish(trailer, keep_alive)

    async def _send_later(self, item: _Item) -> bool:
        """Like _send_now, honouring first-byte and between-event delays (and back-pressure)."""
        reply, keep_alive, head_only, http10 = item
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.events is None or head_only or not reply.chunk_delay:
            return self._send_now(item)
        transport = self._transport
        assert transport is not None
        head, framed, trailer = _frame_stream(reply, keep_alive, http10)
        if not framed:
            transport.write(head)
        for i, data in enumerate(framed):
            if i:
                await asyncio.sleep(reply.chunk_delay)
            transport.write(head + data if i == 0 else data)  # each event leaves as soon as it is due
            if self._writable is not None:
                await self._writable
        return self._finish(trailer, keep_alive)

    def _finish(self, trailer: bytes | None, keep_alive: bool) -> bool:
        transport = self._transport
        assert transport is not None
        if trailer is None:
            transport.close()  # close, not abort: the events already written must reach the client
            return False
        if trailer:
            transport.write(trailer)
        if not keep_alive:
            transport.close()
            return False
        return True


async def start_server(
    host: str, port: int, mock: MockLLM, reuse_port: bool = False
) -> asyncio.AbstractServer:
    """Serve `mock` on the running loop (tests embed it this way); port 0 picks a free port."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: Connection(mock), host, port, reuse_port=reuse_port, backlog=1024
    )


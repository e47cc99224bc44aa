"""The client side of the proxy: one ``asyncio.Protocol`` per client connection.

A connection runs one exchange at a time. Pipelined requests stay unparsed in the
parser's buffer until the current response is complete, so answers go out in order;
reading pauses if a client piles up more than ``max_pipelined`` requests' worth of bytes.

The protocol object is itself the exchange's owner on the upstream side (no extra
object per request). Timeouts use one lazily re-armed timer per connection: moving a
deadline later costs a float store (see fastgw.proxy.deadline).

Bytes: request heads are rewritten with ``serialize_head`` (Cython) in one buffer; body
chunks are forwarded as they arrive; everything produced while handling one read is
written with a single ``transport.write``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastgw._speedups import RequestParser, serialize_head
from fastgw.generation import HOST_LITERAL, HOST_PRESERVE, Generation, Route
from fastgw.http.errors import END, ParseError
from fastgw.obs.metrics import GATEWAY
from fastgw.proxy import replies
from fastgw.proxy.deadline import Deadline
from fastgw.transform import TransformError

if TYPE_CHECKING:
    from fastgw.proxy.upstream import UpstreamConnection
    from workers.worker import Worker

# Connection states.
S_IDLE = 0  # waiting for a request head
S_BODY = 1  # reading the request body
S_WAIT = 2  # request read; the response is being produced
S_TUNNEL = 3  # after 101 Switching Protocols: raw bytes both ways
S_CLOSED = 4

# What the connection timer guards.
T_NONE = 0
T_KEEPALIVE = 1  # idle between requests: close quietly
T_HEADER = 2  # a head is arriving too slowly: 408
T_BODY = 3  # the request body stalls: 408
T_FIRST_BYTE = 4  # upstream has not answered: 504
T_UPSTREAM_IDLE = 5  # upstream stalls mid-response
T_CLIENT_STALL = 6  # the client stopped reading our response
T_LINGER = 7  # closing: drain what the client still sends, then close

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"via",
    }
)
# For an Upgrade request the Upgrade and Connection headers must reach the upstream.
HOP_BY_HOP_UPGRADE = HOP_BY_HOP - {b"upgrade", b"connection"}
RESPONSE_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"via"}
)
RESPONSE_HOP_BY_HOP_UPGRADE = RESPONSE_HOP_BY_HOP - {b"upgrade", b"connection"}

VIA = b"1.1 fastgw"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
REPLAY_LIMIT = 64 * 1024  # request bodies up to this size can be resent on a stale pooled connection
BODY_HIGH_WATER = 256 * 1024  # pause the client while this much body waits for the upstream
LINGER_SECONDS = 2.0


class HttpServerProtocol(asyncio.Protocol):
    __slots__ = (
        "worker",
        "loop",
        "transport",
        "parser",
        "peer",
        "state",
        "keep_alive",
        "draining",
        "reading_paused",
        "writing_paused",
        "_pumping",
        "_timer",
        "timeout_kind",
        # per exchange
        "gen",
        "head",
        "route",
        "endpoint",
        "endpoint_index",
        "upstream",
        "tried",
        "pending",
        "pending_size",
        "replay",
        "req_done",
        "resp_started",
        "rechunk",
        "resp_keep_alive",
        "skip_interim",
        "head_only",
        "handler",
        "body_seen",
        "started",
        "resp_status",
        "bytes_out",
        "held_body",
    )

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.transport: asyncio.Transport | None = None
        gen = worker.generation
        self.parser = RequestParser(gen.max_header_size, gen.max_headers)
        self.peer = b""
        self.state = S_IDLE
        self.keep_alive = True
        self.draining = False
        self.reading_paused = False
        self.writing_paused = False
        self._pumping = False
        self._timer = Deadline(self.loop, self._on_timeout)
        self.timeout_kind = T_NONE
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.gen: Generation | None = None
        self.head = None
        self.route: Route | None = None
        self.endpoint = None
        self.endpoint_index = -1
        self.upstream: UpstreamConnection | None = None
        self.tried: frozenset[int] = frozenset()
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = []
        self.req_done = False
        self.resp_started = False
        self.rechunk = False
        self.resp_keep_alive = True
        self.skip_interim = False
        self.head_only = False
        self.handler = None
        self.body_seen = 0
        self.started = 0.0
        self.resp_status = 0
        self.bytes_out = 0
        self.held_body: list[bytes] | None = None  # a body kept whole for a route's body rules

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if peer else b""
        self.worker.connection_opened(self)
        self._set_timeout(T_HEADER, self.worker.generation.header_timeout)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == S_TUNNEL:
            if self.upstream is not None:
                self.upstream.write(data)
            return
        if state == S_CLOSED:
            return  # lingering close: discard
        self.parser.feed(data)
        self._pump()

    def eof_received(self) -> bool:
        if self.state == S_TUNNEL and self.upstream is not None:
            self.upstream.transport.write_eof()  # type: ignore[union-attr]
            return True
        if self.state == S_WAIT:
            self.keep_alive = False  # a client that half-closed after its request still gets the answer
            return True
        if self.state == S_BODY:
            self._request_broken(400, "the client closed the connection inside the request body")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = S_CLOSED
        self._cancel_timer()
        if self.upstream is not None or self.handler is not None:
            self.abort_exchange()
        self.worker.connection_closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.handler is not None:
            self.handler.pause()
        if self.upstream is not None:
            self.upstream.pause_reading()
            self._set_timeout(T_CLIENT_STALL, self._idle_timeout())

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()
            if self.state == S_WAIT and self.resp_started:
                self._set_timeout(T_UPSTREAM_IDLE, self._idle_timeout())
        if self.handler is not None:
            self.handler.resume()

    # -- request side -------------------------------------------------------------------

    def _pump(self) -> None:
        """Pull parser events while the connection can act on them."""
        if self._pumping:
            return
        self._pumping = True
        try:
            parser = self.parser
            while True:
                state = self.state
                if state == S_IDLE:
                    try:
                        event = parser.next_event()
                    except ParseError as exc:
                        self._reject(exc.status, exc.reason)
                        return
                    if event is None:
                        if parser.buffered and self.timeout_kind == T_KEEPALIVE:
                            self._set_timeout(T_HEADER, self.worker.generation.header_timeout)
                        return
                    self._on_head(event)
                elif state == S_BODY:
                    try:
                        event = parser.next_event()
                    except ParseError as exc:
                        self._request_broken(exc.status, exc.reason)
                        return
                    if event is None:
                        return
                    if event is END:
                        self._on_request_end()
                    else:
                        self._on_request_body(event)
                else:
                    if state == S_WAIT and parser.buffered > self._pipeline_limit() and not self.reading_paused:
                        self.reading_paused = True
                        self.transport.pause_reading()
                    return
        finally:
            self._pumping = False

    def _pipeline_limit(self) -> int:
        gen = self.gen or self.worker.generation
        return gen.max_pipelined * gen.max_header_size

    def _on_head(self, head) -> None:
        worker = self.worker
        gen = worker.current_generation()
        self.gen = gen
        self.head = head
        self.started = self.loop.time()
        worker.request_started()
        self.keep_alive = head.keep_alive and not self.draining
        self.head_only = head.method == b"HEAD"
        has_body = head.chunked or head.content_length > 0
        if has_body:
            self.state = S_BODY
        else:
            self.parser.next_event()  # the END that follows a bodyless head at once
            self.state = S_WAIT
            self.req_done = True
        if head.content_length > gen.max_body_size:
            self._reject(413, f"request body of {head.content_length} bytes exceeds the limit of {gen.max_body_size}")
            return
        if has_body:
            self._set_timeout(T_BODY, gen.header_timeout)
        else:
            self._set_timeout(T_NONE, 0.0)

        ai = gen.ai
        if ai is not None and ai.handles(head.path):
            self.handler = ai.start(self, head)
            if not has_body:
                self.handler.on_request_end()
            elif head.expect_continue:
                self.transport.write(CONTINUE_100)
            return

        route = gen.router.match(head.method, head.host, head.path, head.get)
        if route is None:
            self.local_reply(404, f"no route for {head.method.decode()} {head.path.decode('latin-1')}")
            return
        self.route = route
        if has_body and head.expect_continue:
            self.transport.write(CONTINUE_100)
        self._pick_endpoint()
        if route.transform is not None and route.transform.needs_body:
            self.held_body = []  # rewritten whole once it has arrived (bounded by max_body_size)
            if self.req_done:
                self._send_transformed_body()
            return
        self.pending.append(self._upstream_head(head, route))
        self.pending_size = 0
        self._connect()

    def _on_request_body(self, chunk) -> None:
        if self.timeout_kind == T_BODY:
            self._timer.extend(self.gen.header_timeout)  # progress: a later deadline
        self.body_seen += len(chunk)
        if self.body_seen > self.gen.max_body_size:  # chunked bodies announce no length
            self._request_broken(413, f"request body exceeds the limit of {self.gen.max_body_size} bytes")
            return
        if self.handler is not None:
            self.handler.on_body(chunk)
            return
        if self.held_body is not None:
            self.held_body.append(bytes(chunk))
            return
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        if self.head.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        replay = self.replay
        if replay is not None:
            replay.append(data)
            if self.body_seen > REPLAY_LIMIT:
                self.replay = None
        if self.upstream is not None and not self.pending:
            self.upstream.write(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > BODY_HIGH_WATER and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()

    def _on_request_end(self) -> None:
        self.state = S_WAIT
        self.req_done = True
        if self.timeout_kind == T_BODY:
            self._set_timeout(T_NONE, 0.0)
        if self.handler is not None:
            self.handler.on_request_end()
            return
        if self.held_body is not None:
            self._send_transformed_body()
            return
        if self.head.chunked:
            terminator = b"0\r\n\r\n"
            if self.replay is not None:
                self.replay.append(terminator)
            if self.upstream is not None and not self.pending:
                self.upstream.write(terminator)
            else:
                self.pending.append(terminator)
        if self.upstream is not None and not self.resp_started:
            self._set_timeout(T_FIRST_BYTE, self.route.first_byte_timeout)

    def _send_transformed_body(self) -> None:
        """A route with body rules: rewrite the whole body, send it with its new length."""
        try:
            body = self.route.transform.request_body(b"".join(self.held_body))
        except TransformError as exc:
            self.local_reply(exc.status, exc.message, code="invalid_request")
            return
        self.held_body = None
        self.replay = [body]
        self.pending = [self._upstream_head(self.head, self.route, body_length=len(body)), body]
        self._connect()

    def _upstream_head(self, head, route: Route, body_length: int | None = None) -> bytes:
        target = head.target
        if route.strip_prefix and head.path.startswith(route.strip_prefix):
            rest = head.target[len(route.strip_prefix) :]
            target = rest if rest.startswith(b"/") else b"/" + rest
        first = b"%b %b HTTP/1.1" % (head.method, target)
        if route.host_mode == HOST_PRESERVE:
            host = head.host or self.endpoint.host_header
        elif route.host_mode == HOST_LITERAL:
            host = route.literal_host
        else:
            host = self.endpoint.host_header
        forwarded = head.get(b"x-forwarded-for")
        xff = forwarded + b", " + self.peer if forwarded else self.peer
        via = head.get(b"via")
        extra = b"Host: %b\r\nX-Forwarded-For: %b\r\nX-Forwarded-Proto: http\r\nVia: %b\r\n" % (
            host,
            xff,
            via + b", " + VIA if via else VIA,
        )
        if body_length is not None:  # a rewritten body: its own length, no chunked framing
            extra += b"Content-Length: %d\r\n" % body_length
        elif head.chunked:
            extra += b"Transfer-Encoding: chunked\r\n"
        if head.upgrade:
            drop = HOP_BY_HOP_UPGRADE
        else:
            drop = HOP_BY_HOP
            if head.connection_tokens:
                drop = drop | frozenset(head.connection_tokens)
        if body_length is not None:
            drop = drop | {b"content-length"}
        headers = head.headers
        transform = route.transform
        if transform is not None:
            headers = transform.request_headers(headers)
            first = b"%b %b HTTP/1.1" % (head.method, transform.request_target(target))
        return serialize_head(first, headers, drop, extra)

    # -- upstream selection and connection ---------------------------------------------

    def _pick_endpoint(self) -> None:
        route = self.route
        index = route.balancer.pick(self.tried)
        self.endpoint_index = index
        self.endpoint = route.endpoints[index]

    def _connect(self) -> None:
        conn = self.endpoint.pool.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.loop.create_task(self._connect_new(self.endpoint, self.gen))

    async def _connect_new(self, endpoint, gen: Generation) -> None:
        route = self.route
        try:
            conn = await endpoint.pool.connect(route.connect_timeout)
        except asyncio.TimeoutError:
            if self.gen is gen and self.endpoint is endpoint:
                self._upstream_failed(504, f"connecting to upstream {endpoint.url} timed out", retry=True)
            return
        except OSError as exc:
            if self.gen is gen and self.endpoint is endpoint:
                self._upstream_failed(502, f"cannot connect to upstream {endpoint.url}: {exc.strerror or exc}", retry=True)
            return
        if self.gen is not gen or self.endpoint is not endpoint or self.state == S_CLOSED:
            endpoint.pool.release(conn)  # the client went away meanwhile
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.owner = self
        conn.parser.start(self.head.method)
        pending = self.pending
        if len(pending) == 1:
            conn.write(pending[0])
        else:
            conn.write(b"".join(pending))
        self.pending = []
        self.pending_size = 0
        if self.reading_paused and self.state == S_BODY:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.req_done:
            self._set_timeout(T_FIRST_BYTE, self.route.first_byte_timeout)

    def _upstream_failed(self, status: int, message: str, *, retry: bool) -> None:
        """The upstream could not be reached or failed before answering."""
        route = self.route
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if route is None:
            return
        route.balancer.release(self.endpoint_index)
        self.worker.upstream_errors += 1
        tried = self.tried | {self.endpoint_index}
        can_replay = self.replay is not None and (self.req_done or not self.replay)
        if retry and can_replay and len(tried) < len(route.endpoints) and not self.resp_started:
            self.tried = tried
            self._pick_endpoint()
            self._resend()
            return
        self.local_reply(status, message)

    def _resend(self) -> None:
        """Start the request again on a fresh connection (nothing reached the client)."""
        transform = self.route.transform
        rewritten = transform is not None and transform.needs_body  # replay holds the rewritten body
        body_length = sum(map(len, self.replay or ())) if rewritten else None
        self.pending = [self._upstream_head(self.head, self.route, body_length), *(self.replay or ())]
        self.pending_size = sum(map(len, self.pending))
        conn = self.endpoint.pool.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.loop.create_task(self._connect_new(self.endpoint, self.gen))

    # -- upstream events (UpstreamOwner) --------------------------------------------------

    def on_upstream_data(self, conn: UpstreamConnection) -> None:
        parser = conn.parser
        out: list[bytes] = []
        try:
            while True:
                event = parser.next_event()
                if event is None:
                    break
                if event is END:
                    if self.skip_interim:
                        self.skip_interim = False
                        continue
                    if self.state == S_TUNNEL:
                        self._start_tunnel(conn, out)
                        return
                    if self.rechunk:
                        out.append(b"0\r\n\r\n")
                    self._write(out)
                    self._response_complete(conn)
                    return
                if self.resp_started:
                    if self.rechunk:
                        out.append(b"%x\r\n" % len(event))
                        out.append(event)
                        out.append(b"\r\n")
                    else:
                        out.append(event)
                else:
                    self._on_response_head(event, out)
        except ParseError as exc:
            self._write(out)
            if self.resp_started:
                self.abort_exchange()
            else:
                self._upstream_failed(502, f"upstream sent an invalid response: {exc.reason}", retry=False)
            return
        self._write(out)
        if self.resp_started and self.timeout_kind != T_CLIENT_STALL:
            self._timer.extend(self.route.idle_timeout)

    def _on_response_head(self, rhead, out: list[bytes]) -> None:
        status = rhead.status
        self.resp_status = status
        if status < 200 and status != 101:
            self.skip_interim = True  # we answered Expect: 100-continue ourselves
            return
        self.resp_started = True
        head = self.head
        if status == 101:
            if not head.upgrade:
                raise ParseError(502, "upstream switched protocols without an Upgrade request")
            self.state = S_TUNNEL
            self.keep_alive = False
            out.append(self._response_head(rhead, RESPONSE_HOP_BY_HOP_UPGRADE, b""))
            return
        no_body = self.head_only or status in (204, 304)
        extra = b""
        if not no_body and rhead.content_length < 0:
            if head.version == 11:
                self.rechunk = True
                extra = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # HTTP/1.0: the body ends when we close
        if not self.keep_alive:
            extra += b"Connection: close\r\n"
        self.resp_keep_alive = rhead.keep_alive
        drop = RESPONSE_HOP_BY_HOP
        if rhead.connection_tokens:
            drop = drop | frozenset(rhead.connection_tokens)
        out.append(self._response_head(rhead, drop, extra))
        self._set_timeout(T_UPSTREAM_IDLE, self.route.idle_timeout)

    def _response_head(self, rhead, drop: frozenset, extra: bytes) -> bytes:
        headers = rhead.headers
        if self.route.transform is not None:
            headers = self.route.transform.response_headers(headers)
        via = rhead.get(b"via")
        extra += b"Via: %b\r\n" % (via + b", " + VIA if via else VIA)
        first = replies.STATUS_LINES.get(rhead.status)
        if first is None or rhead.reason:
            first = b"HTTP/1.1 %d %b" % (rhead.status, rhead.reason)
        return serialize_head(first, headers, drop, extra)

    def on_upstream_eof(self, conn: UpstreamConnection) -> None:
        try:
            conn.parser.feed_eof()
        except ParseError as exc:
            if self.resp_started:
                self.abort_exchange()
            else:
                self._upstream_failed(
                    502, f"upstream closed the connection early: {exc.reason}", retry=conn.reused and not self.resp_started
                )
            return
        self.on_upstream_data(conn)

    def on_upstream_lost(self, conn: UpstreamConnection, exc: BaseException | None) -> None:
        if conn is not self.upstream:
            return
        self.upstream = None
        if self.state == S_TUNNEL:
            self._close()
            return
        if self.resp_started:
            self.abort_exchange()
        else:
            # A pooled connection the upstream had closed: safe to resend if we still hold the body.
            self._upstream_failed(502, "upstream closed the connection before answering", retry=conn.reused)

    def on_tunnel_data(self, data: bytes) -> None:
        if self.state == S_TUNNEL:
            self.transport.write(data)

    def on_upstream_pause(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_upstream_resume(self) -> None:
        if self.reading_paused and self.transport is not None and self.state in (S_BODY, S_TUNNEL):
            self.reading_paused = False
            self.transport.resume_reading()

    def _start_tunnel(self, conn: UpstreamConnection, out: list[bytes]) -> None:
        """After 101: whatever either side sends goes to the other, unparsed."""
        conn.tunnel = True
        rest = conn.parser.take_rest()
        if rest:
            out.append(rest)
        self._write(out)
        early = self.parser.take_rest()
        if early:
            conn.write(early)
        self._set_timeout(T_NONE, 0.0)

    # -- finishing -------------------------------------------------------------------------

    def _response_complete(self, conn: UpstreamConnection) -> None:
        route = self.route
        route.balancer.release(self.endpoint_index)
        self.upstream = None
        if self.req_done and self.resp_keep_alive:
            conn.pool.release(conn)
        else:
            conn.close()
        self.finish_exchange()

    def _record(self, status: int) -> None:
        """Metrics and the access-log line of a plain (non-AI) exchange."""
        if self.handler is not None or self.head is None:
            return  # AI exchanges record richer lines themselves
        duration = self.loop.time() - self.started
        route = self.route.name if self.route is not None else ""
        GATEWAY.request_done(route, status, duration)
        log = self.worker.access_log
        if log.enabled:
            head = self.head
            log.write(client_ip=self.peer.decode(), method=head.method, target=head.target, status=status,
                      duration=duration, bytes_out=self.bytes_out, route=route or None)

    def finish_exchange(self) -> None:
        """The response is fully written: next request, or close."""
        self._record(self.resp_status)
        self.worker.request_finished()
        self._reset_exchange()
        if self.state == S_BODY:
            # Answered before the body was read (e.g. 404 on a POST): the rest of the body
            # can't be skipped safely, so close, lingering so the client reads our answer.
            self._linger_close()
            return
        if not self.keep_alive or self.state == S_CLOSED:
            self._close()
            return
        self.state = S_IDLE
        if self.draining:
            self._close()
            return
        self._set_timeout(T_KEEPALIVE, self.worker.generation.keepalive_timeout)
        if self.reading_paused and not self.writing_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.parser.buffered:
            self._pump()

    def abort_exchange(self, *, flush: bool = True) -> None:
        """Tear down a half-done exchange: the client can't get a well-formed answer.

        With ``flush`` the client still receives what was relayed before the connection
        closes (a truncated body is visible as such); without it (a client that stopped
        reading) the connection is reset.
        """
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if self.route is not None and self.endpoint_index >= 0:
            self.route.balancer.release(self.endpoint_index)
        if self.handler is not None:
            self.handler.cancel()
            self.handler = None
        if self.gen is not None:
            self._record(self.resp_status or 502)
            self.worker.request_finished()
            self.gen = None
        if self.transport is not None and self.state != S_CLOSED:
            self.state = S_CLOSED
            self._cancel_timer()
            if flush:
                self.transport.close()
            else:
                self.transport.abort()

    # -- local replies ------------------------------------------------------------------------

    def local_reply(self, status: int, message: str, *, code: str | None = None) -> None:
        """Answer from the gateway itself (404, 502, 504...) and keep the connection if we can."""
        if self.state == S_BODY:
            self.keep_alive = False  # the unread body would be taken for the next request
        self.resp_status = status
        self.write_local(
            replies.error_response(status, message, code=code, keep_alive=self.keep_alive, head_only=self.head_only)
        )
        self.finish_exchange()

    def write_local(self, data: bytes) -> None:
        if self.transport is not None and self.state != S_CLOSED:
            self.bytes_out += len(data)
            self.transport.write(data)

    def _reject(self, status: int, message: str) -> None:
        """A request we refuse to parse further: answer, then close with a linger."""
        if self.gen is not None:
            self._record(status)
            self.worker.request_finished()
        self.keep_alive = False
        self.worker.rejected += 1
        self._reset_exchange()
        self.transport.write(replies.error_response(status, message, keep_alive=False))
        self._linger_close()

    def _request_broken(self, status: int, message: str) -> None:
        """The request body turned out malformed or too large mid-stream."""
        if self.resp_started:
            self.abort_exchange()
            return
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if self.route is not None:
            self.route.balancer.release(self.endpoint_index)
        if self.handler is not None:
            self.handler.cancel()
        self._reject(status, message)

    def _write(self, out: list[bytes]) -> None:
        if out and self.state != S_CLOSED:
            data = out[0] if len(out) == 1 else b"".join(out)
            self.bytes_out += len(data)
            self.transport.write(data)

    def _close(self) -> None:
        if self.state != S_CLOSED:
            self.state = S_CLOSED
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _linger_close(self) -> None:
        """Close after our answer, discarding input for a moment so the client reads it (no RST)."""
        self.state = S_CLOSED
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self._set_timeout(T_LINGER, LINGER_SECONDS)
        else:
            transport.close()

    def start_drain(self) -> None:
        """Worker shutdown: close when idle, else after the current exchange."""
        self.draining = True
        self.keep_alive = False
        if self.state == S_IDLE and not self.parser.buffered:
            self._close()

    # -- timers --------------------------------------------------------------------------

    def _idle_timeout(self) -> float:
        return self.route.idle_timeout if self.route is not None else self.worker.generation.keepalive_timeout

    def _set_timeout(self, kind: int, seconds: float) -> None:
        self.timeout_kind = kind
        if kind == T_NONE:
            self._timer.stop()
        else:
            self._timer.set(seconds)

    def _cancel_timer(self) -> None:
        self.timeout_kind = T_NONE
        self._timer.cancel()

    def _on_timeout(self) -> None:
        kind = self.timeout_kind
        self.timeout_kind = T_NONE
        if kind == T_KEEPALIVE:
            self._close()
        elif kind == T_BODY and self.reading_paused:
            self._set_timeout(T_BODY, self.gen.header_timeout)  # we paused the client: not its fault
        elif kind in (T_HEADER, T_BODY):
            if self.resp_started:
                self.abort_exchange()
            else:
                self._request_broken(408, "timed out waiting for the request")
        elif kind == T_FIRST_BYTE:
            self._upstream_failed(504, "upstream did not answer in time", retry=False)
        elif kind == T_CLIENT_STALL:
            self.abort_exchange(flush=False)
        elif kind == T_UPSTREAM_IDLE:
            if self.resp_started or self.handler is not None:
                self.abort_exchange()
            else:
                self._upstream_failed(504, "upstream stalled", retry=False)
        elif kind == T_LINGER:
            self.transport.close()

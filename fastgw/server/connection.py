"""The client side: one ``asyncio.Protocol`` per client connection.

A connection runs one exchange at a time. Pipelined requests stay unparsed in the
parser's buffer until the current response is complete, so answers go out in order;
reading pauses if a client piles up more than ``max_pipelined`` requests' worth of bytes.

Per request it routes the head, creates a :class:`~fastgw.server.stream.Stream` with the
chain of the route (or AI model), runs the chain's ``on_request_headers`` (so a 401 goes
out before any body is read) and hands the exchange to a terminal handler: the plain
proxy (one per connection, reused) or the AI model handler. It owns parsing, keep-alive,
pipelining, timeouts, back-pressure and drain; policy lives in filters and handlers.

Timeouts use one lazily re-armed timer per connection: moving a deadline later costs a
float store (see fastgw.proxy.deadline).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastgw._speedups import RequestParser
from fastgw.generation import Generation
from fastgw.http.errors import END, ParseError
from fastgw.http.response import ResponseWriter, keep_alive_header
from fastgw.http.target import normalise_target
from fastgw.obs.metrics import GATEWAY
from fastgw.proxy import replies
from fastgw.proxy.deadline import Deadline
from fastgw.proxy.handler import ProxyHandler
from fastgw.server import lastresort
from fastgw.server.stream import STAGE_HEADERS, Handler, Stream, WorkerServices

# Connection states.
DISCARD_LIMIT = 64 * 1024
"""Bytes of an answered request's body (Content-Length framed) read and dropped to keep the connection."""

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
T_HANDLER = 8  # the handler's own wait (the AI handler's provider timeouts): handler.on_timeout()
T_TUNNEL_IDLE = 9  # a websocket tunnel with no traffic either way
# The upstream's (or provider's) timers: suspended while the client is the slow side.
UPSTREAM_TIMERS = frozenset({T_FIRST_BYTE, T_UPSTREAM_IDLE, T_HANDLER, T_TUNNEL_IDLE})

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_SECONDS = 2.0


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "services",
        "loop",
        "transport",
        "parser",
        "peer",
        "state",
        "keep_alive",
        "draining",
        "scheme",
        "reading_paused",
        "writing_paused",
        "_hold",
        "_discarding",
        "_pumping",
        "_timer",
        "timeout_kind",
        "writer",
        "proxy",
        "admitted",
        # per exchange
        "gen",
        "head",
        "stream",
        "handler",
        "req_done",
        "head_only",
        "body_seen",
        "body_started",
        "resp_status",
        "bytes_out",
    )

    def __init__(self, services: WorkerServices) -> None:
        self.services = services
        self.loop = services.loop
        self.transport: asyncio.Transport | None = None
        gen = services.current_generation()
        self.parser = RequestParser(gen.max_header_size, gen.max_headers)
        self.peer = b""
        self.state = S_IDLE
        self.keep_alive = True
        self.draining = False
        self.reading_paused = False
        self._hold: asyncio.TimerHandle | None = None  # not reading after a shed answer (overload)
        self._discarding: tuple[float, float] | None = None  # answered before its body: (hold, keep-alive)
        self.writing_paused = False
        self._pumping = False
        self._timer = Deadline(self.loop, self._on_timeout)
        self.timeout_kind = T_NONE
        self.writer = ResponseWriter(self)
        self.proxy = ProxyHandler(self)
        self.admitted = False
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.gen: Generation | None = None
        self.head = None
        self.stream: Stream | None = None
        self.handler: Handler | None = None
        self.req_done = False
        self.head_only = False
        self.body_seen = 0
        self.body_started = 0.0
        self.resp_status = 0
        self.bytes_out = 0

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if peer else b""
        tls = transport.get_extra_info("ssl_object")
        self.scheme = b"http" if tls is None else b"https"
        if tls is not None:  # uvloop makes the connection once the handshake is done
            GATEWAY.tls_handshakes.inc(("true" if tls.session_reused else "false",))
        gen = self.services.current_generation()
        refused = self.services.admission.admit(self.peer, gen)
        if refused is not None:  # over http.max_connections(_per_ip): say so, and close
            GATEWAY.connection_events.inc((refused,))
            self.state = S_CLOSED
            message = "too many connections" + (" from this address" if refused == "refused_per_ip" else "")
            self.transport.write(replies.error_response(503, message, code="too_many_connections", keep_alive=False))
            self.transport.close()
            return
        self.admitted = True
        self.services.connection_opened(self)
        self.set_timeout(T_HEADER, gen.header_timeout)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == S_TUNNEL:
            self.proxy.tunnel_data(data)
            return
        if state == S_CLOSED:
            return  # lingering close: discard
        self.parser.feed(data)
        try:
            self._pump()
        except Exception as exc:  # a bug below us: answer it, never let asyncio drop the connection
            self._crashed(exc)

    def eof_received(self) -> bool:
        if self.state == S_TUNNEL:
            return self.proxy.tunnel_eof()
        if self.state == S_WAIT:
            self.keep_alive = False  # a client that half-closed after its request still gets the answer
            stream = self.stream
            if stream is not None and stream.on_client_eof is not None:
                stream.on_client_eof()  # ...at once: it stops waiting in a concurrency queue
            return True
        if self.state == S_BODY and self._discarding is None:
            self._request_broken(400, "the client closed the connection inside the request body")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = S_CLOSED
        self._cancel_timer()
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self.handler is not None:
            self.abort_exchange()
        if self.admitted:
            self.admitted = False
            self.services.admission.release(self.peer)
            self.services.connection_closed(self)

    def pause_writing(self) -> None:
        """The client stopped reading: only http.send_timeout runs now (never an upstream timer,
        so a slow reader never counts as an upstream failure)."""
        self.writing_paused = True
        if self.handler is not None:
            self.set_timeout(T_CLIENT_STALL, (self.gen or self.services.current_generation()).send_timeout)
            self.handler.pause()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.timeout_kind == T_CLIENT_STALL:
            self.set_timeout(T_NONE, 0.0)
        if self.handler is not None:
            self.handler.resume()  # re-arms its own timer

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
                    if self._hold is not None:
                        return  # not read during an overload pause
                    try:
                        event = parser.next_event()
                    except ParseError as exc:
                        self._reject(exc.status, exc.reason)
                        return
                    if event is None:
                        if parser.buffered and self.timeout_kind == T_KEEPALIVE:
                            self.set_timeout(T_HEADER, self.services.current_generation().header_timeout)
                        return
                    self._on_head(event)
                elif state == S_BODY:
                    try:
                        event = parser.next_event()
                    except ParseError as exc:
                        if self._discarding is not None:
                            self._close()
                        else:
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

    def _body_deadline(self) -> float:
        """Seconds left for the body: the sooner of ``body_timeout`` of silence and falling below
        ``body_min_rate`` on average after a ``body_timeout`` grace (so a trickle is cut too).
        Both only move later with progress, as Deadline.extend needs."""
        gen = self.gen
        idle = gen.body_timeout
        rate = gen.body_min_rate
        if rate <= 0:
            return idle
        left = self.body_started + idle + self.body_seen / rate - self.loop.time()
        return left if left < idle else idle

    def _pipeline_limit(self) -> int:
        gen = self.gen or self.services.current_generation()
        return gen.max_pipelined * gen.max_header_size

    def _on_head(self, head: Any) -> None:
        services = self.services
        invalid = normalise_target(head)
        if invalid is not None:
            self._reject(400, invalid)
            return
        gen = services.current_generation()
        self.gen = gen
        self.head = head
        started = self.loop.time()
        services.request_started()
        self.keep_alive = head.keep_alive and not self.draining
        self.head_only = head.method == b"HEAD"
        has_body = head.chunked or head.content_length > 0
        if has_body:
            self.state = S_BODY
        else:
            self.parser.next_event()  # the END that follows a bodyless head at once
            self.state = S_WAIT
            self.req_done = True

        ai = gen.ai
        if ai is not None and ai.handles(head.path):
            stream = Stream(self, gen, head, ai.chain, started)
            stream.compression = gen.compression  # until the model's own settings are known
            handler = ai.start(stream)
        else:
            route = gen.router.match(head.method, head.host, head.path, head.get)
            if route is None:
                self.stream = Stream(self, gen, head, gen.unrouted_chain, started)
                self.local_reply(404, f"no route for {head.method.decode()} {head.path.decode('latin-1')}")
                return
            stream = Stream(self, gen, head, route.chain, started)
            stream.route_name = route.name
            stream.compression = route.compression
            handler = self.proxy
            handler.begin(stream, route)
        stream.handler = handler
        self.stream = stream
        self.handler = handler
        if has_body and (head.chunked or self.parser.buffered < head.content_length):
            self.body_started = self.loop.time()
            self.set_timeout(T_BODY, gen.body_timeout)
        else:  # no body, or all of it came with the head: nothing to wait for
            self.set_timeout(T_NONE, 0.0)
        if stream.chain.on_request_headers:
            stream.run(STAGE_HEADERS, self._start_handler)
        else:
            self._start_handler()

    def _start_handler(self) -> None:
        """The head passed the chain (so a 401 beats a 413): only now may the client send
        its body (100-continue)."""
        head = self.head
        if head.content_length > self.gen.max_body_size:
            self.local_reply(413, f"request body of {head.content_length} bytes exceeds the limit of {self.gen.max_body_size}")
            return
        if self.state == S_BODY and head.expect_continue:
            self.transport.write(CONTINUE_100)
        stream = self.stream
        self.handler.start()
        if self.req_done and self.stream is stream and not stream.finished:
            self.handler.on_request_end()

    def _on_request_body(self, chunk: Any) -> None:
        if self._discarding is not None:
            return  # the rest of a body already answered (bounded: DISCARD_LIMIT)
        self.body_seen += len(chunk)
        if self.timeout_kind == T_BODY:
            self._timer.extend(self._body_deadline())  # progress: a later deadline
        if self.body_seen > self.gen.max_body_size:  # chunked bodies announce no length
            self._request_broken(413, f"request body exceeds the limit of {self.gen.max_body_size} bytes")
            return
        self.handler.on_body(chunk)

    def _on_request_end(self) -> None:
        if self._discarding is not None:  # the answered request's body is skipped: next request
            hold, keepalive_timeout = self._discarding
            self._discarding = None
            self.state = S_IDLE
            self._after_exchange(hold, keepalive_timeout)
            return
        self.state = S_WAIT
        self.req_done = True
        if self.timeout_kind == T_BODY:
            self.set_timeout(T_NONE, 0.0)
        if self.stream._then is None:  # the chain let the head through: the handler is running
            self.handler.on_request_end()

    # -- for handlers -------------------------------------------------------------------------

    @property
    def reading_body(self) -> bool:
        """The request body is still arriving and an answer now means closing after it (a
        small body of known length is read and dropped after the answer instead)."""
        return self.state == S_BODY and not self._body_discardable()

    def _body_discardable(self) -> bool:
        head = self.head
        return (
            head is not None and not head.chunked and self.keep_alive and not self.draining
            and 0 <= head.content_length - self.body_seen <= DISCARD_LIMIT
        )

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state != S_CLOSED:
            self.bytes_out += len(data)
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Resume a client paused for request-body back-pressure."""
        if self.reading_paused and self.transport is not None and self.state in (S_BODY, S_TUNNEL):
            self.reading_paused = False
            self.transport.resume_reading()

    def start_tunnel(self) -> None:
        self.state = S_TUNNEL
        self.keep_alive = False

    # -- finishing -------------------------------------------------------------------------

    def finish_exchange(self) -> None:
        """The response is fully written: next request, or close."""
        gen = self.gen
        hold = 0.0
        if self.stream is not None:
            hold = self.stream.hold_after
            self.stream.done(self.resp_status)
        discard = self.state == S_BODY and self._body_discardable()
        self.services.request_finished()
        self._reset_exchange()
        if self.state == S_BODY:
            # Answered before the body was read (e.g. 401, a shed or refused request): a
            # small body of known length is read and dropped, keeping the connection (a
            # client that retries at once must not cost a new connection each time); any
            # other is not skipped, so close, lingering so the client reads our answer.
            if discard:
                self._discarding = (hold, gen.keepalive_timeout)
                self.set_timeout(T_KEEPALIVE, gen.header_timeout)  # the rest must come: else a quiet close
                if self.reading_paused and not self.writing_paused:
                    self.reading_paused = False
                    self.transport.resume_reading()
                if self.parser.buffered:
                    self._pump()
                return
            self._linger_close()
            return
        if not self.keep_alive or self.state == S_CLOSED:
            self._close()
            return
        self.state = S_IDLE
        self._after_exchange(hold, gen.keepalive_timeout)

    def _after_exchange(self, hold: float, keepalive_timeout: float) -> None:
        """Idle after an exchange: the next request, after an overload pause if ``hold``."""
        if self.draining and not self.parser.buffered:  # a request already here is still answered (and closes)
            self._close()
            return
        if hold > 0:  # shed for overload: this client's next request waits unread (TCP back-pressure)
            self._cancel_timer()
            if not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            self._hold = self.loop.call_later(hold, self._end_hold, keepalive_timeout)
            return
        self._next_request(keepalive_timeout)

    def _end_hold(self, keepalive_timeout: float) -> None:
        self._hold = None
        if self.state != S_IDLE:
            return
        if self.draining and not self.parser.buffered:
            self._close()
            return
        self._next_request(keepalive_timeout)

    def _next_request(self, keepalive_timeout: float) -> None:
        self.set_timeout(T_KEEPALIVE, keepalive_timeout)
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
        handler = self.handler
        if handler is not None:
            self.handler = None
            handler.cancel()
        if self.gen is not None:
            if self.stream is not None:
                self.stream.done(self.resp_status or 502)
            self.services.request_finished()
            self.gen = None
        if self.transport is not None and self.state != S_CLOSED:
            self.state = S_CLOSED
            self._cancel_timer()
            if flush:
                self.transport.close()
            else:
                self.transport.abort()

    def _crashed(self, exc: Exception) -> None:
        """The last resort for the client side (parsing, filters, handlers' request paths)."""
        request_id = lastresort.report("connection", exc)
        if self.stream is not None:  # the answer's x-request-id finds the log line and the /diagnose record
            self.stream.request_id = request_id
        handler = self.handler
        try:
            if handler is not None and self.stream is not None and not self.stream.finished:
                handler.crashed(lastresort.message(request_id))
            else:
                self.abort_exchange()
        except Exception:  # answering failed too: at least the connection ends
            self.abort_exchange()

    # -- local replies ------------------------------------------------------------------------

    def local_reply(self, status: int, message: str, *, code: str | None = None, extra: bytes = b"") -> None:
        """Answer from the gateway itself (404, 502, 504...) and keep the connection if we can."""
        if self.reading_body:
            self.keep_alive = False  # the unread body would be taken for the next request
        self.resp_status = status
        stream = self.stream
        if stream is not None:
            stream.error, stream.error_code = message, code
            extra += stream.request_id_header()
        extra += keep_alive_header(self)
        self.write(replies.error_response(status, message, code=code, keep_alive=self.keep_alive,
                                          head_only=self.head_only, extra=extra))
        self.finish_exchange()

    def _reject(self, status: int, message: str) -> None:
        """A request we refuse to parse further: answer, then close with a linger."""
        if self.gen is not None:
            if self.stream is not None:
                self.stream.done(status)
            self.services.request_finished()
        self.keep_alive = False
        self.services.count_rejected()
        self._reset_exchange()
        self.transport.write(replies.error_response(status, message, keep_alive=False))
        self._linger_close()

    def _request_broken(self, status: int, message: str) -> None:
        """The request body turned out malformed or too large mid-stream."""
        if self.bytes_out:
            self.abort_exchange()
            return
        handler = self.handler
        if handler is not None:
            self.handler = None
            handler.cancel()
        self._reject(status, message)

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
            self.set_timeout(T_LINGER, LINGER_SECONDS)
        else:
            transport.close()

    def start_drain(self) -> None:
        """The worker drains: close when idle between requests, else after the current exchange.

        Only *new* requests are told the connection closes (``_on_head``): a response in
        flight keeps the framing its head announced (chunked stays chunked, to its last
        chunk). A connection that has not sent its first request yet may still send it."""
        self.draining = True
        if self.state == S_IDLE and self.timeout_kind == T_KEEPALIVE and not self.parser.buffered:
            self._close()

    def drain_deadline(self) -> None:
        """The drain deadline passed: end what is in flight now and close.

        The handler ends its answer as well-formed as it can (an AI stream with an error
        event in its dialect and a proper end of body); anything else is closed."""
        if self.state == S_CLOSED:
            return
        handler = self.handler
        if handler is not None:
            handler.drain_deadline()
        if self.state != S_CLOSED:
            if self.handler is not None or self.gen is not None:
                self.abort_exchange()
            else:
                self._close()

    # -- timers --------------------------------------------------------------------------

    def set_timeout(self, kind: int, seconds: float) -> None:
        if self.timeout_kind == T_CLIENT_STALL and self.writing_paused and kind in UPSTREAM_TIMERS:
            return  # the client is the slow side: resume_writing() lets the handler re-arm
        self.timeout_kind = kind
        if kind == T_NONE:
            self._timer.stop()
        else:
            self._timer.set(seconds)

    def extend_timeout(self, seconds: float) -> None:
        if self.timeout_kind != T_CLIENT_STALL:
            self._timer.extend(seconds)

    def _cancel_timer(self) -> None:
        self.timeout_kind = T_NONE
        self._timer.cancel()

    def _on_timeout(self) -> None:
        kind = self.timeout_kind
        self.timeout_kind = T_NONE
        if kind == T_KEEPALIVE:
            self._close()
        elif kind == T_BODY and self.reading_paused:
            # We paused the client (back-pressure): not its fault; its rate is measured afresh.
            gen = self.gen
            self.body_started = self.loop.time() - (self.body_seen / gen.body_min_rate if gen.body_min_rate > 0 else 0)
            self.set_timeout(T_BODY, gen.body_timeout)
        elif kind in (T_HEADER, T_BODY):
            GATEWAY.connection_events.inc(("header_timeout" if kind == T_HEADER else "body_timeout",))
            if self.bytes_out:
                self.abort_exchange()
            else:
                self._request_broken(408, "timed out waiting for the request")
        elif kind == T_CLIENT_STALL:
            GATEWAY.connection_events.inc(("send_timeout",))
            self.abort_exchange(flush=False)
        elif kind == T_TUNNEL_IDLE:
            GATEWAY.connection_events.inc(("tunnel_idle",))
            self.abort_exchange()
        elif kind in (T_FIRST_BYTE, T_UPSTREAM_IDLE):
            self.proxy.timed_out(kind == T_FIRST_BYTE)
        elif kind == T_HANDLER:
            if self.handler is not None:
                self.handler.on_timeout()
        elif kind == T_LINGER:
            self.transport.close()

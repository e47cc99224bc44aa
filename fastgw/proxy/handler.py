"""The plain proxy: the terminal handler of plain HTTP routes.

It picks an endpoint, sends the rewritten head and the body as they arrive (or, when a
filter needs the body whole, once it is complete), relays the answer (re-chunked when it
has no length), resends on a stale pooled connection or the next endpoint when nothing
reached the client, and tunnels after ``101 Switching Protocols``.

One handler per client connection, reused by each of its plain exchanges: it is also the
owner of the upstream connection (no extra object per request). Everything produced while
handling one upstream read is written with a single ``transport.write``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from fastgw._speedups import serialize_head
from fastgw.generation import HOST_LITERAL, HOST_PRESERVE, Route
from fastgw.http.encoding import BodyCoder, plan_relay
from fastgw.http.errors import END, ParseError
from fastgw.http.response import LAST_CHUNK, chunk, chunk_into
from fastgw.obs.metrics import GATEWAY, status_class
from fastgw.proxy import replies
from fastgw.proxy.balancer import NONE_ELIGIBLE
from fastgw.proxy.endpoints import CONNECT_FAILURE, STATUS_5XX
from fastgw.proxy.wsframes import CLOSE_TO_CLIENT, FrameBoundary, close_to_upstream
from fastgw.server.stream import STAGE_BODY, FilterError, Stream

if TYPE_CHECKING:
    from fastgw.proxy.upstream import UpstreamConnection
    from fastgw.server.connection import HttpConnection

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
# Content-Length is re-emitted from the parsed value: one header, one value ("5, 5" -> "5").
FRAMING = frozenset({b"content-length"})
REQUEST_DROP = HOP_BY_HOP | FRAMING
"""What never leaves as the client sent it (a route with lanes adds their headers: _with_lanes)."""
CHUNKED = b"Transfer-Encoding: chunked\r\n"
# The one upgrade the gateway tunnels; the request's own Upgrade/Connection never pass as is.
WEBSOCKET_UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
RESPONSE_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"via",
     b"content-length"}
)
RESPONSE_HOP_BY_HOP_UPGRADE = RESPONSE_HOP_BY_HOP - {b"upgrade", b"connection"}

VIA = b"1.1 fastgw"
REPLAY_LIMIT = 64 * 1024  # request bodies up to this size can be resent on a stale pooled connection
BODY_HIGH_WATER = 256 * 1024  # pause the client while this much body waits for the upstream

# connection timer kinds this handler arms (fastgw.server.connection)
T_NONE, T_FIRST_BYTE, T_UPSTREAM_IDLE, T_CLIENT_STALL, T_TUNNEL_IDLE = 0, 4, 5, 6, 9


@functools.lru_cache(maxsize=256)
def _status_line(status: int, reason: bytes) -> bytes:
    """The upstream's status line as it sent it (its reason phrase kept), or the standard one."""
    if not reason:
        line = replies.STATUS_LINES.get(status)
        if line is not None:
            return line
    return b"HTTP/1.1 %d %b" % (status, reason)


@functools.lru_cache(maxsize=64)
def _with_lanes(lane_headers: frozenset[bytes]) -> frozenset[bytes]:
    return REQUEST_DROP | lane_headers


def offers_websocket(head: Any) -> bool:
    """The request asks for ``Upgrade: websocket`` (RFC 6455 4.1; other offered tokens are ignored)."""
    if not head.upgrade:
        return False
    for name, value in head.headers:
        if name.lower() == b"upgrade":
            for token in value.split(b","):
                if token.strip(b" \t").lower() == b"websocket":
                    return True
    return False


class ProxyHandler:
    __slots__ = (
        "conn",
        "stream",
        "route",
        "endpoint",
        "endpoint_index",
        "candidates",
        "spare",
        "upstream",
        "tried",
        "pending",
        "pending_size",
        "replay",
        "resp_started",
        "rechunk",
        "resp_keep_alive",
        "skip_interim",
        "held_body",
        "started",
        "tunnel",
        "upgrading",
        "deferred",
        "coder",
        "tunnel_labels",
        "tunnel_frames",
    )

    def __init__(self, conn: HttpConnection) -> None:
        self.conn = conn
        self.stream: Stream | None = None
        self.route: Route | None = None
        self.upstream: UpstreamConnection | None = None
        self.endpoint_index = -1

    def begin(self, stream: Stream, route: Route) -> None:
        """A new exchange on this connection."""
        self.stream = stream
        self.route = route
        self.endpoint = None
        self.endpoint_index = -1
        self.candidates: tuple[int, ...] | None = None  # the endpoints the request's lane may use (None: all)
        self.spare: tuple[int, ...] | None = None  # the base lane's, once every candidate failed
        self.upstream = None
        self.tried: frozenset[int] = frozenset()
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = []
        self.resp_started = False
        self.rechunk = False
        self.resp_keep_alive = True
        self.skip_interim = False
        self.held_body: list[bytes] | None = [] if stream.chain.needs_body else None
        self.started = False
        self.tunnel = False
        self.tunnel_labels: tuple[tuple[str], tuple[str, str], tuple[str, str]] | None = None  # set while counted open
        self.tunnel_frames: tuple[FrameBoundary, FrameBoundary] | None = None  # (to upstream, to client)
        # Only a websocket upgrade on a route that allows it is forwarded; anything else
        # (h2c, unknown tokens) goes on as plain HTTP/1.1 without its Upgrade header.
        self.upgrading = route.websocket and offers_websocket(stream.head)
        self.deferred = False  # the upstream connect waits for a body that is already buffered
        self.coder: BodyCoder | None = None  # the answer is re-encoded for the client (compression)

    # -- Handler --------------------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        if (self.stream.lane is not None or self.route.base_endpoints is not None) and not self._lane_endpoints():
            return
        if not self._pick_endpoint():
            self._no_healthy_upstream()
            return
        if self.held_body is not None:
            return  # sent whole once it has arrived (bounded by max_body_size)
        self.pending.insert(0, self._upstream_head())
        conn = self.conn
        head = conn.head
        if not conn.req_done and not head.chunked and conn.parser.buffered >= head.content_length:
            # The whole body came with the head (a small POST): head and body leave in one
            # write once it is parsed, not two (one send() less per request).
            self.deferred = True
            return
        self._connect()

    def on_body(self, data: Any) -> None:
        if self.held_body is not None:
            self.held_body.append(bytes(data))
            return
        data = data if isinstance(data, bytes) else bytes(data)
        conn = self.conn
        if conn.head.chunked:
            data = chunk(data)
        replay = self.replay
        if replay is not None:
            replay.append(data)
            if conn.body_seen > REPLAY_LIMIT:
                self.replay = None
        if self.upstream is not None and not self.pending:
            self.upstream.write(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > BODY_HIGH_WATER:
                conn.pause_reading()

    def on_request_end(self) -> None:
        if self.deferred:
            self.deferred = False
            self._connect()
            return
        if self.held_body is not None:
            stream = self.stream
            stream.body = b"".join(self.held_body)
            self.held_body = None
            stream.run(STAGE_BODY, self._send_whole_body)
            return
        if self.conn.head.chunked:
            if self.replay is not None:
                self.replay.append(LAST_CHUNK)
            if self.upstream is not None and not self.pending:
                self.upstream.write(LAST_CHUNK)
            else:
                self.pending.append(LAST_CHUNK)
        if self.upstream is not None and not self.resp_started:
            self.conn.set_timeout(T_FIRST_BYTE, self.route.first_byte_timeout)

    def pause(self) -> None:
        """The client stopped reading (the connection now guards http.send_timeout)."""
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()
            if self.tunnel:
                self.conn.set_timeout(T_TUNNEL_IDLE, self.route.tunnel_idle_timeout)
            elif self.resp_started:
                self.conn.set_timeout(T_UPSTREAM_IDLE, self.route.idle_timeout)
            else:
                self.conn.set_timeout(T_FIRST_BYTE, self.route.first_byte_timeout)

    def cancel(self) -> None:
        labels = self.tunnel_labels
        if labels is not None:  # every way a tunnel ends (either side, idle, drain, crash) comes here once
            self.tunnel_labels = None
            GATEWAY.tunnels_open.add(labels[0], -1)
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if self.endpoint_index >= 0:
            self.route.states.release(self.endpoint_index)
            self.endpoint_index = -1

    def crashed(self, message: str) -> None:
        if self.conn.bytes_out:
            self.conn.abort_exchange()  # a relayed body cannot be ended well-formed
            return
        self.cancel()
        self.conn.local_reply(500, message, code="internal_error")

    def drain_deadline(self) -> None:
        """A plain relay cannot end well-formed on our say: the connection closes. A tunnel
        first tells each side it goes away (close 1001) where that direction is between frames."""
        frames = self.tunnel_frames
        if self.tunnel and frames is not None:
            to_upstream, to_client = frames
            if to_client.at_boundary:
                self.conn.write(CLOSE_TO_CLIENT)
            upstream = self.upstream
            if upstream is not None:
                if to_upstream.at_boundary:
                    upstream.write(close_to_upstream())
                upstream.close()  # unlike abort(), sends what was written first
                self.upstream = None
        self.conn.abort_exchange()

    def reply_error(self, status: int, message: str, code: str | None) -> None:
        self._release()
        self.conn.local_reply(status, message, code=code, extra=self.stream.response_headers)

    def _release(self) -> None:
        """A filter answered: the endpoint picked for this exchange is not used."""
        if self.upstream is None and self.endpoint_index >= 0:
            self.route.states.release(self.endpoint_index)
            self.endpoint_index = -1

    # -- the upstream request -----------------------------------------------------------------

    def _send_whole_body(self) -> None:
        """A route whose filters needed the whole body: send it with its (new) length."""
        body = self.stream.body or b""
        self.replay = [body]
        self.pending = [self._upstream_head(body_length=len(body)), body]
        self._connect()

    def _upstream_head(self, body_length: int | None = None) -> bytes:
        conn = self.conn
        head = conn.head
        route = self.route
        stream = self.stream
        target = stream.upstream_target
        if target is None:
            target = head.target
        strip = route.strip_prefix
        if strip and head.path.startswith(strip):
            rest = target[len(strip) :]
            target = rest if rest.startswith(b"/") else b"/" + rest
        mode = route.host_mode
        if mode == HOST_PRESERVE:
            host = head.host or self.endpoint.host_header
        elif mode == HOST_LITERAL:
            host = route.literal_host
        else:
            host = self.endpoint.host_header
        forwarded = head.get(b"x-forwarded-for")
        via = head.get(b"via")
        if body_length is not None:  # a rewritten body: its own length, no chunked framing
            framing = b"Content-Length: %d\r\n" % body_length
        elif head.chunked:
            framing = CHUNKED
        elif head.content_length >= 0:
            framing = b"Content-Length: %d\r\n" % head.content_length
        else:
            framing = b""
        extra = b"Host: %b\r\nX-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\nVia: %b\r\n%b" % (
            host,
            forwarded + b", " + conn.peer if forwarded else conn.peer,
            conn.scheme,
            via + b", " + VIA if via else VIA,
            framing,
        )
        if self.upgrading:
            extra += WEBSOCKET_UPGRADE
        lane_headers = route.lane_headers
        drop = _with_lanes(lane_headers) if lane_headers else REQUEST_DROP
        tokens = head.connection_tokens
        if tokens and not drop.issuperset(tokens):  # "Connection: keep-alive" names nothing new
            drop = drop | frozenset(tokens)
        trace = stream.trace
        if trace is not None and trace.traceparent is not None:  # the upstream is a child of our span
            drop = drop | {b"traceparent"}
            extra += b"traceparent: %b\r\n" % trace.traceparent
        lane = stream.lane
        if lane is not None and lane_headers:  # the gateway alone says which lane a request is in
            extra += b"%b: %b\r\n" % (lane.header, lane.value)
        headers = stream.upstream_headers if stream.upstream_headers is not None else head.headers
        return serialize_head(b"%b %b HTTP/1.1" % (head.method, target), headers, drop, extra)

    # -- upstream selection and connection ---------------------------------------------

    def _lane_endpoints(self) -> bool:
        """Restrict the pick to the request's lane (fastgw.filters.lanes); False: answered 503."""
        route = self.route
        lane = self.stream.lane
        chosen = route.endpoints_for(lane)
        if chosen is None:
            if lane is None:
                message = f"route '{route.name}' has only lane endpoints, and this request is in no lane"
            elif lane.fallback:
                message = f"neither lane '{lane.name}' nor the base lane has an endpoint on route '{route.name}'"
            else:
                message = f"lane '{lane.name}' has no endpoint on route '{route.name}' (its fallback is none)"
            self.reply_error(503, message, "lane_unavailable")
            return False
        self.candidates, self.spare = chosen
        if lane is not None and lane.name not in route.lane_endpoints:
            GATEWAY.lane_fallbacks.inc((lane.label, "no_endpoint"))
        return True

    def _pick_endpoint(self) -> bool:
        """Choose the endpoint of the next attempt among the lane's candidates; False when none
        may take it (drained, ejected or checked unhealthy, all of them). A lane none of whose
        endpoints may falls back to the base lane's (``fallback: base``)."""
        route = self.route
        index = route.states.choose(self.tried, self.candidates)
        if index == NONE_ELIGIBLE and self.spare is not None:
            self.candidates, self.spare = self.spare, None
            GATEWAY.lane_fallbacks.inc((self.stream.lane.label, "unhealthy"))
            index = route.states.choose(self.tried, self.candidates)
        if index == NONE_ELIGIBLE:
            return False
        self.endpoint_index = index
        self.endpoint = route.endpoints[index]
        return True

    def _no_healthy_upstream(self) -> None:
        self.endpoint = None
        self.conn.local_reply(503, f"no endpoint of route '{self.route.name}' can take requests now "
                              "(drained, ejected or failing its health check)", code="no_healthy_upstream",
                              extra=b"Retry-After: 1\r\n")

    def _outcome(self, status_class: str, failure: str | None) -> None:
        """One attempt at the current endpoint ended: metrics, and passive outlier detection."""
        route, endpoint, index = self.route, self.endpoint, self.endpoint_index
        if endpoint is None or index < 0:
            return
        GATEWAY.upstream_requests.inc((route.name, endpoint.url, endpoint.zone, status_class))
        if failure is None:
            route.states.succeeded(index)
        else:
            route.states.failed(index, failure)

    def _connect(self) -> None:
        conn = self.endpoint.pool.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.conn.loop.create_task(self._connect_new(self.endpoint, self.stream))

    async def _connect_new(self, endpoint: Any, stream: Stream) -> None:
        route = self.route
        try:
            conn = await endpoint.pool.connect(route.connect_timeout)
        except asyncio.TimeoutError:
            if self.stream is stream and self.endpoint is endpoint and not stream.finished:
                self._upstream_failed(504, f"connecting to upstream {endpoint.url} timed out", retry=True,
                                      failure=CONNECT_FAILURE)
            return
        except OSError as exc:
            if self.stream is stream and self.endpoint is endpoint and not stream.finished:
                self._upstream_failed(502, f"cannot connect to upstream {endpoint.url}: {exc.strerror or exc}",
                                      retry=True, failure=CONNECT_FAILURE)
            return
        if self.stream is not stream or self.endpoint is not endpoint or stream.finished:
            endpoint.pool.release(conn)  # the client went away meanwhile
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.owner = self
        client = self.conn
        conn.parser.start(client.head.method)
        pending = self.pending
        if len(pending) == 1:
            conn.write(pending[0])
        else:
            conn.write(b"".join(pending))
        self.pending = []
        self.pending_size = 0
        if client.reading_paused:
            client.resume_reading()
        if client.req_done:
            client.set_timeout(T_FIRST_BYTE, self.route.first_byte_timeout)

    def _upstream_failed(self, status: int, message: str, *, retry: bool, failure: str | None = STATUS_5XX) -> None:
        """The upstream could not be reached or failed before answering. ``failure``: what it
        counts for in outlier detection (None: not the endpoint's fault, a pooled connection it
        had closed)."""
        route = self.route
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if route is None or self.stream is None or self.stream.finished:
            return
        if failure is not None:
            self._outcome("connect_error" if failure == CONNECT_FAILURE else "5xx", failure)
        route.states.release(self.endpoint_index)
        self.conn.services.count_upstream_error()
        tried = self.tried | {self.endpoint_index}
        self.endpoint_index = -1
        can_replay = self.replay is not None and (self.conn.req_done or not self.replay)
        if retry and can_replay and not self.resp_started:
            candidates = self.candidates
            if candidates is None:
                untried = len(tried) < len(route.endpoints)
            else:
                untried = any(i not in tried for i in candidates)
            if not untried and self.spare is not None:  # every endpoint of the lane failed: its base
                self.candidates, self.spare = self.spare, None
                GATEWAY.lane_fallbacks.inc((self.stream.lane.label, "failed"))
                untried = True
            if untried:
                self.tried = tried
                if self._pick_endpoint():
                    self._resend()
                    return
        self.conn.local_reply(status, message)

    def _resend(self) -> None:
        """Start the request again on a fresh connection (nothing reached the client)."""
        rewritten = self.stream.chain.needs_body  # replay holds the whole (maybe rewritten) body
        body_length = sum(map(len, self.replay or ())) if rewritten else None
        self.pending = [self._upstream_head(body_length), *(self.replay or ())]
        self.pending_size = sum(map(len, self.pending))
        conn = self.endpoint.pool.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.conn.loop.create_task(self._connect_new(self.endpoint, self.stream))

    def timed_out(self, first_byte: bool) -> None:
        if first_byte:
            self._upstream_failed(504, "upstream did not answer in time", retry=False)
        elif self.resp_started:
            self.conn.abort_exchange()
        else:
            self._upstream_failed(504, "upstream stalled", retry=False)

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
                    if self.tunnel:
                        self._start_tunnel(conn, out)
                        return
                    if self.coder is not None:
                        self._coded(out, self.coder.finish())
                        self.coder = None
                    if self.rechunk:
                        out.append(LAST_CHUNK)
                    if out:
                        self.conn.write(out[0] if len(out) == 1 else b"".join(out))
                    self._response_complete(conn)
                    return
                if self.resp_started:
                    if self.coder is not None:
                        self._coded(out, self.coder.feed(event))
                    elif self.rechunk:
                        chunk_into(out, event)
                    else:
                        out.append(event)
                else:
                    self._on_response_head(event, out)
            if self.coder is not None:  # each upstream read reaches the client decodable: streams stay live
                self._coded(out, self.coder.flush())
        except ParseError as exc:
            if self.resp_started and self.conn.bytes_out:
                self._write(out)
                self.conn.abort_exchange()  # too late for a 502: the client sees a cut answer
                return
            # Nothing reached the client yet (a bad body right after its head): a clean 502.
            self.resp_started = self.rechunk = self.tunnel = False
            self._upstream_failed(502, f"upstream sent an invalid response: {exc.reason}", retry=False)
            return
        except FilterError as exc:  # raised while the head was built: nothing of it went out
            conn.abort()
            self.upstream = None
            self.route.states.release(self.endpoint_index)
            self.endpoint_index = -1
            self.resp_started = False
            self.conn.local_reply(500, str(exc), code="filter_error")
            return
        self._write(out)
        if self.resp_started:  # the answer goes on: the upstream may now be idle this long
            client = self.conn
            kind = client.timeout_kind
            if kind == T_UPSTREAM_IDLE:
                client.extend_timeout(self.route.idle_timeout)
            elif kind != T_CLIENT_STALL:
                client.set_timeout(T_UPSTREAM_IDLE, self.route.idle_timeout)

    def _on_response_head(self, rhead: Any, out: list[bytes]) -> None:
        status = rhead.status
        client = self.conn
        client.resp_status = status
        if status < 200 and status != 101:
            self.skip_interim = True  # we answered Expect: 100-continue ourselves
            return
        head = client.head
        if status == 101:
            if not self.upgrading:
                raise ParseError(502, "upstream switched protocols without a websocket Upgrade request")
            if (rhead.get(b"upgrade") or b"").strip().lower() != b"websocket":
                raise ParseError(502, "upstream switched to a protocol other than websocket")
        self.resp_started = True
        self._outcome(status_class(status), STATUS_5XX if status >= 500 else None)
        if status == 101:
            self.tunnel = True
            client.start_tunnel()
            out.append(self._response_head(rhead, RESPONSE_HOP_BY_HOP_UPGRADE, b""))
            return
        no_body = client.head_only or status in (204, 304)
        extra = b""
        drop = RESPONSE_HOP_BY_HOP
        policy = self.stream.compression
        if policy is not None and not no_body:
            self.coder, extra, recoded = plan_relay(policy, head.get(b"accept-encoding"), rhead)
            if self.coder is not None:
                drop = drop | recoded
        if rhead.content_length >= 0 and status != 204 and self.coder is None:  # one framing header, one value
            extra += b"Content-Length: %d\r\n" % rhead.content_length
        elif not no_body:
            if head.version == 11:
                self.rechunk = True
                extra += b"Transfer-Encoding: chunked\r\n"
            else:
                client.keep_alive = False  # HTTP/1.0: the body ends when we close
        if not client.keep_alive:
            extra += b"Connection: close\r\n"
        elif head.version == 10:
            extra += b"Connection: keep-alive\r\n"  # RFC 9112 9.3: a kept HTTP/1.0 connection says so
        self.resp_keep_alive = rhead.keep_alive
        tokens = rhead.connection_tokens
        if tokens and not drop.issuperset(tokens):  # "Connection: keep-alive" names nothing new
            drop = drop | frozenset(tokens)
        out.append(self._response_head(rhead, drop, extra))  # T_UPSTREAM_IDLE: after this read, if the answer goes on

    def _response_head(self, rhead: Any, drop: frozenset, extra: bytes) -> bytes:
        headers = rhead.headers
        stream = self.stream
        if stream.chain.on_response_headers:
            headers = stream.response_header_filters(rhead.status, list(headers))
        if stream.response_headers:
            extra += stream.response_headers
        via = rhead.get(b"via")
        extra += b"Via: %b\r\n" % (via + b", " + VIA if via else VIA)
        return serialize_head(_status_line(rhead.status, rhead.reason), headers, drop, extra)

    def on_upstream_eof(self, conn: UpstreamConnection) -> None:
        try:
            conn.parser.feed_eof()
        except ParseError as exc:
            if self.resp_started:
                self.conn.abort_exchange()
            else:
                self._upstream_failed(
                    502, f"upstream closed the connection early: {exc.reason}", retry=conn.reused and not self.resp_started,
                    failure=None if conn.reused else STATUS_5XX,
                )
            return
        self.on_upstream_data(conn)

    def on_upstream_lost(self, conn: UpstreamConnection, exc: BaseException | None) -> None:
        if conn is not self.upstream:
            return
        self.upstream = None
        if self.tunnel:
            self.conn.abort_exchange()
            return
        if self.resp_started:
            self.conn.abort_exchange()
        else:
            # A pooled connection the upstream had closed: safe to resend if we still hold the body.
            self._upstream_failed(502, "upstream closed the connection before answering", retry=conn.reused,
                                  failure=None if conn.reused else STATUS_5XX)

    def on_tunnel_data(self, data: bytes) -> None:
        if self.tunnel:
            GATEWAY.tunnel_bytes.inc(self.tunnel_labels[2], len(data))
            self.tunnel_frames[1].feed(data)
            self.conn.write(data)
            self.conn.extend_timeout(self.route.tunnel_idle_timeout)

    def on_upstream_pause(self) -> None:
        self.conn.pause_reading()

    def on_upstream_resume(self) -> None:
        self.conn.resume_reading()

    # -- the tunnel (after 101) ---------------------------------------------------------------

    def _start_tunnel(self, conn: UpstreamConnection, out: list[bytes]) -> None:
        """After 101: whatever either side sends goes to the other, unparsed."""
        conn.tunnel = True
        name = self.route.name
        labels = self.tunnel_labels = ((name,), (name, "client_to_upstream"), (name, "upstream_to_client"))
        GATEWAY.tunnels_open.add(labels[0], 1)
        frames = self.tunnel_frames = (FrameBoundary(), FrameBoundary())
        rest = conn.parser.take_rest()
        if rest:
            GATEWAY.tunnel_bytes.inc(labels[2], len(rest))
            frames[1].feed(rest)
            out.append(rest)
        self._write(out)
        early = self.conn.parser.take_rest()
        if early:
            GATEWAY.tunnel_bytes.inc(labels[1], len(early))
            frames[0].feed(early)
            conn.write(early)
        self.conn.set_timeout(T_TUNNEL_IDLE, self.route.tunnel_idle_timeout)

    def tunnel_data(self, data: bytes) -> None:
        if self.upstream is not None:
            GATEWAY.tunnel_bytes.inc(self.tunnel_labels[1], len(data))
            self.tunnel_frames[0].feed(data)
            self.upstream.write(data)
            self.conn.extend_timeout(self.route.tunnel_idle_timeout)

    def tunnel_eof(self) -> bool:
        if self.upstream is not None:
            self.upstream.transport.write_eof()  # type: ignore[union-attr]
            return True
        return False

    # -- finishing -------------------------------------------------------------------------

    def _coded(self, out: list[bytes], data: bytes) -> None:
        if data:
            if self.rechunk:
                chunk_into(out, data)
            else:
                out.append(data)

    def _write(self, out: list[bytes]) -> None:
        if out:
            self.conn.write(out[0] if len(out) == 1 else b"".join(out))

    def _response_complete(self, conn: UpstreamConnection) -> None:
        self.route.states.release(self.endpoint_index)
        self.endpoint_index = -1
        self.upstream = None
        # Bytes after the response's end (beyond its Content-Length, a body to HEAD/204/304)
        # would be the next exchange's answer: such a connection is never pooled.
        if self.conn.req_done and self.resp_keep_alive and not conn.parser.buffered:
            conn.pool.release(conn)
        else:
            conn.close()
        self.conn.finish_exchange()

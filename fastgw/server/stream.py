"""One request's context (a :class:`Stream`), and the two seams around it.

The connection owns the socket and the HTTP/1.1 state machine; a Stream is the request:
its head, the chain compiled for its route or model, the terminal handler, and what the
filters learn on the way (consumer, model, usage, status). Filters see only the Stream.

``WorkerServices`` is what the process host lends to connections (the worker implements
it; the package never imports ``workers/``). ``Handler`` is what a terminal handler (the
plain proxy, the AI model handler) implements for the connection.

Fields that most requests never touch are class-level defaults, so creating a Stream sets
only a handful of attributes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from fastgw.config.secrets import SCRUBBER
from fastgw.filters.api import Status
from fastgw.filters.chain import Chain
from fastgw.obs.recent import new_request_id

if TYPE_CHECKING:
    from fastgw.generation import Generation
    from fastgw.obs.accesslog import AccessLog, UsageSink
    from fastgw.server.admission import Admission

STAGE_HEADERS, STAGE_BODY, STAGE_REQUEST = 0, 1, 2


class WorkerServices(Protocol):
    """The process host's side of a connection (implemented by ``workers.worker.Worker``)."""

    loop: asyncio.AbstractEventLoop
    access_log: AccessLog
    usage_sink: UsageSink | None
    active_requests: int  # requests in flight in this worker (overload protection reads it)

    def current_generation(self) -> Generation: ...
    admission: Admission  # http.max_connections(_per_ip)

    def connection_opened(self, conn: Any) -> None: ...
    def connection_closed(self, conn: Any) -> None: ...
    def request_started(self) -> None: ...
    def request_finished(self) -> None: ...
    def count_upstream_error(self) -> None: ...
    def count_rejected(self) -> None: ...


class Handler(Protocol):
    """A terminal handler: what answers once the request side of the chain let it through."""

    def start(self) -> None:
        """The head passed the chain's ``on_request_headers``: begin (the proxy connects)."""

    def on_body(self, chunk: bytes | memoryview) -> None: ...
    def on_request_end(self) -> None: ...
    def pause(self) -> None:
        """The client stopped reading our answer."""

    def resume(self) -> None: ...
    def cancel(self) -> None:
        """The exchange is torn down (client gone, timeout): release what is held."""

    def reply_error(self, status: int, message: str, code: str | None) -> None:
        """Answer with an error in the client's dialect and finish the exchange."""

    def crashed(self, message: str) -> None:
        """An internal error escaped (fastgw.server.lastresort): release what is held, answer 500
        if nothing was sent yet, else end the answer as well-formed as the protocol allows."""

    def drain_deadline(self) -> None:
        """The worker's drain deadline passed: end the answer now, well-formed if possible
        (the connection closes whatever is left)."""


class FilterError(Exception):
    """A filter raised on the response side; the handler ends the answer well-formed (a 500
    before anything was sent, else an error event) instead of dropping the connection."""


def _filter_name(hook: Callable) -> str:
    owner = getattr(hook, "__self__", None)
    return (getattr(owner, "name", "") or type(owner).__name__) if owner is not None else repr(hook)


class Stream:
    # per-request defaults (class level: set on the instance only when a request has them)
    handler: Handler | None = None
    route_name: str | None = None
    consumer: Any = None  # fastgw.auth Consumer, or None when anonymous
    op: str | None = None  # AI operation (chat, completions, embeddings, messages, models); None: plain route
    model = ""  # the public model asked for
    entry: Any = None  # the resolved ModelEntry
    request: dict[str, Any] | None = None  # AI: the OpenAI-shaped request filters see
    decoded: dict[str, Any] | None = None  # AI: the request as decoded from the client
    native_request: dict[str, Any] | None = None  # AI: an Anthropic client's request as sent
    response: dict[str, Any] | None = None  # AI: a whole answer
    body: bytes | None = None  # plain routes with needs_body filters: the request body
    is_stream = False  # AI: the client asked for a stream
    events_kind = ""  # AI streams: what on_sse_events items are (fastgw.ai.handler EVENTS_*)
    reported_usage: dict[str, Any] | None = None  # a converted stream's usage, as its converter saw it
    stream_closed = False  # a filter ended the stream (guard block)
    answer_changed = False  # a filter changed what the provider answered (guard mask or block)
    stream_ending = False  # the last on_sse_events call of a stream
    response_headers = b""  # extra response header lines, "Name: value\r\n" each
    compression: Any = None  # the route's or model's fastgw.http.encoding.Compression; None: off
    retry_after: float | None = None
    usage: dict[str, Any] | None = None  # prompt/completion/total tokens + estimated, once known
    cost: float | None = None
    quota_owed: list | None = None  # quota (key, amount) pairs to charge with the usage record (Redis was down)
    status = 0  # what the client got (0 until a head was written)
    error: str | None = None
    error_code: str | None = None  # the machine-readable code of the error answer, when there was one
    trace: Any = None  # fastgw.obs.tracing RequestTrace, when the config traces
    request_id: str | None = None  # given to answers that failed (x-request-id), the key of /diagnose
    failures: list[dict[str, Any]] | None = None  # AI: the attempts that failed, in order
    limit_name: str | None = None  # the limit or quota rule that refused the request
    first_byte_at: float | None = None
    provider = ""  # who answered
    served_model = ""
    attempts = 0
    cache_status: str | None = None
    upstream_target: bytes | None = None  # plain routes: a filter's rewrite of the request target
    upstream_headers: list | None = None  # plain routes: a filter's rewrite of the request headers
    lane: Any = None  # the request's gray-release lane (fastgw.filters.lanes Lane); None: the base lane
    sticky_issued: dict[bytes, bytes] | None = None  # sticky cookies set on this answer (name -> value)
    finished = False
    hold_after = 0.0  # seconds the connection is not read after this answer (a request shed for overload)
    on_client_eof: Callable[[], None] | None = None  # a filter waiting on the client's behalf (a queue)
    _task: asyncio.Future | None = None  # the spawned task: the loop keeps only a weak reference
    _then: Callable[[], None] | None = None  # set while a request stage runs
    _stage = STAGE_HEADERS
    _hooks: tuple = ()
    _cursor = 0

    def __init__(self, conn: Any, gen: Generation, head: Any, chain: Chain, started: float) -> None:
        self.conn = conn
        self.gen = gen
        self.head = head
        self.chain = chain
        self.started = started
        self.vars: list[Any] = [None] * chain.slots if chain.slots else []

    # -- running a request stage -------------------------------------------------------

    def run(self, stage: int, then: Callable[[], None]) -> None:
        """Run the chain's hooks of ``stage``, then call ``then`` unless a filter answered."""
        chain = self.chain
        self._stage = stage
        self._hooks = (chain.on_request_headers, chain.on_request_body, chain.on_request)[stage]
        self._cursor = 0
        self._then = then
        self._advance()

    def _advance(self) -> None:
        stage = self._stage
        while self._cursor < len(self._hooks):  # re-read: switch_chain may lengthen it
            hook = self._hooks[self._cursor]
            try:
                if stage == STAGE_HEADERS:
                    status = hook(self)
                else:
                    status = hook(self, self.body if stage == STAGE_BODY else self.request)
            except Exception as exc:  # a broken filter answers 500; the connection lives on
                status = self._filter_failed(hook, exc)
            if status:
                return  # STOP: resumed by spawn's callback; REPLY: answered
            if self.finished:
                return
            self._cursor += 1
        then = self._then
        self._then = None
        then()

    def switch_chain(self, chain: Chain) -> None:
        """Continue with a longer chain sharing this one's prefix (a model's own filters)."""
        self.chain = chain
        if chain.slots > len(self.vars):
            self.vars.extend([None] * (chain.slots - len(self.vars)))
        self._hooks = (chain.on_request_headers, chain.on_request_body, chain.on_request)[self._stage]

    def spawn(self, aw: Awaitable[Any], then: Callable[[Any], Status]) -> Status:
        """Pause the chain for ``aw``; ``then(result)`` (the exception, if it raised) decides
        how to go on. ``then`` runs even when the client left meanwhile (``s.finished``), so
        a filter can release what the awaitable acquired."""
        task = asyncio.ensure_future(aw)
        self._task = task
        task.add_done_callback(lambda done: self._resume(done, then))
        return Status.STOP

    def _resume(self, task: asyncio.Future, then: Callable[[Any], Status]) -> None:
        self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        try:
            status = then(exc if exc is not None else task.result())
        except Exception as error:
            status = Status.REPLY if self.finished else self._filter_failed(then, error)
        if self.finished or status:
            return
        self._cursor += 1
        self._advance()

    def _filter_failed(self, hook: Callable, exc: Exception) -> Status:
        name = _filter_name(hook)
        sys.stderr.write(SCRUBBER(f"fastgw: filter {name} failed: {exc!r}\n"))
        return self.reply(500, f"filter '{name}' failed", "filter_error")

    # -- what filters call ------------------------------------------------------------------

    def reply(self, status: int, message: str, code: str | None = None, headers: bytes = b"") -> Status:
        """Answer with an error in the client's dialect; the chain and handler stop here."""
        if headers:
            self.response_headers += headers
        if not self.finished:
            self.handler.reply_error(status, message, code)
        return Status.REPLY

    def request_id_header(self) -> bytes:
        """``x-request-id`` for an error answer (or a failover): the id of its /diagnose record."""
        if self.request_id is None:
            self.request_id = new_request_id()
        return b"x-request-id: %b\r\n" % self.request_id.encode()

    def add_response_header(self, name: bytes, value: bytes) -> None:
        self.response_headers += b"%b: %b\r\n" % (name, value)

    @property
    def peer(self) -> bytes:
        return self.conn.peer

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.conn.loop

    @property
    def services(self) -> WorkerServices:
        return self.conn.services

    # -- the response side ----------------------------------------------------------------

    def response_header_filters(self, status: int, headers: list) -> list:
        """A plain route's upstream head through ``on_response_headers``; the list, edited."""
        for hook in self.chain.on_response_headers:
            try:
                hook(self, status, headers)
            except Exception as exc:
                raise self._response_failed(hook, exc) from exc
        return headers

    def response_filters(self, response: dict[str, Any]) -> dict[str, Any]:
        """A whole AI answer through ``on_response`` (reverse order); returns what to send."""
        self.response = response
        for hook in self.chain.on_response:
            try:
                hook(self, self.response)
            except Exception as exc:
                raise self._response_failed(hook, exc) from exc
        return self.response

    def sse_filters(self, events: list) -> list:
        for hook in self.chain.on_sse_events:
            try:
                hook(self, events)
            except Exception as exc:
                raise self._response_failed(hook, exc) from exc
            if self.stream_closed:
                break
        return events

    def _response_failed(self, hook: Callable, exc: Exception) -> FilterError:
        name = _filter_name(hook)
        sys.stderr.write(SCRUBBER(f"fastgw: filter {name} failed: {exc!r}\n"))
        return FilterError(f"filter '{name}' failed")

    def done(self, status: int = 0) -> None:
        """``on_done`` of every filter, once, whatever happened; errors are logged, not raised.

        ``status``: what the client got, when no handler recorded it (a gateway reply, a
        reset)."""
        if self.finished:
            return
        if not self.status:
            self.status = status
        self.finished = True
        for hook in self.chain.on_done:
            try:
                hook(self)
            except Exception as exc:
                sys.stderr.write(SCRUBBER(f"fastgw: filter {_filter_name(hook)} failed in on_done: {exc!r}\n"))
        self.handler = None  # the handler points back at this stream: no cycle left for the collector

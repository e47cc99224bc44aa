"""The filter API (version 1): what every concern on the request path implements.

A filter is one concern (auth, a limit, the guard...) built once per config generation
from its config section. Its hooks are synchronous and return a :class:`Status`; async
work goes through ``s.spawn(awaitable, then)``, which pauses the chain until ``then``
runs, so no coroutine is created per filter per request (Envoy's ``StopIteration`` +
``continueDecoding``, proxy-wasm's ``Pause``). A filter only defines the hooks it needs:
the chain keeps just those (as httptools installs only the callbacks that exist), so an
unused concern costs nothing.

Request hooks run in phase order; response hooks in reverse (the filter nearest the
handler sees its output first). ``on_done`` runs exactly once per request on every exit
path, after the last byte was written or the request was abandoned.

This page is the contract for Python plugins (config ``filters: [{use: "pkg.mod:Class"}]``
or the ``fastgw.filters`` entry-point group) and for the Wasm host that maps proxy-wasm
onto it; see ``docs/filters.md``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from fastgw.server.stream import Stream

API_VERSION = 1


class Status(IntEnum):
    CONTINUE = 0
    """Go on with the next filter."""
    STOP = 1
    """Paused: the filter called ``s.spawn(aw, then)``; the chain resumes after ``then``."""
    REPLY = 2
    """The filter answered (``s.reply``): the rest of the chain and the handler are skipped."""


class Phase(IntEnum):
    """Where a filter sits on the request side; ties keep config order, then ``priority``."""

    AUTHN = 100  # who is calling (401 from the head, before a body is read)
    DECODE = 200  # AI: the body decoded into an OpenAI-shaped request
    PROMPT = 300  # templates and decorators
    ROUTE = 400  # AI: the model resolved, the consumer authorised
    POLICY = 500  # guard, WAF, transforms
    CACHE = 600  # answers served without calling upstream
    LIMIT = 700  # rate limits and quotas (after the cache: a hit costs no quota)
    METER = 800  # usage: nearest the handler, so first to see what came back

    OBSERVE = 10  # metrics and logs: outermost, so its on_done runs last and sees everything


class Filter:
    """Base class: override only the hooks the concern needs.

    Per-request state lives in ``s.vars[self.slot]`` (the slot is assigned when the chain
    is compiled), not in attributes: a filter object is shared by every request of its
    generation.
    """

    name: ClassVar[str] = ""
    phase: ClassVar[Phase] = Phase.POLICY
    priority: ClassVar[int] = 0
    needs_body: ClassVar[bool] = False
    """Plain routes: hold the request body whole and call ``on_request_body`` once."""
    stateless: ClassVar[bool] = False
    """True for a filter that keeps nothing per request: it gets no ``s.vars`` slot."""
    accepts_sse_runs: ClassVar[bool] = False
    """``on_sse_events`` may get ``bytes`` items standing for runs of plain events (one data
    line, no event name, no usage object: SSEParser.feed_relay); when every filter of a chain
    accepts them, a relayed stream's content chunks are never turned into objects."""
    needs_openai_events: ClassVar[bool] = False
    """AI streams: the filter reads OpenAI-shaped events, so an Anthropic client's stream
    from an Anthropic provider is converted instead of relayed natively."""

    slot: int = -1

    def __init__(self, options: dict[str, Any] | None = None, env: Any = None) -> None:
        """``options``: the filter's config mapping (minus ``name``/``use``); ``env``: a
        :class:`fastgw.filters.BuildEnv` lending the generation's shared engines."""
        self.options = options or {}

    def on_request_headers(self, s: Stream) -> Status:
        """The request head arrived (``s.head``); nothing of the body is read yet."""
        return Status.CONTINUE

    def on_request_body(self, s: Stream, body: bytes) -> Status:
        """Plain routes, ``needs_body`` filters: the whole body; set ``s.body`` to replace it."""
        return Status.CONTINUE

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        """AI: the decoded, OpenAI-shaped request; replace it by assigning ``s.request``."""
        return Status.CONTINUE

    def on_response_headers(self, s: Stream, status: int, headers: list) -> Status:
        """Plain routes: the upstream's status and header list, mutable in place."""
        return Status.CONTINUE

    def on_response(self, s: Stream, response: dict[str, Any]) -> Status:
        """AI: a whole OpenAI-shaped answer; replace it by assigning ``s.response``."""
        return Status.CONTINUE

    def on_sse_events(self, s: Stream, events: list) -> Status:
        """AI streams: the events of one upstream read, editable in place.

        Items are SSE events relayed raw (``.raw``, ``.data``, ``.event``; on streams that
        pass through), OpenAI chunk dicts (on converted streams: rendered in the client's
        dialect after the filters), or ``bytes`` a filter put in their place. Setting
        ``s.stream_closed`` ends the stream after these events (a guard block).
        """
        return Status.CONTINUE

    def on_done(self, s: Stream) -> None:
        """Exactly once per request, on every exit path: ``s.status`` is what the client got."""


HOOKS = (
    "on_request_headers",
    "on_request_body",
    "on_request",
    "on_response_headers",
    "on_response",
    "on_sse_events",
    "on_done",
)
RESPONSE_HOOKS = frozenset({"on_response_headers", "on_response", "on_sse_events", "on_done"})

"""The AI terminal handler: try a model's targets until one answers, and relay the answer.

Everything a request needs before the call (auth, decoding, prompts, model resolution,
guard, cache, limits) ran as filters; this handler owns only the provider side:

* connect errors, timeouts, 5xx, garbage and a stalled first token move to the next
  target (and count against that target's breaker); a 5xx first gets ``failover.retry_5xx``
  jittered retries on the same target;
* 429 cools the key down (``Retry-After`` if given) and tries the next key or target; when
  none is left and the Retry-After is short (``failover.wait_retry_after``) and within the
  request's ``failover.deadline``, it is waited out on the same target;
* 401/403 cool the key down for longer — the key is bad, not the provider; when no key is
  left the client gets 502 ``upstream_auth_failed`` with the provider's (redacted) message;
* a context-window error moves to the next target with a larger window (or an unknown one);
* any other 4xx is the client's error: it is passed back, converted to the dialect;
* a stream that closes without its end marker after its finish and usage arrived is a
  complete answer: it is ended normally (see ``fastgw.ai.faults``);
* after the first byte, a failure ends the stream with a well-formed error event and a
  clean end of the body, never a hang.

Streams are held back until their first event arrives: a provider that sends headers and
then stalls is abandoned at ``first_byte`` without the client noticing. Each upstream read
of a stream is one pass: framed into events (Cython), handed to the filters' ``on_sse_events``
as one list, rendered and written once.

Same-dialect requests leave as the client's bytes when no filter changed them and only
``stream_options`` differs (spliced in), so the hot path decodes the body once and never
re-encodes it.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from fastgw import fastjson
from fastgw._speedups import SSEParser, ends_stream, model_span, relay_bytes
from fastgw.ai.attempts import MockAttempt, NetworkAttempt, request_bytes
from fastgw.ai.count_tokens import ProviderCount, local_count
from fastgw.ai.dialects import ANTHROPIC, MODEL_PREFIX
from fastgw.ai.faults import TAIL_EVENTS, anthropic_stream_complete, context_overflow, openai_stream_complete
from fastgw.ai.providers.base import (
    ConversionError,
    ProviderError,
    StreamConverter,
    UpstreamCall,
    encode_embeddings,
)
from fastgw.ai.usage import with_usage_requested
from fastgw.obs.genai import GEN_AI_OPERATIONS, gen_ai_provider
from fastgw.obs.metrics import GATEWAY
from fastgw.server import lastresort
from fastgw.server.stream import STAGE_REQUEST, FilterError, Stream
from fastgw.sse import SSEError

if TYPE_CHECKING:
    from fastgw.ai.frontdoor import AIFrontDoor, ProviderRuntime

MAX_PROVIDER_BODY = 32 * 1024 * 1024
ERROR_KINDS = {"upstream_error": "connect", "upstream_timeout": "timeout", "upstream_invalid": "invalid",
               "upstream_empty": "invalid", "upstream_truncated": "invalid", "upstream_too_large": "invalid"}
"""Error codes -> the ``kind`` label of fastgw_upstream_errors_total (5xx answers are status_5xx)."""

# What the handler is waiting for, on the connection's timer.
W_NONE, W_FIRST_BYTE, W_IDLE = 0, 1, 2
T_NONE, T_HANDLER = 0, 8  # connection timer kinds (fastgw.server.connection)

DRAIN_CODE = "gateway_draining"
"""The error code of answers cut short by a drain deadline."""

# What the items of a stream's on_sse_events lists are (Stream.events_kind).
EVENTS_OPENAI = "openai"  # the provider's OpenAI-format events, relayed raw
EVENTS_NATIVE = "native"  # an Anthropic provider's events to an Anthropic client, relayed raw
EVENTS_CHUNKS = "chunks"  # converted OpenAI chunk dicts, rendered in the client's dialect

_USAGE_OPTION = b'"stream_options":{"include_usage":true},'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def spliced_body(raw: bytes, request: dict[str, Any], model: str, ask_usage: bool) -> bytes | None:
    """The client's own body bytes, edited where the provider must see something else: the
    target's model name written over the top-level "model" literal (found by the Cython
    scanner, so a "model" key deeper down or inside a string is never touched), and for
    metered streams ``"stream_options":{"include_usage":true}`` inserted first in the object
    when the client sent no ``stream_options``. None when only a re-encode says it right."""
    if request.get("model") != model:
        span = model_span(raw)
        if span is None:
            return None
        raw = b"%b%b%b" % (raw[: span[0]], fastjson.dumps(model), raw[span[1] :])
    if not ask_usage:
        return raw
    options = request.get("stream_options")
    if isinstance(options, dict):
        return raw if options.get("include_usage") is True else None
    if "stream_options" in request:
        return None
    start = len(raw) - len(raw.lstrip())
    if raw[start : start + 1] != b"{":
        return None
    return raw[: start + 1] + _USAGE_OPTION + raw[start + 1 :]


def pass_client_headers(call: UpstreamCall, head: Any, names: tuple[bytes, ...]) -> None:
    """The client's values of the allow-listed headers replace the adapter's (e.g. a client's
    ``anthropic-version``) or join them (``anthropic-beta``, ``openai-beta``)."""
    given = [(name, value) for name in names if (value := head.get(name)) is not None]
    if given:
        sent = {name for name, _ in given}
        call.headers = [pair for pair in call.headers if pair[0] not in sent] + given


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """An entry point of the handler (the chain's continuation, attempt callbacks, the timer): an
    exception that escapes it is a gateway bug, answered by the last resort, never a dropped socket."""

    @functools.wraps(method)
    def guarded(self: ModelHandler, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:
            request_id = self.s.request_id = lastresort.report("ai", exc)  # the answer's x-request-id
            try:
                self.crashed(lastresort.message(request_id))
            except Exception:
                self.conn.abort_exchange()

    return guarded


class ModelHandler:
    """One AI request's provider side. Fields most requests never change are class-level
    defaults, so creating a handler sets only what differs."""

    targets: list[dict] = []
    max_attempts = 0
    target_index = 0
    provider: ProviderRuntime | None = None
    key_index = 0
    attempt: Any = None
    status = 0
    sse: Any = None
    converter: StreamConverter | None = None
    writer: Any = None
    passthrough = False
    sent_head = False
    waiting = W_NONE
    last_error: tuple[int, str, str] = (503, "no provider target is available", "no_target")
    refused: tuple[int, str, str] | None = None  # the last_error of a target that could not convert the request
    refused_param: str | None = None  # the request field it named
    native = False  # an Anthropic client reaching an Anthropic provider: no conversion at all
    ended = False  # the provider signalled the end of its stream ([DONE], message_stop)
    runs = False  # a relayed stream framed with feed_relay: plain events stay bytes
    cancelled = False
    tail: list = []  # the stream's last TAIL_EVENTS events (or runs), to judge an early close
    rate_limited: tuple | None = None  # (target index, key index, seconds) of a short Retry-After
    retry_target = -1  # the target whose 5xx retries retry_count counts
    retry_count = 0
    pause_handle: Any = None  # a Retry-After wait or a 5xx retry delay
    attempt_open = False  # an attempt started and its failure (if any) is not recorded yet
    served_by_base = False  # a lane request reached a base target (counted once in fastgw_lane_fallbacks_total)

    def __init__(self, door: AIFrontDoor, s: Stream, op: str, dialect: Any) -> None:
        self.door = door
        self.s = s
        conn = self.conn = s.conn
        self.loop = conn.loop
        self.op = op
        self.dialect = dialect
        self.body: list[bytes] = []
        self.tried_keys: dict[str, set[int]] = {}

    # -- the request (Handler) -----------------------------------------------------------

    def start(self) -> None:
        """The head passed auth: the body is read next."""

    def on_body(self, chunk: Any) -> None:
        self.body.append(bytes(chunk))

    def on_request_end(self) -> None:
        s = self.s
        if self.op in ("models", "model"):
            self._reply_models()
            return
        if s.head.method != b"POST":
            self.reply_error(405, f"use POST for {s.head.path.decode()}", "method_not_allowed")
            return
        raw = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = [raw]
        try:
            request = fastjson.loads(raw)
        except fastjson.NestingError:
            self.reply_error(400, "the request body is nested too deeply", "json_too_deep")
            return
        except ValueError:
            self.reply_error(400, "the request body is not valid JSON", "invalid_json")
            return
        if not isinstance(request, dict):
            self.reply_error(400, "the request body must be a JSON object", "invalid_request")
            return
        s.request = s.decoded = request
        s.run(STAGE_REQUEST, self._call)

    @_guarded
    def _call(self) -> None:
        """Every request filter let it through: the provider calls begin."""
        s = self.s
        entry = s.entry
        self.targets = entry.targets(s.model)
        lane = s.lane
        if lane is not None or entry.lanes:
            self.targets = entry.lane_targets(self.targets, lane)
            if not self.targets:
                if lane is None:
                    message = f"model '{s.model}' has only lane targets, and this request is in no lane"
                elif lane.fallback:
                    message = f"neither lane '{lane.name}' nor the base lane has a target for model '{s.model}'"
                else:
                    message = f"lane '{lane.name}' has no target for model '{s.model}' (its fallback is none)"
                self.reply_error(503, message, "lane_unavailable")
                return
        self.max_attempts = entry.max_attempts
        if self.op == "count_tokens":
            self._count_tokens()
            return
        self._next_attempt()

    # -- POST /v1/messages/count_tokens (fastgw.ai.count_tokens) ----------------------------

    def _count_tokens(self) -> None:
        """The model's first target counts: its provider's API if Anthropic-format, else locally."""
        s = self.s
        target = self.targets[0]
        provider = self.door.providers[target["provider"]]
        model = target["model"]
        key_index = provider.keys.pick() if provider.type == "anthropic" else None
        if key_index is None:
            self.count_locally(provider, model)
            return
        call = provider.adapter.build_count_tokens(s.native_request, model, provider.keys.key(key_index))
        if provider.pass_headers:
            pass_client_headers(call, s.head, provider.pass_headers)
        if self.door.lane_headers:
            self._propagate_lane(call)
        self.attempt = ProviderCount(self, provider, model, key_index)
        self.attempt.start(call)

    @_guarded
    def count_locally(self, provider: ProviderRuntime, model: str) -> None:
        tokens, exact = local_count(self.s.request, model)
        self.counted(provider, model, fastjson.dumps({"input_tokens": tokens}), "exact" if exact else "estimate")

    @_guarded
    def counted(self, provider: ProviderRuntime, model: str, body: bytes, how: str) -> None:
        """Answer a count: ``how`` is provider, exact or estimate (the x-fastgw-token-count header)."""
        self.attempt = None
        if self.cancelled:
            return
        s = self.s
        s.provider, s.served_model, s.status = provider.name, model, 200
        extra = b"x-fastgw-provider: %b\r\nx-fastgw-model: %b\r\nx-fastgw-token-count: %b\r\n%b" % (
            provider.name.encode(), model.encode(), how.encode(), s.response_headers)
        self.conn.writer.complete(200, body, extra=extra)
        self.finish()

    # -- choosing and starting an attempt --------------------------------------------------

    def _next_attempt(self) -> None:
        """Start the next try, or answer with the last error when none is left."""
        door = self.door
        s = self.s
        if self.attempt_open:  # the attempt before this call failed with last_error
            self._attempt_failed_record()
        while s.attempts < self.max_attempts and self.target_index < len(self.targets):
            target = self.targets[self.target_index]
            provider = door.providers[target["provider"]]
            breaker = provider.breaker(target["model"])
            if provider.probed_down():
                self.last_error = (503, f"provider '{provider.name}' is down (health probe)", "provider_down")
                self.target_index += 1
                continue
            if not breaker.allow():
                self.last_error = (503, f"provider '{provider.name}' is failing (circuit open)", "circuit_open")
                self.target_index += 1
                continue
            tried = self.tried_keys.setdefault(provider.name, set())
            key_index = provider.keys.pick(frozenset(tried))
            if key_index is None:
                self._no_key(provider, tried)
                breaker.trial_out = False
                self.target_index += 1
                continue
            tried.add(key_index)
            self._start(provider, target["model"], key_index)
            return
        if self._wait_out_rate_limit():
            return
        status, message, code = self.last_error
        self.reply_error(status, message, code, self.refused_param if self.last_error is self.refused else None)

    def _no_key(self, provider: ProviderRuntime, tried: set[int]) -> None:
        """Why no key of ``provider`` can be used: every key refused as a credential (502), or
        every key tried by this request (its own answer stands), or cooling down (429)."""
        refusal = provider.keys.refusal()
        if refusal is not None:
            self.last_error = (502, refusal, "upstream_auth_failed")
        elif len(tried) < len(provider.keys.keys):
            self.last_error = (429, f"every API key of provider '{provider.name}' is cooling down", "keys_exhausted")

    def _within_deadline(self, delay: float) -> bool:
        s = self.s
        return s.attempts < self.max_attempts and self.loop.time() + delay <= s.started + s.entry.failover["deadline"]

    def _pause(self, delay: float) -> None:
        """Try again after ``delay`` (the provider's answer already ended this attempt)."""
        self._cancel_timer()
        self.pause_handle = self.loop.call_later(delay, self._resume_attempts)

    @_guarded
    def _resume_attempts(self) -> None:
        self.pause_handle = None
        if not self.cancelled:
            self._next_attempt()

    def _wait_out_rate_limit(self) -> bool:
        """Nothing else is left: wait out a short Retry-After on the target that asked for it."""
        pending = self.rate_limited
        self.rate_limited = None
        if pending is None:
            return False
        target_index, key_index, delay = pending
        delay += 0.01  # the key's cool-down must have ended when the timer fires
        if not self._within_deadline(delay):
            return False
        self.target_index = target_index
        self.tried_keys[self.targets[target_index]["provider"]].discard(key_index)
        self._pause(delay)
        return True

    def _start(self, provider: ProviderRuntime, model: str, key_index: int) -> None:
        s = self.s
        if self.provider is not None and self.provider is not provider:
            GATEWAY.failovers.inc((s.model, self.provider.name, provider.name))
        s.attempts += 1
        self.attempt_open = True
        self.provider = provider
        s.provider = provider.name
        s.served_model = model
        self.key_index = key_index
        self.status = 0
        s.retry_after = None
        self.error_chunks = []
        self.resp_chunks = []
        self.tail = []
        # Native pass-through: nothing changed the request and no filter reads OpenAI events.
        self.native = (
            self.dialect is ANTHROPIC and provider.type == "anthropic" and s.request is s.decoded
            and not s.chain.needs_openai_events
        )
        op = "chat" if self.op == "messages" else self.op
        adapter = provider.adapter
        key = provider.keys.key(key_index)
        try:
            if self.native:
                call = adapter.build_messages(s.native_request, model, key)
            else:
                call = None
                ask_usage = s.is_stream and adapter.passthrough  # usage is metered; stripped again if unwanted
                if adapter.passthrough and self.dialect is not ANTHROPIC and s.request is s.decoded:
                    raw = spliced_body(self.body[0], s.request, model, ask_usage)
                    if raw is not None:
                        call = adapter.build_raw(op, raw, model, key)
                if call is None:
                    request = dict(s.request, model=model)
                    if ask_usage:
                        request = with_usage_requested(request)
                    call = adapter.build(op, request, model, key)
        except ConversionError as exc:  # this target cannot take the request: maybe the next one can
            self.last_error = self.refused = (400, str(exc), exc.code)
            self.refused_param = exc.param
            self.target_index += 1
            self._next_attempt()
            return
        if provider.pass_headers:
            pass_client_headers(call, s.head, provider.pass_headers)
        if self.door.lane_headers:
            self._propagate_lane(call)
        trace = s.trace
        if trace is not None:
            call.headers = [*call.headers, (b"traceparent", self._trace_attempt(trace, provider, model, key_index))]
        if provider.mock is not None:
            attempt = MockAttempt(self, provider.mock, call)
        else:
            payload = request_bytes(call, provider.host_header)
            attempt = NetworkAttempt(self, provider.pool, payload, provider.timeouts["connect"])
        self.attempt = attempt
        # Non-streamed answers arrive whole: they may take as long as `idle` allows.
        self._wait(W_FIRST_BYTE, provider.timeouts["first_byte" if s.is_stream else "idle"])
        attempt.start()

    def _propagate_lane(self, call: UpstreamCall) -> None:
        """The request's lane goes to the provider in its header; no client's value of a lane
        header does (a ``pass_headers`` entry cannot smuggle one)."""
        s = self.s
        lane = s.lane
        dropped = self.door.lane_headers
        headers = [pair for pair in call.headers if pair[0].lower() not in dropped]
        if lane is not None:
            headers.append((lane.header, lane.value))
            target = self.targets[self.target_index]
            if not target.get("lane") and not self.served_by_base:  # the first attempt the base lane serves
                self.served_by_base = True
                GATEWAY.lane_fallbacks.inc((lane.label, "failed" if lane.name in s.entry.lanes else "no_target"))
        call.headers = headers

    def _attempt_failed_record(self) -> None:
        """Keep the failed attempt for /diagnose (and end its span): only failing requests pay."""
        self.attempt_open = False
        s = self.s
        status, message, code = self.last_error
        provider = self.provider
        failure = {"provider": provider.name, "key_index": self.key_index, "upstream_status": self.status,
                   "status": status, "code": code, "message": message}
        if code == "upstream_timeout":
            failure["first_byte"] = provider.timeouts["first_byte" if s.is_stream else "idle"]
            failure["stream"] = s.is_stream
        if s.failures is None:
            s.failures = []
        s.failures.append(failure)
        if s.trace is not None:
            s.trace.attempt_failed(self.last_error)

    def _trace_attempt(self, trace: Any, provider: ProviderRuntime, model: str, key_index: int) -> bytes:
        """A child span for this attempt; the provider gets its traceparent."""
        operation = GEN_AI_OPERATIONS.get(self.op, self.op)
        return trace.attempt_started(f"{operation} {model}", {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": gen_ai_provider(provider.type),
            "gen_ai.request.model": model,
            "fastgw.provider": provider.name,
            "fastgw.key_index": key_index,
            "fastgw.attempt": self.s.attempts,
        }) or b""

    def _give_up_on_target(self, status: int, message: str, code: str, kind: str | None = None,
                           retry: bool = False) -> None:
        """The current target failed before anything reached the client: try it again (``retry``,
        within ``failover.retry_5xx``) or the next one. The key was not at fault: a later target
        of the same provider may use it."""
        GATEWAY.upstream_errors.inc((self.provider.name, kind or ERROR_KINDS.get(code, "invalid")))
        self.provider.breaker(self.s.served_model).failure()
        self.last_error = (status, message, code)
        self.tried_keys[self.provider.name].discard(self.key_index)
        if retry and self._retry_same_target():
            return
        self.target_index += 1
        self._next_attempt()

    # -- attempt callbacks (AttemptOwner) ----------------------------------------------------

    @_guarded
    def attempt_head(self, attempt: Any, status: int, retry_after: float | None) -> None:
        if attempt is not self.attempt:
            return
        s = self.s
        self.status = status
        s.retry_after = retry_after
        if s.trace is not None:
            s.trace.attempt_status(status)
        if 200 <= status < 300 and s.is_stream:
            self.sse = SSEParser()
            self.writer = self.dialect.stream(s.model)
            op = "chat" if self.op == "messages" else self.op
            # Relay the provider's bytes when the client speaks its dialect.
            self.passthrough = self.native or (self.provider.adapter.passthrough and self.dialect is not ANTHROPIC)
            self.converter = None if self.passthrough else self.provider.adapter.stream(op, s.served_model)
            s.events_kind = EVENTS_NATIVE if self.native else EVENTS_OPENAI if self.passthrough else EVENTS_CHUNKS
            self.runs = s.events_kind == EVENTS_OPENAI and s.chain.sse_runs
            s.stream_ending = False

    @_guarded
    def attempt_body(self, attempt: Any, chunk: Any) -> None:
        if attempt is not self.attempt:
            return
        if not (200 <= self.status < 300):
            self.error_chunks.append(bytes(chunk))
            return
        s = self.s
        if not s.is_stream:
            self.resp_chunks.append(bytes(chunk))
            if sum(map(len, self.resp_chunks)) > MAX_PROVIDER_BODY:
                self._attempt_broken(502, "provider answer is too large", "upstream_too_large")
            return
        try:
            events = self.sse.feed_relay(chunk) if self.runs else self.sse.feed(chunk)
            if not events:
                return
            self.tail = (self.tail + events[-TAIL_EVENTS:])[-TAIL_EVENTS:]  # filters may edit `events` in place
            out = self._relay(events)
        except FilterError as exc:
            self._filter_failed(str(exc))
            return
        except (ProviderError, SSEError, ValueError) as exc:
            self._attempt_broken(502, f"provider '{self.provider.name}' sent an invalid stream event: {exc}",
                                 "upstream_invalid")
            return
        if s.stream_closed:  # a filter stopped the answer: end it cleanly, drop the provider
            self.attempt.cancel()
            self.attempt = None
            self._end_stream(out + self.writer.end())
            return
        if out:
            self._send_stream(out)
        if self.sent_head:  # events that produced nothing yet (pings) don't count as a first token
            self.conn.extend_timeout(self.provider.timeouts["idle"])

    def _relay(self, events: list) -> bytes:
        """One read's events through the filters, rendered for the client."""
        if self.passthrough:
            if ends_stream(events):
                self.ended = True
            items = events
        else:
            converter = self.converter
            items = []
            for event in events:
                if event.is_done:
                    converter.done = True
                    continue
                items.extend(converter.event(event.event, event.data))
        return self._render(self.s.sse_filters(items))

    def _render(self, items: list) -> bytes:
        relayed = relay_bytes(items)  # raw events and bytes only: one C loop
        if relayed is not None:
            return relayed
        writer = self.writer
        parts = []
        for item in items:
            kind = type(item)
            if kind is dict:
                parts.append(writer.chunk(item))
            elif kind is bytes:
                parts.append(item)
            else:
                parts.append(item.raw)
        return b"".join(parts)

    @_guarded
    def attempt_end(self, attempt: Any) -> None:
        if attempt is not self.attempt:
            return
        self.attempt = None
        status = self.status
        provider = self.provider
        s = self.s
        if status >= 300:
            self._provider_error(status, b"".join(self.error_chunks))
            return
        if s.is_stream:
            self._stream_ended()
            return
        body = b"".join(self.resp_chunks)
        op = "chat" if self.op == "messages" else self.op
        try:
            response = provider.adapter.convert_response(op, status, body, s.served_model)
            if op == "embeddings" and not provider.adapter.passthrough:
                response = encode_embeddings(response, s.request.get("encoding_format"))
            answer = s.response_filters(response)
            if answer is response and (self.native or (provider.adapter.passthrough and self.dialect is not ANTHROPIC)):
                out = body  # nothing changed it: the provider's bytes as they are
            else:
                out = self.dialect.response(self.op, answer, s.model)
        except FilterError as exc:
            self._filter_failed(str(exc))
            return
        except (ProviderError, ValueError) as exc:
            self._give_up_on_target(502, f"provider '{provider.name}' sent an invalid answer: {exc}", "upstream_invalid")
            return
        provider.breaker(s.served_model).success()
        self._cancel_timer()
        s.status = 200
        self.conn.writer.complete(200, out, extra=self._served_headers())
        self.finish()

    def _stream_ended(self) -> None:
        """The provider's response ended: finish the client's stream, or fail over if it was empty."""
        closing = b""
        if not (self.ended if self.passthrough else self.converter.done):
            # A clean end of the HTTP body without the provider's end marker: complete if its
            # finish and usage arrived (the marker is added), else truncated.
            closing = self._complete_without_end()
            if closing is None:
                self._attempt_broken(502, f"provider '{self.provider.name}' ended its stream early",
                                     "upstream_truncated")
                return
        s = self.s
        try:
            items = [] if self.passthrough else self.converter.end()
            if not self.passthrough:
                s.reported_usage = self.converter.usage
            s.stream_ending = True
            out = self._render(s.sse_filters(items)) + closing
            if not self.passthrough:
                out += self.writer.end()
        except FilterError as exc:
            self._filter_failed(str(exc))
            return
        except ProviderError as exc:
            self._attempt_broken(502, f"provider stream ended badly: {exc}", "upstream_invalid")
            return
        self.provider.breaker(s.served_model).success()
        self._end_stream(out)

    def _complete_without_end(self) -> bytes | None:
        """The end marker a complete stream that closed without one is owed (b"" when the
        converter adds it), or None if the stream is not provably complete."""
        raw = b"".join(item if type(item) is bytes else item.raw for item in self.tail)
        anthropic_format = self.native or self.provider.type == "anthropic"
        if not (anthropic_stream_complete(raw) if anthropic_format else openai_stream_complete(raw)):
            return None
        if self.passthrough:
            self.ended = True
            return _MESSAGE_STOP if self.native else self.writer.end()
        if anthropic_format:
            self.converter.event("message_stop", '{"type":"message_stop"}')  # sets done and usage
        self.converter.done = True
        return b""

    def _provider_error(self, status: int, body: bytes) -> None:
        provider = self.provider
        said, code = provider.adapter.error(status, body)
        message = f"provider '{provider.name}' answered {status}: {provider.redact(said)}"
        s = self.s
        if status == 429:
            retry_after = s.retry_after
            provider.keys.cool(self.key_index, retry_after or provider.key_cooldown["rate_limited"])
            self.last_error = (429, message, code or "rate_limited")
            if retry_after is not None and retry_after <= s.entry.failover["wait_retry_after"]:
                self.rate_limited = (self.target_index, self.key_index, retry_after)
            self._next_attempt()  # another key of this provider, or the next target
        elif status in (401, 403):
            provider.keys.cool(self.key_index, provider.key_cooldown["unauthorized"], message)
            self.last_error = (502, message, "upstream_auth_failed")
            self._next_attempt()
        elif status >= 500:
            self._give_up_on_target(504 if status == 504 else 502, message, code or "upstream_error", "status_5xx",
                                    retry=True)
        elif context_overflow(status, said, code):
            self.last_error = (status, message, code or "context_length_exceeded")
            self._next_larger_window()
        else:
            # The request itself is wrong: another provider would refuse it too.
            self.reply_error(status, message, code)

    def _retry_same_target(self) -> bool:
        """Schedule one of ``failover.retry_5xx`` jittered retries of the current target."""
        failover = self.s.entry.failover
        if self.retry_target != self.target_index:
            self.retry_target, self.retry_count = self.target_index, 0
        delay = failover["retry_delay"] * random.uniform(0.5, 1.5)
        if self.retry_count >= failover["retry_5xx"] or not self._within_deadline(delay):
            return False
        self.retry_count += 1
        self._pause(delay)
        return True

    def _next_larger_window(self) -> None:
        """The prompt does not fit this target: skip the targets known to be no larger (the key
        was fine: a larger model of the same provider may use it)."""
        self.tried_keys[self.provider.name].discard(self.key_index)
        window = self.targets[self.target_index].get("context_window")
        self.target_index += 1
        while window and self.target_index < len(self.targets):
            larger = self.targets[self.target_index].get("context_window")
            if larger is None or larger > window:
                break
            self.target_index += 1
        self._next_attempt()

    @_guarded
    def attempt_failed(self, attempt: Any, status: int, message: str) -> None:
        if attempt is not self.attempt:
            return
        self.attempt = None
        self._attempt_broken(status, f"provider '{self.provider.name}': {message}",
                             "upstream_error" if status == 502 else "upstream_timeout")

    def _attempt_broken(self, status: int, message: str, code: str) -> None:
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
        if not self.sent_head:
            self._give_up_on_target(status, message, code)
            return
        # Too late to fail over: end the stream cleanly with an error event.
        self.provider.breaker(self.s.served_model).failure()
        self.s.error = message
        self._end_stream(self.writer.error(message, code))

    def _filter_failed(self, message: str) -> None:
        """A response filter raised: a 500 if nothing was sent yet, else the stream's error event.
        The provider did nothing wrong: no failover, no breaker."""
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
        if not self.sent_head:
            self.reply_error(500, message, "filter_error")
            return
        self.s.error = message
        self._end_stream(self.writer.error(message, "filter_error"))

    # -- writing to the client -------------------------------------------------------------

    def _served_headers(self) -> bytes:
        s = self.s
        cache = b"x-fastgw-cache: %b\r\n" % s.cache_status.encode() if s.cache_status is not None else b""
        if s.failures is not None:  # served after a failover: the client can look it up
            cache += s.request_id_header()
        return b"x-fastgw-provider: %b\r\nx-fastgw-model: %b\r\nx-fastgw-attempts: %d\r\n%b%b" % (
            self.provider.name.encode(), s.served_model.encode(), s.attempts, s.response_headers, cache)

    def _send_stream(self, data: bytes) -> None:
        if not self.sent_head:
            self.sent_head = True
            s = self.s
            s.status = 200
            s.first_byte_at = self.loop.time()
            self.waiting = W_IDLE
            self.conn.writer.start_stream(200, extra=self._served_headers(), data=data)
            return
        self.conn.writer.data(data)

    def _end_stream(self, data: bytes) -> None:
        """The client's stream is complete: its last bytes, then the end of the body."""
        if not self.sent_head:
            self._send_stream(b"")
        self._cancel_timer()
        self.conn.writer.end(data)
        self.finish()

    def reply_error(self, status: int, message: str, code: str | None, param: str | None = None) -> None:
        if self.cancelled:
            return
        s = self.s
        self._cancel_timer()
        s.status = status
        s.error = message
        s.error_code = code
        extra = s.response_headers + s.request_id_header()  # x-ratelimit-* (and retry-after when a limit refused)
        if status == 429 and s.retry_after and b"retry-after:" not in extra.lower():
            extra += b"Retry-After: %d\r\n" % max(1, round(s.retry_after))
        self.conn.writer.complete(status, self.dialect.error(status, message, code, param), extra=extra)
        self.finish()

    def crashed(self, message: str) -> None:
        """The last resort (fastgw.server.lastresort): a 500 before the head, else the stream's error
        event. Nothing is retried: the same bug would meet the next target."""
        if self.cancelled:
            return
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
        if not self.sent_head:
            self.reply_error(500, message, "internal_error")
            return
        self.s.error = message
        self._end_stream(self.writer.error(message, "internal_error"))

    def _reply_models(self) -> None:
        """``GET /v1/models`` (the names this consumer may use) or ``/v1/models/{id}``, which also
        knows the names a wildcard model serves."""
        s = self.s
        consumer = s.consumer
        door = self.door
        if self.op == "models":
            names = [n for n in door.models.names if "*" not in n and (consumer is None or consumer.allows(n))]
            body = self.dialect.model_list(names, door.created)
        else:
            name = unquote(s.head.path[len(MODEL_PREFIX) :].decode("utf-8", "replace"))
            if not name or door.models.resolve(name) is None or (consumer is not None and not consumer.allows(name)):
                self.reply_error(404, f"The model '{name}' does not exist or you do not have access to it.",
                                 "model_not_found")
                return
            body = fastjson.dumps(self.dialect.model(name, door.created))
        s.status = 200
        self.conn.writer.complete(200, body)
        self.finish()

    def finish(self) -> None:
        """The answer is complete: the exchange ends (filters that answer themselves call this)."""
        self.cancelled = True
        self.conn.finish_exchange()

    # -- timers and the connection's hooks ----------------------------------------------------

    def _wait(self, what: int, seconds: float) -> None:
        self.waiting = what
        self.conn.set_timeout(T_HANDLER, seconds)  # the connection's one timer: on_timeout() when it fires

    def _cancel_timer(self) -> None:
        if self.waiting != W_NONE:
            self.waiting = W_NONE
            self.conn.set_timeout(T_NONE, 0.0)

    @_guarded
    def on_timeout(self) -> None:
        """The connection's timer fired while this handler was waiting for its provider."""
        if self.waiting == W_NONE or self.cancelled:
            return
        what = "first token" if self.waiting == W_FIRST_BYTE and self.s.is_stream else "answer"
        if self.waiting == W_IDLE and self.sent_head:
            what = "next stream event"
        self._attempt_broken(504, f"provider '{self.provider.name}' sent no {what} in time", "upstream_timeout")

    def pause(self) -> None:
        if self.attempt is not None:
            self.attempt.pause()

    def resume(self) -> None:
        """The client reads again: the provider's idle timer runs afresh (it was suspended)."""
        if self.attempt is not None:
            self.attempt.resume()
        if self.waiting != W_NONE and not self.cancelled:
            self.conn.set_timeout(T_HANDLER, self.provider.timeouts["idle"])

    def drain_deadline(self) -> None:
        """The gateway stops: a stream already started ends with an error event in the client's
        dialect and a proper end; an answer not yet begun is a 503 (safe to retry elsewhere)."""
        if self.cancelled:
            return
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
        message = "the gateway is shutting down (drain deadline reached); retry the request"
        if self.sent_head:
            self.s.error = message
            self._end_stream(self.writer.error(message, DRAIN_CODE))
        else:
            self.reply_error(503, message, DRAIN_CODE)

    def cancel(self) -> None:
        self.cancelled = True
        self._cancel_timer()
        if self.pause_handle is not None:
            self.pause_handle.cancel()
            self.pause_handle = None
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None

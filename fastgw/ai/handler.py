"""The AI terminal handler: try a model's targets until one answers, and relay the answer.

Everything a request needs before the call (auth, decoding, prompts, model resolution,
guard, cache, limits) ran as filters; this handler owns only the provider side:

* connect errors, timeouts, 5xx, garbage and a stalled first token move to the next
  target (and count against that target's breaker);
* 429 cools the key down (``Retry-After`` if given) and tries the next key or target;
  401/403 cool the key down for longer — the key is bad, not the provider;
* any other 4xx is the client's error: it is passed back, converted to the dialect;
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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastgw import fastjson
from fastgw._speedups import SSEParser, ends_stream, model_span, relay_bytes
from fastgw.ai.attempts import MockAttempt, NetworkAttempt, request_bytes
from fastgw.ai.dialects import ANTHROPIC
from fastgw.ai.providers.base import ConversionError, ProviderError, StreamConverter, encode_embeddings
from fastgw.ai.usage import with_usage_requested
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


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """An entry point of the handler (the chain's continuation, attempt callbacks, the timer): an
    exception that escapes it is a gateway bug, answered by the last resort, never a dropped socket."""

    @functools.wraps(method)
    def guarded(self: ModelHandler, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:
            request_id = lastresort.report("ai", exc)
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
        if self.op == "models":
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
        self.max_attempts = entry.max_attempts
        self._next_attempt()

    # -- choosing and starting an attempt --------------------------------------------------

    def _next_attempt(self) -> None:
        """Start the next try, or answer with the last error when none is left."""
        door = self.door
        s = self.s
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
                self.last_error = (429, f"every API key of provider '{provider.name}' is cooling down", "keys_exhausted")
                breaker.trial_out = False
                self.target_index += 1
                continue
            tried.add(key_index)
            self._start(provider, target["model"], key_index)
            return
        status, message, code = self.last_error
        self.reply_error(status, message, code, self.refused_param if self.last_error is self.refused else None)

    def _start(self, provider: ProviderRuntime, model: str, key_index: int) -> None:
        s = self.s
        if self.provider is not None and self.provider is not provider:
            GATEWAY.failovers.inc((s.model, self.provider.name, provider.name))
        s.attempts += 1
        self.provider = provider
        s.provider = provider.name
        s.served_model = model
        self.key_index = key_index
        self.status = 0
        s.retry_after = None
        self.error_chunks = []
        self.resp_chunks = []
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
                beta = s.head.get(b"anthropic-beta")  # the client's opt-ins survive the pass-through
                call = adapter.build_messages(s.native_request, model, key, beta.decode("latin-1") if beta else None)
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
        if provider.mock is not None:
            attempt = MockAttempt(self, provider.mock, call)
        else:
            payload = request_bytes(call, provider.host_header)
            attempt = NetworkAttempt(self, provider.pool, payload, provider.timeouts["connect"])
        self.attempt = attempt
        # Non-streamed answers arrive whole: they may take as long as `idle` allows.
        self._wait(W_FIRST_BYTE, provider.timeouts["first_byte" if s.is_stream else "idle"])
        attempt.start()

    def _give_up_on_target(self, status: int, message: str, code: str, kind: str | None = None) -> None:
        """The current target failed before anything reached the client: try the next one."""
        GATEWAY.upstream_errors.inc((self.provider.name, kind or ERROR_KINDS.get(code, "invalid")))
        self.provider.breaker(self.s.served_model).failure()
        self.last_error = (status, message, code)
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
        if not (self.ended if self.passthrough else self.converter.done):
            # A clean end of the HTTP body without the provider's end marker: truncated.
            self._attempt_broken(502, f"provider '{self.provider.name}' ended its stream early", "upstream_truncated")
            return
        s = self.s
        try:
            items = [] if self.passthrough else self.converter.end()
            if not self.passthrough:
                s.reported_usage = self.converter.usage
            s.stream_ending = True
            out = self._render(s.sse_filters(items))
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

    def _provider_error(self, status: int, body: bytes) -> None:
        provider = self.provider
        message, code = provider.adapter.error(status, body)
        message = f"provider '{provider.name}' answered {status}: {provider.redact(message)}"
        if status == 429:
            provider.keys.cool(self.key_index, self.s.retry_after or provider.key_cooldown["rate_limited"])
            self.last_error = (429, message, code or "rate_limited")
            self._next_attempt()  # another key of this provider, or the next target
        elif status in (401, 403):
            provider.keys.cool(self.key_index, provider.key_cooldown["unauthorized"])
            self.last_error = (502, message, code or "provider_auth_failed")
            self._next_attempt()
        elif status >= 500:
            self._give_up_on_target(504 if status == 504 else 502, message, code or "upstream_error", "status_5xx")
        else:
            # The request itself is wrong: another provider would refuse it too.
            self.reply_error(status, message, code)

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
        extra = s.response_headers  # x-ratelimit-* (and retry-after when a limit refused)
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
        consumer = self.s.consumer
        names = [n for n in self.door.models.names if "*" not in n and (consumer is None or consumer.allows(n))]
        created = int(time.time())
        body = fastjson.dumps({
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "fastgw"} for n in names],
        })
        self.s.status = 200
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
        if self.attempt is not None:
            self.attempt.resume()

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
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None

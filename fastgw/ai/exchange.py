"""One front-door request: authenticate, resolve the model, try targets until one answers.

Failover rules (nothing is retried once a byte went to the client):

* connect errors, timeouts, 5xx, garbage and a stalled first token move to the next
  target (and count against that target's breaker);
* 429 cools the key down (``Retry-After`` if given) and tries the next key or target;
  401/403 cool the key down for longer — the key is bad, not the provider;
* any other 4xx is the client's error: it is passed back, converted to the dialect;
* after the first byte, a failure ends the stream with a well-formed error event and a
  clean end of the chunked body, never a hang.

Streams are held back until their first event arrives: a provider that sends headers and
then stalls is abandoned at ``first_byte`` without the client noticing.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from fastgw._speedups import SSEParser
from fastgw.ai.anthropic_front import FrontDoorError, messages_to_openai
from fastgw.ai.attempts import MockAttempt, NetworkAttempt, request_bytes
from fastgw.ai.dialects import ANTHROPIC
from fastgw.ai.prompts import PromptError, Prompts
from fastgw.ai.providers.base import ProviderError, StreamConverter, UnsupportedOperation
from fastgw.ai.usage import UsageMeter, wants_usage, with_usage_requested
from fastgw.auth import AuthFailure
from fastgw.cache.keys import cache_key, cache_mode, cacheable, scope_value, semantic_scope, storable
from fastgw.cache.replay import replay_stream, served
from fastgw.cache.store import CachedAnswer, CacheUnavailable
from fastgw.guard import Guard
from fastgw.limits.quotas import output_reservation
from fastgw.limits.rules import RequestContext
from fastgw.obs.metrics import GATEWAY
from fastgw.proxy import replies
from fastgw.proxy.deadline import Deadline
from fastgw.sse import SSEError
from fastgw.tokencount import count_chat, count_text
from fastgw.transform import TransformError

if TYPE_CHECKING:
    from fastgw.ai.frontdoor import AIFrontDoor, ProviderRuntime

MAX_PROVIDER_BODY = 32 * 1024 * 1024
ERROR_KINDS = {"upstream_error": "connect", "upstream_timeout": "timeout", "upstream_invalid": "invalid",
               "upstream_empty": "invalid", "upstream_truncated": "invalid", "upstream_too_large": "invalid"}
"""Error codes -> the ``kind`` label of fastgw_upstream_errors_total (5xx answers are status_5xx)."""
SSE_HEAD_HEADERS = b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"

# What the exchange is waiting for, for its one timer.
W_NONE, W_FIRST_BYTE, W_IDLE = 0, 1, 2
_BACKGROUND: set = set()  # cache writes in flight


_DELTA_CONTENT = re.compile(rb'"delta":\s*\{"content":\s*("(?:[^"\\]|\\.)*")\}')
"""The content literal of a plain OpenAI text delta, as providers write it."""


def delta_content(raw: bytes) -> tuple[str, int, int] | None:
    """The text of a plain OpenAI text delta event and where its JSON literal sits in ``raw``,
    or None for any other event (which then takes the full parse)."""
    if b'"finish_reason":null' not in raw:
        return None
    match = _DELTA_CONTENT.search(raw)
    if match is None:
        return None
    literal = match.group(1)
    # Without escapes a JSON string's bytes are its text: decode only when needed.
    text = json.loads(literal) if b"\\" in literal else literal[1:-1].decode()
    return text, match.start(1), match.end(1)


def _json_object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise ProviderError(f"stream event is not JSON: {data[:100]!r}") from None
    if not isinstance(value, dict):
        raise ProviderError("stream event is not a JSON object")
    return value


def _message_texts(request: dict[str, Any]) -> list[str]:
    """Every text a chat request sends: string contents and text parts, in order."""
    texts = []
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


def _with_message_texts(request: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The request with its texts replaced, in the order _message_texts found them."""
    replacements = iter(texts)
    messages = []
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            message = {**message, "content": next(replacements)}
        elif isinstance(content, list):
            parts = [
                {**p, "text": next(replacements)} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
                for p in content
            ]
            message = {**message, "content": parts}
        messages.append(message)
    return {**request, "messages": messages}


class CacheState:
    """What a request knows about the response cache: its keys, and hit or miss."""

    __slots__ = ("key", "question", "semantic_scope", "write", "vector", "status")

    def __init__(self, key: str, question: str, semantic_scope: str, write: bool) -> None:
        self.key = key
        self.question = question
        self.semantic_scope = semantic_scope
        self.write = write
        self.vector = None  # the question's embedding, once computed
        self.status = "miss"


class AIExchange:
    __slots__ = (
        "door",
        "conn",
        "loop",
        "head",
        "op",
        "dialect",
        "body",
        "cancelled",
        "request",
        "model",
        "stream",
        "targets",
        "max_attempts",
        "attempts",
        "target_index",
        "provider",
        "target_model",
        "key_index",
        "tried_keys",
        "attempt",
        "status",
        "retry_after",
        "error_chunks",
        "resp_chunks",
        "sse",
        "converter",
        "writer",
        "passthrough",
        "sent_head",
        "timer",
        "waiting",
        "last_error",
        "native",
        "native_request",
        "ended",
        "meter",
        "consumer",
        "started",
        "first_sent_at",
        "client_status",
        "error_message",
        "reservation",
        "extra_headers",
        "cache",
        "guard_stream",
        "guard_blocked",
    )

    def __init__(self, door: AIFrontDoor, conn, head, op: str, dialect) -> None:
        self.door = door
        self.conn = conn
        self.loop = conn.loop
        self.head = head
        self.op = op
        self.dialect = dialect
        self.body: list[bytes] = []
        self.cancelled = False
        self.request: dict[str, Any] = {}
        self.model = ""
        self.stream = False
        self.targets: list[dict] = []
        self.max_attempts = 0
        self.attempts = 0
        self.target_index = 0
        self.provider: ProviderRuntime | None = None
        self.target_model = ""
        self.key_index = 0
        self.tried_keys: dict[str, set[int]] = {}
        self.attempt = None
        self.status = 0
        self.retry_after: float | None = None
        self.error_chunks: list[bytes] = []
        self.resp_chunks: list[bytes] = []
        self.sse = None
        self.converter: StreamConverter | None = None
        self.writer = None
        self.passthrough = False
        self.sent_head = False
        self.timer = Deadline(self.loop, self._on_timeout)
        self.waiting = W_NONE
        self.last_error: tuple[int, str, str] = (503, "no provider target is available", "no_target")
        self.native = False  # an Anthropic client reaching an Anthropic provider: no conversion at all
        self.native_request: dict[str, Any] = {}
        self.ended = False  # the provider signalled the end of its stream ([DONE], message_stop)
        self.meter = UsageMeter(False)
        self.consumer: str | None = None
        self.started = self.loop.time()
        self.first_sent_at: float | None = None
        self.client_status = 0
        self.error_message: str | None = None
        self.reservation = None  # what the limiter reserved; settled with the real usage at the end
        self.extra_headers = b""  # x-ratelimit-* and the model's configured response headers
        self.cache: CacheState | None = None  # set when the response cache applies to this request
        self.guard_stream = None  # the answer-side filter of a streamed answer
        self.guard_blocked = False

    # -- the request ------------------------------------------------------------------------

    def on_body(self, chunk) -> None:
        self.body.append(bytes(chunk))

    def on_request_end(self) -> None:
        door = self.door
        consumer = door.auth.authenticate(self.head.get)
        if isinstance(consumer, AuthFailure):
            self._reply_error(consumer.status, consumer.message, consumer.code)
            return
        self.consumer = consumer.name if consumer is not None else None
        if self.op == "models":
            self._reply_models(consumer)
            return
        if self.head.method != b"POST":
            self._reply_error(405, f"use POST for {self.head.path.decode()}", "method_not_allowed")
            return
        try:
            request = json.loads(b"".join(self.body))
        except ValueError:
            self._reply_error(400, "the request body is not valid JSON", "invalid_json")
            return
        if not isinstance(request, dict):
            self._reply_error(400, "the request body must be a JSON object", "invalid_request")
            return
        prompts = door.prompts
        if prompts is not None and self.dialect is not ANTHROPIC:
            # Before the checks: a template may bring the model and the messages.
            request = self._apply_prompts(prompts, request)
            if request is None:
                return
        model = request.get("model")
        if not isinstance(model, str) or not model:
            self._reply_error(400, "'model' is required and must be a non-empty string", "missing_model")
            return
        self.model = model  # the name asked for, in logs and metrics whatever happens next
        problem = self._validate(request)
        if problem:
            self._reply_error(400, problem, "invalid_request")
            return
        entry = door.models.resolve(model)
        if entry is None:
            self._reply_error(404, f"model '{model}' is not served by this gateway", "model_not_found")
            return
        denied = door.auth.authorize(consumer, model)
        if denied is not None:
            self._reply_error(denied.status, denied.message, denied.code)
            return
        if self.dialect is ANTHROPIC:
            self.native_request = request
            try:
                request = messages_to_openai(request)
            except FrontDoorError as exc:
                self._reply_error(exc.status, exc.message, "invalid_request")
                return
            if prompts is not None:
                decorated = self._apply_prompts(prompts, request)
                if decorated is None:
                    return
                if decorated != request:  # decorators must reach the provider: no native pass-through
                    self.native_request = {}
                request = decorated
        if entry.transform is not None:
            try:
                request = entry.transform.apply_body_dict(request)  # e.g. a default max_tokens
            except TransformError as exc:
                self._reply_error(exc.status, exc.message, "invalid_request")
                return
            self.native_request = {}  # the rewritten body is what the provider must see
            self.extra_headers += entry.response_headers
        self.request = request
        self.model = model
        self.stream = bool(request.get("stream")) and self.op != "embeddings"
        self.meter = UsageMeter(wants_usage(request))
        self.targets = entry.targets(model)
        self.max_attempts = entry.max_attempts
        guard = door.guard
        if guard is not None:
            if door.guard_prompts and not self._guard_prompt(guard):
                return
            if guard.moderation is not None:
                task = self.loop.create_task(guard.moderate("prompt", _message_texts(self.request)))
                task.add_done_callback(self._moderated)
                return
        self._after_guard()

    def _after_guard(self) -> None:
        if not self._cache_lookup_started():
            self._limit_then_attempt()

    # -- the content guard -----------------------------------------------------------------

    def _guard_prompt(self, guard: Guard) -> bool:
        """Block (400) or mask the prompt before it goes anywhere; False when answered."""
        verdict = guard.check_prompt(_message_texts(self.request))
        for rule, category in verdict.hits:
            GATEWAY.guard_hits.inc((rule, category, "prompt"))
        if verdict.action == "block":
            self._reply_error(400, "the request was blocked by the content filter", "content_filter")
            return False
        if verdict.action == "mask":
            self.request = _with_message_texts(self.request, verdict.texts)
            self.native_request = {}  # the masked text must be what the provider sees
        return True

    def _moderated(self, task) -> None:
        if task.cancelled() or self.cancelled:
            return
        if task.exception() is not None or task.result():
            self._reply_error(400, "the request was flagged by the moderation service", "content_filter")
            return
        self._after_guard()

    def _guard_answer(self, response: dict[str, Any]) -> dict[str, Any]:
        """A whole answer through the answer-side rules: masked, or emptied when blocked."""
        choices = response.get("choices") or []
        if not choices or not isinstance((choices[0].get("message") or {}).get("content"), str):
            return response
        stream = self.door.guard.stream()
        text, blocked = stream.feed(choices[0]["message"]["content"])
        tail, blocked_at_end = stream.finish() if not blocked else ("", True)
        self._count_guard_hits(stream)
        message = dict(choices[0]["message"], content="" if blocked or blocked_at_end else text + tail)
        choice = dict(choices[0], message=message)
        if blocked or blocked_at_end:
            choice["finish_reason"] = "content_filter"
        return {**response, "choices": [choice, *choices[1:]]}

    def _guarded(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """One converted chunk through the stream guard; a block ends the answer right here."""
        choices = chunk.get("choices")
        if not choices:
            return [chunk]
        choice = choices[0]
        delta = choice.get("delta") or {}
        guard = self.guard_stream
        content = delta.get("content")
        if isinstance(content, str) and content:
            safe, blocked = guard.feed(content)
            if blocked:
                return [self._blocked_chunk(chunk)]
            delta = {**delta, "content": safe}
        if choice.get("finish_reason"):
            tail, blocked = guard.finish()
            if blocked:
                return [self._blocked_chunk(chunk)]
            if tail:
                delta = {**delta, "content": (delta.get("content") or "") + tail}
        if delta is choice.get("delta"):
            return [chunk]
        return [{**chunk, "choices": [{**choice, "delta": delta}, *choices[1:]]}]

    def _relay_guarded(self, events) -> bytes:
        """OpenAI-format events relayed raw through the answer filter.

        A plain text delta (the bulk of a stream) is checked from its content literal alone
        and relayed untouched unless the filter changed its text, in which case only the
        literal is replaced; any other event takes the full parse (and the usage meter)."""
        out = []
        guard = self.guard_stream
        for event in events:
            raw = event.raw
            delta = delta_content(raw)
            if delta is not None:
                text, start, end = delta
                safe, blocked = guard.feed(text)
                if blocked:
                    out.append(self.writer.chunk(self._blocked_chunk(json.loads(event.data))))
                    break
                if safe != text:
                    raw = raw[:start] + json.dumps(safe, ensure_ascii=False).encode() + raw[end:]
                out.append(raw)
                continue
            chunk = None if event.is_done else _json_object(event.data)
            if chunk is None or not chunk.get("choices"):
                out.append(self.meter.relay([event]))  # [DONE], usage chunks: the meter decides
                continue
            for guarded in self._guarded(chunk):
                out.append(self.writer.chunk(guarded))
            if self.guard_blocked:
                break
        return b"".join(out)

    def _blocked_chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        self.guard_blocked = True
        return {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}

    def _count_guard_hits(self, stream) -> None:
        for rule, category in stream.hits:
            GATEWAY.guard_hits.inc((rule, category, "response"))

    def _limit_then_attempt(self) -> None:
        """Reserve against the limits (a cache hit never gets here), then call the provider."""
        limiter = self.door.limiter
        request, model = self.request, self.model
        if limiter is not None:
            ctx = RequestContext(self.consumer, model, self.conn.peer.decode(), self.head.get, self.head.query)
            if limiter.needs_check(ctx):
                # Reserve before the call, from estimates; settle() charges the real usage after.
                prompt, _ = count_chat(model, request["messages"], request.get("tools")) if "messages" in request \
                    else count_text(model, json.dumps(request.get("prompt", request.get("input", ""))))
                completion = output_reservation(request) if self.op != "embeddings" else 0
                decision = limiter.reserve_nowait(ctx, prompt, completion)
                if decision is None:  # a Redis round trip: continue when it answers
                    task = self.loop.create_task(limiter.reserve(ctx, prompt, completion))
                    task.add_done_callback(self._limit_decided)
                else:
                    self._limited(decision)
                return
        self._next_attempt()

    # -- the response cache -------------------------------------------------------------------

    def _cache_lookup_started(self) -> bool:
        """Look the answer up (exact key, then the nearest paraphrase) unless the cache is off
        for this request; True when the lookup continues asynchronously."""
        door = self.door
        spec = door.cache_spec
        if spec is None or self.dialect is ANTHROPIC or self.op != "chat" or not cacheable(self.request):
            return False
        read, write = cache_mode(self.head.get)
        if not (read or write):
            return False
        scope = scope_value(spec, self.consumer, self.model)  # AI "routes" are the public models
        key, question = cache_key(self.request, self.model, scope, spec)
        self.cache = CacheState(key, question, semantic_scope(self.request, self.model, scope, spec), write)
        if not read:
            return False
        task = self.loop.create_task(self._cache_lookup())
        task.add_done_callback(self._cache_looked_up)
        return True

    async def _cache_lookup(self) -> tuple[CachedAnswer | None, str]:
        door, state = self.door, self.cache
        try:
            answer = await door.cache_store.get(state.key)
            if answer is not None:
                return answer, "hit"
            index = door.cache_index
            if index is not None and state.question:
                state.vector = await index.embed(state.question)
                near = await index.nearest(state.semantic_scope, state.vector)
                if near is not None:
                    answer = await door.cache_store.get(near)
                    if answer is not None:
                        return answer, "semantic-hit"
        except CacheUnavailable:
            return None, "unavailable"
        return None, "miss"

    def _cache_looked_up(self, task) -> None:
        if task.cancelled() or self.cancelled:
            return
        answer, result = (None, "unavailable") if task.exception() is not None else task.result()
        GATEWAY.cache_requests.inc((self.model, result.replace("-", "_")))
        if answer is None:
            self._limit_then_attempt()  # a miss (or an unavailable cache) goes to the provider
            return
        self.cache.status = result
        GATEWAY.cache_saved_tokens.inc((self.model,), int(answer.usage.get("total_tokens") or 0))
        self._serve_cached(answer)

    def _serve_cached(self, answer: CachedAnswer) -> None:
        conn = self.conn
        header = b"x-fastgw-cache: %b\r\n" % self.cache.status.encode()
        self.client_status = 200
        if not self.stream:
            body = json.dumps(served(answer, self.model)).encode()
            conn.write_local(replies.simple_response(200, body, keep_alive=conn.keep_alive, extra=header))
            self._finish()
            return
        events = b"".join(replay_stream(answer, self.model, include_usage=wants_usage(self.request)))
        head = [replies.status_line(200), b"\r\n", replies.SERVER_HEADER, replies.DATE.header(), SSE_HEAD_HEADERS, header]
        if conn.keep_alive:
            head.append(b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(events), events))
        else:
            head.append(b"Connection: close\r\n\r\n" + events)
        conn.write_local(b"".join(head))
        self._finish()

    def _cache_store(self, response: dict[str, Any]) -> None:
        """Keep a successful answer (and its question's vector) for the next asker, off the request path."""
        state, door, model = self.cache, self.door, self.model
        if not (state.write and storable(self.request, response)):
            return
        answer = CachedAnswer(response, time.time(), state.question, response.get("usage") or {})

        async def put() -> None:
            try:
                await door.cache_store.put(state.key, answer)
                index = door.cache_index
                if index is not None and state.question:
                    vector = state.vector if state.vector is not None else await index.embed(state.question)
                    await index.add(state.semantic_scope, vector, state.key)
            except CacheUnavailable:
                GATEWAY.cache_requests.inc((model, "unavailable"))

        task = self.loop.create_task(put())
        _BACKGROUND.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_BACKGROUND.discard)

    def _limit_decided(self, task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a limiter bug must not leave the client hanging
            self._reply_error(500, f"rate limiter failed: {exc!r}", "limiter_error")
            return
        self._limited(task.result())

    def _limited(self, decision) -> None:
        self.extra_headers += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in decision.headers)
        if self.cancelled:  # the client left while Redis answered
            self.door.limiter.settle(decision.reservation, 0, 0)
            return
        if not decision.allowed:
            GATEWAY.ratelimit_rejections.inc((decision.rule, decision.kind or decision.code))
            self.retry_after = decision.retry_after
            self._reply_error(decision.status, decision.message, decision.code)
            return
        self.reservation = decision.reservation
        self._next_attempt()

    def _apply_prompts(self, prompts: Prompts, request: dict[str, Any]) -> dict[str, Any] | None:
        """Templates and decorators; None when the request was answered with an error."""
        try:
            return prompts.apply(request, self.consumer, request.get("model"))
        except PromptError as exc:
            self._reply_error(exc.status, exc.message, "template_not_found" if exc.status == 404 else "template_error")
            return None

    def _validate(self, request: dict[str, Any]) -> str | None:
        """Enough to answer garbage with a clear 400; unknown fields pass through untouched."""
        if self.op == "chat":
            messages = request.get("messages")
            if not isinstance(messages, list) or not messages:
                return "'messages' must be a non-empty list"
            if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
                return "each message must be an object with a 'role'"
        elif self.op == "completions":
            if "prompt" not in request:
                return "'prompt' is required"
        elif self.op == "embeddings":
            if not isinstance(request.get("input"), str | list):
                return "'input' must be a string or a list"
        elif self.op == "messages":
            if not isinstance(request.get("messages"), list) or not request["messages"]:
                return "'messages' must be a non-empty list"
        if "stream" in request and not isinstance(request["stream"], bool):
            return "'stream' must be a boolean"
        return None

    # -- choosing and starting an attempt --------------------------------------------------

    def _next_attempt(self) -> None:
        """Start the next try, or answer with the last error when none is left."""
        door = self.door
        while self.attempts < self.max_attempts and self.target_index < len(self.targets):
            target = self.targets[self.target_index]
            provider = door.providers[target["provider"]]
            breaker = provider.breaker(target["model"])
            if provider.probed_down():
                self.last_error = (503, f"provider '{provider.name}' is down (health probe)", "provider_down")
                self.target_index += 1
                continue
            if not breaker.allow():
                self.last_error = (
                    503,
                    f"provider '{provider.name}' is failing (circuit open)",
                    "circuit_open",
                )
                self.target_index += 1
                continue
            tried = self.tried_keys.setdefault(provider.name, set())
            key_index = provider.keys.pick(frozenset(tried))
            if key_index is None:
                self.last_error = (
                    429,
                    f"every API key of provider '{provider.name}' is cooling down",
                    "keys_exhausted",
                )
                breaker.trial_out = False
                self.target_index += 1
                continue
            tried.add(key_index)
            self._start(provider, target["model"], key_index)
            return
        status, message, code = self.last_error
        self._reply_error(status, message, code)

    def _start(self, provider: ProviderRuntime, model: str, key_index: int) -> None:
        if self.provider is not None and self.provider is not provider:
            GATEWAY.failovers.inc((self.model, self.provider.name, provider.name))
        self.attempts += 1
        self.provider = provider
        self.target_model = model
        self.key_index = key_index
        self.status = 0
        self.retry_after = None
        self.error_chunks = []
        self.resp_chunks = []
        self.native = (
            self.dialect is ANTHROPIC and provider.type == "anthropic" and bool(self.native_request)
            and not self.door.guard_answers  # guarded answers are converted, so every delta is seen
        )
        op = "chat" if self.op == "messages" else self.op
        try:
            if self.native:
                beta = self.head.get(b"anthropic-beta")  # the client's opt-ins survive the pass-through
                call = provider.adapter.build_messages(
                    self.native_request, model, provider.keys.key(key_index), beta.decode("latin-1") if beta else None
                )
            else:
                request = dict(self.request, model=model)
                if self.stream and provider.adapter.passthrough:
                    request = with_usage_requested(request)  # usage is metered; stripped again if unwanted
                call = provider.adapter.build(op, request, model, provider.keys.key(key_index))
        except UnsupportedOperation as exc:
            self.last_error = (400, str(exc), "unsupported_operation")
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
        self._wait(W_FIRST_BYTE, provider.timeouts["first_byte" if self.stream else "idle"])
        attempt.start()

    def _give_up_on_target(self, status: int, message: str, code: str, kind: str | None = None) -> None:
        """The current target failed before anything reached the client: try the next one."""
        GATEWAY.upstream_errors.inc((self.provider.name, kind or ERROR_KINDS.get(code, "invalid")))
        self.provider.breaker(self.target_model).failure()
        self.last_error = (status, message, code)
        self.target_index += 1
        self._next_attempt()

    # -- attempt callbacks -------------------------------------------------------------------

    def attempt_head(self, attempt, status: int, retry_after: float | None) -> None:
        if attempt is not self.attempt:
            return
        self.status = status
        self.retry_after = retry_after
        if 200 <= status < 300 and self.stream:
            self.sse = SSEParser()
            self.writer = self.dialect.stream(self.model)
            op = "chat" if self.op == "messages" else self.op
            # Relay the provider's bytes as they are when the client speaks its dialect.
            # Relay the provider's bytes when the client speaks its dialect; a guarded relay
            # rewrites only the events whose text the filter changes.
            self.passthrough = self.native or (self.provider.adapter.passthrough and self.dialect is not ANTHROPIC)
            self.converter = None if self.passthrough else self.provider.adapter.stream(op, self.target_model)
            if self.door.guard_answers:
                self.guard_stream = self.door.guard.stream()

    def attempt_body(self, attempt, chunk) -> None:
        if attempt is not self.attempt:
            return
        if not (200 <= self.status < 300):
            self.error_chunks.append(bytes(chunk))
            return
        if not self.stream:
            self.resp_chunks.append(bytes(chunk))
            if sum(map(len, self.resp_chunks)) > MAX_PROVIDER_BODY:
                self._attempt_broken(502, "provider answer is too large", "upstream_too_large")
            return
        try:
            events = self.sse.feed(chunk)
            if not events:
                return
            out = self._convert_events(events)
        except (ProviderError, SSEError, ValueError) as exc:
            self._attempt_broken(
                502,
                f"provider '{self.provider.name}' sent an invalid stream event: {exc}",
                "upstream_invalid",
            )
            return
        if self.guard_blocked:  # the filter stopped the answer: end it cleanly, drop the provider
            self._count_guard_hits(self.guard_stream)
            self.attempt.cancel()
            self.attempt = None
            self._end_stream(out + self.writer.end())
            return
        if out:
            self._send_stream(out)
        if self.sent_head:  # events that produced nothing yet (pings) don't count as a first token
            self.timer.extend(self.provider.timeouts["idle"])

    def _convert_events(self, events) -> bytes:
        if self.passthrough:
            for event in events:
                if event.is_done or event.event == "message_stop":
                    self.ended = True
            if self.native:
                return self.meter.relay_native(events)
            if self.guard_stream is not None:
                return self._relay_guarded(events)
            return self.meter.relay(events)
        out = []
        converter = self.converter
        writer = self.writer
        meter = self.meter
        needs_usage = self.dialect is ANTHROPIC  # its message_delta carries the usage
        for event in events:
            if event.is_done:
                converter.done = True
                continue
            for chunk in converter.event(event.event, event.data):
                if meter.chunk(chunk, needs_usage):
                    if self.guard_stream is None:
                        out.append(writer.chunk(chunk))
                        continue
                    for guarded in self._guarded(chunk):
                        out.append(writer.chunk(guarded))
                    if self.guard_blocked:
                        return b"".join(out)
        return b"".join(out)

    def attempt_end(self, attempt) -> None:
        if attempt is not self.attempt:
            return
        self.attempt = None
        status = self.status
        provider = self.provider
        if status >= 300:
            self._provider_error(status, b"".join(self.error_chunks))
            return
        if self.stream:
            self._stream_ended()
            return
        body = b"".join(self.resp_chunks)
        op = "chat" if self.op == "messages" else self.op
        try:
            if self.native:
                usage = json.loads(body).get("usage") or {}  # validated, relayed as is
                self.meter.answer({"usage": {"prompt_tokens": usage.get("input_tokens", 0),
                                             "completion_tokens": usage.get("output_tokens", 0)}})
                out = body
            else:
                response = provider.adapter.convert_response(op, status, body, self.target_model)
                self.meter.answer(response)
                guarded = self.door.guard_answers and op == "chat"
                if guarded:
                    response = self._guard_answer(response)
                if self.cache is not None:
                    self._cache_store(response)
                if provider.adapter.passthrough and self.dialect is not ANTHROPIC and not guarded:
                    out = body
                else:
                    out = self.dialect.response(self.op, response, self.model)
        except (ProviderError, ValueError) as exc:
            self._give_up_on_target(
                502, f"provider '{provider.name}' sent an invalid answer: {exc}", "upstream_invalid"
            )
            return
        provider.breaker(self.target_model).success()
        self._cancel_timer()
        self.client_status = 200
        self.conn.write_local(
            replies.simple_response(200, out, keep_alive=self.conn.keep_alive, extra=self._served_headers())
        )
        self._finish()

    def _stream_ended(self) -> None:
        """The provider's response ended: finish the client's stream, or fail over if it was empty."""
        if not (self.ended if self.passthrough else self.converter.done):
            # A clean end of the HTTP body without the provider's end marker: truncated.
            self._attempt_broken(
                502, f"provider '{self.provider.name}' ended its stream early", "upstream_truncated"
            )
            return
        out = b""
        if not self.passthrough:
            try:
                meter, writer = self.meter, self.writer
                needs_usage = self.dialect is ANTHROPIC
                parts = [writer.chunk(c) for c in self.converter.end() if meter.chunk(c, needs_usage)]
                closing = meter.closing_chunk(self.converter.usage) if not needs_usage else None
                if closing is not None:
                    parts.append(writer.chunk(closing))
                out = b"".join(parts) + writer.end()
            except ProviderError as exc:
                self._attempt_broken(502, f"provider stream ended badly: {exc}", "upstream_invalid")
                return
        self.provider.breaker(self.target_model).success()
        if self.guard_stream is not None:
            self._count_guard_hits(self.guard_stream)
        self._end_stream(out)

    def _provider_error(self, status: int, body: bytes) -> None:
        provider = self.provider
        message, code = provider.adapter.error(status, body)
        message = f"provider '{provider.name}' answered {status}: {provider.redact(message)}"
        if status == 429:
            provider.keys.cool(self.key_index, self.retry_after or provider.key_cooldown["rate_limited"])
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
            self._reply_error(status, message, code)

    def attempt_failed(self, attempt, status: int, message: str) -> None:
        if attempt is not self.attempt:
            return
        self.attempt = None
        self._attempt_broken(
            status,
            f"provider '{self.provider.name}': {message}",
            "upstream_error" if status == 502 else "upstream_timeout",
        )

    def _attempt_broken(self, status: int, message: str, code: str) -> None:
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
        if not self.sent_head:
            self._give_up_on_target(status, message, code)
            return
        # Too late to fail over: end the stream cleanly with an error event.
        self.provider.breaker(self.target_model).failure()
        self.error_message = message
        self._end_stream(self.writer.error(message, code))

    # -- writing to the client -------------------------------------------------------------

    def _served_headers(self) -> bytes:
        cache = b"x-fastgw-cache: %b\r\n" % self.cache.status.encode() if self.cache is not None else b""
        return b"x-fastgw-provider: %b\r\nx-fastgw-model: %b\r\nx-fastgw-attempts: %d\r\n%b%b" % (
            self.provider.name.encode(),
            self.target_model.encode(),
            self.attempts,
            self.extra_headers,
            cache,
        )

    def _send_stream(self, data: bytes) -> None:
        conn = self.conn
        if not self.sent_head:
            self.sent_head = True
            self.client_status = 200
            self.first_sent_at = self.loop.time()
            self.waiting = W_IDLE
            head = [
                replies.status_line(200),
                b"\r\n",
                replies.SERVER_HEADER,
                replies.DATE.header(),
                SSE_HEAD_HEADERS,
                self._served_headers(),
            ]
            head.append(
                b"Transfer-Encoding: chunked\r\n\r\n" if conn.keep_alive else b"Connection: close\r\n\r\n"
            )
            conn.write_local(b"".join(head))
        if data:
            conn.write_local(b"%x\r\n%b\r\n" % (len(data), data) if conn.keep_alive else data)

    def _end_stream(self, data: bytes) -> None:
        """The client's stream is complete: its last bytes, then the end of the chunked body."""
        self._send_stream(data)
        self._cancel_timer()
        self.conn.write_local(b"0\r\n\r\n" if self.conn.keep_alive else b"")
        self._finish()

    def _reply_error(self, status: int, message: str, code: str | None) -> None:
        self._cancel_timer()
        self.client_status = status
        self.error_message = message
        extra = self.extra_headers  # x-ratelimit-* (and retry-after when a limit refused)
        if status == 429 and self.retry_after and b"retry-after:" not in extra.lower():
            extra += b"Retry-After: %d\r\n" % max(1, round(self.retry_after))
        self.conn.write_local(
            replies.simple_response(
                status,
                self.dialect.error(status, message, code),
                keep_alive=self.conn.keep_alive,
                extra=extra,
            )
        )
        self._finish()

    def _reply_models(self, consumer) -> None:
        names = [
            n for n in self.door.models.names if "*" not in n and (consumer is None or consumer.allows(n))
        ]
        created = int(time.time())
        body = json.dumps(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": created, "owned_by": "fastgw"} for n in names
                ],
            }
        ).encode()
        self.conn.write_local(replies.simple_response(200, body, keep_alive=self.conn.keep_alive))
        self._finish()

    def _finish(self) -> None:
        self.cancelled = True
        self._record()
        self.conn.finish_exchange()

    def _record(self) -> None:
        """Metrics and the access-log line of this request, with its usage once it succeeded."""
        now = self.loop.time()
        provider = self.provider.name if self.provider is not None else ""
        usage = None
        if self.client_status == 200 and self.op not in ("models",) and self.provider is not None:
            usage = self.meter.result(self.target_model, self.request)
        ttft = self.first_sent_at - self.started if self.first_sent_at is not None else None
        if self.reservation is not None:  # charge what was really used; a failed call costs nothing
            self.door.limiter.settle(
                self.reservation, usage["prompt_tokens"] if usage else 0, usage["completion_tokens"] if usage else 0
            )
            self.reservation = None
        limiter = self.door.limiter
        cost = limiter.cost(self.model, usage["prompt_tokens"], usage["completion_tokens"]) if usage and limiter else None
        GATEWAY.ai_done(
            consumer=self.consumer or "", model=self.model, provider=provider, status=self.client_status,
            seconds=now - self.started, ttft=ttft,
            prompt_tokens=usage["prompt_tokens"] if usage else 0,
            completion_tokens=usage["completion_tokens"] if usage else 0,
            estimated=bool(usage and usage["estimated"]),
            cost=cost or 0.0,
        )
        sink = self.conn.worker.usage_sink
        if sink is not None and usage is not None:
            sink.record(
                consumer=self.consumer or "", model=self.model, provider=provider,
                prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
                estimated=usage["estimated"], cost=cost or 0.0, served_model=self.target_model,
            )
        log = self.conn.worker.access_log
        if log.enabled:
            head = self.head
            log.write(
                client_ip=self.conn.peer.decode(), method=head.method, target=head.target,
                status=self.client_status, duration=now - self.started, bytes_out=self.conn.bytes_out,
                consumer=self.consumer, model=self.model or None, served_model=self.target_model or None,
                provider=provider or None, attempts=self.attempts or None, stream=self.stream,
                prompt_tokens=usage["prompt_tokens"] if usage else None,
                completion_tokens=usage["completion_tokens"] if usage else None,
                total_tokens=usage["total_tokens"] if usage else None,
                tokens_estimated=usage["estimated"] if usage else None,
                cost=cost,
                ttft=ttft, error=self.error_message,
            )

    # -- timers and the connection's hooks ----------------------------------------------------

    def _wait(self, what: int, seconds: float) -> None:
        self.waiting = what
        self.timer.set(seconds)

    def _cancel_timer(self) -> None:
        self.waiting = W_NONE
        self.timer.cancel()

    def _on_timeout(self) -> None:
        if self.waiting == W_NONE or self.cancelled:
            return
        what = "first token" if self.waiting == W_FIRST_BYTE and self.stream else "answer"
        if self.waiting == W_IDLE and self.sent_head:
            what = "next stream event"
        self._attempt_broken(
            504, f"provider '{self.provider.name}' sent no {what} in time", "upstream_timeout"
        )

    def pause(self) -> None:
        if self.attempt is not None:
            self.attempt.pause()

    def resume(self) -> None:
        if self.attempt is not None:
            self.attempt.resume()

    def cancel(self) -> None:
        self.cancelled = True
        self._cancel_timer()
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None

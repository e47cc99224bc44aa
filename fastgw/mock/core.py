"""The mock LLM itself, as pure data: request in, `MockReply` out (no sockets, no processes).

`MockLLM.respond()` answers one request, so a gateway worker serves the `mock` provider in-process with no
network (`fastgw.ai.attempts.MockAttempt`), and `fastgw.mock.server` frames the same replies on the wire.
The OpenAI flavor lives here; the other dialects are in `fastgw.mock.flavors` and load only when chosen.

Per-request `x-mock-*` headers (status, stall, cut, close, garbage, chunks, chunk delay) override the
server-wide defaults, so one running mock can drive failover, timeout and cut-stream tests.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import itertools
import json
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import parse_qs

__all__ = [
    "FLAVORS",
    "JSON_BODY",
    "JSON_REPLY",
    "Flavor",
    "MockLLM",
    "MockReply",
    "MockRequest",
    "OpenAIFlavor",
    "answer_text",
    "answer_words",
    "embed_vector",
    "pattern_bytes",
]


# --------------------------------------------------------------------------------------------- data model


@dataclass(slots=True)
class MockReply:
    """One answer as data, so the gateway can serve it in-process and the server can frame it on the wire.

    `headers` carry no framing (content-length / transfer-encoding): the writer adds it. `events` are sent
    one chunk each (SSE frames for LLM streams; the last is `data: [DONE]` unless cut). `action` is
    "respond", "close" (close without answering), "garbage" (send `body`, which is not HTTP, then close) or
    "cut" (send head + `events`, then close without the terminating chunk); `status` is 0 for close and
    garbage. Replies may be shared constants: treat them as read-only.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    events: list[bytes] | None = None
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    action: str = "respond"


@dataclass(slots=True)
class MockRequest:
    """What a flavor needs to answer one API call, decoupled from the wire."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    chunks: int


class Flavor(Protocol):
    """An API dialect (openai, later anthropic, gemini...): answers its own endpoints and errors."""

    def respond(self, req: MockRequest) -> MockReply: ...

    def error(self, status: int, message: str, code: str | None = None) -> MockReply: ...


class _BadInput(Exception):
    """A malformed mock control or query parameter: answered as a 400 in the flavor's error shape."""


_SEP = (",", ":")
_CT_JSON = ("content-type", "application/json")
_SSE_HEADERS = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
_DONE = b"data: [DONE]\n\n"
_GARBAGE = b"\x00\xffNOT-HTTP garbage from fastgw mock-llm\r\n\r\n"
_ids = itertools.count(1)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=_SEP).encode()


def _json_reply(status: int, obj: Any) -> MockReply:
    return MockReply(status, [_CT_JSON], _dumps(obj))


def _new_id(prefix: str) -> str:
    """Unique across forked workers (pid) and cheap (a counter, no randomness)."""
    return f"{prefix}mock{os.getpid():x}x{next(_ids):x}"


_WORDS = ("This", "is", "a", "mock", "answer", "from", "fastgw", "mock-llm.")


@lru_cache(maxsize=64)
def answer_words(chunks: int) -> tuple[str, ...]:
    """The deterministic content deltas of a `chunks`-chunk answer; tests assert on them."""
    return tuple(_WORDS[i % len(_WORDS)] if i == 0 else " " + _WORDS[i % len(_WORDS)] for i in range(chunks))


def answer_text(chunks: int = 8) -> str:
    """The full answer text: the same for plain and streamed replies."""
    return "".join(answer_words(chunks))


def embed_vector(text: str, dims: int = 16) -> list[float]:
    """A deterministic unit vector seeded from the text, so equal inputs embed equally across runs."""
    raw = hashlib.shake_256(text.encode()).digest(4 * dims)
    values = [v / 2147483648.0 - 1.0 for v in struct.unpack(f"<{dims}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


_PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"  # 64 bytes: blocks tile
_BLOCK = _PATTERN * 1024  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    """N bytes of the repeating /bytes pattern, so large-body tests can check content, not just length."""
    return _BLOCK * (n // len(_BLOCK)) + _BLOCK[: n % len(_BLOCK)]


def _estimate_tokens(texts: list[str]) -> int:
    """Cheap prompt-token estimate (~4 characters a token, at least 1 per text)."""
    return sum(len(t) // 4 + 1 for t in texts)


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content)


def _sse(prefix: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> list[bytes]:
    """Frame chunk objects sharing id/model (`prefix`) as SSE; with usage, every chunk says usage null
    and a last `choices: []` chunk carries it, as OpenAI does for stream_options.include_usage."""
    tail = ',"usage":null}' if usage is not None else "}"
    events = [f"data: {prefix}[{json.dumps(c, separators=_SEP)}]{tail}\n\n".encode() for c in choices]
    if usage is not None:
        events.append(f'data: {prefix}[],"usage":{json.dumps(usage, separators=_SEP)}}}\n\n'.encode())
    events.append(_DONE)
    return events


# ------------------------------------------------------------------------------------------ openai flavor

_OPENAI_ERRORS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout_error", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
}


def _forced_tool(payload: dict[str, Any]) -> str | None:
    """The function name the request forces (tool_choice naming one, or "required"), else None."""
    tools = payload.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name")
    if choice == "required":
        return (tools[0].get("function") or {}).get("name") if isinstance(tools[0], dict) else None
    return None


class OpenAIFlavor:
    """OpenAI REST shapes: chat, legacy completions, embeddings, models, errors."""

    def __init__(self, models: tuple[str, ...] = ()) -> None:
        self.models = ("mock-gpt", *(m for m in models if m != "mock-gpt"))
        self._posts = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }

    def error(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> MockReply:
        """OpenAI error body; 429 carries retry-after so clients and the gateway can back off."""
        kind, default_code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        reply = _json_reply(
            status,
            {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}},
        )
        if status == 429:
            reply.headers.append(("retry-after", "1"))
        return reply

    def respond(self, req: MockRequest) -> MockReply:
        """Route an /v1 call; anything else is a 404 in the OpenAI error shape."""
        if req.method == "GET" and req.path == "/v1/models":
            return _json_reply(200, {"object": "list", "data": [self._model(m) for m in self.models]})
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            model = req.path[len("/v1/models/") :]
            if model in self.models:
                return _json_reply(200, self._model(model))
            return self.error(404, f"The model '{model}' does not exist", "model_not_found")
        handler = self._posts.get(req.path) if req.method == "POST" else None
        if handler is None:
            return self.error(404, f"Unknown request URL: {req.method} {req.path}", "unknown_url")
        try:
            payload = json.loads(req.body)
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.", "invalid_json")
        if not isinstance(payload, dict):
            return self.error(400, "The request body must be a JSON object.", "invalid_json")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return self._missing("model")
        return handler(payload, model, req.chunks)

    @staticmethod
    def _model(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "fastgw"}

    def _missing(self, param: str) -> MockReply:
        return self.error(400, f"Missing required parameter: '{param}'.", "missing_required_parameter", param)

    @staticmethod
    def _stream(
        payload: dict[str, Any], fields: str, choices: list[dict[str, Any]], usage: dict[str, int]
    ) -> MockReply:
        """The streamed answer of chat and completions: one SSE chunk per choice, every chunk carrying
        the same leading `fields` (id, object, created, model...); the usage chunk only when asked for."""
        options = payload.get("stream_options")
        wanted = isinstance(options, dict) and bool(options.get("include_usage"))
        events = _sse("{" + fields + '"choices":', choices, usage if wanted else None)
        return MockReply(200, list(_SSE_HEADERS), events=events)

    def _chat(self, payload: dict[str, Any], model: str, chunks: int) -> MockReply:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._missing("messages")
        prompt = _estimate_tokens([_message_text(m) for m in messages])
        tool = _forced_tool(payload)
        if tool:
            args = json.dumps({"mock": True, "tool": tool}, separators=_SEP)
            size = math.ceil(len(args) / max(chunks, 1))
            pieces = [args[i : i + size] for i in range(0, len(args), size)]
            call_id = _new_id("call_")
            call = {"id": call_id, "type": "function", "function": {"name": tool, "arguments": args}}
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [call],
            }
            first = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            }
            deltas = [{"role": "assistant", "content": None, "tool_calls": [first]}]
            deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
            finish = "tool_calls"
        else:
            pieces = list(answer_words(chunks))
            message = {"role": "assistant", "content": "".join(pieces), "refusal": None}
            deltas = [{"role": "assistant", "content": "", "refusal": None}] + [
                {"content": w} for w in pieces
            ]
            finish = "stop"
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        }
        cid, created = _new_id("chatcmpl-"), int(time.time())
        if payload.get("stream") is not True:
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            body = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }
            return _json_reply(200, body)
        choices = [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas]
        choices.append({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish})
        head = f'"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},'
        return self._stream(payload, head + '"system_fingerprint":"fp_mock",', choices, usage)

    def _completions(self, payload: dict[str, Any], model: str, chunks: int) -> MockReply:
        prompt = payload.get("prompt")
        if prompt is None:
            return self._missing("prompt")
        texts = (
            [prompt]
            if isinstance(prompt, str)
            else [p if isinstance(p, str) else json.dumps(p) for p in prompt]
        )
        tokens = _estimate_tokens(texts)
        words = answer_words(chunks)
        usage = {
            "prompt_tokens": tokens,
            "completion_tokens": len(words),
            "total_tokens": tokens + len(words),
        }
        cid, created = _new_id("cmpl-"), int(time.time())
        if payload.get("stream") is not True:
            choice = {"text": "".join(words), "index": 0, "logprobs": None, "finish_reason": "stop"}
            body = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
            return _json_reply(200, body)
        choices = [{"text": w, "index": 0, "logprobs": None, "finish_reason": None} for w in words]
        choices.append({"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"})
        head = f'"id":"{cid}","object":"text_completion","created":{created},"model":{json.dumps(model)},'
        return self._stream(payload, head, choices, usage)

    def _embeddings(self, payload: dict[str, Any], model: str, chunks: int) -> MockReply:
        raw = payload.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
            raw = [raw]  # one string, or one token array
        if not isinstance(raw, list) or not raw:
            return self._missing("input")
        texts = [t if isinstance(t, str) else json.dumps(t) for t in raw]
        dims = payload.get("dimensions", 16)
        if not isinstance(dims, int) or not 1 <= dims <= 8192:
            return self.error(400, "'dimensions' must be an integer between 1 and 8192.", "invalid_value")
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector: Any = embed_vector(text, dims)
            if as_base64:
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = _estimate_tokens(texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json_reply(200, {"object": "list", "data": data, "model": model, "usage": usage})


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def _refused_credential(headers: dict[str, str], query: str) -> int | None:
    """A key containing ``mock-401`` or ``mock-429`` is refused with that status, whatever the
    dialect carries it in, so gateways can be tested on key rotation and cool-down."""
    for value in [headers.get(name, "") for name in _CREDENTIAL_HEADERS] + [query]:
        if "mock-401" in value:
            return 401
        if "mock-429" in value:
            return 429
    return None


def _lazy_flavor(module: str, cls: str) -> Callable[[tuple[str, ...]], Flavor]:
    """Other dialects live in fastgw.mock.flavors.* and load only when chosen."""

    def factory(models: tuple[str, ...]) -> Flavor:
        return getattr(importlib.import_module(module), cls)(models)

    return factory


# name -> factory(extra model ids); a new dialect is one small class with respond() and error().
FLAVORS: dict[str, Callable[[tuple[str, ...]], Flavor]] = {
    "openai": OpenAIFlavor,
    "openai-compatible": _lazy_flavor("fastgw.mock.flavors.openai_family", "OpenAICompatibleFlavor"),
    "ollama": _lazy_flavor("fastgw.mock.flavors.openai_family", "OllamaFlavor"),
    "qwen": _lazy_flavor("fastgw.mock.flavors.openai_family", "QwenFlavor"),
    "deepseek": _lazy_flavor("fastgw.mock.flavors.openai_family", "DeepSeekFlavor"),
    "azure": _lazy_flavor("fastgw.mock.flavors.azure", "AzureFlavor"),
    "anthropic": _lazy_flavor("fastgw.mock.flavors.anthropic", "AnthropicFlavor"),
    "gemini": _lazy_flavor("fastgw.mock.flavors.gemini", "GeminiFlavor"),
}


# --------------------------------------------------------------------------------------------- the mock

JSON_BODY = b'{"ok":true,"service":"fastgw-mock","items":[1,2,3],"note":"fixed body for proxy benchmarks"}'
JSON_REPLY = MockReply(200, [_CT_JSON], JSON_BODY)  # shared: the server sends it from pre-built bytes


def _header_number(headers: dict[str, str], name: str, default: float | None) -> float | None:
    value = headers.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise _BadInput(f"{name} must be a number, got {value!r}") from None
    if number < 0 or not math.isfinite(number):
        raise _BadInput(f"{name} must be a non-negative number, got {value!r}")
    return number


def _query_int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        number = int(values[-1])
    except ValueError:
        raise _BadInput(f"query parameter {name} must be an integer, got {values[-1]!r}") from None
    if number < 0:
        raise _BadInput(f"query parameter {name} must not be negative")
    return number


def _echo(method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes) -> MockReply:
    """Describe the request as received, so proxy tests can check what was forwarded."""
    return _json_reply(
        200,
        {
            "method": method,
            "path": path,
            "query": query,
            "headers": [[k, v] for k, v in headers],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode("utf-8", "replace") if len(body) < 65536 else None,
        },
    )


class MockLLM:
    """Answers one request as data. Constructor values are server-wide defaults; `x-mock-*` request
    headers override them per request."""

    def __init__(
        self,
        flavor: str = "openai",
        chunks: int = 8,
        chunk_delay_ms: float = 0.0,
        fail_status: int | None = None,
        stall_ms: float = 0.0,
        cut_after: int | None = None,
        models: tuple[str, ...] = (),
    ) -> None:
        factory = FLAVORS.get(flavor)
        if factory is None:
            raise ValueError(f"unknown mock-llm flavor {flavor!r}; known: {', '.join(sorted(FLAVORS))}")
        if chunks < 0 or chunk_delay_ms < 0 or stall_ms < 0 or (cut_after is not None and cut_after < 0):
            raise ValueError("mock-llm chunks, delays and cut_after must not be negative")
        self.flavor = flavor
        self.chunks = chunks
        self.chunk_delay = chunk_delay_ms / 1000.0
        self.fail_status = fail_status
        self.stall = stall_ms / 1000.0
        self.cut_after = cut_after
        self._api: Flavor = factory(tuple(models))
        # /json may skip all control handling only when no server-wide failure mode could change it.
        self._json_fast = not (fail_status or stall_ms or cut_after is not None)

    def error_reply(self, status: int, message: str, code: str | None = None) -> MockReply:
        """An error in this flavor's shape (the server uses it for unparsable requests)."""
        return self._api.error(status, message, code)

    def respond(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        raw_headers: list[tuple[str, str]] | None = None,
    ) -> MockReply:
        """Answer one request. `headers` has lower-case names; `raw_headers` (original case and order)
        only feeds /echo and defaults to `headers`."""
        if (
            path == "/json"
            and self._json_fast
            and method in ("GET", "POST")
            and not any(k.startswith("x-mock-") for k in headers)
        ):
            return JSON_REPLY
        try:
            return self._respond(method, path, query, headers, body, raw_headers)
        except _BadInput as exc:
            return self._api.error(400, str(exc), "invalid_mock_parameter")

    def _respond(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        raw_headers: list[tuple[str, str]] | None,
    ) -> MockReply:
        stall = _header_number(headers, "x-mock-stall-ms", None)
        stall = self.stall if stall is None else stall / 1000.0
        if headers.get("x-mock-close", "0") not in ("", "0"):
            return MockReply(0, [], first_byte_delay=stall, action="close")
        if headers.get("x-mock-garbage", "0") not in ("", "0"):
            return MockReply(0, [], _GARBAGE, first_byte_delay=stall, action="garbage")
        status = _header_number(headers, "x-mock-status", self.fail_status)
        refused = _refused_credential(headers, query)
        if refused:
            status = refused
        if status is not None and not 200 <= status <= 599:
            raise _BadInput(f"x-mock-status must be an HTTP status, got {status:g}")
        chunks = int(_header_number(headers, "x-mock-chunks", self.chunks))  # type: ignore[arg-type]
        if status is not None and status >= 400:
            reply = self._api.error(int(status), f"mock-llm injected failure: HTTP {int(status)}", None)
        else:
            reply = self._route(method, path, query, headers, body, raw_headers, chunks)
            if status is not None:
                reply.status = int(status)
        reply.first_byte_delay += stall
        if reply.events is not None:
            if not reply.chunk_delay:
                delay = _header_number(headers, "x-mock-chunk-delay-ms", None)
                reply.chunk_delay = self.chunk_delay if delay is None else delay / 1000.0
            cut = _header_number(headers, "x-mock-cut-after", self.cut_after)
            if cut is not None:
                reply.events = reply.events[: int(cut)]
                reply.action = "cut"
        return reply

    def _route(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        raw_headers: list[tuple[str, str]] | None,
        chunks: int,
    ) -> MockReply:
        """Plain-HTTP endpoints first (flavor-independent), then the flavor's API."""
        if path == "/json" and method in ("GET", "HEAD", "POST"):
            return MockReply(200, [_CT_JSON], JSON_BODY)
        if path == "/echo" or path.startswith("/echo/"):
            return _echo(
                method, path, query, raw_headers if raw_headers is not None else list(headers.items()), body
            )
        if method == "GET" and path in ("/bytes", "/sse", "/slow"):
            params = parse_qs(query)
            if path == "/bytes":
                n = _query_int(params, "n", 1024)
                if _query_int(params, "chunked", 0):
                    events = [_BLOCK] * (n // len(_BLOCK)) + (
                        [_BLOCK[: n % len(_BLOCK)]] if n % len(_BLOCK) else []
                    )
                    return MockReply(200, [("content-type", "application/octet-stream")], events=events)
                return MockReply(200, [("content-type", "application/octet-stream")], pattern_bytes(n))
            if path == "/sse":
                n = _query_int(params, "n", 5)
                events = [b'id: %d\ndata: {"seq":%d}\n\n' % (i, i) for i in range(1, n + 1)]
                return MockReply(
                    200,
                    list(_SSE_HEADERS),
                    events=events,
                    chunk_delay=_query_int(params, "delay_ms", 0) / 1000.0,
                )
            ms = _query_int(params, "ms", 100)
            return MockReply(200, [_CT_JSON], b'{"ok":true,"slept_ms":%d}' % ms, first_byte_delay=ms / 1000.0)
        return self._api.respond(MockRequest(method, path, query, headers, body, chunks))

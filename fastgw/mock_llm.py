"""Built-in mock LLM: an OpenAI-compatible upstream for tests, demos and the bench (`fastgw mock-llm`).

Two layers. `MockLLM.respond()` is pure (request in, `MockReply` out), so a gateway worker can serve the
`mock` provider in-process with no network. The server below frames those replies with a bare asyncio
`Protocol` + `httptools` on uvloop, so it is never the bottleneck when the bench puts fastgw next to nginx.

Per-request `x-mock-*` headers (status, stall, cut, close, garbage, chunks, chunk delay) override the
server-wide defaults, so one running mock can drive failover, timeout and cut-stream tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import hashlib
import importlib
import itertools
import json
import math
import os
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

import httptools

__all__ = [
    "FLAVORS",
    "JSON_BODY",
    "JSON_REPLY",
    "MockLLM",
    "MockReply",
    "MockRequest",
    "add_arguments",
    "answer_text",
    "answer_words",
    "embed_vector",
    "main_from_args",
    "pattern_bytes",
    "serve",
    "start_server",
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
    def _usage_wanted(payload: dict[str, Any]) -> bool:
        options = payload.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

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
        prefix = (
            f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
            f'"model":{json.dumps(model)},"system_fingerprint":"fp_mock","choices":'
        )
        return MockReply(
            200,
            list(_SSE_HEADERS),
            events=_sse(prefix, choices, usage if self._usage_wanted(payload) else None),
        )

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
        prefix = (
            f'{{"id":"{cid}","object":"text_completion","created":{created},'
            f'"model":{json.dumps(model)},"choices":'
        )
        return MockReply(
            200,
            list(_SSE_HEADERS),
            events=_sse(prefix, choices, usage if self._usage_wanted(payload) else None),
        )

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


# name -> factory(extra model ids); a new dialect is one small class with respond() and error().
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
    """Other dialects live in fastgw.mock_flavors.* and load only when chosen."""

    def factory(models: tuple[str, ...]) -> Flavor:
        return getattr(importlib.import_module(module), cls)(models)

    return factory


FLAVORS: dict[str, Callable[[tuple[str, ...]], Flavor]] = {
    "openai": OpenAIFlavor,
    "openai-compatible": _lazy_flavor("fastgw.mock_flavors.openai_family", "OpenAICompatibleFlavor"),
    "ollama": _lazy_flavor("fastgw.mock_flavors.openai_family", "OllamaFlavor"),
    "qwen": _lazy_flavor("fastgw.mock_flavors.openai_family", "QwenFlavor"),
    "deepseek": _lazy_flavor("fastgw.mock_flavors.openai_family", "DeepSeekFlavor"),
    "azure": _lazy_flavor("fastgw.mock_flavors.azure", "AzureFlavor"),
    "anthropic": _lazy_flavor("fastgw.mock_flavors.anthropic", "AnthropicFlavor"),
    "gemini": _lazy_flavor("fastgw.mock_flavors.gemini", "GeminiFlavor"),
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


# ------------------------------------------------------------------------------------------------ server

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


class _Connection(asyncio.Protocol):
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
        lambda: _Connection(mock), host, port, reuse_port=reuse_port, backlog=1024
    )


# ---------------------------------------------------------------------------------------------- process


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _run_worker(sock: socket.socket, mock: MockLLM, ready_line: str | None) -> None:
    """Serve on an already listening socket until SIGTERM/SIGINT."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        server = await loop.create_server(lambda: _Connection(mock), sock=sock, backlog=1024)
        if ready_line is not None:
            print(ready_line, flush=True)  # after the signal handlers: a SIGTERM from now on exits 0
        await stop
        server.close()

    _run(main())


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the parent dies, so a killed parent leaves no orphan workers."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _supervise(socks: list[socket.socket], mock: MockLLM, ready_line: str) -> None:
    """Fork one worker per socket, forward SIGTERM/SIGINT to them, wait; a crashed worker stops all."""
    children: list[int] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    parent = os.getpid()
    try:
        for sock in socks:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for sig in previous:
                        signal.signal(sig, signal.SIG_DFL)  # the forwarding handler is the parent's job
                    _die_with_parent(parent)
                    for other in socks:
                        if other is not sock:
                            other.close()
                    _run_worker(sock, mock, None)
                    code = 0
                finally:
                    os._exit(code)  # never return into the parent's stack (pytest, the CLI...)
            children.append(pid)
        for sock in socks:
            sock.close()
        if stopping:
            forward(signal.SIGTERM, None)  # a signal that came while forking missed the later children
        print(ready_line, flush=True)
        failed: tuple[int, int] | None = None
        while children:
            pid, status = os.waitpid(-1, 0)
            if pid not in children:
                continue
            children.remove(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping and code != 0:
                failed = (pid, code)
                forward(signal.SIGTERM, None)
        if failed is not None:
            raise RuntimeError(f"mock-llm worker {failed[0]} exited with status {failed[1]}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(host: str = "127.0.0.1", port: int = 9000, workers: int = 1, **mock_options: Any) -> None:
    """Run the mock server until SIGTERM/SIGINT. `workers > 1` forks that many processes, each with its
    own SO_REUSEPORT listener (bound here first, so port 0 resolves to one port for all of them)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    mock = MockLLM(**mock_options)
    first = _listen_socket(host, port, reuse_port=workers > 1)
    address = first.getsockname()
    socks = [first] + [_listen_socket(host, address[1], reuse_port=True) for _ in range(workers - 1)]
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    ready_line = f"mock-llm listening on http://{shown}:{address[1]} (workers {workers})"
    if workers == 1:
        _run_worker(first, mock, ready_line)
    else:
        _supervise(socks, mock, ready_line)


# -------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `fastgw mock-llm` options on a (sub-command) parser."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9000, help="port to bind, 0 for any free port (default 9000)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, each with a SO_REUSEPORT listener")
    parser.add_argument("--flavor", default="openai", choices=sorted(FLAVORS), help="API dialect")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks (words) per answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream events")
    parser.add_argument("--fail-status", type=int, default=None, help="answer every request with this status")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="delay before every response head")
    parser.add_argument("--cut-after", type=int, default=None, help="cut every stream after N events")
    parser.add_argument("--models", default="", help="comma-separated extra model ids for /v1/models")


def main_from_args(args: argparse.Namespace) -> int:
    """What `fastgw mock-llm` runs: serve until SIGTERM/SIGINT; 0, or 2 on bad options, 1 if it cannot bind."""
    try:
        serve(
            host=args.host,
            port=args.port,
            workers=args.workers,
            flavor=args.flavor,
            chunks=args.chunks,
            chunk_delay_ms=args.chunk_delay_ms,
            fail_status=args.fail_status,
            stall_ms=args.stall_ms,
            cut_after=args.cut_after,
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        )
    except ValueError as exc:
        print(f"fastgw mock-llm: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"fastgw mock-llm: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # `python -m fastgw.mock_llm ...` until the CLI wires `fastgw mock-llm`
    _parser = argparse.ArgumentParser(prog="fastgw mock-llm", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main_from_args(_parser.parse_args()))

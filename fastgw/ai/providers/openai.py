"""OpenAI and the providers that speak its wire format (compatible servers, Ollama, Qwen, DeepSeek).

These are passthrough adapters: the body leaves as the client sent it (only ``model`` is the
target's), so fields we have never heard of still reach the provider. Responses are parsed only
to check their shape and to read usage; nothing is renamed or dropped.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from fastgw import fastjson
from fastgw.ai.providers.base import (
    Adapter,
    ProviderError,
    StreamConverter,
    UnsupportedOperation,
    UpstreamCall,
)

OP_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
JSON_CONTENT = (b"content-type", b"application/json")


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON: what every adapter sends upstream."""
    return fastjson.dumps(obj)


def decode_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """Parse a provider payload that must be a JSON object; ProviderError otherwise."""
    try:
        obj = fastjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProviderError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProviderError(f"{what} is not a JSON object")
    return obj


def static_headers(options: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The ``headers`` option (org ids, gateway tokens...): sent on every call, as configured."""
    headers = options.get("headers") or {}
    if not isinstance(headers, dict):
        raise ProviderError("option 'headers' must be a mapping of header name to value")
    return [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]


def error_text(status: int, body: bytes) -> tuple[str, str | None]:
    """Best-effort (message, code) from an OpenAI-style error body; never raises.

    Besides ``{"error": {...}}`` it reads the variants compatible servers use: ``{"error": "text"}``
    (Ollama) and a top-level ``{"message", "type", "code"}`` (vLLM).
    """
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, str) and err:
            return err, None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            code = err.get("code")
            if code is None or code == "":
                code = err.get("type") or err.get("status")
            return err["message"], None if code is None else str(code)
    text = body.decode("utf-8", "replace").strip()[:500]
    return text or f"HTTP {status} with an empty body", None


def check_response(op: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Validate the OpenAI response shape of ``op``, so garbage fails here and not in the client."""
    if op == "embeddings":
        data = obj.get("data")
        if not isinstance(data, list) or not all(
            isinstance(d, dict) and isinstance(d.get("embedding"), (list, str)) for d in data
        ):
            raise ProviderError("embeddings response has no valid 'data' list")
        return obj
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ProviderError(f"{op} response has no 'choices'")
    field, kind = ("message", dict) if op == "chat" else ("text", str)
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get(field), kind):
            raise ProviderError(f"{op} response choice has no valid {field!r}")
    return obj


def without_thinking_blocks(request: dict[str, Any]) -> dict[str, Any]:
    """``thinking_blocks`` carries Anthropic's signed thinking through this gateway (an Anthropic
    client's history, an Anthropic answer sent back): OpenAI-format providers take no such field,
    and DeepSeek refuses reasoning in input, so it is left out of what they are sent."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not any(isinstance(m, dict) and "thinking_blocks" in m for m in messages):
        return request
    kept = [{k: v for k, v in m.items() if k != "thinking_blocks"} if isinstance(m, dict) else m for m in messages]
    return {**request, "messages": kept}


class OpenAIStream(StreamConverter):
    """OpenAI SSE chunks pass through as parsed dicts; ``[DONE]`` ends, ``usage`` is recorded."""

    def __init__(self) -> None:
        self.done = False
        self.usage = None

    def event(self, name: str | None, data: str) -> list[dict[str, Any]]:
        data = data.strip()
        if not data:
            return []
        if data == "[DONE]":
            self.done = True
            return []
        chunk = decode_object(data, "stream chunk")
        if chunk.get("error"):  # a mid-stream failure arrives as a data event, not as an HTTP status
            message, code = error_text(200, data.encode())
            raise ProviderError(f"stream error{f' ({code})' if code else ''}: {message}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        elif not isinstance(chunk.get("choices"), list):
            raise ProviderError("stream chunk has no 'choices'")
        return self.keep(chunk)

    def keep(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to forward for one parsed provider chunk (a hook for dialect quirks)."""
        return [chunk]


class OpenAIAdapter(Adapter):
    """api.openai.com and the base of every passthrough adapter."""

    type = "openai"
    passthrough = True
    ops: tuple[str, ...] = ("chat", "completions", "embeddings")
    send_key = True  # False for servers that take no credentials (Ollama)
    stream_type: type[OpenAIStream] = OpenAIStream

    def default_base_url(self) -> str:
        return "https://api.openai.com/v1"

    def build(self, op: str, request: dict[str, Any], model: str, api_key: str | None) -> UpstreamCall:
        if op not in self.ops:
            raise UnsupportedOperation(f"provider type {self.type!r} does not serve {op}")
        body = self.body(op, without_thinking_blocks({**request, "model": model}))
        return UpstreamCall(b"POST", self.path(op, model).encode(), self.headers(api_key), encode_json(body))

    def build_raw(self, op: str, body: bytes, model: str, api_key: str | None) -> UpstreamCall | None:
        """The call with the client's body bytes as they are (the caller checked they name
        ``model``); None when this provider type rewrites bodies and needs the dict."""
        if op not in self.ops or type(self).body is not OpenAIAdapter.body:
            return None
        return UpstreamCall(b"POST", self.path(op, model).encode(), self.headers(api_key), body)

    def path(self, op: str, model: str) -> str:
        return self.base_path + OP_PATHS[op]

    def probe(self, api_key: str | None) -> UpstreamCall:
        return UpstreamCall(b"GET", (self.base_path + "/models").encode(), self.headers(api_key), b"")

    def body(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """The outgoing body: the client's, untouched unless a provider type needs an extra field."""
        return request

    @cached_property
    def option_headers(self) -> list[tuple[bytes, bytes]]:
        """The ``headers`` option, encoded once per generation rather than per call."""
        return static_headers(self.options)

    def headers(self, api_key: str | None) -> list[tuple[bytes, bytes]]:
        headers = [JSON_CONTENT]
        if api_key and self.send_key:
            headers.append((b"authorization", b"Bearer " + api_key.encode("latin-1")))
        return headers + self.option_headers

    def convert_response(self, op: str, status: int, body: bytes, model: str) -> dict[str, Any]:
        return check_response(op, decode_object(body, f"{self.type} {op} response"))

    def stream(self, op: str, model: str) -> StreamConverter:
        if op == "embeddings" or op not in self.ops:
            raise UnsupportedOperation(f"provider type {self.type!r} does not stream {op}")
        return self.stream_type()

    def error(self, status: int, body: bytes) -> tuple[str, str | None]:
        return error_text(status, body)


class OpenAICompatibleAdapter(OpenAIAdapter):
    """Any server speaking OpenAI's API (vLLM, Groq, Mistral, Together...): there is no default URL."""

    type = "openai-compatible"

    def default_base_url(self) -> str:
        raise ProviderError("provider type 'openai-compatible' needs a base_url")


class OllamaAdapter(OpenAIAdapter):
    """Ollama's OpenAI endpoints (/v1) on the local daemon, which takes no API key."""

    type = "ollama"
    send_key = False

    def default_base_url(self) -> str:
        return "http://127.0.0.1:11434/v1"


class QwenAdapter(OpenAIAdapter):
    """Alibaba DashScope in compatible mode; option ``enable_search`` turns on its web search."""

    type = "qwen"

    def default_base_url(self) -> str:
        return "https://dashscope.aliyuncs.com/compatible-mode/v1"

    def body(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """The option is the provider's default; a client that sets enable_search itself wins."""
        if op == "chat" and "enable_search" in self.options and "enable_search" not in request:
            return {**request, "enable_search": bool(self.options["enable_search"])}
        return request


class DeepSeekAdapter(OpenAIAdapter):
    """DeepSeek: OpenAI-shaped, with ``reasoning_content`` on reasoner models (kept as sent) and no
    embeddings endpoint (so failover skips it rather than sending a call bound to 404)."""

    type = "deepseek"
    ops = ("chat", "completions")

    def default_base_url(self) -> str:
        return "https://api.deepseek.com/v1"

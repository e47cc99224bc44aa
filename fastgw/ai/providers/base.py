"""The provider adapter interface: each adapter speaks one provider's wire format.

An adapter has one job: turn an OpenAI-shaped request into the provider's HTTP call, and
the provider's answer (plain body, stream events, errors) back into OpenAI shapes. It does
no I/O, no retries and no policy: the engine (``fastgw.ai.engine``) owns connections,
failover, timeouts and keys, so every adapter is a set of pure functions that tests can
drive with recorded payloads.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

OPS = ("chat", "completions", "embeddings")
"""chat = /v1/chat/completions, completions = /v1/completions, embeddings = /v1/embeddings."""


class ProviderError(Exception):
    """The provider answered something that cannot be converted (garbage, wrong shape)."""


class ConversionError(ProviderError):
    """The client's request cannot be expressed in this provider's format (``n: 2`` to Anthropic, an
    audio part, arguments that are not JSON...). The engine answers 400 in the client's dialect, naming
    ``param``, unless another target of the model can take the request: it is the request's fault only
    for this target, so it never counts against the provider."""

    code = "unsupported_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param


class UnsupportedOperation(ConversionError):
    """This provider type cannot serve the operation (e.g. legacy completions on Anthropic)."""

    code = "unsupported_operation"


@dataclass(slots=True)
class UpstreamCall:
    """One HTTP request to a provider. The engine adds Host, Content-Length and framing."""

    method: bytes
    path: bytes  # absolute path with query, e.g. b"/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    headers: list[tuple[bytes, bytes]]  # content-type, auth and provider headers
    body: bytes


class StreamConverter:
    """Stateful: the provider's stream events in, OpenAI ``chat.completion.chunk`` dicts out."""

    done: bool = False  # the provider signalled a clean end ([DONE], message_stop, last candidate...)
    usage: dict[str, Any] | None = None  # OpenAI-shaped usage once the stream reported it

    def event(self, name: str | None, data: str) -> list[dict[str, Any]]:
        """One SSE event (``event:`` name or None, joined ``data:``) -> zero or more chunks."""
        raise NotImplementedError

    def end(self) -> list[dict[str, Any]]:
        """The upstream stream ended cleanly: chunks still owed (e.g. a held-back finish)."""
        return []


class Adapter:
    """Base class; one instance per configured provider, built per config generation."""

    type: ClassVar[str]
    passthrough: ClassVar[bool] = False
    """True when the provider speaks OpenAI's wire format: the engine may relay its bytes."""

    def __init__(self, provider: dict[str, Any]) -> None:
        self.name: str = provider["name"]
        self.options: dict[str, Any] = provider.get("options", {})
        base = urlsplit(provider.get("base_url") or self.default_base_url())
        self.scheme = base.scheme
        self.host = base.hostname or ""
        self.port = base.port or (443 if base.scheme == "https" else 80)
        self.base_path = base.path.rstrip("/")

    def default_base_url(self) -> str:
        raise ProviderError(f"provider type {self.type!r} needs a base_url")

    def build(self, op: str, request: dict[str, Any], model: str, api_key: str | None) -> UpstreamCall:
        """The provider call for an OpenAI-shaped request (``request["stream"]`` selects streaming)."""
        raise NotImplementedError

    def convert_response(self, op: str, status: int, body: bytes, model: str) -> dict[str, Any]:
        """A 2xx body -> the OpenAI-shaped response; raises ProviderError on garbage."""
        raise NotImplementedError

    def stream(self, op: str, model: str) -> StreamConverter:
        raise NotImplementedError

    def error(self, status: int, body: bytes) -> tuple[str, str | None]:
        """(message, code) from the provider's error body, best effort, never raises."""
        raise NotImplementedError

    def probe(self, api_key: str | None) -> UpstreamCall:
        """A cheap call for active health checks (the provider's model list): any answer below
        500 means the provider is up, whatever it thinks of the key."""
        raise NotImplementedError


def function_tools(tools: Any, provider: str) -> list[tuple[int, dict[str, Any]]]:
    """The ``function`` of each OpenAI tool, with its index: the only kind of tool providers
    that are not OpenAI take; anything else is a :class:`ConversionError` at ``tools[i]``."""
    if not isinstance(tools, list):
        raise ConversionError("must be a list", "tools")
    found = []
    for i, tool in enumerate(tools):
        function = (
            tool.get("function")
            if isinstance(tool, dict) and tool.get("type", "function") == "function"
            else None
        )
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ConversionError(f"only function tools with a name can be sent to {provider} providers", f"tools[{i}]")
        found.append((i, function))
    return found


def encode_embeddings(response: dict[str, Any], encoding_format: Any) -> dict[str, Any]:
    """A converted embeddings answer in the encoding the client asked for: ``base64`` is OpenAI's
    base64 of the little-endian float32 vector (what the OpenAI SDKs decode); floats otherwise."""
    if encoding_format != "base64":
        return response
    data = [
        {**item, "embedding": base64.b64encode(_float32(item["embedding"])).decode()}
        if isinstance(item.get("embedding"), list) else item
        for item in response.get("data") or ()
    ]
    return {**response, "data": data}


def _float32(values: list[float]) -> bytes:
    """Little-endian float32; a value beyond float32's range becomes +-inf, as numpy casts it."""
    try:
        return struct.pack(f"<{len(values)}f", *values)
    except OverflowError:
        return struct.pack(f"<{len(values)}f", *(v if abs(v) < 3.4e38 else math.copysign(math.inf, v) for v in values))

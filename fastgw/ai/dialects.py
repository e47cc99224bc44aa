"""How the front door talks back: OpenAI's shapes, or Anthropic's for ``/v1/messages``.

Internally every answer is OpenAI-shaped (adapters convert providers into it); a dialect
turns that into the bytes its clients expect: JSON bodies, SSE events, and errors, both
as a status + body before anything was sent and as a final stream event after.
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring
from typing import Any

from fastgw import fastjson
from fastgw.ai.anthropic_front import (
    OpenAIToAnthropicStream,
    anthropic_error_body,
    openai_to_messages_response,
)
from fastgw.proxy.replies import error_body


def sse_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + fastjson.dumps(payload) + b"\n\n"


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + fastjson.dumps(payload) + b"\n\n"


MODEL_PREFIX = b"/v1/models/"
"""``GET /v1/models/{id}``: one model (the SDKs' ``models.retrieve``)."""

_SENTINEL = "\x00fastgw-content\x00"
_SENTINEL_JSON = encode_basestring(_SENTINEL).encode()


_SCALARS = frozenset((str, int, float, bool, type(None)))


class OpenAIStream:
    """OpenAI chunks out as ``data:`` events, ``[DONE]`` at the end.

    Most chunks of a stream differ only in their text delta. The first such chunk is
    encoded once with a sentinel in place of the text, and later ones splice their
    JSON-escaped text between the two halves: byte for byte what ``json`` would write,
    at a fraction of the cost (encoding was a quarter of a converted stream's CPU).
    """

    __slots__ = ("_key", "_prefix", "_suffix")

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._prefix = b""
        self._suffix = b""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        choices = chunk.get("choices")
        if choices and len(choices) == 1:
            choice = choices[0]
            delta = choice.get("delta")
            if type(delta) is dict and len(delta) == 1 and type(delta.get("content")) is str:
                # Every other field, with its type (1, 1.0 and True are equal keys but encode apart);
                # a nested value (usage, a logprobs object) is not cached: it would go stale.
                key = (
                    tuple((k, type(v), v) for k, v in chunk.items() if k != "choices"),
                    tuple((k, type(v), v) for k, v in choice.items() if k != "delta"),
                )
                if not all(type(v) in _SCALARS for part in key for _, _, v in part):
                    return sse_data(chunk)
                if key != self._key:
                    template = sse_data({**chunk, "choices": [{**choice, "delta": {"content": _SENTINEL}}]})
                    if template.count(_SENTINEL_JSON) != 1:
                        return sse_data(chunk)
                    self._prefix, _, self._suffix = template.partition(_SENTINEL_JSON)
                    self._key = key
                return self._prefix + encode_basestring(delta["content"]).encode() + self._suffix
        return sse_data(chunk)

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, message: str, code: str) -> bytes:
        # The OpenAI SDKs raise APIError on a data event carrying "error".
        return sse_data({"error": {"message": message, "type": "upstream_error", "code": code}})


class AnthropicStream:
    """OpenAI chunks re-cut into Anthropic's message_start ... message_stop events."""

    __slots__ = ("converter",)

    def __init__(self, model: str) -> None:
        self.converter = OpenAIToAnthropicStream(model)

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"".join(sse_event(name, data) for name, data in self.converter.chunk(chunk))

    def end(self) -> bytes:
        return b"".join(sse_event(name, data) for name, data in self.converter.end())

    def error(self, message: str, code: str) -> bytes:
        return sse_event("error", anthropic_error_body(502, message))


class OpenAIDialect:
    name = "openai"

    def error(self, status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
        return error_body(status, message, code, param=param)

    def response(self, op: str, response: dict[str, Any], model: str) -> bytes:
        return fastjson.dumps(response)

    def stream(self, model: str) -> OpenAIStream:
        return OpenAIStream()  # one per stream: it caches that stream's chunk template

    def model(self, name: str, created: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "fastgw"}

    def model_list(self, names: list[str], created: int) -> bytes:
        return fastjson.dumps({"object": "list", "data": [self.model(n, created) for n in names]})


class AnthropicDialect:
    name = "anthropic"

    def error(self, status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
        return fastjson.dumps(anthropic_error_body(status, message))  # the message names the field

    def response(self, op: str, response: dict[str, Any], model: str) -> bytes:
        return fastjson.dumps(openai_to_messages_response(response, model))

    def stream(self, model: str) -> AnthropicStream:
        return AnthropicStream(model)

    def model(self, name: str, created: int) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        return {"type": "model", "id": name, "display_name": name, "created_at": stamp}

    def model_list(self, names: list[str], created: int) -> bytes:
        """Anthropic's page shape; the gateway's list is one page."""
        return fastjson.dumps({"data": [self.model(n, created) for n in names], "has_more": False,
                               "first_id": names[0] if names else None, "last_id": names[-1] if names else None})


OPENAI = OpenAIDialect()
ANTHROPIC = AnthropicDialect()

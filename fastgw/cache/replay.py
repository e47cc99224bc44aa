"""Serving a cached answer: as a ``chat.completion``, or replayed as an OpenAI SSE stream.

Answers are stored as one ``chat.completion`` whether they were streamed or not, so a
streamed question can hit an answer first given without streaming and the other way round.
A hit gets a fresh id and ``created`` (ids identify a response, and this is a new one) and
the model name the client asked for.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from fastgw.cache.store import CachedAnswer

CHUNK_CHARS = 20
"""Characters of content per replayed event: enough events that a client's streaming code
path runs as it would live, few enough that replay stays cheap."""


def served(answer: CachedAnswer, model: str) -> dict:
    """The cached ``chat.completion`` as a new response for ``model``."""
    return {**answer.response, "id": _new_id(), "created": int(time.time()), "model": model}


def replay_stream(answer: CachedAnswer, model: str, include_usage: bool = False) -> list[bytes]:
    """The answer as OpenAI SSE events: role, content in pieces, finish reason, optionally
    usage (``stream_options.include_usage``), then ``[DONE]``; each ``b"data: ...\\n\\n"``."""
    events = [_event(chunk) for chunk in replay_chunks(answer, model, include_usage)]
    events.append(b"data: [DONE]\n\n")
    return events


def replay_chunks(answer: CachedAnswer, model: str, include_usage: bool = False) -> list[dict]:
    """The answer as the ``chat.completion.chunk`` objects a live stream would carry; other
    dialects render these (an Anthropic client gets message_start ... message_stop)."""
    choice = answer.response["choices"][0]
    content = choice["message"].get("content") or ""
    base: dict[str, Any] = {
        "id": _new_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": answer.response.get("system_fingerprint"),
    }
    if include_usage:
        base["usage"] = None  # OpenAI sends usage: null on every chunk but the last

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": content[i : i + CHUNK_CHARS]}) for i in range(0, len(content), CHUNK_CHARS)]
    chunks.append(chunk({}, choice.get("finish_reason") or "stop"))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": answer.usage})
    return chunks


def assemble(chunks: list[dict]) -> dict | None:
    """A streamed answer's ``chat.completion.chunk`` objects as one ``chat.completion``, to
    store it; None if it is not a single complete text answer (tool calls, several choices,
    no finish reason)."""
    content: list[str] = []
    finish_reason = None
    usage: dict = {}
    first: dict = {}
    for event in chunks:
        first = first or event
        usage = event.get("usage") or usage
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("index", 0) != 0 or delta.get("tool_calls") or delta.get("function_call"):
                return None
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            finish_reason = choice.get("finish_reason") or finish_reason
    if finish_reason is None:
        return None
    message = {"role": "assistant", "content": "".join(content)}
    completion = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage:  # only when the stream reported it (stream_options.include_usage)
        completion["usage"] = usage
    return completion


def _event(value: dict) -> bytes:
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


def _new_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)

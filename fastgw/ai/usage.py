"""A request's token usage, from wherever its provider reports it — or an estimate, marked so.

* plain answers carry ``usage`` (adapters convert every provider's shape into OpenAI's);
* OpenAI-format streams: the gateway always asks for ``stream_options.include_usage`` and
  removes that final usage chunk again when the client did not ask for it;
* Anthropic streams report input tokens in ``message_start`` and output tokens in
  ``message_delta``; Gemini streams in ``usageMetadata`` (both via their converters);
* when a provider reports nothing, prompt and completion tokens are counted (exactly for
  OpenAI encodings, estimated otherwise) and the usage is marked ``estimated``.
"""

from __future__ import annotations

import json
from typing import Any

from fastgw import fastjson
from fastgw._speedups import SSEParser, relay_bytes, usage_events
from fastgw.ai.providers.anthropic import openai_usage

MAX_KEPT_FOR_ESTIMATE = 4 * 1024 * 1024
"""Relayed stream bytes kept in case the provider never reports usage (then counted)."""


def wants_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_requested(request: dict[str, Any]) -> dict[str, Any]:
    """The request as sent to an OpenAI-format provider: always asking for the usage chunk."""
    options = request.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    return {**request, "stream_options": options}


def _is_usage_chunk(chunk: dict[str, Any]) -> bool:
    return not chunk.get("choices") and isinstance(chunk.get("usage"), dict)


class UsageMeter:
    """Collects one request's usage; the exchange feeds it and asks for the result at the end."""

    __slots__ = ("client_wants", "usage", "kept", "kept_size", "last_chunk", "native", "usage_relayed")

    def __init__(self, client_wants: bool) -> None:
        self.client_wants = client_wants
        self.usage: dict[str, Any] | None = None
        self.kept: list[bytes] = []  # relayed events, counted only if no usage ever arrives
        self.usage_relayed = False  # a converted usage chunk went on to the client's dialect
        self.kept_size = 0
        self.last_chunk: dict[str, Any] | None = None
        self.native: dict[str, Any] = {}  # an Anthropic stream's usage counts, relayed natively

    # -- plain answers ----------------------------------------------------------------------

    def answer(self, response: dict[str, Any]) -> None:
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage = usage

    # -- streams relayed as they are --------------------------------------------------------

    def relay(self, events: list) -> None:
        """OpenAI-format events relayed raw, edited in place: record the usage the provider
        reports, and drop a usage-only chunk the client did not ask for.

        The Cython scanner proves, in one pass over the read, which events carry no usage
        object (OpenAI writes ``"usage":null`` in each); only the others are decoded."""
        drop = -1
        for index in usage_events(events):
            try:
                chunk = fastjson.loads(events[index].data)
            except ValueError:
                continue
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
                if _is_usage_chunk(chunk) and not self.client_wants:
                    drop = index
        if self.kept_size < MAX_KEPT_FOR_ESTIMATE:
            raw = relay_bytes(events)
            self.kept.append(raw)
            self.kept_size += len(raw)
        if drop >= 0:
            del events[drop]

    def relay_native(self, events: list) -> None:
        """Anthropic events relayed to an Anthropic client: usage from message_start/message_delta."""
        for event in events:
            if event.event in ("message_start", "message_delta"):
                try:
                    payload = fastjson.loads(event.data)
                except ValueError:
                    continue
                if not isinstance(payload, dict):
                    continue
                usage = (payload.get("message") or {}).get("usage") if event.event == "message_start" else payload.get("usage")
                if isinstance(usage, dict):
                    # message_delta repeats or updates message_start's counts: the latest non-null wins
                    native = self.native
                    native.update((k, token_count(v)) for k, v in usage.items() if v is not None)
                    self.usage = openai_usage(native)

    # -- streams converted chunk by chunk ---------------------------------------------------

    def chunk(self, chunk: dict[str, Any], dialect_needs_usage: bool) -> bool:
        """Whether a converted chunk goes to the client; usage chunks are recorded, and kept only
        when the client asked (or the dialect needs them, as Anthropic's message_delta does)."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if _is_usage_chunk(chunk):
            self.usage_relayed = self.usage_relayed or dialect_needs_usage
            return dialect_needs_usage
        self.last_chunk = chunk
        return True

    def closing_chunk(self, converter_usage: dict[str, Any] | None, dialect_needs_usage: bool) -> dict[str, Any] | None:
        """The final usage chunk the client is owed: when it asked for one (the converter's own
        was dropped by chunk()), or when its dialect needs the counts (Anthropic's closing
        message_delta) and the converter kept them to itself (Anthropic's message_stop)."""
        if converter_usage is not None:
            self.usage = converter_usage
        owed = self.client_wants or (dialect_needs_usage and not self.usage_relayed)
        if not owed or self.usage is None or self.last_chunk is None:
            return None
        last = self.last_chunk
        return {
            "id": last.get("id"),
            "object": "chat.completion.chunk",
            "created": last.get("created"),
            "model": last.get("model"),
            "choices": [],
            "usage": self.usage,
        }

    # -- the result -------------------------------------------------------------------------

    def result(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        """prompt/completion/total tokens, with ``estimated`` True when counted by the gateway."""
        usage = self.usage
        if usage is not None:
            prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            completion = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            result = {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion, "estimated": False}
            result.update(cache_counts(usage))
            return result
        from fastgw.tokencount import count_chat, count_text

        messages = request.get("messages")
        if isinstance(messages, list):
            prompt, _ = count_chat(model, messages, request.get("tools"))
        else:
            prompt, _ = count_text(model, json.dumps(request.get("prompt", request.get("input", ""))))
        completion, _ = count_text(model, _streamed_text(self.kept))
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "estimated": True}


def cache_counts(usage: dict[str, Any]) -> dict[str, int]:
    """Prompt-cache parts of an OpenAI-shaped usage, both already inside prompt_tokens: reads
    (``prompt_tokens_details.cached_tokens``, OpenAI's and Gemini's; Anthropic's
    ``cache_read_input_tokens``) and writes (Anthropic's ``cache_creation_input_tokens``)."""
    details = usage.get("prompt_tokens_details")
    read = token_count(details.get("cached_tokens") if isinstance(details, dict) else None)
    read = read or token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    counts = {}
    if read:
        counts["cached_tokens"] = read
    if written:
        counts["cache_write_tokens"] = written
    return counts


def token_count(value: Any) -> int:
    """A positive token count as JSON allows it (``12``, ``1.2e1``), else 0."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _streamed_text(raw_events: list[bytes]) -> str:
    """The content deltas of relayed OpenAI events (only used when no usage was reported),
    parsed as SSE: an event's data may span several ``data:`` lines."""
    parts = []
    parser = SSEParser()
    for event in parser.feed(b"".join(raw_events) + b"\n\n"):
        if event.is_done:
            continue
        try:
            chunk = json.loads(event.data)
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None:
                text = choice.get("text")  # completions-style chunks
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)

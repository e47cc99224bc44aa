"""What goes over the wire in the bench: the requests clients send and the pre-built upstream answers.

Everything here is pure (no processes, no sockets), so tests import it and check the bodies parse.

Requests copy what the OpenAI Python SDK sends for ``client.chat.completions.create(...)``
(captured from openai 3.x: the same header set and the same compact JSON body, key order
included). Answers copy the providers' wire formats:

- OpenAI chat completion (non-stream): pretty-printed JSON, as api.openai.com answers;
- OpenAI chat completion stream with ``stream_options.include_usage``: a role chunk, one chunk per
  content token, a finish chunk, every one with ``"usage":null``; then a usage-only chunk with
  ``"choices":[]``; then ``data: [DONE]`` (OpenAI's ``obfuscation`` padding field is left out);
- Anthropic Messages stream: ``message_start``, ``content_block_start``, one ``ping``,
  ``content_block_delta`` per token, ``content_block_stop``, ``message_delta`` with the usage,
  ``message_stop`` (compact JSON, ``event:`` line before each ``data:`` line, as the API sends);
- Anthropic Messages answer (non-stream): compact JSON.

The upstream cannot read request bodies, so the answer is chosen by path (see UPSTREAM_PATHS).
"""

from __future__ import annotations

import json
import random
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

CHUNKS = 50
"""Content chunks per stream (one token each), and tokens in every answer."""

_SEP = (",", ":")
_WORDS = ("The quick brown fox jumps over the lazy dog while a patient gateway relays every "
          "token of the answer back to the client in order and on time so that nobody waits "
          "for the whole reply before reading its first words").split()


def answer_tokens(chunks: int = CHUNKS) -> list[str]:
    """The answer's tokens as a model streams them: the first bare, the others with a leading space."""
    words = [_WORDS[i % len(_WORDS)] for i in range(chunks)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def answer_text(chunks: int = CHUNKS) -> str:
    return "".join(answer_tokens(chunks))


# ----------------------------------------------------------------------------------------------- requests

PROMPT = [{"role": "user", "content": "Hello!"}]
CLIENT_KEY = "sk-bench-consumer"
"""The API key every client sends (the SDK always sends one); a consumer's key in ai-full."""

SDK_HEADERS = {
    "Accept-Encoding": "gzip, deflate, br",
    "Connection": "keep-alive",
    "Authorization": f"Bearer {CLIENT_KEY}",
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": "OpenAI/Python 3.60.0",
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "3.60.0",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Arch": "x64",
    "X-Stainless-Runtime": "CPython",
    "X-Stainless-Runtime-Version": "3.11.7",
    "X-Stainless-Async": "false",
    "X-Stainless-Retry-Count": "0",
    "X-Stainless-Read-Timeout": "600",
}
"""The OpenAI SDK's request headers (Host and Content-Length are added by each client)."""


def chat_request(model: str, stream: bool) -> bytes:
    """The SDK's body for chat.completions.create(model, messages[, stream=True,
    stream_options={"include_usage": True}]), byte for byte."""
    if not stream:
        body: dict[str, Any] = {"model": model, "messages": PROMPT}
    else:
        body = {"model": model, "stream": True, "messages": PROMPT, "stream_options": {"include_usage": True}}
    return json.dumps(body, separators=_SEP).encode()


@dataclass(frozen=True)
class Request:
    """One request as every client of the bench sends it: wrk (through scripts/chat.lua, which
    reads `env()`), the Python checks, and the ttfb client."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(SDK_HEADERS))

    def env(self) -> dict[str, str]:
        """What scripts/chat.lua reads: BENCH_PATH, BENCH_BODY and BENCH_HEADERS ("Name: value" lines)."""
        return {"BENCH_PATH": self.path, "BENCH_BODY": self.body.decode(),
                "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in self.headers.items())}


def chat(path: str, model: str, stream: bool) -> Request:
    """An SDK chat.completions.create request to `path` (the plain routes take the upstream's
    paths, the AI front door /v1/chat/completions)."""
    return Request(path, chat_request(model, stream))


PLAIN_REQUESTS = {
    "json": chat("/json/v1/chat/completions", "gpt-4o-mini", stream=False),
    "sse": chat("/sse/v1/chat/completions", "gpt-4o-mini", stream=True),
}


# ----------------------------------------------------------------------------------------------- answers

OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
OPENAI_ID = "chatcmpl-BenchBenchBenchBenchBenchBench0"
CREATED = 1735689600
FINGERPRINT = "fp_0aa8d3e20b"
PROMPT_TOKENS = 9


def openai_usage(chunks: int = CHUNKS) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": PROMPT_TOKENS + chunks,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def openai_json(chunks: int = CHUNKS) -> bytes:
    """A chat.completion as api.openai.com returns it (2-space indented JSON)."""
    answer = {
        "id": OPENAI_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": OPENAI_MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer_text(chunks), "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": openai_usage(chunks),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    return json.dumps(answer, indent=2).encode() + b"\n"


def _openai_chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
    chunk = {"id": OPENAI_ID, "object": "chat.completion.chunk", "created": CREATED, "model": OPENAI_MODEL,
             "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk, separators=_SEP).encode() + b"\n\n"


def openai_sse(chunks: int = CHUNKS) -> bytes:
    """A chat.completion.chunk stream with include_usage: role, `chunks` tokens, finish, usage, [DONE]."""

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    out = [_openai_chunk(choice({"role": "assistant", "content": "", "refusal": None}), None)]
    out += [_openai_chunk(choice({"content": token}), None) for token in answer_tokens(chunks)]
    out.append(_openai_chunk(choice({}, "stop"), None))
    out.append(_openai_chunk([], openai_usage(chunks)))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"
ANTHROPIC_ID = "msg_01BenchBenchBenchBenchBench"
ANTHROPIC_INPUT_TOKENS = 10


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=_SEP)}\n\n".encode()


def anthropic_sse(chunks: int = CHUNKS) -> bytes:
    """A Messages API stream: message_start .. message_stop, one text block of `chunks` deltas."""
    start_usage = {"input_tokens": ANTHROPIC_INPUT_TOKENS, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "output_tokens": 1}
    message = {"id": ANTHROPIC_ID, "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    out = [
        _anthropic_event("message_start", {"type": "message_start", "message": message}),
        _anthropic_event("content_block_start",
                         {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        _anthropic_event("ping", {"type": "ping"}),
    ]
    out += [_anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": token}})
            for token in answer_tokens(chunks)]
    out += [
        _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _anthropic_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                           "usage": {"output_tokens": chunks}}),
        _anthropic_event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(out)


def anthropic_json(chunks: int = CHUNKS) -> bytes:
    """A Messages API answer (non-stream)."""
    answer = {
        "id": ANTHROPIC_ID, "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": answer_text(chunks)}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": ANTHROPIC_INPUT_TOKENS, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": chunks},
    }
    return json.dumps(answer, separators=_SEP).encode()


UPSTREAM_PATHS: dict[str, tuple[str, str]] = {
    # path: (content type, name of the body function above)
    "/json/v1/chat/completions": ("application/json", "openai_json"),
    "/sse/v1/chat/completions": ("text/event-stream; charset=utf-8", "openai_sse"),
    "/anthropic/v1/messages": ("text/event-stream; charset=utf-8", "anthropic_sse"),
    "/anthropic-json/v1/messages": ("application/json", "anthropic_json"),
}
"""What the pre-built upstream answers on each path. fastgw providers get base_urls that lead
here: openai ``http://H:P/json/v1`` + ``/chat/completions``; anthropic ``http://H:P/anthropic``
+ ``/v1/messages``."""


def upstream_body(path: str, chunks: int = CHUNKS) -> bytes:
    return globals()[UPSTREAM_PATHS[path][1]](chunks)


def guard_terms(count: int, seed: int = 1000) -> list[str]:
    """`count` distinct word-like terms (deterministic) of which none occurs in the answer, so a
    guard of them scans every answer and masks nothing: the cost of the scan, not of a match."""
    rng = random.Random(seed)
    text = answer_text().lower()
    onsets, vowels, codas = "bcdfghjklmnprstvwz", "aeiou", ["", "n", "r", "s", "x", "nd", "rk", "st"]
    terms: set[str] = set()
    while len(terms) < count:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                       for _ in range(rng.randint(2, 4)))
        if word not in text:
            terms.add(word)
    return sorted(terms)


# ----------------------------------------------------------------------------------------------- checks

def parse_openai_stream(body: bytes) -> dict[str, Any]:
    """Parse an OpenAI-format SSE body the way a client does; raises ValueError on a malformed event."""
    events: list[dict[str, Any]] = []
    done = False
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if not data:
            continue
        payload = b"\n".join(data)
        if payload == b"[DONE]":
            done = True
            continue
        if done:
            raise ValueError("event after [DONE]")
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise ValueError(f"event is not an object: {payload[:200]!r}")
        events.append(event)
    contents = [c["delta"]["content"] for e in events for c in e.get("choices") or []
                if isinstance(c.get("delta"), dict) and c["delta"].get("content")]
    usage = [e["usage"] for e in events if not e.get("choices") and isinstance(e.get("usage"), dict)]
    return {
        "events": len(events),
        "content_chunks": len(contents),
        "text": "".join(contents),
        "usage_chunk": usage[-1] if usage else None,
        "finish_reasons": [c.get("finish_reason") for e in events for c in e.get("choices") or []
                           if c.get("finish_reason")],
        "done_marker": done,
    }


def parse_anthropic_stream(body: bytes) -> dict[str, Any]:
    """Parse an Anthropic-format SSE body: (event name, data) per event, each data a JSON object
    whose ``type`` equals the event name."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in body.split(b"\n\n"):
        if not block.strip():
            continue
        lines = block.split(b"\n")
        names = [line[6:].strip().decode() for line in lines if line.startswith(b"event:")]
        data = json.loads(b"\n".join(line[5:].lstrip() for line in lines if line.startswith(b"data:")))
        if len(names) != 1 or data.get("type") != names[0]:
            raise ValueError(f"event name and data type differ: {block[:200]!r}")
        events.append((names[0], data))
    deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    return {"names": [n for n, _ in events], "content_chunks": len(deltas), "text": "".join(deltas),
            "usage": next((d["usage"] for n, d in events if n == "message_delta"), None)}


def main(argv: list[str]) -> int:
    """`eval "$(python bench/bodies.py sse [PATH])"` exports what scripts/chat.lua reads, for a wrk by
    hand (PATH replaces the upstream's path, e.g. /v1/chat/completions for `fastgw mock-llm`)."""
    if len(argv) not in (1, 2) or argv[0] not in PLAIN_REQUESTS:
        print(f"usage: python bench/bodies.py {{{'|'.join(PLAIN_REQUESTS)}}} [PATH]", file=sys.stderr)
        return 2
    request = PLAIN_REQUESTS[argv[0]]
    if len(argv) == 2:
        request = Request(argv[1], request.body, request.headers)
    for key, value in request.env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

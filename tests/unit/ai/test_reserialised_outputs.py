"""Any valid serialisation of a provider's documented answer gives the client the same answer
and the gateway the same metering.

Each provider's outputs below are copied in shape from its public API reference (OpenAI Chat
Completions and its streaming chunks with ``stream_options.include_usage``; Anthropic Messages
and its SSE events; Gemini ``generateContent`` / ``streamGenerateContent?alt=sse``). A loopback
provider re-serialises them in a style hypothesis picks (whitespace, key order, ``\\u``
escapes, ``\\/``, token counts as ``1.2e1``) and cuts the bytes at arbitrary points; the test
asserts the client's decoded answer and the access-log metering equal those of the compact
serialisation, for both front doors, plain and streamed, guarded or not, cached or not, on the
compiled and pure twins (the ``twins`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.harness import Client, Services

WORDS = ["Hel", "lo", " \u00e9t\u00e9 ", "\U0001f600", ' "usage": {"x": 1} ', "a/b\\c", "\n", " darn it", "!"]
"""Deltas with non-ASCII, an emoji, quotes, a usage look-alike, a slash, a backslash, a newline
and a word the guard masks."""
TEXT = "".join(WORDS)
PROMPT_TOKENS, COMPLETION_TOKENS = 19, 23

OPENAI_ANSWER = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT, "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
              "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035",
}


def openai_chunks() -> list[dict]:
    base = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "usage": None}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}]}
               for w in WORDS]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": OPENAI_ANSWER["usage"]})
    return chunks


ANTHROPIC_ANSWER = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-20250514", "content": [{"type": "text", "text": TEXT}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS,
              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
}


def anthropic_events() -> list[tuple[str, dict]]:
    message = {**ANTHROPIC_ANSWER, "content": [], "stop_reason": None,
               "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}}
    events = [("message_start", {"type": "message_start", "message": message}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
              ("ping", {"type": "ping"})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": w}}) for w in WORDS]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": COMPLETION_TOKENS}}),
               ("message_stop", {"type": "message_stop"})]
    return events


GEMINI_USAGE = {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS,
                "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}]}
GEMINI_ANSWER = {
    "candidates": [{"content": {"parts": [{"text": TEXT}], "role": "model"}, "finishReason": "STOP",
                    "avgLogprobs": -0.0351}],
    "usageMetadata": GEMINI_USAGE, "modelVersion": "gemini-2.0-flash", "responseId": "mtNmaKq4Ct2Jz7IPqYSGsA8",
}


def gemini_chunks() -> list[dict]:
    chunks = []
    for i, w in enumerate(WORDS):
        last = i == len(WORDS) - 1
        candidate: dict[str, Any] = {"content": {"parts": [{"text": w}], "role": "model"}}
        if last:
            candidate["finishReason"] = "STOP"
        usage = GEMINI_USAGE if last else {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS}
        chunks.append({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.0-flash",
                       "responseId": "mtNmaKq4Ct2Jz7IPqYSGsA8"})
    return chunks


# -- serialisation styles ------------------------------------------------------------------------

TOKEN_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens",
              "promptTokenCount", "candidatesTokenCount", "totalTokenCount"}


class Style:
    """One valid way to write JSON: separators, key order, escapes, exponent token counts."""

    def __init__(self, rng: random.Random | None) -> None:
        self.rng = rng

    def dumps(self, obj: Any) -> bytes:
        rng = self.rng
        if rng is None:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        out = self._encode(obj, rng)
        return out.encode("utf-8")

    def _ws(self, rng: random.Random) -> str:
        return rng.choice(["", "", " ", "  ", "\n", "\t", "\r\n "])

    def _encode(self, obj: Any, rng: random.Random, key: str | None = None) -> str:
        w = self._ws
        if isinstance(obj, dict):
            items = list(obj.items())
            if rng.random() < 0.5:
                rng.shuffle(items)
            body = ",".join(f"{w(rng)}{self._string(k, rng)}{w(rng)}:{w(rng)}{self._encode(v, rng, k)}{w(rng)}"
                            for k, v in items)
            return "{" + body + w(rng) + "}"
        if isinstance(obj, list):
            return "[" + ",".join(w(rng) + self._encode(v, rng) + w(rng) for v in obj) + "]"
        if isinstance(obj, str):
            return self._string(obj, rng)
        if isinstance(obj, bool) or obj is None:
            return json.dumps(obj)
        if isinstance(obj, int) and key in TOKEN_KEYS and obj and rng.random() < 0.3:
            return rng.choice([f"{obj}.0", f"{obj / 10}e1", f"{obj}E0", f"{obj * 10}e-1"])
        return json.dumps(obj)

    def _string(self, text: str, rng: random.Random) -> str:
        ascii_only, slash, spell = rng.random() < 0.5, rng.random() < 0.3, rng.random() < 0.2
        out = []
        for c in text:
            if spell and c.isascii() and c.isalpha() and rng.random() < 0.3:
                out.append(f"\\u{ord(c):04x}")  # a plain letter spelled as an escape: same text
            elif slash and c == "/":
                out.append("\\/")
            else:
                out.append(json.dumps(c, ensure_ascii=ascii_only)[1:-1])
        return '"' + "".join(out) + '"'


def _data_lines(field: bytes, payload: bytes) -> bytes:
    """A JSON payload as SSE ``data:`` lines: JSON whitespace that breaks a line continues it
    on the next ``data:`` line, as the SSE spec reassembles them."""
    return b"\n".join(field + line for line in payload.splitlines())


# -- the provider ------------------------------------------------------------------------------


class DocumentedProvider:
    """Answers OpenAI, Anthropic and Gemini requests with the documented outputs above, in the
    current style, cut into writes at the current split points, chunked or not."""

    def __init__(self) -> None:
        self.style = Style(None)
        self.rng: random.Random | None = None
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.close()

    def _body(self, path: str, request: dict) -> tuple[bytes, bytes]:
        dumps = self.style.dumps
        sep = b"\n\n" if self.rng is None else self.rng.choice([b"\n\n", b"\r\n\r\n", b"\n\n\n"])
        if path.endswith("/chat/completions"):
            if not request.get("stream"):
                return b"application/json", dumps(OPENAI_ANSWER)
            data = self.rng.choice([b"data: ", b"data:"]) if self.rng else b"data: "
            events = [_data_lines(data, dumps(c)) + sep for c in openai_chunks()]
            return b"text/event-stream", b"".join(events) + data + b"[DONE]" + sep
        if path.endswith("/messages"):
            if not request.get("stream"):
                return b"application/json", dumps(ANTHROPIC_ANSWER)
            return b"text/event-stream", b"".join(
                b"event: %b\n%b%b" % (name.encode(), _data_lines(b"data: ", dumps(payload)), sep) for name, payload in anthropic_events())
        if ":streamGenerateContent" in path:
            return b"text/event-stream", b"".join(_data_lines(b"data: ", dumps(c)) + b"\r\n\r\n" for c in gemini_chunks())
        if ":generateContent" in path:
            return b"application/json", dumps(GEMINI_ANSWER)
        raise AssertionError(f"unexpected provider path {path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
                request = json.loads(await reader.readexactly(length))
                kind, body = self._body(lines[0].split(b" ")[1].decode(), request)
                await self._write(writer, kind, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _write(self, writer: asyncio.StreamWriter, kind: bytes, body: bytes) -> None:
        rng = self.rng
        chunked = rng is not None and rng.random() < 0.5
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\n%b\r\n\r\n" % (kind, framing))
        cuts = sorted(rng.sample(range(1, len(body)), min(12, len(body) - 1))) if rng else []
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        for piece in pieces:
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            await asyncio.sleep(0.0005)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


# -- running a case ------------------------------------------------------------------------------

PROVIDERS = {
    "openai": lambda port: {"name": "p", "type": "openai-compatible", "base_url": f"http://127.0.0.1:{port}/v1"},
    "anthropic": lambda port: {"name": "p", "type": "anthropic", "base_url": f"http://127.0.0.1:{port}",
                               "api_keys": ["sk-ant-test"]},
    "gemini": lambda port: {"name": "p", "type": "gemini", "base_url": f"http://127.0.0.1:{port}",
                            "api_keys": ["gm-test"]},
}
GENERATED = {"id", "created"}
"""Fields the gateway writes itself when it converts (a fresh id, the current second)."""


def _normalised(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _normalised(v) for k, v in obj.items() if k not in GENERATED}
    if isinstance(obj, list):
        return [_normalised(v) for v in obj]
    return obj


def _client_view(response: Any, stream: bool) -> Any:
    """What the client decodes: the JSON answer, or the stream's (event, data) pairs and its text."""
    if not stream:
        return _normalised(response.json())
    pairs = [(event, data if data == "[DONE]" else _normalised(json.loads(data)))
             for event, data in _sse_events(response.body.decode())]
    return pairs, "".join(_text_of(data) for _, data in pairs)


def _sse_events(body: str) -> list[tuple[str | None, str]]:
    """(event, data) of each event, as the SSE spec (WHATWG HTML 9.2.6) parses a stream."""
    events, name, data = [], None, []
    for line in re.split(r"\r\n|\r|\n", body):
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return events


def _text_of(event: Any) -> str:
    """The answer text an event carries (an OpenAI chunk's delta, an Anthropic text_delta)."""
    if not isinstance(event, dict):
        return ""
    if event.get("type") == "content_block_delta" and (event.get("delta") or {}).get("type") == "text_delta":
        return event["delta"]["text"]
    return "".join((choice.get("delta") or {}).get("content") or "" for choice in event.get("choices") or ())


async def _run_case(provider: DocumentedProvider, port: int, case: dict, tmp_path) -> tuple[list, list]:
    config: dict[str, Any] = {"providers": [PROVIDERS[case["provider"]](port)],
                              "models": [{"name": "m", "targets": [{"provider": "p", "model": "model-x"}]}]}
    if case["guard"]:
        config["guard"] = {"rules": [{"name": "tidy", "terms": ["darn"], "action": "mask", "mask": "*",
                                      "apply_to": ["response"]}]}
    if case["cache"]:
        config["cache"] = {"ttl": "1m"}
    log = tmp_path / f"access-{random.getrandbits(64)}.log"
    svc = Services(config, asyncio.get_running_loop(), log_path=log)
    svc.access_log.configure(str(log))
    # a fresh question per run: the node cache outlives one in-process gateway
    question = f"Say hello ({random.getrandbits(64):x})"
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": question}]}
    if case["front"] == "anthropic":
        body["max_tokens"] = 100
    if case["stream"]:
        body["stream"] = True
        if case["include_usage"] and case["front"] == "openai":
            body["stream_options"] = {"include_usage": True}
    path = "/v1/chat/completions" if case["front"] == "openai" else "/v1/messages"
    views = []
    for _ in range(2 if case["cache"] else 1):
        client = Client(svc)
        client.request("POST", path, body)
        response = await client.response(timeout=10)
        assert response.status == 200, response.body
        views.append((response.headers.get("x-fastgw-cache"), _client_view(response, case["stream"])))
    svc.close()
    meter = [(line.get("prompt_tokens"), line.get("completion_tokens"), line.get("tokens_estimated"), line.get("cached"))
             for line in svc.log_lines() if line.get("model")]
    return views, meter


CASES = [
    {"provider": p, "front": f, "stream": s, "include_usage": u, "guard": g, "cache": c}
    for p in ("openai", "anthropic", "gemini")
    for f in ("openai", "anthropic")
    for s in (False, True)
    for u in ((False, True) if s and f == "openai" else (False,))
    for g in (False, True)
    for c in (False, True)
    if not (g and c)  # the guard and the cache each get their own runs; together adds nothing
]


def _case_id(case: dict) -> str:
    parts = [case["provider"], "to-" + case["front"], "stream" if case["stream"] else "plain"]
    parts += [name for name in ("include_usage", "guard", "cache") if case[name]]
    return "-".join(parts)


def _client_usage(view: Any, case: dict) -> tuple[int, int]:
    """The token counts the client is told: the answer's usage, OpenAI's usage chunk, or
    Anthropic's message_start input and closing message_delta output."""
    if not case["stream"]:
        usage = view["usage"]
        if case["front"] == "openai":
            return usage["prompt_tokens"], usage["completion_tokens"]
        return usage["input_tokens"], usage["output_tokens"]
    pairs, _ = view
    events = [data for _, data in pairs if isinstance(data, dict)]
    if case["front"] == "openai":
        usage = next(e["usage"] for e in events if isinstance(e.get("usage"), dict))
        return usage["prompt_tokens"], usage["completion_tokens"]
    start = next(e for e in events if e.get("type") == "message_start")["message"]["usage"]
    delta = [e for e in events if e.get("type") == "message_delta"][-1]["usage"]
    return delta.get("input_tokens", start["input_tokens"]), delta["output_tokens"]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_any_serialisation_of_a_documented_answer_gives_the_same_answer_and_metering(case, twins, tmp_path):
    provider = DocumentedProvider()

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(seed=st.integers(0, 2**32 - 1))
    def variant(seed: int) -> None:
        async def go() -> tuple:
            port = await provider.start()
            try:
                provider.style, provider.rng = Style(None), None
                expected = await _run_case(provider, port, case, tmp_path)
                provider.style, provider.rng = Style(random.Random(seed)), random.Random(seed)
                got = await _run_case(provider, port, case, tmp_path)
            finally:
                provider.close()
            return expected, got

        (expected_views, expected_meter), (views, meter) = asyncio.run(go())
        assert views == expected_views
        assert meter == expected_meter

    variant()
    # and the compact serialisation itself is metered from the provider's own counts, and a
    # stream's usage chunk reaches only a client that asked for it
    async def baseline() -> tuple:
        port = await provider.start()
        try:
            return await _run_case(provider, port, case, tmp_path)
        finally:
            provider.close()

    views, meter = asyncio.run(baseline())
    if case["cache"]:
        assert [status for status, _ in views] == ["miss", "hit"]
        if case["stream"]:  # the replay cuts the text its own way; the text is the same
            assert views[1][1][1] == views[0][1][1]
        else:  # a hit is a new response for the model the client named (fastgw.cache.replay)
            # (usage details of the provider's call, such as its prompt-cache counts, are not replayed)
            ignore = {"model": None, "usage": None}
            assert {**views[1][1], **ignore} == {**views[0][1], **ignore}
    views = [view for _, view in views]
    assert meter and meter[0][:3] == (PROMPT_TOKENS, COMPLETION_TOKENS, False)
    text = TEXT.replace("darn", "****") if case["guard"] else TEXT
    if not case["stream"] or case["front"] == "anthropic" or case["include_usage"]:
        assert _client_usage(views[0], case) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    if case["stream"]:
        pairs, streamed = views[0]
        assert streamed == text
        usage_chunks = [d for _, d in pairs if isinstance(d, dict) and isinstance(d.get("usage"), dict)
                        and not d.get("choices") and "type" not in d]
        assert bool(usage_chunks) == (case["front"] == "openai" and case["include_usage"])
    else:
        answer = views[0]
        got = answer["choices"][0]["message"]["content"] if case["front"] == "openai" else answer["content"][0]["text"]
        assert got == text

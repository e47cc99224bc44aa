"""Fuzz the converters: requests and provider answers in their documented shapes, then mutated.

The property is the engine's contract: a request either converts (to a body that is JSON) or is
refused with ConversionError (the 400 naming a field); an Anthropic request is converted or refused
with FrontDoorError; a provider answer converts or raises ProviderError (the 502 / failover). Any
other exception would reach the last resort as a 500, so hypothesis must never find one.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.ai.anthropic_front import (
    FrontDoorError,
    OpenAIToAnthropicStream,
    messages_to_openai,
    openai_to_messages_response,
)
from fastgw.ai.dialects import OpenAIStream
from fastgw.ai.providers import adapter_for
from fastgw.ai.providers.base import ConversionError, ProviderError, encode_embeddings
from tests.support.request_shapes import chat_requests, ids, mutated, names

ADAPTERS = [
    adapter_for({"name": "a", "type": "anthropic"}),
    adapter_for({"name": "g", "type": "gemini"}),
    adapter_for({"name": "o", "type": "openai"}),
]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

def build_or_refuse(request: dict[str, Any], op: str = "chat") -> None:
    for adapter in ADAPTERS:
        try:
            call = adapter.build(op, request, "m", "key")
        except ConversionError as exc:
            assert exc.param is None or isinstance(exc.param, str)
            continue
        json.loads(call.body)


@FUZZ
@given(chat_requests())
def test_documented_chat_requests_convert_or_are_refused(request: dict[str, Any]) -> None:
    build_or_refuse(request)


@FUZZ
@given(mutated(chat_requests()))
def test_mutated_chat_requests_convert_or_are_refused(request: Any) -> None:
    if isinstance(request, dict) and isinstance(request.get("messages"), list):  # what RouteModel validates
        if all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in request["messages"]):
            build_or_refuse(request)


embeddings = st.fixed_dictionaries(
    {"model": st.just("m"), "input": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3)},
    optional={"encoding_format": st.sampled_from(["float", "base64"]), "dimensions": st.integers(1, 8)},
)


@FUZZ
@given(mutated(embeddings))
def test_mutated_embeddings_requests_convert_or_are_refused(request: Any) -> None:
    if isinstance(request, dict) and isinstance(request.get("input"), str | list):
        build_or_refuse(request, "embeddings")


# --------------------------------------------------------------------------- Anthropic requests

a_text = st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=10))
a_image = st.builds(lambda s: {"type": "image", "source": s}, st.one_of(
    st.just({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}),
    st.just({"type": "url", "url": "https://example.com/a.png"}), st.just({"type": "url", "url": "ftp://x"})))
a_tool_use = st.builds(lambda i, n: {"type": "tool_use", "id": i, "name": n, "input": {"city": "Paris"}}, ids, names)
a_tool_result = st.builds(lambda i, c: {"type": "tool_result", "tool_use_id": i, "content": c}, ids,
                          st.text(max_size=8) | st.lists(a_text | a_image, max_size=2))
a_thinking = st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, st.text(max_size=8),
                       st.text(max_size=8))
a_message = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c},
              st.text(max_size=10) | st.lists(a_text | a_image | a_tool_result, min_size=1, max_size=3)),
    st.builds(lambda c: {"role": "assistant", "content": c},
              st.text(max_size=10) | st.lists(a_thinking | a_text | a_tool_use, min_size=1, max_size=3)),
)
messages_requests = st.fixed_dictionaries(
    {"model": st.just("m"), "max_tokens": st.integers(1, 4096), "messages": st.lists(a_message, min_size=1, max_size=4)},
    optional={
        "system": st.text(max_size=10) | st.lists(a_text, max_size=2),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "stop_sequences": st.lists(st.text(max_size=4), max_size=2),
        "tools": st.lists(st.builds(lambda n: {"name": n, "input_schema": {"type": "object"}}, names), min_size=1, max_size=2),
        "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "f"}, {"type": "none"}]),
        "thinking": st.builds(lambda b: {"type": "enabled", "budget_tokens": b}, st.integers(1, 20000)),
        "metadata": st.just({"user_id": "u"}),
    },
)


@FUZZ
@given(st.one_of(messages_requests, mutated(messages_requests)))
def test_anthropic_requests_convert_or_are_refused_at_either_step(request: Any) -> None:
    if not isinstance(request, dict):
        return
    try:
        converted = messages_to_openai(request)
    except FrontDoorError:
        return
    build_or_refuse(converted)


# ------------------------------------------------------------------------------ provider answers

anthropic_message = st.fixed_dictionaries({
    "id": st.just("msg_1"), "type": st.just("message"), "role": st.just("assistant"), "model": st.just("c"),
    "content": st.lists(st.one_of(a_text, a_thinking, a_tool_use,
                                  st.builds(lambda d: {"type": "redacted_thinking", "data": d}, st.text(max_size=4)),
                                  st.builds(lambda n: {"type": "tool_use", "id": "t", "name": n, "input": {"a": 1}},
                                            st.just("fastgw_json_answer"))), max_size=3),
    "stop_reason": st.sampled_from(["end_turn", "tool_use", "max_tokens", "refusal", None]),
    "usage": st.fixed_dictionaries({"input_tokens": st.integers(0, 50), "output_tokens": st.integers(0, 50)},
                                   optional={"cache_read_input_tokens": st.integers(0, 9),
                                             "cache_creation_input_tokens": st.integers(0, 9)}),
})
gemini_response = st.fixed_dictionaries({
    "candidates": st.lists(st.fixed_dictionaries({
        "content": st.fixed_dictionaries({"role": st.just("model"), "parts": st.lists(st.one_of(
            st.builds(lambda t: {"text": t}, st.text(max_size=6)),
            st.builds(lambda t: {"text": t, "thought": True}, st.text(max_size=6)),
            st.builds(lambda n: {"functionCall": {"name": n, "args": {"a": 1}}}, names)), max_size=3)}),
        "finishReason": st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "OTHER"]),
        "index": st.integers(0, 1)}), max_size=2),
    "usageMetadata": st.fixed_dictionaries({"promptTokenCount": st.integers(0, 9), "candidatesTokenCount": st.integers(0, 9),
                                            "totalTokenCount": st.integers(0, 20)},
                                           optional={"cachedContentTokenCount": st.integers(0, 5)}),
}, optional={"promptFeedback": st.just({"blockReason": "SAFETY"}), "modelVersion": st.just("g")})
anthropic_events = st.lists(st.one_of(
    st.just({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "c",
                                                  "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}}),
    st.builds(lambda i, b: {"type": "content_block_start", "index": i, "content_block": b}, st.integers(0, 2),
              st.sampled_from([{"type": "text", "text": ""}, {"type": "thinking", "thinking": ""},
                               {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                               {"type": "tool_use", "id": "t", "name": "fastgw_json_answer", "input": {}},
                               {"type": "redacted_thinking", "data": "x"}])),
    st.builds(lambda i, d: {"type": "content_block_delta", "index": i, "delta": d}, st.integers(0, 2),
              st.sampled_from([{"type": "text_delta", "text": "hi"}, {"type": "thinking_delta", "thinking": "hm"},
                               {"type": "signature_delta", "signature": "s"},
                               {"type": "input_json_delta", "partial_json": "{\"a\":"}])),
    st.just({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
    st.just({"type": "message_stop"}), st.just({"type": "ping"}),
), max_size=8)


def render_both_dialects(chunks: list[dict[str, Any]]) -> None:
    """What the gateway does with converted chunks: OpenAI's writer and Anthropic's re-cut."""
    writer, recut = OpenAIStream(), OpenAIToAnthropicStream("m")
    for chunk in chunks:
        writer.chunk(chunk)
        recut.chunk(chunk)
    recut.end()


@FUZZ
@given(st.one_of(anthropic_message, mutated(anthropic_message)), st.one_of(gemini_response, mutated(gemini_response)))
def test_provider_answers_convert_or_are_provider_errors(message: Any, response: Any) -> None:
    for adapter, payload in ((ADAPTERS[0], message), (ADAPTERS[1], response)):
        try:
            converted = adapter.convert_response("chat", 200, json.dumps(payload).encode(), "m")
        except ProviderError:
            continue
        openai_to_messages_response(converted, "m")
        json.dumps(converted)


@FUZZ
@given(st.one_of(anthropic_events, mutated(anthropic_events)), st.lists(st.one_of(gemini_response, mutated(gemini_response)),
                                                                          max_size=3))
def test_provider_streams_convert_or_are_provider_errors(events: Any, gemini_events: list) -> None:
    for adapter, payloads in ((ADAPTERS[0], events if isinstance(events, list) else [events]), (ADAPTERS[1], gemini_events)):
        converter = adapter.stream("chat", "m")
        chunks: list[dict[str, Any]] = []
        try:
            for payload in payloads:
                chunks += converter.event(None, json.dumps(payload))
            chunks += converter.end()
        except ProviderError:
            pass
        render_both_dialects(chunks)


@FUZZ
@given(mutated(st.fixed_dictionaries({"object": st.just("list"), "data": st.lists(st.fixed_dictionaries(
    {"object": st.just("embedding"), "index": st.integers(0, 3),
     "embedding": st.lists(st.floats(-1, 1, width=32), max_size=4)}), max_size=2)})))
def test_gemini_embeddings_convert_and_encode(response: Any) -> None:
    gemini = {"embeddings": [{"values": item.get("embedding")} for item in response.get("data", [])
                             if isinstance(item, dict)]} if isinstance(response, dict) and isinstance(response.get("data"), list) else response
    try:
        converted = ADAPTERS[1].convert_response("embeddings", 200, json.dumps(gemini).encode(), "m")
    except ProviderError:
        return
    json.dumps(encode_embeddings(converted, "base64"))

"""Fidelity of conversions, in-process: JSON output through a forced tool, thinking signatures both
ways, prompt-cache counts into metering and cost, base64 embeddings, refusals that name the field.
Payloads follow Anthropic's and OpenAI's documented shapes (see tests/support/provider_fakes.py)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from fastgw.ai.anthropic_front import (
    OpenAIToAnthropicStream,
    messages_to_openai,
    openai_to_messages_response,
)
from fastgw.ai.providers import adapter_for
from fastgw.ai.providers.anthropic import ANSWER_TOOL, messages_body
from fastgw.ai.providers.base import ConversionError, encode_embeddings
from fastgw.ai.usage import UsageMeter, cache_counts
from fastgw.config.fields import Issues
from fastgw.config.limits import limits
from fastgw.fastjson import NestingError, loads
from fastgw.limits.quotas import Quota
from fastgw.sse import SSEParser

USER = [{"role": "user", "content": "Hi"}]
CLAUDE = adapter_for({"name": "c", "type": "anthropic"})


def sse(*events: tuple[str, dict]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def converted_stream(raw: bytes) -> list[dict[str, Any]]:
    converter = CLAUDE.stream("chat", "claude")
    chunks = []
    for event in SSEParser().feed(raw):
        chunks += converter.event(event.event, event.data)
    assert converter.done
    return chunks + converter.end()


# ------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize(("request_extra", "param"), [
    ({"n": 3}, "n"),
    ({"reasoning_effort": "max"}, "reasoning_effort"),
    ({"stop": 5}, "stop"),
    ({"temperature": "warm"}, "temperature"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}},
     "response_format.json_schema.schema.type"),
    ({"response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "response_format"),
    ({"messages": [{"role": "assistant", "content": "x", "thinking_blocks": [{"type": "thinking"}]}]},
     "messages[0].thinking_blocks[0]"),
])
def test_anthropic_refusals_name_the_field(request_extra: dict, param: str) -> None:
    with pytest.raises(ConversionError) as err:
        messages_body({"messages": USER, **request_extra}, "claude", 1024)
    assert err.value.param == param and str(err.value).startswith(param + ": ")


def test_json_nested_too_deeply_is_a_value_error_not_a_recursion_error() -> None:
    with pytest.raises(NestingError):
        loads(b"[" * 5000 + b"]" * 5000)
    assert loads(b"[" * 100 + b"]" * 100)  # shallow nesting still parses


# --------------------------------------------------------------------------- JSON via a forced tool

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_response_format_becomes_one_forced_tool() -> None:
    body = messages_body({"messages": USER, "response_format": {"type": "json_schema", "json_schema": {
        "name": "w", "description": "Weather.", "schema": SCHEMA}}}, "claude", 1024)
    assert body["tools"] == [{"name": ANSWER_TOOL, "description": "Weather.", "input_schema": SCHEMA}]
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    loose = messages_body({"messages": USER, "response_format": {"type": "json_object"}}, "claude", 1024)
    assert loose["tools"][0]["input_schema"] == {"type": "object"}
    assert "tools" not in messages_body({"messages": USER, "response_format": {"type": "text"}}, "claude", 1024)


def test_the_forced_tools_answer_is_the_content_plain_and_streamed() -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [{"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {"city": "Paris"}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}}
    answer = CLAUDE.convert_response("chat", 200, json.dumps(message).encode(), "claude")
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert json.loads(choice["message"]["content"]) == {"city": "Paris"}
    chunks = converted_stream(sse(
        ("message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert json.loads("".join(d.get("content", "") for d in deltas)) == {"city": "Paris"}
    assert not any("tool_calls" in d for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["stop"]


# ------------------------------------------------------------------------------- thinking signatures

THINKING = [{"type": "thinking", "thinking": "Let me see.", "signature": "EqQBCkYIARgC"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"}]


def test_signed_thinking_round_trips_through_openai_shapes() -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [*THINKING, {"type": "text", "text": "Answer."}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 3, "output_tokens": 4}}
    reply = CLAUDE.convert_response("chat", 200, json.dumps(message).encode(), "claude")["choices"][0]["message"]
    assert reply["reasoning_content"] == "Let me see." and reply["thinking_blocks"] == THINKING
    body = messages_body({"messages": [*USER, reply, {"role": "user", "content": "More"}]}, "claude", 1024)
    assert body["messages"][1]["content"] == [*THINKING, {"type": "text", "text": "Answer."}]
    # an Anthropic client through the converted path gets the same blocks, signatures intact
    back = openai_to_messages_response({"choices": [{"message": reply, "finish_reason": "stop"}]}, "claude")
    assert back["content"][:2] == THINKING
    request = messages_to_openai({"model": "claude", "max_tokens": 50, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": back["content"]}]})
    assert request["messages"][1]["thinking_blocks"] == THINKING


def test_streamed_signature_reaches_both_dialects() -> None:
    chunks = converted_stream(sse(
        ("message_start", {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                                                                "model": "claude", "content": [], "usage": {"input_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " see."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCkYIARgC"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": THINKING[1]}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ))
    blocks = [b for c in chunks for b in c["choices"][0]["delta"].get("thinking_blocks", [])]
    assert blocks == THINKING
    recut = OpenAIToAnthropicStream("claude")
    events = [e for c in chunks for e in recut.chunk(c)] + recut.end()
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {"type": "signature_delta", "signature": "EqQBCkYIARgC"} in deltas
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert THINKING[1] in starts


def test_openai_format_providers_are_not_sent_thinking_blocks() -> None:
    gpt = adapter_for({"name": "o", "type": "openai"})
    sent = json.loads(gpt.build("chat", {"messages": [*USER, {"role": "assistant", "content": "x",
                                                              "thinking_blocks": THINKING}]}, "gpt-4o", "k").body)
    assert sent["messages"][1] == {"role": "assistant", "content": "x"}


# --------------------------------------------------------------------------- cache tokens, metering

def test_cache_counts_convert_both_ways_exactly() -> None:
    anthropic_usage = {"input_tokens": 11, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
                       "output_tokens": 7}
    message = {"id": "m", "type": "message", "role": "assistant", "model": "c",
               "content": [{"type": "text", "text": "x"}], "usage": anthropic_usage}
    usage = CLAUDE.convert_response("chat", 200, json.dumps(message).encode(), "c")["usage"]
    assert usage["prompt_tokens"] == 131 and usage["prompt_tokens_details"] == {"cached_tokens": 100}
    back = openai_to_messages_response({"choices": [{"message": {"content": "x"}}], "usage": usage}, "c")["usage"]
    assert back == {k: anthropic_usage[k] for k in back}
    assert cache_counts(usage) == {"cached_tokens": 100, "cache_write_tokens": 20}
    assert cache_counts({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 3}}) == {"cached_tokens": 3}


def test_native_anthropic_streams_meter_cache_reads_and_writes() -> None:
    """Was: prompt_tokens = input_tokens alone, under-counting every cached prompt."""
    meter = UsageMeter(False)
    events = SSEParser().feed(sse(
        ("message_start", {"type": "message_start", "message": {"usage": {
            "input_tokens": 11, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 1}}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
    ))
    meter.relay_native(events)
    result = meter.result("claude", {"messages": USER})
    assert result == {"prompt_tokens": 131, "completion_tokens": 7, "total_tokens": 138, "estimated": False,
                      "cached_tokens": 100, "cache_write_tokens": 20}


def test_cached_and_written_prompt_tokens_are_priced_apart() -> None:
    issues = Issues()
    prices = {"claude*": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}}
    rules = limits([{"name": "budget", "quota": {"cost": 10.0, "prices": prices}}], issues)
    assert not issues.errors, issues.errors
    quota = Quota(rules[0]["quota"])
    cost = quota.charge("claude-x", 131, 7, cached_tokens=100, cache_write_tokens=20)
    assert cost == pytest.approx((11 * 3.0 + 100 * 0.3 + 20 * 3.75 + 7 * 15.0) / 1e6)
    plain = Quota({"cost": 10.0, "prices": {"claude*": {"input": 3.0, "output": 15.0}}})
    assert plain.charge("claude-x", 131, 7, 100, 20) == pytest.approx((131 * 3.0 + 7 * 15.0) / 1e6)


# ------------------------------------------------------------------------------------- embeddings

def test_base64_embeddings_are_little_endian_float32() -> None:
    response = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -2.0, 1e39]}]}
    encoded = encode_embeddings(response, "base64")["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(encoded)) == (0.5, -2.0, float("inf"))
    assert encode_embeddings(response, "float") is response

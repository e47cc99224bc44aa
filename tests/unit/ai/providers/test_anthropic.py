"""The Anthropic adapter: OpenAI requests -> Messages API calls and back, with recorded payloads, and
round trips against the real mock server (also driven by the real anthropic SDK for wire fidelity)."""

from __future__ import annotations

import http.client
import json
import signal
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.providers.anthropic import AnthropicAdapter, AnthropicStream
from fastgw.ai.providers.base import ProviderError, StreamConverter, UnsupportedOperation, UpstreamCall
from fastgw.mock.core import MockLLM, answer_text
from fastgw.mock.flavors.anthropic import AnthropicFlavor
from fastgw.sse import SSEParser
from tests.support.gateway import MockLLMProcess

CHUNKS = 6


def adapter(**provider: Any) -> AnthropicAdapter:
    return AnthropicAdapter({"name": "claude", "type": "anthropic", **provider})


def body_of(request: dict[str, Any], model: str = "claude-x", **provider: Any) -> dict[str, Any]:
    return json.loads(adapter(**provider).build("chat", request, model, "sk-ant").body)


def user(text: str = "Hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# ------------------------------------------------------------------------------------- building calls


def test_call_path_headers_and_base_url_forms() -> None:
    call = adapter().build("chat", {"messages": [user()]}, "claude-x", "sk-ant")
    assert call.method == b"POST" and call.path == b"/v1/messages"
    headers = dict(call.headers)
    assert headers[b"x-api-key"] == b"sk-ant"
    assert headers[b"anthropic-version"] == b"2023-06-01"
    assert headers[b"content-type"] == b"application/json"
    a = adapter()
    assert (a.scheme, a.host, a.port) == ("https", "api.anthropic.com", 443)

    for base_url in ("http://127.0.0.1:9001/v1", "http://127.0.0.1:9001/v1/"):
        call = adapter(base_url=base_url).build("chat", {"messages": [user()]}, "m", None)
        assert call.path == b"/v1/messages"  # never /v1/v1
        assert b"x-api-key" not in dict(call.headers)
    proxied = adapter(base_url="https://proxy.example/anthropic", options={"version": "2024-01-01"})
    call = proxied.build("chat", {"messages": [user()]}, "m", "k")
    assert call.path == b"/anthropic/v1/messages"
    assert dict(call.headers)[b"anthropic-version"] == b"2024-01-01"


def test_other_operations_are_unsupported() -> None:
    for op in ("completions", "embeddings"):
        with pytest.raises(UnsupportedOperation):
            adapter().build(op, {"prompt": "x"}, "m", "k")


def test_text_system_and_sampling_fields() -> None:
    body = body_of(
        {
            "model": "public-name",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                user("Hello"),
            ],
            "temperature": 0,  # Higress lost zeros: Claude would fall back to 1.0
            "top_p": 0.0,
            "top_k": 0,
            "stop": "END",
            "user": "u-42",
        }
    )
    assert body["model"] == "claude-x"
    assert body["system"] == "Be brief.\n\nBe kind."
    assert body["messages"] == [{"role": "user", "content": "Hello"}]
    assert body["temperature"] == 0 and body["top_p"] == 0.0 and body["top_k"] == 0
    assert body["stop_sequences"] == ["END"]  # a string stop (Higress failed to parse it)
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["max_tokens"] == 4096 and "stream" not in body and "tools" not in body

    assert body_of({"messages": [user()], "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]
    assert body_of({"messages": [user()], "stream": True})["stream"] is True


def test_max_tokens_sources() -> None:
    assert body_of({"messages": [user()], "max_tokens": 50})["max_tokens"] == 50
    assert body_of({"messages": [user()], "max_tokens": 50, "max_completion_tokens": 70})["max_tokens"] == 70
    assert body_of({"messages": [user()]}, options={"default_max_tokens": 1000})["max_tokens"] == 1000
    with pytest.raises(ProviderError, match="max_tokens"):
        body_of({"messages": [user()], "max_tokens": 0})


def test_reasoning_effort_becomes_a_thinking_budget() -> None:
    for effort, budget in (("low", 1024), ("medium", 8192), ("high", 16384)):
        body = body_of({"messages": [user()], "reasoning_effort": effort})
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["max_tokens"] > budget  # Anthropic requires room after the thinking
    capped = body_of({"messages": [user()], "reasoning_effort": "high", "max_tokens": 5000})
    assert capped["max_tokens"] == 5000 and capped["thinking"]["budget_tokens"] == 4999
    tiny = body_of({"messages": [user()], "reasoning_effort": "low", "max_tokens": 500})
    assert "thinking" not in tiny  # no budget of at least 1024 fits under the client's cap
    assert "thinking" not in body_of({"messages": [user()], "reasoning_effort": "none"})
    with pytest.raises(ProviderError, match="reasoning_effort"):
        body_of({"messages": [user()], "reasoning_effort": "extreme"})


def test_tools_and_every_tool_choice_form() -> None:
    base = {"messages": [user()], "tools": [WEATHER_TOOL]}
    body = body_of(base)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert "tool_choice" not in body  # Anthropic's default (auto)
    forms = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for choice, expected in forms.items():
        assert body_of({**base, "tool_choice": choice})["tool_choice"] == expected
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert body_of({**base, "tool_choice": named})["tool_choice"] == {"type": "tool", "name": "get_weather"}
    serial = body_of({**base, "tool_choice": "required", "parallel_tool_calls": False})
    assert serial["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body_of({**base, "parallel_tool_calls": False})["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    no_params = {"type": "function", "function": {"name": "now"}}
    assert body_of({**base, "tools": [no_params]})["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]
    with pytest.raises(ProviderError, match="tool_choice"):
        body_of({**base, "tool_choice": "sometimes"})


def test_higress_pair_d_tool_calls_and_merged_tool_results() -> None:
    request = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 1024,
        "messages": [
            {"role": "user", "content": "What's the weather and time?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Beijing"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"timezone": "Asia/Shanghai"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 25°C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "3:00 PM"},
        ],
    }
    messages = body_of(request)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Beijing"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"timezone": "Asia/Shanghai"}},
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 25°C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "3:00 PM"},
    ]


def test_assistant_text_with_tool_call_and_a_user_turn_after_tool_results() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": ""}}
    messages = body_of(
        {
            "messages": [
                user("time?"),
                {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "noon"}]},
                user("thanks, and the date?"),
            ]
        }
    )["messages"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "c1", "name": "now", "input": {}},  # "" means no arguments
    ]
    # the tool result and the next user turn share one user message: roles must alternate
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "noon"}]},
            {"type": "text", "text": "thanks, and the date?"},
        ],
    }
    assert len(messages) == 3


def test_consecutive_user_messages_merge_without_empty_text() -> None:
    messages = body_of({"messages": [user("one"), user(""), user("two")]})["messages"]
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}
    ]


def test_invalid_tool_call_arguments_are_an_error_not_a_guess() -> None:
    for arguments in ('{"city": "Par', "[1, 2]"):
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        with pytest.raises(ProviderError, match="tool call arguments"):
            body_of({"messages": [user(), {"role": "assistant", "content": None, "tool_calls": [call]}]})


def test_images_data_uri_and_url() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    messages = body_of({"messages": [{"role": "user", "content": content}]})["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    bad = [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]
    with pytest.raises(ProviderError, match="base64"):
        body_of({"messages": [{"role": "user", "content": bad}]})
    with pytest.raises(ProviderError, match="input_audio"):
        body_of({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})


def test_native_messages_pass_through() -> None:
    native = {
        "model": "public",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "d"}}]}
        ],
    }
    call = adapter(base_url="http://127.0.0.1:1/v1").build_messages(native, "claude-x", "k", beta="b1")
    assert call.path == b"/v1/messages"
    assert json.loads(call.body) == {**native, "model": "claude-x"}
    assert dict(call.headers)[b"anthropic-beta"] == b"b1"
    assert native["model"] == "public"  # the caller's dict is not modified


# ---------------------------------------------------------------------------------------- responses


def convert(message: dict[str, Any]) -> dict[str, Any]:
    return adapter().convert_response("chat", 200, json.dumps(message).encode(), "claude-x")


MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 3},
}


def test_response_text_and_usage() -> None:
    resp = convert(MESSAGE)
    assert resp["id"] == "msg_01" and resp["object"] == "chat.completion"
    assert resp["model"] == "claude-3-5-haiku-20241022" and isinstance(resp["created"], int)
    assert resp["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}
    ]
    assert resp["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}

    cached = convert(
        {**MESSAGE, "usage": {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 100}}
    )
    # OpenAI's prompt_tokens includes the cached part; Anthropic's input_tokens does not
    assert cached["usage"] == {
        "prompt_tokens": 105,
        "completion_tokens": 3,
        "total_tokens": 108,
        "prompt_tokens_details": {"cached_tokens": 100},
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_response_tool_use_and_thinking() -> None:
    resp = convert(
        {
            **MESSAGE,
            "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris", "days": 2},
                },
            ],
            "stop_reason": "tool_use",
        }
    )
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "The user wants weather.",
        "thinking_blocks": [{"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"}],
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":2}'},
            }
        ],
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_every_stop_reason(stop_reason: str, finish: str) -> None:
    assert convert({**MESSAGE, "stop_reason": stop_reason})["choices"][0]["finish_reason"] == finish


def test_garbage_responses_raise() -> None:
    for body in (b"not json", b"[]", b'{"type": "error"}'):
        with pytest.raises(ProviderError):
            adapter().convert_response("chat", 200, body, "m")


def test_error_parsing() -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded"}}'
    assert adapter().error(429, body) == ("Number of requests has exceeded", "rate_limit_error")
    assert adapter().error(502, b"<html>Bad Gateway</html>") == ("<html>Bad Gateway</html>", None)
    assert adapter().error(500, b"") == ("Anthropic answered HTTP 500", None)
    assert adapter().error(400, b'{"error": "flat"}') == ('{"error": "flat"}', None)


# ------------------------------------------------------------------------------------------ streams

TEXT_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_s1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"""

TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_t1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":400,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"get_time","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def run_stream(converter: StreamConverter, raw: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    chunks: list[dict[str, Any]] = []
    for event in parser.feed(raw) + parser.finish():
        chunks += converter.event(event.event, event.data)
    return chunks + converter.end()


def test_stream_text_and_thinking() -> None:
    converter = adapter().stream("chat", "claude-x")
    chunks = run_stream(converter, TEXT_STREAM)
    for chunk in chunks:
        assert chunk["id"] == "msg_s1" and chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "claude-x" and isinstance(chunk["created"], int)
        assert len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Hmm."},
        {"thinking_blocks": [{"type": "thinking", "thinking": "Hmm.", "signature": "EqQB"}]},
        {"content": "Hello"},
        {"content": "!"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, None, None, "stop"]
    assert converter.done
    assert converter.usage == {
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "total_tokens": 45,
        "prompt_tokens_details": {"cached_tokens": 5},
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 0,
    }


def test_stream_tool_use_indexes_count_tool_calls_only() -> None:
    converter = adapter().stream("chat", "claude-x")
    chunks = run_stream(converter, TOOL_STREAM)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1] == {"content": "Let me check."}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    # index is the position among tool calls (0, 1), not the content block index (1, 2)
    assert calls == [
        {
            "index": 0,
            "id": "toolu_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"city": "Pa'}},
        {"index": 0, "function": {"arguments": 'ris"}'}},
        {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    assert all(c["choices"][0]["index"] == 0 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert converter.usage == {"prompt_tokens": 400, "completion_tokens": 89, "total_tokens": 489}


def test_stream_error_event_raises_with_its_message() -> None:
    converter = adapter().stream("chat", "claude-x")
    converter.event(
        "message_start", json.dumps({"type": "message_start", "message": {"id": "m", "usage": {}}})
    )
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ProviderError, match="Overloaded"):
        converter.event("error", json.dumps(error))
    assert not converter.done
    with pytest.raises(ProviderError):
        converter.event(None, "{not json")


# -------------------------------------------------------------------- round trips against the mock


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    llm = MockLLMProcess("--flavor", "anthropic", "--chunks", str(CHUNKS))
    try:
        yield llm.url
    finally:
        llm.stop(signal.SIGTERM)


def send(url: str, call: UpstreamCall) -> tuple[int, bytes]:
    a = adapter(base_url=url)
    conn = http.client.HTTPConnection(a.host, a.port, timeout=5)
    try:
        conn.request(
            call.method.decode(),
            call.path.decode(),
            call.body,
            {k.decode(): v.decode() for k, v in call.headers},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_round_trip_plain_and_streamed(mock_url: str) -> None:
    a = adapter(base_url=mock_url)
    request = {"messages": [{"role": "system", "content": "Be brief."}, user("Say something")]}
    status, body = send(mock_url, a.build("chat", request, "mock-claude", "sk-ant"))
    assert status == 200
    resp = a.convert_response("chat", status, body, "mock-claude")
    assert resp["choices"][0]["message"]["content"] == answer_text(CHUNKS)
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"]["completion_tokens"] == CHUNKS

    status, body = send(mock_url, a.build("chat", {**request, "stream": True}, "mock-claude", "sk-ant"))
    assert status == 200
    converter = a.stream("chat", "mock-claude")
    chunks = run_stream(converter, body)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer_text(CHUNKS)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert converter.done and converter.usage["completion_tokens"] == CHUNKS


def test_round_trip_forced_tool_and_max_tokens(mock_url: str) -> None:
    a = adapter(base_url=mock_url)
    request = {
        "messages": [user("weather?")],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    status, body = send(mock_url, a.build("chat", request, "mock-claude", "k"))
    message = a.convert_response("chat", status, body, "mock-claude")["choices"][0]["message"]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "mock": True,
        "tool": "get_weather",
    }

    status, body = send(mock_url, a.build("chat", {**request, "stream": True}, "mock-claude", "k"))
    chunks = run_stream(a.stream("chat", "mock-claude"), body)
    calls = [d["tool_calls"][0] for c in chunks if "tool_calls" in (d := c["choices"][0]["delta"])]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {
        "mock": True,
        "tool": "get_weather",
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    status, body = send(
        mock_url, a.build("chat", {"messages": [user()], "max_tokens": 2}, "mock-claude", "k")
    )
    resp = a.convert_response("chat", status, body, "mock-claude")
    assert resp["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": answer_text(2)},
        "finish_reason": "length",
    }


def test_round_trip_errors(mock_url: str) -> None:
    a = adapter(base_url=mock_url)
    status, body = send(mock_url, a.build("chat", {"messages": [user()]}, "mock-claude", None))
    assert status == 401 and a.error(status, body) == ("x-api-key header is required", "authentication_error")
    # an assistant-first conversation converts faithfully; the API (and the mock) refuse it
    call = a.build("chat", {"messages": [{"role": "assistant", "content": "Hi"}]}, "mock-claude", "k")
    status, body = send(mock_url, call)
    assert status == 400 and a.error(status, body)[1] == "invalid_request_error"


# --------------------------------------------------------------------------- the real anthropic SDK


def test_sdk_plain_stream_and_tool_use(mock_url: str) -> None:
    client = anthropic.Anthropic(
        base_url=mock_url, api_key="sk-ant", max_retries=0, timeout=5, _strict_response_validation=True
    )
    messages = [{"role": "user", "content": "Say something"}]
    plain = client.messages.create(model="mock-claude", max_tokens=100, messages=messages)
    assert plain.content[0].type == "text" and plain.content[0].text == answer_text(CHUNKS)
    assert plain.stop_reason == "end_turn" and plain.usage.output_tokens == CHUNKS
    assert plain.id.startswith("msg_") and plain.model == "mock-claude"

    with client.messages.stream(model="mock-claude", max_tokens=100, messages=messages) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == [
        answer_text(CHUNKS)[len(answer_text(i)) : len(answer_text(i + 1))] for i in range(CHUNKS)
    ]
    assert final.content[0].text == answer_text(CHUNKS) and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == CHUNKS

    tools = [{"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}}]
    with client.messages.stream(
        model="mock-claude", max_tokens=100, messages=messages, tools=tools, tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"mock": True, "tool": "lookup"}

    page = client.models.list()
    assert [m.id for m in page.data] == ["mock-claude"]


def test_sdk_sees_typed_errors(mock_url: str) -> None:
    client = anthropic.Anthropic(
        base_url=mock_url, api_key="sk-ant", max_retries=0, timeout=5, _strict_response_validation=True
    )
    ok = {"model": "mock-claude", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.BadRequestError, match="alternate"):
        client.messages.create(**{**ok, "messages": [ok["messages"][0], ok["messages"][0]]})
    with pytest.raises(anthropic.RateLimitError) as rate:
        client.messages.create(**ok, extra_headers={"x-mock-status": "429"})
    assert rate.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.InternalServerError) as overloaded:  # 529: OverloadedError in newer SDKs
        client.messages.create(**ok, extra_headers={"x-mock-status": "529"})
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


# ------------------------------------------------------------------------------- mock validation


def respond(headers: dict[str, str], payload: Any) -> tuple[int, dict[str, Any]]:
    reply = MockLLM(flavor="anthropic").respond(
        "POST", "/v1/messages", "", headers, json.dumps(payload).encode()
    )
    return reply.status, json.loads(reply.body)


KEYED = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    ("headers", "payload", "status", "needle"),
    [
        ({"anthropic-version": "2023-06-01"}, {}, 401, "x-api-key"),
        ({"x-api-key": "k"}, {}, 400, "anthropic-version"),
        (
            KEYED,
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            400,
            "max_tokens: Field required",
        ),
        (KEYED, {"model": "m", "max_tokens": 5, "messages": []}, 400, "at least one message"),
        (
            KEYED,
            {"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]},
            400,
            "first",
        ),
        (
            KEYED,
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
            400,
            "non-empty",
        ),
        (
            KEYED,
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "any"},
            },
            400,
            "providing tools",
        ),
    ],
)
def test_mock_validates_like_the_api(headers: dict[str, str], payload: Any, status: int, needle: str) -> None:
    got_status, body = respond(headers, payload)
    assert got_status == status and needle in body["error"]["message"]
    assert body["type"] == "error"
    assert body["error"]["type"] == ("authentication_error" if status == 401 else "invalid_request_error")


def test_mock_flavor_error_shapes() -> None:
    flavor = AnthropicFlavor()
    reply = flavor.error(529, "Overloaded")
    assert json.loads(reply.body)["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert ("retry-after", "1") in reply.headers
    assert json.loads(flavor.error(500, "boom").body)["error"]["type"] == "api_error"
    assert (
        json.loads(flavor.error(503, "busy", "overloaded_error").body)["error"]["type"] == "overloaded_error"
    )


@settings(max_examples=300, deadline=None)
@given(text=st.text(), compact=st.booleans(), index=st.integers(0, 5))
def test_text_delta_fast_path_equals_the_full_parse(text: str, compact: bool, index: int) -> None:
    event = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    data = json.dumps(event, separators=(",", ":") if compact else None, ensure_ascii=compact)
    fast = AnthropicStream("m", 1).event("content_block_delta", data)
    slow = AnthropicStream("m", 1)._delta(json.loads(data))
    assert fast == slow

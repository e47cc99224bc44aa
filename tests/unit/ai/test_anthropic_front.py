"""The Anthropic front door's converters: Anthropic requests -> OpenAI, OpenAI answers and streams ->
Anthropic, checked with Higress's test pairs, a property test of stream well-formedness, and the real
anthropic SDK talking through the converters to the OpenAI mock (in-process, no sockets)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.anthropic_front import (
    FrontDoorError,
    OpenAIToAnthropicStream,
    anthropic_error_body,
    messages_to_openai,
    openai_to_messages_response,
)
from fastgw.ai.providers.anthropic import AnthropicAdapter
from fastgw.mock.core import MockLLM, answer_text
from fastgw.sse import SSEParser, serialize_event

Events = list[tuple[str, dict[str, Any]]]


def minimal(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **fields}


# -------------------------------------------------------------------------------------------- requests


def test_higress_pair_a_tool_use_becomes_tool_calls() -> None:
    body = {
        "model": "anthropic/claude-sonnet-4",
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "I'll help you search for information."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01D7FLrfh4GYq7yT1ULFeyMV",
                        "name": "web_search",
                        "input": {"query": "Claude AI capabilities", "max_results": 5},
                    },
                ],
            }
        ],
        "max_tokens": 1000,
    }
    request = messages_to_openai(body)
    assert request["model"] == "anthropic/claude-sonnet-4" and request["max_tokens"] == 1000
    [message] = request["messages"]
    assert message["role"] == "assistant" and message["content"] == "I'll help you search for information."
    [call] = message["tool_calls"]
    assert call["id"] == "toolu_01D7FLrfh4GYq7yT1ULFeyMV" and call["type"] == "function"
    assert call["function"]["name"] == "web_search"
    # Higress's Go output has sorted keys; key order is not meaning, the compact JSON object is
    assert json.loads(call["function"]["arguments"]) == {"max_results": 5, "query": "Claude AI capabilities"}
    assert " " not in call["function"]["arguments"].replace("Claude AI capabilities", "")


def test_higress_pair_d_reversed_tool_results_become_tool_messages() -> None:
    body = minimal(
        messages=[
            {"role": "user", "content": "What's the weather and time?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Beijing"}},
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "get_time",
                        "input": {"timezone": "Asia/Shanghai"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 25°C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "3:00 PM"}],
                    },
                    {"type": "text", "text": "Summarise."},
                ],
            },
        ]
    )
    messages = messages_to_openai(body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert messages[1]["content"] is None
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["get_weather", "get_time"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 25°C"}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_2", "content": "3:00 PM"}
    assert messages[4] == {"role": "user", "content": "Summarise."}


def test_system_sampling_tools_choice_thinking_metadata_stream() -> None:
    tools = [{"name": "lookup", "description": "Find things", "input_schema": {"type": "object"}}]
    request = messages_to_openai(
        minimal(
            system=[
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Be kind.", "cache_control": {}},
            ],
            temperature=0,
            top_p=0.5,
            stop_sequences=["END"],
            tools=tools,
            tool_choice={"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
            thinking={"type": "enabled", "budget_tokens": 2048},
            metadata={"user_id": "u-1"},
            stream=True,
        )
    )
    assert request["messages"][0] == {"role": "system", "content": "Be brief.\nBe kind."}
    assert request["temperature"] == 0 and request["top_p"] == 0.5 and request["stop"] == ["END"]
    assert request["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object"}, "description": "Find things"},
        }
    ]
    assert request["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert request["parallel_tool_calls"] is False
    assert request["reasoning_effort"] == "low" and request["user"] == "u-1"
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}

    choices = {"auto": "auto", "any": "required", "none": "none"}
    for kind, expected in choices.items():
        assert messages_to_openai(minimal(tools=tools, tool_choice={"type": kind}))["tool_choice"] == expected
    for budget, effort in (
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (16383, "medium"),
        (16384, "high"),
    ):
        thinking = {"type": "enabled", "budget_tokens": budget}
        assert messages_to_openai(minimal(thinking=thinking))["reasoning_effort"] == effort
    plain = messages_to_openai(minimal(thinking={"type": "disabled"}))
    assert set(plain) == {"model", "messages", "max_tokens"}


def test_images_and_thinking_history() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What are these?"},
    ]
    history = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Cats."},
    ]
    messages = messages_to_openai(
        minimal(
            messages=[
                {"role": "user", "content": content},
                {"role": "assistant", "content": history},
                {"role": "user", "content": "Sure?"},
            ]
        )
    )["messages"]
    assert messages[0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What are these?"},
    ]
    assert messages[1] == {  # the signed thinking rides along for an Anthropic provider
        "role": "assistant",
        "content": "Cats.",
        "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}],
    }


def test_round_trip_through_the_anthropic_adapter_is_lossless() -> None:
    """Anthropic -> OpenAI (front door) -> Anthropic (adapter) gives back the request."""
    original = {
        "model": "claude-x",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "temperature": 0,
        "stop_sequences": ["END"],
        "tools": [
            {"name": "weather", "description": "d", "input_schema": {"type": "object", "properties": {}}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u"},
    }
    adapter = AnthropicAdapter({"name": "c", "type": "anthropic"})
    call = adapter.build("chat", messages_to_openai(original), "claude-x", "k")
    assert json.loads(call.body) == original


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], "JSON object"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        (minimal(max_tokens=None), "max_tokens"),
        (minimal(max_tokens=0), "max_tokens"),
        (minimal(max_tokens="100"), "max_tokens"),
        (minimal(max_tokens=True), "max_tokens"),
        (minimal(messages=[]), "messages"),
        (minimal(messages="hi"), "messages"),
        (minimal(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
        (minimal(messages=[{"role": "user"}]), "messages.0.content"),
        (minimal(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (minimal(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages.0.content.0"),
        (minimal(messages=[{"role": "user", "content": [{"type": "document"}]}]), "document"),
        (minimal(temperature="hot"), "temperature"),
        (minimal(stop_sequences="END"), "stop_sequences"),
        (minimal(tools=[{"name": "t"}]), "only available on Anthropic"),
        (minimal(tools=[{"description": "no name", "input_schema": {}}]), "tools.0.name"),
        (minimal(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (minimal(thinking={"type": "enabled"}), "budget_tokens"),
        (minimal(stream="yes"), "stream"),
    ],
)
def test_validation_errors_are_clear_400s(body: Any, needle: str) -> None:
    with pytest.raises(FrontDoorError) as info:
        messages_to_openai(body)
    assert info.value.status == 400 and needle in info.value.message


def test_error_bodies() -> None:
    expected = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        422: "invalid_request_error",
        429: "rate_limit_error",
        500: "api_error",
        502: "api_error",
        529: "overloaded_error",
    }
    for status, kind in expected.items():
        assert anthropic_error_body(status, "why") == {
            "type": "error",
            "error": {"type": kind, "message": "why"},
        }


# ------------------------------------------------------------------------------------------- responses


def test_higress_pair_b_tool_calls_response() -> None:
    resp = {
        "id": "gen-1756214072-tVFkPBV6lxee00IqNAC5",
        "model": "anthropic/claude-sonnet-4",
        "object": "chat.completion",
        "created": 1756214072,
        "choices": [
            {
                "finish_reason": "tool_calls",
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll analyze the README file to understand this project's purpose.",
                    "tool_calls": [
                        {
                            "id": "toolu_vrtx_017ijjgx8hpigatPzzPW59Wq",
                            "index": 0,
                            "type": "function",
                            "function": {
                                "name": "Read",
                                "arguments": '{"file_path": "/Users/zhangty/git/higress/README.md"}',
                            },
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 14923, "completion_tokens": 81, "total_tokens": 15004},
    }
    assert openai_to_messages_response(resp, "anthropic/claude-sonnet-4") == {
        "id": "gen-1756214072-tVFkPBV6lxee00IqNAC5",
        "type": "message",
        "role": "assistant",
        "model": "anthropic/claude-sonnet-4",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 14923, "output_tokens": 81},
        "content": [
            {"type": "text", "text": "I'll analyze the README file to understand this project's purpose."},
            {
                "type": "tool_use",
                "id": "toolu_vrtx_017ijjgx8hpigatPzzPW59Wq",
                "name": "Read",
                "input": {"file_path": "/Users/zhangty/git/higress/README.md"},
            },
        ],
    }


def completion(
    message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def test_response_thinking_stop_reasons_cache_and_broken_arguments() -> None:
    resp = openai_to_messages_response(completion({"content": "42", "reasoning_content": "think"}), "public")
    assert resp["model"] == "public"
    assert resp["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "text", "text": "42"},
    ]
    for finish, reason in (
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ):
        assert openai_to_messages_response(completion({"content": "x"}, finish), "m")["stop_reason"] == reason
    cached = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 80}}
    usage = openai_to_messages_response(completion({"content": "x"}, usage=cached), "m")["usage"]
    assert usage == {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 80,
                     "cache_creation_input_tokens": 0}
    broken = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
    resp = openai_to_messages_response(
        completion({"content": None, "tool_calls": [broken]}, "tool_calls"), "m"
    )
    assert resp["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert openai_to_messages_response(completion({"content": ""}), "m")["content"] == []


# --------------------------------------------------------------------------------------------- streams


def feed(converter: OpenAIToAnthropicStream, chunks: list[dict[str, Any]]) -> list[Events]:
    return [converter.chunk(c) for c in chunks]


def kinds(events: Events) -> list[str]:
    return [name for name, _ in events]


def test_higress_pair_c_usage_in_every_chunk_does_not_stop_early() -> None:
    base = {"id": "stream-2", "created": 1, "model": "m", "object": "chat.completion.chunk"}

    def chunk(
        delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None
    ) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {**base, "choices": choices, **({"usage": usage} if usage else {})}

    final_usage = {"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110}
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk(
            {"reasoning_content": "Let"},
            usage={"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        ),
        chunk(
            {"reasoning_content": " me"},
            usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        ),
        chunk({"content": "", "reasoning_content": ""}, "length"),
        chunk(None, usage=final_usage),
        chunk(None, usage=final_usage),  # the duplicate
    ]
    converter = OpenAIToAnthropicStream("m")
    out = feed(converter, chunks)
    # Higress emits a message_delta(stop_reason=nil) for each mid-stream usage; we emit none, so the
    # stream has exactly one message_delta, as Anthropic's own streams do
    assert [kinds(e) for e in out] == [
        ["message_start"],
        ["content_block_start", "content_block_delta"],
        ["content_block_delta"],
        ["content_block_stop"],
        ["message_delta", "message_stop"],
        [],
    ]
    assert converter.end() == []  # [DONE]
    start = out[0][0][1]["message"]
    assert start["id"] == "stream-2" and start["model"] == "m" and start["usage"]["input_tokens"] == 0
    assert out[1][0][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert [e[1]["delta"] for e in out[1][1:] + out[2]] == [
        {"type": "thinking_delta", "thinking": "Let"},
        {"type": "thinking_delta", "thinking": " me"},
    ]
    assert out[4][0][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"input_tokens": 10, "output_tokens": 100},
    }


def test_stream_text_then_tool_calls_then_end_without_usage() -> None:
    converter = OpenAIToAnthropicStream("public", message_id="msg_fixed")
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    chunks = [
        {"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}}]},
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "check."}}]},
        {"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        {
            "id": "x",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}}
            ],
        },
        {
            "id": "x",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":1}'}}]}}
            ],
        },
        {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    events = [e for batch in feed(converter, chunks) for e in batch] + converter.end()
    assert kinds(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"] == "msg_fixed" and events[0][1]["message"]["model"] == "public"
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    assert [e[1]["index"] for e in events[6:9]] == [1, 1, 1]
    assert "".join(e[1]["delta"]["partial_json"] for e in events[6:8]) == '{"city":1}'
    assert events[9][1]["delta"]["stop_reason"] == "tool_use"
    assert events[9][1]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert converter.chunk(chunks[0]) == [] and converter.end() == []


def test_empty_stream_still_yields_a_complete_message() -> None:
    assert kinds(OpenAIToAnthropicStream("m").end()) == ["message_start", "message_delta", "message_stop"]


# ----------------------------------------------------------------- property: well-formed event sequences

text = st.text(alphabet="ab ", max_size=3)
tool_delta = st.fixed_dictionaries(
    {"index": st.integers(0, 2)},
    optional={
        "id": st.sampled_from(["call_a", "call_b"]),
        "function": st.fixed_dictionaries({}, optional={"name": st.just("f"), "arguments": text}),
    },
)
delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": st.one_of(st.none(), text),
        "reasoning_content": text,
        "tool_calls": st.lists(tool_delta, max_size=2),
    },
)
choice = st.fixed_dictionaries(
    {"index": st.just(0), "delta": delta},
    optional={"finish_reason": st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"])},
)
usage = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 50), "completion_tokens": st.integers(0, 50)},
    optional={"prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 5)})},
)
chunk = st.fixed_dictionaries(
    {
        "id": st.just("chatcmpl-p"),
        "choices": st.one_of(st.just([]), st.lists(choice, min_size=1, max_size=1)),
    },
    optional={"usage": st.one_of(st.none(), usage)},
)

DELTA_FOR_BLOCK = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}


def check_well_formed(events: Events) -> None:
    names = kinds(events)
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names.count("message_delta") == 1 and names.count("message_stop") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    open_block: tuple[int, str] | None = None
    next_index = 0
    for name, data in events[1:-2]:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block = (next_index, data["content_block"]["type"])
            next_index += 1
        elif name == "content_block_delta":
            assert open_block is not None and data["index"] == open_block[0]
            assert data["delta"]["type"] == DELTA_FOR_BLOCK[open_block[1]]
        else:
            assert name == "content_block_stop" and open_block is not None and data["index"] == open_block[0]
            open_block = None
    assert open_block is None  # message_delta comes after every block closed
    assert events[-2][1]["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use", "refusal")


@settings(max_examples=300, deadline=None)
@given(st.lists(chunk, max_size=12), st.booleans())
def test_property_any_chunk_sequence_gives_a_well_formed_stream(
    chunks: list[dict[str, Any]], done: bool
) -> None:
    converter = OpenAIToAnthropicStream("m")
    events: Events = []
    expected_text = ""
    for c in chunks:
        if not converter.finished:
            for ch in c["choices"]:
                expected_text += ch["delta"].get("content") or ""
        events += converter.chunk(c)
    events += converter.end()
    if done:
        assert converter.end() == [] and converter.chunk({"choices": []}) == []
    check_well_formed(events)
    texts = [
        d["delta"]["text"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
    ]
    assert "".join(texts) == expected_text  # no text is lost or invented


# --------------------------------------------- the real anthropic SDK through the converters to the OpenAI mock

CHUNKS = 5


def front_door(request: httpx2.Request) -> httpx2.Response:
    """A minimal Anthropic front door over the in-process OpenAI mock, the way the engine will wire it."""
    try:
        body = messages_to_openai(json.loads(request.content))
    except FrontDoorError as exc:
        return httpx2.Response(exc.status, json=anthropic_error_body(exc.status, exc.message))
    mock = MockLLM(chunks=CHUNKS)
    reply = mock.respond("POST", "/v1/chat/completions", "", {}, json.dumps(body).encode())
    if reply.status != 200:
        message = json.loads(reply.body)["error"]["message"]
        return httpx2.Response(reply.status, json=anthropic_error_body(reply.status, message))
    if reply.events is None:
        return httpx2.Response(200, json=openai_to_messages_response(json.loads(reply.body), body["model"]))
    converter = OpenAIToAnthropicStream(body["model"])
    parser = SSEParser()
    out = b""
    for event in parser.feed(b"".join(reply.events)) + parser.finish():
        converted = converter.end() if event.is_done else converter.chunk(json.loads(event.data))
        out += b"".join(serialize_event(json.dumps(data), name) for name, data in converted)
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=out)


@pytest.fixture
def client() -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(front_door)),
        max_retries=0,
        _strict_response_validation=True,  # our shapes must satisfy the SDK's own models
    )


def test_sdk_plain_and_stream_through_the_converters(client: anthropic.Anthropic) -> None:
    ask = {"model": "mock-gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "Say something"}]}
    plain = client.messages.create(**ask)
    assert plain.content[0].text == answer_text(CHUNKS) and plain.stop_reason == "end_turn"
    assert plain.usage.output_tokens == CHUNKS and plain.usage.input_tokens > 0

    with client.messages.stream(**ask) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == answer_text(CHUNKS) and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == CHUNKS and final.usage.input_tokens == plain.usage.input_tokens


def test_sdk_tool_use_through_the_converters(client: anthropic.Anthropic) -> None:
    tools = [{"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}}]
    ask = {
        "model": "mock-gpt",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Look it up"}],
        "tools": tools,
        "tool_choice": {"type": "tool", "name": "lookup"},
    }
    plain = client.messages.create(**ask)
    assert plain.stop_reason == "tool_use" and plain.content[0].input == {"mock": True, "tool": "lookup"}
    with client.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"mock": True, "tool": "lookup"}


def test_sdk_sees_front_door_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(model="mock-gpt", max_tokens=0, messages=[{"role": "user", "content": "x"}])


def test_interleaved_parallel_tool_calls_are_kept_whole_and_well_formed() -> None:
    def call(index: int, arguments: str, **first: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if first:
            entry["id"] = first["id"]
            entry["function"]["name"] = first["name"]
        return {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [entry]}, "finish_reason": None}]}

    converter = OpenAIToAnthropicStream("m")
    events: Events = []
    for chunk in [call(0, '{"a":', id="call_a", name="f"), call(1, '{"b"', id="call_b", name="g"),
                  call(0, " 1}"), call(1, ": 2}"),
                  {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]:
        events += converter.chunk(chunk)
    events += converter.end()
    check_well_formed(events)
    inputs: dict[int, str] = {}
    names = {}
    for name, data in events:
        if name == "content_block_start":
            names[data["index"]] = data["content_block"]["name"]
        if name == "content_block_delta":
            inputs[data["index"]] = inputs.get(data["index"], "") + data["delta"]["partial_json"]
    assert {names[i]: json.loads(text) for i, text in inputs.items()} == {"f": {"a": 1}, "g": {"b": 2}}

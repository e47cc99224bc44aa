"""Gemini adapter and mock flavor: request/response/stream conversion (including the defects found in
Higress's converter) and round trips, text and tool calls, against the Gemini mock over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from fastgw.ai.providers import adapter_for
from fastgw.ai.providers.base import Adapter, ConversionError, ProviderError, UnsupportedOperation
from fastgw.mock.core import answer_text, embed_vector
from tests.unit.ai.providers.test_openai import (
    CHUNKS,
    convert_stream,
    finish_reasons,
    send,
    start_mocks,
    streamed_text,
)


def make(base_url: str | None = None, **options: Any) -> Adapter:
    return adapter_for({"name": "gemini-test", "type": "gemini", "base_url": base_url, "options": options})


def body_of(request: dict[str, Any], model: str = "gemini-2.0-flash", **options: Any) -> dict[str, Any]:
    return json.loads(make(**options).build("chat", request, model, "g-key").body)


USER = [{"role": "user", "content": "hi"}]

# ------------------------------------------------------------------------------------------- request


def test_paths_headers_and_defaults() -> None:
    adapter = make(headers={"X-Goog-User-Project": "p1"})
    assert (adapter.scheme, adapter.host, adapter.base_path) == (
        "https",
        "generativelanguage.googleapis.com",
        "",
    )
    plain = adapter.build("chat", {"messages": USER}, "gemini-2.0-flash", "g-key")
    assert plain.path == b"/v1beta/models/gemini-2.0-flash:generateContent"
    assert plain.headers == [
        (b"content-type", b"application/json"),
        (b"x-goog-api-key", b"g-key"),
        (b"x-goog-user-project", b"p1"),
    ]
    streaming = make(api_version="v1").build(
        "chat", {"messages": USER, "stream": True}, "models/gemini-pro", None
    )
    assert streaming.path == b"/v1/models/gemini-pro:streamGenerateContent?alt=sse"
    assert [name for name, _ in streaming.headers] == [b"content-type"]
    with pytest.raises(UnsupportedOperation):
        adapter.build("completions", {"prompt": "x"}, "gemini-2.0-flash", "k")
    with pytest.raises(UnsupportedOperation):
        adapter.stream("embeddings", "text-embedding-004")


def test_conversation_with_system_images_and_tool_results() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather and time where these are?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/photo.JPG?size=2", "detail": "low"},
                },
                {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "3:00 PM"},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 25, "sky": "sunny"}'},
        {"role": "assistant", "content": "Sunny, 25 C, 3 PM."},
        {"role": "user", "content": ""},
        {"role": "user", "content": "Thanks!"},
    ]
    body = body_of({"messages": messages})
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Weather and time where these are?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"fileUri": "https://example.com/photo.JPG?size=2", "mimeType": "image/jpeg"}},
                {"fileData": {"fileUri": "https://example.com/photo"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",  # both results in one turn, each named through its tool_call_id
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"content": "3:00 PM"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 25, "sky": "sunny"}}},
            ],
        },
        {"role": "model", "parts": [{"text": "Sunny, 25 C, 3 PM."}]},
        {"role": "user", "parts": [{"text": "Thanks!"}]},
    ]
    assert "generationConfig" not in body and "tools" not in body


def test_repeated_tool_call_ids_resolve_to_the_latest_call() -> None:
    """Our own ids restart at call_0 in every answer: a result belongs to the latest call with its id."""
    call = {"id": "call_0", "type": "function"}
    messages = [
        *USER,
        {"role": "assistant", "tool_calls": [{**call, "function": {"name": "first", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "1"},
        {"role": "assistant", "tool_calls": [{**call, "function": {"name": "second", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "2"},
    ]
    names = [
        p["functionResponse"]["name"]
        for c in body_of({"messages": messages})["contents"]
        for p in c["parts"]
        if "functionResponse" in p
    ]
    assert names == ["first", "second"]


def test_generation_config_keeps_zeros_and_string_stop() -> None:
    """Higress lost temperature 0 (omitempty) and failed on a string stop."""
    request = {
        "messages": USER,
        "temperature": 0,
        "top_p": 0,
        "top_k": 0,
        "n": 2,
        "presence_penalty": 0.0,
        "frequency_penalty": -0.5,
        "seed": 0,
        "max_tokens": 0,
        "stop": "END",
    }
    assert body_of(request)["generationConfig"] == {
        "temperature": 0,
        "topP": 0,
        "topK": 0,
        "candidateCount": 2,
        "presencePenalty": 0.0,
        "frequencyPenalty": -0.5,
        "seed": 0,
        "maxOutputTokens": 0,
        "stopSequences": ["END"],
    }
    config = body_of({"messages": USER, "stop": ["a", "b"], "max_tokens": 10, "max_completion_tokens": 20})
    assert config["generationConfig"] == {"stopSequences": ["a", "b"], "maxOutputTokens": 20}


def test_response_format_tools_tool_choice_and_safety_settings() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    tool = {
        "type": "function",
        "function": {"name": "lookup", "description": "Find it", "parameters": schema},
    }
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    body = body_of(
        {
            "messages": USER,
            "tools": [tool, {"type": "function", "function": {"name": "noargs"}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema, "strict": True},
            },
        },
        safety_settings=safety,
    )
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "lookup", "description": "Find it", "parametersJsonSchema": schema},
                {"name": "noargs"},
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}
    }
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert body["safetySettings"] == safety
    for choice, mode in (("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")):
        converted = body_of({"messages": USER, "tools": [tool], "tool_choice": choice})
        assert converted["toolConfig"] == {"functionCallingConfig": {"mode": mode}}
    json_mode = body_of({"messages": USER, "response_format": {"type": "json_object"}})
    assert json_mode["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in body_of({"messages": USER, "response_format": {"type": "text"}})


@pytest.mark.parametrize(
    ("request_body", "match"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "no earlier tool call"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "content part"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}
                ]
            },
            "scheme",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
                    }
                ]
            },
            "base64",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "JSON object",
        ),
        ({"messages": USER, "tools": [{"type": "code_interpreter"}]}, "function tools"),
        ({"messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": USER, "response_format": {"type": "grammar"}}, "response_format"),
    ],
)
def test_requests_gemini_cannot_express_are_refused(request_body: dict[str, Any], match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        make().build("chat", request_body, "gemini-2.0-flash", "k")


def test_embeddings_request() -> None:
    call = make().build("embeddings", {"input": ["a", "b"], "dimensions": 8}, "text-embedding-004", "k")
    assert call.path == b"/v1beta/models/text-embedding-004:batchEmbedContents"
    assert json.loads(call.body) == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 8,
            }
            for t in ("a", "b")
        ]
    }
    single = json.loads(make().build("embeddings", {"input": "one"}, "text-embedding-004", "k").body)
    assert single["requests"] == [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "one"}]}}
    ]
    with pytest.raises(ConversionError, match="text"):
        make().build("embeddings", {"input": [1, 2, 3]}, "text-embedding-004", "k")


# ------------------------------------------------------------------------------------------ response


def convert(obj: Any, op: str = "chat") -> dict[str, Any]:
    return make().convert_response(op, 200, json.dumps(obj).encode(), "gemini-2.0-flash")


RECORDED_TEXT = {
    "candidates": [
        {
            "content": {"parts": [{"text": "Hello! "}, {"text": "How can I help?"}], "role": "model"},
            "finishReason": "STOP",
            "avgLogprobs": -0.05,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 9,
        "candidatesTokenCount": 12,
        "totalTokenCount": 21,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
    },
    "modelVersion": "gemini-2.0-flash",
    "responseId": "wP9iaO2nKuSmnvgP0Ma_8Qk",
}


def test_text_response() -> None:
    answer = convert(RECORDED_TEXT)
    assert answer["id"] == "chatcmpl-wP9iaO2nKuSmnvgP0Ma_8Qk" and answer["object"] == "chat.completion"
    assert answer["model"] == "gemini-2.0-flash" and isinstance(answer["created"], int)
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


RECORDED_TOOL_CALLS = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": "Checking both."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "units": ["C"]}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 12, "totalTokenCount": 52},
    "modelVersion": "gemini-2.5-flash",
}


def test_function_calls_become_tool_calls() -> None:
    """Higress's inverted check dropped exactly these."""
    message = convert(RECORDED_TOOL_CALLS)["choices"][0]["message"]
    assert message["content"] == "Checking both."
    ids = [call.pop("id") for call in message["tool_calls"]]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids) and len(set(ids)) == 2
    assert message["tool_calls"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","units":["C"]}'},
        },
        {"type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "units": ["C"]}
    assert convert(RECORDED_TOOL_CALLS)["choices"][0]["finish_reason"] == "tool_calls"
    only_call = {
        "candidates": [{"content": {"parts": [RECORDED_TOOL_CALLS["candidates"][0]["content"]["parts"][2]]}}]
    }
    assert convert(only_call)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("LANGUAGE", "stop"),
        ("OTHER", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
def test_finish_reasons(gemini: str, openai: str) -> None:
    candidate = {"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": gemini}
    assert convert({"candidates": [candidate]})["choices"][0]["finish_reason"] == openai
    chunks, converter = convert_stream(
        make(), "chat", "g", f"data: {json.dumps({'candidates': [candidate]})}\r\n\r\n".encode()
    )
    assert finish_reasons(chunks) == [openai] and converter.done


def test_blocked_prompt_is_a_filtered_answer_with_no_content() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
        "modelVersion": "gemini-2.0-flash",
    }
    choice = convert(blocked)["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == "" and "PROHIBITED_CONTENT" in choice["message"]["refusal"]
    assert convert(blocked)["usage"] == {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}


def test_thoughts_candidates_and_detailed_usage() -> None:
    response = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Plan: add.", "thought": True}, {"text": "4"}]},
                "finishReason": "STOP",
                "index": 0,
            },
            {"finishReason": "SAFETY", "index": 1},  # a blocked candidate has no content
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 41,
        },
    }
    answer = convert(response)
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "4",
        "reasoning_content": "Plan: add.",
    }
    assert answer["choices"][1] == {
        "index": 1,
        "message": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": "content_filter",
    }
    assert answer["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 31,
        "total_tokens": 41,
        "completion_tokens_details": {"reasoning_tokens": 30},
        "prompt_tokens_details": {"cached_tokens": 4},
    }


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"candidates": "x"}',
        b'{"candidates": [7]}',
        b'{"candidates": [{"content": {"parts": "text"}}]}',
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}',
        b'{"candidates": [{"content": {"parts": [{"text": "x"}]}}], "usageMetadata": {"promptTokenCount": "9"}}',
    ],
)
def test_garbage_responses_raise(body: bytes) -> None:
    with pytest.raises(ProviderError):
        make().convert_response("chat", 200, body, "gemini-2.0-flash")


def test_embeddings_response() -> None:
    answer = convert({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}, "embeddings")
    assert answer == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
            {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
        ],
        "model": "gemini-2.0-flash",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    with pytest.raises(ProviderError):
        convert({"embedding": {"values": [0.1]}}, "embeddings")


# ------------------------------------------------------------------------------------------- stream

# Higress's test payloads (test/gemini.go), as the SSE events the real API sends with alt=sse.
RECORDED_STREAM = (
    b'data: {"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"finishReason":"","index":0}],'
    b'"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":5,"totalTokenCount":14},"responseId":"r1"}\r\n\r\n'
    b'data: {"candidates":[{"content":{"parts":[{"text":"! How can I help you today?"}],"role":"model"},'
    b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":12,'
    b'"totalTokenCount":21},"responseId":"r1"}\r\n\r\n'
)


def test_stream_text_finish_and_usage() -> None:
    chunks, converter = convert_stream(make(), "chat", "gemini-2.0-flash", RECORDED_STREAM)
    assert {c["id"] for c in chunks} == {"chatcmpl-r1"} and {c["object"] for c in chunks} == {
        "chat.completion.chunk"
    }
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": "Hello"},
        {"content": "! How can I help you today?"},
        {},
        None,
    ]
    assert finish_reasons(chunks) == ["stop"]
    usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    assert chunks[-1]["usage"] == usage and converter.usage == usage and converter.done


def test_stream_tool_calls_thoughts_and_candidates() -> None:
    events = [
        {"candidates": [{"content": {"parts": [{"text": "Hmm.", "thought": True}]}, "index": 0}]},
        {
            "candidates": [
                {"content": {"parts": [{"functionCall": {"name": "a", "args": {"x": 1}}}]}, "index": 0},
                {"content": {"parts": [{"text": "other"}]}, "index": 1},
            ]
        },
        {
            "candidates": [
                {
                    "content": {"parts": [{"functionCall": {"name": "b", "args": {}}}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ]
        },
        {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "MAX_TOKENS", "index": 1}]},
    ]
    converter = make().stream("chat", "gemini-2.5-pro")
    chunks = []
    for i, event in enumerate(events):
        chunks += converter.event(None, json.dumps(event))
        assert converter.done is (i == len(events) - 1)  # done once every candidate that spoke finished
    first = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == 0]
    assert first[0]["delta"] == {"role": "assistant", "reasoning_content": "Hmm."}
    calls = [call for c in first for call in c["delta"].get("tool_calls", [])]
    ids = [call.pop("id") for call in calls]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids) and len(set(ids)) == 2
    assert calls == [
        {"index": 0, "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
        {"index": 1, "type": "function", "function": {"name": "b", "arguments": "{}"}},
    ]
    assert [c["finish_reason"] for c in first if c["finish_reason"]] == ["tool_calls"]
    second = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == 1]
    assert second[0]["delta"] == {"role": "assistant", "content": "other"}
    assert second[-1]["finish_reason"] == "length"
    assert converter.usage is None and len({c["id"] for c in chunks}) == 1


def test_stream_blocked_prompt_errors_and_garbage() -> None:
    converter = make().stream("chat", "g")
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
    }
    chunks = converter.event(None, json.dumps(blocked))
    assert finish_reasons(chunks) == ["content_filter"] and converter.done
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 3
    assert converter.event(None, json.dumps(RECORDED_TEXT)) == []  # nothing after the end
    fresh = make().stream("chat", "g")
    assert fresh.event(None, '{"usageMetadata": {"promptTokenCount": 3}}') == [] and not fresh.done
    assert fresh.event(None, "") == []
    error = '{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}'
    with pytest.raises(ProviderError, match="UNAVAILABLE.*overloaded"):
        fresh.event(None, error)
    for garbage in ("{not json", "[1]", '{"candidates": {}}'):
        with pytest.raises(ProviderError):
            make().stream("chat", "g").event(None, garbage)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",'
            b'"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}',
            ("API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"),
        ),
        (
            b'[{"error":{"code":429,"message":"Resource has been exhausted.","status":"RESOURCE_EXHAUSTED"}}]',
            ("Resource has been exhausted.", "RESOURCE_EXHAUSTED"),
        ),
        (b'{"error":{"code":500,"message":"Internal error"}}', ("Internal error", "500")),
        (b"<html>Error 502</html>", ("<html>Error 502</html>", None)),
        (b'{"error": 5}', ('{"error": 5}', None)),
    ],
)
def test_error_bodies(body: bytes, expected: tuple[str, str | None]) -> None:
    assert make().error(400, body) == expected


# -------------------------------------------------------------------------------- against the mock


@pytest.fixture(scope="module")
def adapter() -> Iterator[Adapter]:
    for ports in start_mocks("gemini"):
        yield make(f"http://127.0.0.1:{ports['gemini']}")


CHAT = {"messages": [{"role": "system", "content": "Be kind."}, *USER], "temperature": 0}


def test_round_trip_plain_and_streamed(adapter: Adapter) -> None:
    status, body = send(adapter, adapter.build("chat", CHAT, "gemini-2.0-flash", "g-key"))
    assert status == 200, body
    answer = adapter.convert_response("chat", status, body, "gemini-2.0-flash")
    assert answer["choices"][0]["message"]["content"] == answer_text(CHUNKS)
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] == CHUNKS

    status, body = send(adapter, adapter.build("chat", {**CHAT, "stream": True}, "gemini-2.0-flash", "g-key"))
    assert status == 200 and b"\r\n\r\n" in body  # Google frames SSE with CRLF
    chunks, converter = convert_stream(adapter, "chat", "gemini-2.0-flash", body)
    assert streamed_text(chunks) == answer_text(CHUNKS) and finish_reasons(chunks) == ["stop"]
    assert len({c["id"] for c in chunks}) == 1 and converter.done
    assert converter.usage["completion_tokens"] == CHUNKS and chunks[-1]["usage"] == converter.usage

    two = {**CHAT, "n": 2, "max_tokens": 3}
    status, body = send(adapter, adapter.build("chat", two, "gemini-2.0-flash", "g-key"))
    choices = adapter.convert_response("chat", status, body, "gemini-2.0-flash")["choices"]
    assert [(c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (answer_text(3), "length")
    ] * 2


def test_round_trip_tool_call_and_result(adapter: Adapter) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    request = {"messages": USER, "tools": tools, "tool_choice": "required"}
    status, body = send(adapter, adapter.build("chat", request, "gemini-2.0-flash", "g-key"))
    assert status == 200, body
    choice = adapter.convert_response("chat", status, body, "gemini-2.0-flash")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"mock": True, "tool": "get_weather"}

    status, body = send(
        adapter, adapter.build("chat", {**request, "stream": True}, "gemini-2.0-flash", "g-key")
    )
    chunks, converter = convert_stream(adapter, "chat", "gemini-2.0-flash", body)
    streamed = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert streamed[0].pop("id") != call["id"]  # every answer's calls get fresh ids
    assert streamed == [{"index": 0, **{k: v for k, v in call.items() if k != "id"}}]
    assert finish_reasons(chunks) == ["tool_calls"] and converter.done

    follow_up = {
        "messages": [
            *USER,
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "clear"}'},
        ],
        "tools": tools,
    }
    status, body = send(adapter, adapter.build("chat", follow_up, "gemini-2.0-flash", "g-key"))
    assert adapter.convert_response("chat", status, body, "g")["choices"][0]["message"][
        "content"
    ] == answer_text(CHUNKS)


def test_round_trip_blocked_embeddings_and_errors(adapter: Adapter) -> None:
    blocked = {"messages": [{"role": "user", "content": "please blockme"}]}
    status, body = send(adapter, adapter.build("chat", blocked, "gemini-2.0-flash", "g-key"))
    assert (
        adapter.convert_response("chat", status, body, "g")["choices"][0]["finish_reason"] == "content_filter"
    )
    status, body = send(
        adapter, adapter.build("chat", {**blocked, "stream": True}, "gemini-2.0-flash", "g-key")
    )
    assert finish_reasons(convert_stream(adapter, "chat", "g", body)[0]) == ["content_filter"]

    status, body = send(
        adapter, adapter.build("embeddings", {"input": ["a", "b"]}, "text-embedding-004", "g-key")
    )
    data = adapter.convert_response("embeddings", status, body, "text-embedding-004")["data"]
    assert [d["embedding"] for d in data] == [embed_vector("a"), embed_vector("b")]

    status, body = send(adapter, adapter.build("chat", CHAT, "gemini-2.0-flash", None))
    assert status == 403 and adapter.error(status, body)[1] == "PERMISSION_DENIED"
    status, body = send(adapter, adapter.build("chat", CHAT, "gemini-2.0-flash", "mock-429"))
    assert (status, adapter.error(status, body)[1]) == (429, "RESOURCE_EXHAUSTED")
    call = adapter.build("chat", CHAT, "gemini-2.0-flash", None)
    call.path += b"?key=g-key"  # Google also takes the key as a query parameter
    assert send(adapter, call)[0] == 200

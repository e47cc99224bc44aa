"""OpenAI-family adapters (openai, openai-compatible, ollama, qwen, deepseek) and their mock flavors.

Conversion is checked on recorded provider payloads; then each adapter's call goes over HTTP to the
real mock server of its flavor, and the real ``openai`` SDK drives the same mocks to show they are
wire-faithful. The mock helpers here (start, send, SSE split) are shared by the Azure and Gemini tests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from fastgw.ai.providers import adapter_for
from fastgw.ai.providers.base import Adapter, ProviderError, UnsupportedOperation, UpstreamCall
from fastgw.mock.core import answer_text

ROOT = Path(__file__).resolve().parents[4]
READY = re.compile(r"mock-llm listening on http://127\.0\.0\.1:(\d+) ")
CHUNKS = 5

# ------------------------------------------------------------------------------------- shared helpers


def start_mocks(*flavors: str) -> Iterator[dict[str, int]]:
    """Start one ``fastgw mock-llm --port 0`` per flavor (in parallel), yield flavor -> port, stop them."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = {
        flavor: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastgw",
                "mock-llm",
                "--flavor",
                flavor,
                "--port",
                "0",
                "--chunks",
                str(CHUNKS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for flavor in flavors
    }
    try:
        ports = {}
        for flavor, proc in procs.items():
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
            match = READY.match(line)
            assert match, f"mock-llm --flavor {flavor} did not start: {line!r}"
            ports[flavor] = int(match.group(1))
        yield ports
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(5)


def send(adapter: Adapter, call: UpstreamCall, extra: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Send an adapter's call where its base_url points (the mock), as the engine would."""
    conn = http.client.HTTPConnection(adapter.host, adapter.port, timeout=5)
    try:
        headers = {k.decode(): v.decode() for k, v in call.headers} | (extra or {})
        conn.request(call.method.decode(), call.path.decode(), call.body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, joined data) pairs; LF or CRLF line ends."""
    events = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, "\n".join(data)))
    return events


def convert_stream(adapter: Adapter, op: str, model: str, body: bytes) -> tuple[list[dict[str, Any]], Any]:
    """Feed a whole SSE body through the adapter's stream converter: (chunks, converter)."""
    converter = adapter.stream(op, model)
    chunks = [c for name, data in sse_events(body) for c in converter.event(name, data)]
    return chunks + converter.end(), converter


def streamed_text(chunks: list[dict[str, Any]], field: str = "content") -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])


def finish_reasons(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]


# ------------------------------------------------------------------------------------------- request


def make(kind: str, base_url: str | None = None, **options: Any) -> Adapter:
    return adapter_for({"name": f"{kind}-test", "type": kind, "base_url": base_url, "options": options})


def test_default_base_urls_and_the_one_that_is_required() -> None:
    assert (make("openai").host, make("openai").port, make("openai").base_path) == (
        "api.openai.com",
        443,
        "/v1",
    )
    assert (make("ollama").host, make("ollama").port, make("ollama").scheme) == ("127.0.0.1", 11434, "http")
    assert make("qwen").base_path == "/compatible-mode/v1"
    assert make("deepseek").host == "api.deepseek.com"
    with pytest.raises(ProviderError, match="base_url"):
        make("openai-compatible")


def test_body_passes_through_with_unknown_fields_and_the_target_model() -> None:
    request = {
        "model": "public-name",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "stop": "END",
        "logit_bias": {"50256": -100},
        "vendor_extension": {"keep": ["me", 1]},
    }
    adapter = make("openai-compatible", "http://vllm.local:8000/v1", headers={"OpenAI-Organization": "org-1"})
    call = adapter.build("chat", request, "meta-llama/Llama-3-8B", "sk-test")
    assert (call.method, call.path) == (b"POST", b"/v1/chat/completions")
    assert json.loads(call.body) == {**request, "model": "meta-llama/Llama-3-8B"}
    assert call.headers == [
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer sk-test"),
        (b"openai-organization", b"org-1"),
    ]
    assert request["model"] == "public-name"  # the caller's dict is not modified
    for op, path in (("completions", b"/v1/completions"), ("embeddings", b"/v1/embeddings")):
        assert adapter.build(op, {"input": "x"}, "m", None).path == path
    assert not any(name == b"authorization" for name, _ in adapter.build("chat", request, "m", None).headers)
    with pytest.raises(UnsupportedOperation):
        adapter.build("images", {}, "m", "k")


def test_provider_quirks() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    ollama = make("ollama").build("chat", request, "llama3.2", "ignored-key")
    assert [name for name, _ in ollama.headers] == [b"content-type"]
    qwen = make("qwen", enable_search=True)
    assert json.loads(qwen.build("chat", request, "qwen-plus", "k").body)["enable_search"] is True
    assert (
        json.loads(qwen.build("chat", {**request, "enable_search": False}, "qwen-plus", "k").body)[
            "enable_search"
        ]
        is False
    )  # the client's own choice wins over the provider default
    assert "enable_search" not in json.loads(make("qwen").build("chat", request, "qwen-plus", "k").body)
    deepseek = make("deepseek")
    assert deepseek.build("chat", request, "deepseek-chat", "k").path == b"/v1/chat/completions"
    with pytest.raises(UnsupportedOperation):
        deepseek.build("embeddings", {"input": "x"}, "deepseek-chat", "k")
    with pytest.raises(UnsupportedOperation):
        deepseek.stream("embeddings", "deepseek-chat")
    with pytest.raises(ProviderError, match="headers"):
        make("openai", headers=["not", "a", "mapping"]).build("chat", request, "m", "k")


# ------------------------------------------------------------------------------------------ response

RECORDED_TOOL_CALL = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    }
                ],
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

RECORDED_DEEPSEEK = {
    "id": "5f4c5b7e-2a4d-4c4c-9d55-0a8c8f1f3f1e",
    "object": "chat.completion",
    "created": 1738000000,
    "model": "deepseek-reasoner",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "9.11 < 9.8",
                "reasoning_content": "Compare decimals...",
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 18,
        "completion_tokens": 210,
        "total_tokens": 228,
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 18,
        "completion_tokens_details": {"reasoning_tokens": 190},
    },
    "system_fingerprint": "fp_5417b77867_prod0225",
}


def test_responses_are_validated_and_kept_whole() -> None:
    openai_adapter, deepseek = make("openai"), make("deepseek")
    assert openai_adapter.convert_response("chat", 200, json.dumps(RECORDED_TOOL_CALL).encode(), "m") == (
        RECORDED_TOOL_CALL
    )
    converted = deepseek.convert_response(
        "chat", 200, json.dumps(RECORDED_DEEPSEEK).encode(), "deepseek-reasoner"
    )
    assert converted["choices"][0]["message"]["reasoning_content"] == "Compare decimals..."
    assert converted["usage"]["prompt_cache_miss_tokens"] == 18
    completion = {"id": "cmpl-1", "object": "text_completion", "choices": [{"text": "hi", "index": 0}]}
    assert (
        openai_adapter.convert_response("completions", 200, json.dumps(completion).encode(), "m")
        == completion
    )
    embeddings = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}
    assert (
        openai_adapter.convert_response("embeddings", 200, json.dumps(embeddings).encode(), "m") == embeddings
    )


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("chat", b"<html>502 Bad Gateway</html>"),
        ("chat", b"\xff\xfe"),
        ("chat", b"[1, 2]"),
        ("chat", b'{"object": "chat.completion"}'),
        ("chat", b'{"choices": []}'),
        ("chat", b'{"choices": [{"index": 0, "text": "a completion, not a chat"}]}'),
        ("completions", b'{"choices": [{"message": {"content": "x"}}]}'),
        ("embeddings", b'{"data": [{"index": 0}]}'),
    ],
)
def test_garbage_responses_raise(op: str, body: bytes) -> None:
    with pytest.raises(ProviderError):
        make("openai").convert_response(op, 200, body, "m")


RECORDED_STREAM = b"""data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}

: keep-alive comment

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}

data: [DONE]

"""


def test_stream_chunks_pass_through_and_usage_is_recorded() -> None:
    chunks, converter = convert_stream(make("openai"), "chat", "gpt-4o-mini", RECORDED_STREAM)
    assert len(chunks) == 4 and all(c["id"] == "chatcmpl-1" for c in chunks)
    assert streamed_text(chunks) == "Hello" and finish_reasons(chunks) == ["stop"]
    assert converter.done and converter.usage == {
        "prompt_tokens": 8,
        "completion_tokens": 1,
        "total_tokens": 9,
    }
    fresh = make("openai").stream("chat", "m")
    assert fresh.event(None, '{"choices":[{"index":0,"delta":{"content":"x"}}]}') and not fresh.done
    assert fresh.usage is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("not json", "not JSON"),
        ('["a"]', "not a JSON object"),
        ('{"id": "x"}', "no 'choices'"),
        ('{"error": {"message": "Overloaded", "type": "server_error", "code": "overloaded"}}', "Overloaded"),
    ],
)
def test_stream_garbage_and_error_events_raise(data: str, match: str) -> None:
    with pytest.raises(ProviderError, match=match):
        make("deepseek").stream("chat", "m").event(None, data)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error":{"message":"Incorrect API key provided: sk-xx.","type":"invalid_request_error",'
            b'"param":null,"code":"invalid_api_key"}}',
            ("Incorrect API key provided: sk-xx.", "invalid_api_key"),
        ),
        (
            b'{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":null}}',
            ("Rate limit reached", "requests"),
        ),
        (
            b'{"error":"model \\"llama9\\" not found, try pulling it first"}',
            ('model "llama9" not found, try pulling it first', None),
        ),
        (
            b'{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}',
            ("max_tokens is too large", "400"),
        ),
        (b"upstream connect error", ("upstream connect error", None)),
        (b"", ("HTTP 502 with an empty body", None)),
    ],
)
def test_error_bodies(body: bytes, expected: tuple[str, str | None]) -> None:
    assert make("ollama").error(502, body) == expected


# -------------------------------------------------------------------------------- against the mocks

FAMILY = {  # adapter type -> (mock flavor, path prefix of the provider's API, model)
    "openai": ("openai", "/v1", "gpt-4o-mini"),
    "openai-compatible": ("openai-compatible", "/v1", "meta-llama/Llama-3.1-8B-Instruct"),
    "ollama": ("ollama", "/v1", "llama3.2"),
    "qwen": ("qwen", "/compatible-mode/v1", "qwen-plus"),
    "deepseek": ("deepseek", "", "deepseek-chat"),
}


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    yield from start_mocks(*{flavor for flavor, _, _ in FAMILY.values()})


def family_adapter(kind: str, ports: dict[str, int]) -> Adapter:
    flavor, prefix, _ = FAMILY[kind]
    return make(kind, f"http://127.0.0.1:{ports[flavor]}{prefix}")


CHAT = {"messages": [{"role": "user", "content": "Say something"}], "temperature": 0}


@pytest.mark.parametrize("kind", sorted(FAMILY))
def test_round_trip_plain_and_streamed(kind: str, ports: dict[str, int]) -> None:
    adapter, model = family_adapter(kind, ports), FAMILY[kind][2]
    status, body = send(adapter, adapter.build("chat", CHAT, model, "sk-mock"))
    assert status == 200, body
    answer = adapter.convert_response("chat", status, body, model)
    assert answer["choices"][0]["message"]["content"] == answer_text(CHUNKS)
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] == CHUNKS

    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    status, body = send(adapter, adapter.build("chat", request, model, "sk-mock"))
    assert status == 200, body
    chunks, converter = convert_stream(adapter, "chat", model, body)
    assert streamed_text(chunks) == answer_text(CHUNKS)
    assert finish_reasons(chunks) == ["stop"]
    assert converter.done and converter.usage["completion_tokens"] == CHUNKS

    completion_status, completion = send(
        adapter, adapter.build("completions", {"prompt": "x"}, model, "sk-mock")
    )
    assert adapter.convert_response("completions", completion_status, completion, model)["choices"][0][
        "text"
    ] == (answer_text(CHUNKS))


@pytest.mark.parametrize("kind", ["openai-compatible", "qwen", "deepseek"])
def test_round_trip_key_refused_in_the_providers_error_shape(kind: str, ports: dict[str, int]) -> None:
    adapter = family_adapter(kind, ports)
    status, body = send(adapter, adapter.build("chat", CHAT, FAMILY[kind][2], None))
    message, code = adapter.error(status, body)
    assert status == 401
    assert code in ("invalid_api_key", "invalid_request_error") and message
    if kind == "qwen":
        assert "request_id" in json.loads(body)


def test_round_trip_ollama_needs_no_key_and_deepseek_reasoner_thinks(ports: dict[str, int]) -> None:
    ollama = family_adapter("ollama", ports)
    status, _ = send(ollama, ollama.build("chat", CHAT, "llama3.2", None))
    assert status == 200
    deepseek = family_adapter("deepseek", ports)
    request = {**CHAT, "stream": True}
    status, body = send(deepseek, deepseek.build("chat", request, "deepseek-reasoner", "sk-mock"))
    chunks, _ = convert_stream(deepseek, "chat", "deepseek-reasoner", body)
    thinking = [i for i, c in enumerate(chunks) if c["choices"][0]["delta"].get("reasoning_content")]
    answering = [i for i, c in enumerate(chunks) if c["choices"][0]["delta"].get("content")]
    assert streamed_text(chunks, "reasoning_content") == "Let me think about it."
    assert streamed_text(chunks) == answer_text(CHUNKS) and max(thinking) < min(answering)
    status, body = send(deepseek, deepseek.build("chat", CHAT, "deepseek-reasoner", "sk-mock"))
    answer = deepseek.convert_response("chat", status, body, "deepseek-reasoner")
    assert answer["choices"][0]["message"]["reasoning_content"] == "Let me think about it."
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}


@pytest.mark.parametrize("kind", ["openai-compatible", "ollama", "qwen", "deepseek"])
def test_openai_sdk_against_the_flavor(kind: str, ports: dict[str, int]) -> None:
    flavor, prefix, model = FAMILY[kind]
    base = f"http://127.0.0.1:{ports[flavor]}{prefix}"
    client = openai.OpenAI(base_url=base, api_key="sk-mock", max_retries=0, timeout=5)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == answer_text(CHUNKS) and reply.usage.total_tokens > CHUNKS
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer_text(CHUNKS)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == CHUNKS
    if kind == "deepseek":
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model=model, input="x")
    else:
        assert len(client.embeddings.create(model=model, input=["a", "b"]).data[1].embedding) == 16
    if kind != "ollama":
        basic = {"Authorization": "Basic c2stbW9jaw=="}  # a credential, but not the Bearer the provider wants
        refused = openai.OpenAI(base_url=base, api_key="x", default_headers=basic, max_retries=0, timeout=5)
        with pytest.raises(openai.AuthenticationError):
            refused.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_openai_sdk_sees_deepseek_reasoning(ports: dict[str, int]) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports['deepseek']}", api_key="sk-mock", max_retries=0)
    stream = client.chat.completions.create(
        model="deepseek-reasoner", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in stream)
    assert reasoning == "Let me think about it."

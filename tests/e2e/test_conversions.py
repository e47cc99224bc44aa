"""Conversions through a real gateway, driven by the real openai and anthropic SDKs (sync and async,
plain and stream, compiled and pure), against fake providers written from the providers' docs
(tests/support/provider_fakes.py): requests a target cannot take answer 400 in the client's dialect
or fail over; JSON output, thinking signatures, cache counts, base64 embeddings and tool-call ids
survive the conversion; nothing a client sends drops the connection."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import time
import urllib.request

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import Gateway, http_json
from tests.support.provider_fakes import (
    CACHE_READ,
    CACHE_WRITE,
    EMBEDDING,
    THINKING,
    FakeServer,
    signature_of,
)
from tests.support.request_shapes import chat_requests, mutated

FAULTY = {"use": "tests.support.faulty_filter:Faulty"}
USER = [{"role": "user", "content": "Hi"}]
PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def fake():
    server = FakeServer()
    yield server
    server.shutdown()


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conversions")

    def target(provider: str, model: str) -> dict:
        return {"provider": provider, "model": model}

    config = {
        "log": {"access": str(tmp / "access.log")},
        "providers": [
            {"name": "claude", "type": "anthropic", "base_url": fake.url, "api_keys": ["sk-ant-fake"]},
            {"name": "gpt", "type": "openai", "base_url": fake.url + "/v1", "api_keys": ["sk-fake"]},
            {"name": "gem", "type": "gemini", "base_url": fake.url, "api_keys": ["g-fake"]},
        ],
        "models": [
            {"name": "claude", "targets": [target("claude", "claude-sonnet-4-5")]},
            {"name": "claude-or-gpt", "targets": [target("claude", "claude-sonnet-4-5"), target("gpt", "gpt-4o")]},
            {"name": "claude-or-gemini", "targets": [target("claude", "claude-sonnet-4-5"), target("gem", "gemini-2.0-flash")]},
            {"name": "gemini", "targets": [target("gem", "gemini-2.0-flash")]},
            {"name": "gemini-embed", "targets": [target("gem", "text-embedding-004")]},
            {"name": "gpt-faulty", "targets": [target("gpt", "gpt-4o")], "filters": [FAULTY]},
            {"name": "claude-faulty", "targets": [target("claude", "claude-sonnet-4-5")], "filters": [FAULTY]},
        ],
        "routes": [{"name": "faulty", "match": {"path": "/faulty"}, "upstream": fake.url, "filters": [FAULTY]}],
    }
    gateway = Gateway(config, tmp, pure=request.param == "pure", workers=1)
    gateway.access_log = tmp / "access.log"
    yield gateway
    gateway.stop()


def oai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def claude_sdk(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=10)


# ---------------------------------------------------------------------------------- one error path

REFUSED_BY_ANTHROPIC = [
    ({"n": 2}, "n"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[0].type"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
    ({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSED_BY_ANTHROPIC)
def test_what_anthropic_cannot_take_is_a_400_naming_the_field(gw, extra, param):
    """Was: the connection dropped with no answer (APIConnectionError) for each of these."""
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(**{"model": "claude", "messages": USER, **extra})
    body = err.value.body
    assert err.value.status_code == 400 and body["type"] == "invalid_request_error"
    assert body["param"] == param and param in body["message"]


def test_a_failover_chain_serves_what_only_the_first_target_refuses(gw, fake):
    """Was: neither a failover nor an answer. n=2 goes to the OpenAI target, which takes it."""
    raw = oai(gw).chat.completions.with_raw_response.create(model="claude-or-gpt", messages=USER, n=2)
    assert raw.headers["x-fastgw-provider"] == "gpt"
    assert len(raw.parse().choices) == 2
    # a request every target refuses is a 400, named by the last one that refused it
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="claude-or-gemini", messages=[{"role": "critic", "content": "x"}])
    assert err.value.body["param"] == "messages[0].role"


def test_the_anthropic_front_door_answers_conversion_errors_in_its_dialect(gw):
    image = {"type": "image", "source": {"type": "url", "url": "ftp://example.com/cat.png"}}
    with pytest.raises(anthropic.BadRequestError) as err:
        claude_sdk(gw).messages.create(model="gemini", max_tokens=50,
                                       messages=[{"role": "user", "content": [image]}])
    assert err.value.status_code == 400
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].image_url.url" in err.value.body["error"]["message"]


def test_a_body_nested_5000_deep_is_a_clear_400_without_a_traceback(gw):
    """Was: RecursionError, a dropped connection and a 1.6 KB traceback per request."""
    deep = b'{"model":"claude","messages":' + b"[" * 5000 + b"]" * 5000 + b"}"
    for path in ("/v1/chat/completions", "/v1/messages"):
        status, body = http_json("POST", gw.url + path, deep, headers={"Content-Type": "application/json"})
        assert status == 400, body
        message = body["error"]["message"]
        assert "nested too deeply" in message
    assert "Traceback" not in gw.stderr_text() and "RecursionError" not in gw.stderr_text()


def metric(gw, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(gw.admin + "/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_metric(gw, name: str, at_least: float, **labels: str) -> float:
    deadline = time.monotonic() + 15
    while True:
        value = metric(gw, name, **labels)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_an_internal_error_is_answered_counted_and_logged_once(gw):
    before = metric(gw, "fastgw_internal_errors_total", where="ai")
    with pytest.raises(openai.InternalServerError) as err:
        oai(gw).chat.completions.create(model="gpt-faulty", messages=USER, extra_headers={"x-fault": "request"})
    assert err.value.body["code"] == "internal_error" and "request " in err.value.body["message"]
    request_id = err.value.body["message"].rsplit("request ", 1)[1].rstrip(")")
    # a started stream ends with the dialect's error event instead of a cut connection
    stream = oai(gw).chat.completions.create(model="claude-faulty", messages=USER, stream=True,
                                             extra_headers={"x-fault": "stream"})
    with pytest.raises(openai.APIError, match="internal gateway error"):
        for _ in stream:
            pass
    events = claude_sdk(gw).messages.create(model="claude-faulty", max_tokens=50, messages=USER, stream=True,
                                            extra_headers={"x-fault": "stream"})
    with pytest.raises(anthropic.APIStatusError, match="internal gateway error"):
        for _ in events:
            pass
    assert wait_metric(gw, "fastgw_internal_errors_total", before + 3, where="ai") >= before + 3
    # the connection's own last resort, on a plain route
    plain_before = metric(gw, "fastgw_internal_errors_total", where="connection")
    status, body = http_json("GET", gw.url + "/faulty/x", headers={"x-fault": "target"})
    assert status == 500 and body["error"]["code"] == "internal_error"
    assert wait_metric(gw, "fastgw_internal_errors_total", plain_before + 1, where="connection") >= plain_before + 1
    lines = [line for line in gw.stderr_text().splitlines() if f"(request {request_id})" in line]
    assert len(lines) == 1 and "TypeError" in lines[0]
    assert "Traceback" not in gw.stderr_text()


# ------------------------------------------------------------------------------------ JSON output

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
FORMATS = [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "forecast", "schema": SCHEMA, "strict": True}},
]


@pytest.mark.parametrize("response_format", FORMATS, ids=["json_object", "json_schema"])
def test_response_format_to_anthropic_is_forced_through_a_tool(gw, fake, response_format):
    """Was: silently dropped (a prose answer to a client that asked for JSON)."""
    answer = oai(gw).chat.completions.create(model="claude", messages=USER, response_format=response_format)
    sent = fake.bodies("/v1/messages")[-1]
    assert sent["tool_choice"] == {"type": "tool", "name": sent["tools"][0]["name"]}
    if response_format["type"] == "json_schema":
        assert sent["tools"][0]["input_schema"] == SCHEMA
    choice = answer.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    value = json.loads(choice.message.content)
    assert value == ({"city": "forty-two", "days": 42} if response_format["type"] == "json_schema" else {"answer": 42})
    stream = oai(gw).chat.completions.create(model="claude", messages=USER, response_format=response_format, stream=True)
    chunks = [c for c in stream if c.choices]
    assert json.loads("".join(c.choices[0].delta.content or "" for c in chunks)) == value
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert not any(c.choices[0].delta.tool_calls for c in chunks)


def test_response_format_to_gemini_sets_the_response_schema(gw, fake):
    answer = oai(gw).chat.completions.create(model="gemini", messages=USER, response_format=FORMATS[1])
    config = fake.bodies(":generateContent")[-1]["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == SCHEMA
    assert json.loads(answer.choices[0].message.content) == {"city": "forty-two", "days": 42}


def test_response_format_with_thinking_is_refused_for_anthropic(gw):
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="claude", messages=USER, response_format=FORMATS[0], reasoning_effort="low")
    assert err.value.body["param"] == "reasoning_effort"


# ------------------------------------------------------------------------------ thinking round trip

def test_thinking_signatures_survive_a_round_trip_plain_and_streamed(gw, fake):
    answer = oai(gw).chat.completions.create(model="claude", messages=USER, reasoning_effort="low")
    message = answer.choices[0].message
    assert message.reasoning_content == THINKING
    assert message.thinking_blocks == [{"type": "thinking", "thinking": THINKING, "signature": signature_of(THINKING)}]

    async def streamed() -> list:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        stream = await client.chat.completions.create(model="claude", messages=USER, reasoning_effort="low", stream=True)
        deltas = [c.choices[0].delta async for c in stream if c.choices]
        await client.close()
        return deltas

    deltas = asyncio.run(streamed())
    assert "".join(d.reasoning_content or "" for d in deltas if getattr(d, "reasoning_content", None)) == THINKING
    blocks = [b for d in deltas for b in (getattr(d, "thinking_blocks", None) or [])]
    assert blocks == message.thinking_blocks
    # the assistant turn sent back as the SDK returned it: the fake refuses an unsigned block
    history = [*USER, message.model_dump(exclude_none=True), {"role": "user", "content": "And?"}]
    oai(gw).chat.completions.create(model="claude", messages=history, reasoning_effort="low")
    sent = fake.bodies("/v1/messages")[-1]["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": THINKING, "signature": signature_of(THINKING)}


# ---------------------------------------------------------------------------- prompt-cache tokens

def access_lines(gw, model: str) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in gw.access_log.read_text().splitlines() if line]
        found = [line for line in lines if line.get("model") == model]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_prompt_cache_counts_reach_both_dialects_and_the_access_log(gw):
    plain = oai(gw).chat.completions.create(model="claude", messages=[{"role": "user", "content": "cache me"}])
    assert plain.usage.prompt_tokens == 11 + CACHE_READ + CACHE_WRITE
    assert plain.usage.prompt_tokens_details.cached_tokens == CACHE_READ
    stream = oai(gw).chat.completions.create(model="claude", messages=USER, stream=True,
                                             stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage][-1]
    assert usage.prompt_tokens == 11 + CACHE_READ + CACHE_WRITE and usage.prompt_tokens_details.cached_tokens == CACHE_READ
    # an Anthropic client through a converted path (Gemini) and natively: Anthropic's own split
    message = claude_sdk(gw).messages.create(model="claude", max_tokens=50, messages=USER)
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens) == (11, CACHE_READ, CACHE_WRITE)
    gem = claude_sdk(gw).messages.create(model="gemini", max_tokens=50, messages=USER)
    assert (gem.usage.input_tokens, gem.usage.cache_read_input_tokens) == (5, 4)
    with claude_sdk(gw).messages.stream(model="claude", max_tokens=50, messages=USER) as events:
        final = events.get_final_message()
    assert final.usage.cache_read_input_tokens == CACHE_READ
    logged = access_lines(gw, "claude")
    assert logged and all(line["cached_tokens"] == CACHE_READ and line["cache_write_tokens"] == CACHE_WRITE
                          and line["prompt_tokens"] == 11 + CACHE_READ + CACHE_WRITE for line in logged[-5:])


# ------------------------------------------------------------------------------- embeddings, ids

def test_gemini_embeddings_in_base64_as_openai_encodes_them(gw):
    """Was: a list of floats for an explicit encoding_format=base64."""
    explicit = oai(gw).embeddings.create(model="gemini-embed", input=["a", "b"], encoding_format="base64")
    for item in explicit.data:
        assert isinstance(item.embedding, str)
        assert list(struct.unpack("<4f", base64.b64decode(item.embedding))) == EMBEDDING
    floats = oai(gw).embeddings.create(model="gemini-embed", input="a", encoding_format="float")
    assert floats.data[0].embedding == EMBEDDING
    default = oai(gw).embeddings.create(model="gemini-embed", input="a")  # the SDK asks base64 and decodes
    assert default.data[0].embedding == EMBEDDING


def test_gemini_tool_call_ids_are_unique(gw):
    """Was: call_0 in every answer."""
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")]
    ids = []
    for _ in range(2):
        ids += [c.id for c in oai(gw).chat.completions.create(model="gemini", messages=USER, tools=tools)
                .choices[0].message.tool_calls]
    stream = oai(gw).chat.completions.create(model="gemini", messages=USER, tools=tools, stream=True)
    ids += [call.id for c in stream if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert len(ids) == 6 and len(set(ids)) == 6


# ---------------------------------------------------------------------------------- e2e fuzz sample

def test_every_odd_request_gets_an_http_answer(gw):
    """A fixed sample of malformed and unusual requests, raw over a socket: each gets a status line
    (never a dropped connection), none a 500."""
    bodies = [
        {"model": "claude", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        {"model": "claude", "messages": [{"role": "user", "content": {"a": 1}}]},
        {"model": "claude", "messages": USER, "stop": 7},
        {"model": "claude", "messages": USER, "tools": {"x": 1}},
        {"model": "claude", "messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
        {"model": "claude", "messages": USER, "tool_choice": ["x"], "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"model": "claude", "messages": USER, "temperature": "hot"},
        {"model": "claude", "messages": USER, "response_format": {"type": "json_schema", "json_schema": "x"}},
        {"model": "claude", "messages": [*USER, {"role": "assistant", "tool_calls": [{"function": "x"}]}]},
        {"model": "claude", "messages": [*USER, {"role": "assistant", "content": "x", "thinking_blocks": [{"type": "x"}]}]},
        {"model": "claude", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "gemini", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": "x"}]}]},
        {"model": "gemini", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {"schema": 1}}},
        {"model": "gemini", "messages": [{"role": "tool", "tool_call_id": ["x"], "content": "x"}]},
        {"model": "gemini-embed", "input": ["a"], "encoding_format": "int8"},
        {"model": "claude", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],
         "max_tokens": -1},
    ]
    paths = ["/v1/embeddings" if b["model"] == "gemini-embed" else "/v1/chat/completions" for b in bodies]
    for path, body in zip(paths, bodies, strict=True):
        for stream in (False, True):
            payload = json.dumps({**body, "stream": stream} if path.endswith("completions") else body).encode()
            reply = raw_post(gw, path, payload)
            assert reply.startswith(b"HTTP/1.1 "), (body, reply)
            status = int(reply.split()[1])
            assert status == 400, (body, reply[:400])


def raw_post(gw, path: str, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%b" % (path.encode(), len(payload), payload))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=st.one_of(chat_requests(), mutated(chat_requests())),
       model=st.sampled_from(["claude", "gemini", "claude-or-gpt", "claude-or-gemini"]))
def test_generated_requests_through_the_gateway_all_get_an_answer(gw, request, model):
    """The fuzz test's generators, a small sample sent through a real gateway: every request gets a
    status line (no dropped connection), and none is a gateway bug (500)."""
    body = {**request, "model": model} if isinstance(request, dict) else request
    reply = raw_post(gw, "/v1/chat/completions", json.dumps(body).encode())
    assert reply.startswith(b"HTTP/1.1 "), (body, reply)
    assert int(reply.split()[1]) in (200, 400, 404), (body, reply[:500])


def test_async_anthropic_client_through_a_converted_provider(gw, fake):
    """An Anthropic client, async and streamed, reaching Gemini: text, usage with the cache split,
    and a conversion refusal as the SDK's typed error."""

    async def run() -> tuple:
        client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=10)
        async with client.messages.stream(model="gemini", max_tokens=50, messages=USER) as events:
            text = "".join([piece async for piece in events.text_stream])
            final = await events.get_final_message()
        with pytest.raises(anthropic.BadRequestError) as err:
            await client.messages.create(model="gemini", max_tokens=50, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "ftp://example.com/a.png"}}]}])
        await client.close()
        return text, final, err.value

    text, final, error = asyncio.run(run())
    assert text == "Hello from Gemini." and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (5, 4, 5)
    assert error.status_code == 400 and "image_url.url" in error.body["error"]["message"]

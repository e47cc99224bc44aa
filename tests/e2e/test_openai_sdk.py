"""The OpenAI Python SDK against the gateway's embedded default: mock-gpt, no key needed."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.support.gateway import Gateway


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory):
    config = {
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 6}}],
        "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("sdk"), pure=request.param == "pure")
    yield gateway
    assert gateway.stop() == 0


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_plain_and_streamed_agree(gw):
    c = client(gw)
    messages = [{"role": "user", "content": "hello"}]
    plain = c.chat.completions.create(model="mock-gpt", messages=messages)
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage.total_tokens > 0
    stream = c.chat.completions.create(model="mock-gpt", messages=messages, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == plain.choices[0].message.content


def test_async_streaming_client(gw):
    async def run() -> str:
        c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        stream = await c.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        await c.close()
        assert usage is not None and usage.completion_tokens > 0
        return "".join(parts)

    assert asyncio.run(run())


def test_models_embeddings_and_errors(gw):
    c = client(gw)
    assert [m.id for m in c.models.list()] == ["mock-gpt"]
    emb = c.embeddings.create(model="mock-gpt", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        c.post("/chat/completions", body=None, cast_to=object, options={"headers": {"Content-Type": "application/json"}})

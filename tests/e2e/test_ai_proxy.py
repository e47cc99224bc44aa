"""The AI proxy end to end: the real OpenAI and Anthropic SDKs, through ``fastgw run``, to a
mock of every provider type speaking that provider's own wire format.

Each mock answers with the same deterministic text for the same number of chunks, so every
conversion (request out, answer and stream back) is checked against one expected string.
"""

from __future__ import annotations

import asyncio
import json
import time

import anthropic
import openai
import pytest

from fastgw.mock.core import answer_text
from tests.support.gateway import Gateway, MockLLMProcess, free_port, http_json

CHUNKS = 5
TEXT = answer_text(CHUNKS)
FLAVORS = ("openai", "anthropic", "gemini", "azure", "ollama", "qwen", "deepseek", "openai-compatible")
# flavor -> (provider type, base_url suffix on the mock, target model)
PROVIDERS = {
    "openai": ("openai", "/v1", "gpt-4o-mini"),
    "anthropic": ("anthropic", "", "claude-3-5-haiku-latest"),
    "gemini": ("gemini", "", "gemini-2.0-flash"),
    "azure": ("azure", "", "gpt-4o-deployment"),
    "ollama": ("ollama", "/v1", "llama3.2"),
    "qwen": ("qwen", "/compatible-mode/v1", "qwen-plus"),
    "deepseek": ("deepseek", "/v1", "deepseek-chat"),
    "openai-compatible": ("openai-compatible", "/v1", "mistral-small"),
}


@pytest.fixture(scope="module")
def mocks():
    started = {}
    try:
        for flavor in FLAVORS:
            started[flavor] = MockLLMProcess("--flavor", flavor, "--chunks", str(CHUNKS))
        yield started
    finally:
        for mock in started.values():
            mock.stop()


def ai_config(mocks: dict[str, MockLLMProcess]) -> dict:
    providers = []
    models = []
    for flavor, (kind, suffix, model) in PROVIDERS.items():
        provider = {"name": flavor, "type": kind, "base_url": mocks[flavor].url + suffix}
        if flavor != "ollama":
            provider["api_keys"] = [f"key-{flavor}"]
        providers.append(provider)
        models.append({"name": f"via-{flavor}", "targets": [{"provider": flavor, "model": model}]})
    openai_url = mocks["openai"].url + "/v1"

    def failing(name: str, **extra) -> dict:
        return {"name": name, "type": "openai", "base_url": openai_url, "api_keys": ["k"], **extra}

    providers += [
        failing("dead", base_url=f"http://127.0.0.1:{free_port()}/v1"),
        failing("fails-503", options={"headers": {"x-mock-status": "503"}}),
        failing("fails-429", options={"headers": {"x-mock-status": "429"}}),
        failing("stalls", options={"headers": {"x-mock-stall-ms": "5000"}}, timeouts={"first_byte": "400ms"}),
        failing("cuts", options={"headers": {"x-mock-cut-after": "3"}}),
        failing("rotates", api_keys=["sk-mock-401-a", "sk-mock-429-b", "sk-good"]),
        failing("breaks", base_url=f"http://127.0.0.1:{free_port()}/v1", breaker={"failures": 2, "cooldown": "30s"}),
        failing("probed", base_url=f"http://127.0.0.1:{free_port()}/v1", health_check={"interval": "200ms"}),
    ]
    backup = {"provider": "openai", "model": "gpt-4o-mini"}
    for name in ("dead", "fails-503", "fails-429", "stalls", "breaks", "probed"):
        models.append({"name": f"failover-{name}", "targets": [{"provider": name, "model": "m"}, backup]})
    models.append({"name": "cut", "targets": [{"provider": "cuts", "model": "m"}]})
    models.append({"name": "rotate", "targets": [{"provider": "rotates", "model": "m"}]})
    models.append({"name": "gpt-4*", "targets": [{"provider": "openai", "model": "gpt-4*"}]})
    return {"providers": providers, "models": models}


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory, mocks):
    gateway = Gateway(ai_config(mocks), tmp_path_factory.mktemp("ai"), pure=request.param == "pure")
    yield gateway
    assert gateway.stop() == 0


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def claude(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=10)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]


# -- every provider, through both front doors ---------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_openai_sdk_plain_and_stream(gw, flavor):
    client = oai(gw)
    raw = client.chat.completions.with_raw_response.create(model=f"via-{flavor}", messages=MESSAGES)
    answer = raw.parse()
    assert raw.headers["x-fastgw-provider"] == flavor
    assert answer.choices[0].message.content == TEXT
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens > 0 and answer.usage.total_tokens >= answer.usage.completion_tokens
    stream = client.chat.completions.create(
        model=f"via-{flavor}", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    parts, finish = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == TEXT
    assert finish == "stop"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_stream_usage_chunk_only_when_asked(gw, flavor):
    client = oai(gw)
    unasked = list(client.chat.completions.create(model=f"via-{flavor}", messages=MESSAGES, stream=True))
    assert not any(chunk.usage for chunk in unasked)  # the gateway asked the provider, then stripped it
    asked = list(
        client.chat.completions.create(
            model=f"via-{flavor}", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    with_usage = [chunk for chunk in asked if chunk.usage]
    assert len(with_usage) == 1 and with_usage[0] is asked[-1] and asked[-1].choices == []
    usage = with_usage[0].usage
    assert usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("flavor", FLAVORS)
def test_anthropic_sdk_plain_and_stream(gw, flavor):
    client = claude(gw)
    message = client.messages.create(
        model=f"via-{flavor}", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Say something."}]
    )
    assert message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    with client.messages.stream(
        model=f"via-{flavor}", max_tokens=100, messages=[{"role": "user", "content": "Say something."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0  # usage reaches message_delta whichever provider answered


@pytest.mark.parametrize("flavor", ("openai", "anthropic", "gemini"))
def test_tool_call_round_trip(gw, flavor):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    answer = oai(gw).chat.completions.create(
        model=f"via-{flavor}",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str)


def test_async_clients(gw):
    async def run() -> tuple[str, str]:
        openai_client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        stream = await openai_client.chat.completions.create(model="via-anthropic", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        claude_client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)
        message = await claude_client.messages.create(
            model="via-gemini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        await openai_client.close()
        await claude_client.close()
        return text, message.content[0].text

    assert asyncio.run(run()) == (TEXT, TEXT)


def test_embeddings_and_models(gw):
    client = oai(gw)
    for model in ("via-openai", "via-gemini", "via-azure"):
        result = client.embeddings.create(model=model, input=["one", "two"], encoding_format="float")
        assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    names = {m.id for m in client.models.list()}
    assert "via-anthropic" in names and "gpt-4*" not in names


def test_wildcard_model_maps_to_the_matched_name(gw):
    raw = oai(gw).chat.completions.with_raw_response.create(model="gpt-4o-2024", messages=MESSAGES)
    assert raw.headers["x-fastgw-model"] == "gpt-4o-2024"


# -- failover -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "attempts"), (("dead", "2"), ("fails-503", "3"), ("fails-429", "2")))
def test_failover_to_the_next_target(gw, name, attempts):
    raw = oai(gw).chat.completions.with_raw_response.create(model=f"failover-{name}", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == TEXT
    assert raw.headers["x-fastgw-provider"] == "openai"
    assert raw.headers["x-fastgw-attempts"] == attempts  # a 5xx is retried once on its target first


def test_stalled_first_token_fails_over_fast(gw):
    started = time.monotonic()
    stream = oai(gw).chat.completions.create(model="failover-stalls", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    elapsed = time.monotonic() - started
    assert text == TEXT
    assert elapsed < 0.4 + 1.5  # first_byte of the stalled target + the next target's time


def test_mid_stream_cut_ends_with_an_error_event(gw):
    stream = oai(gw).chat.completions.create(model="cut", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)
    assert received  # the first events did reach the client
    assert "cuts" in str(err.value)


def test_mid_stream_cut_in_anthropic_dialect(gw):
    with pytest.raises(anthropic.APIError):
        with claude(gw).messages.stream(model="cut", max_tokens=50, messages=[{"role": "user", "content": "x"}]) as s:
            for _ in s.text_stream:
                pass


def test_key_rotation_and_cool_down(gw):
    client = oai(gw)
    # Each worker learns on its own; two requests per worker let both find the good key.
    attempts = [
        int(client.chat.completions.with_raw_response.create(model="rotate", messages=MESSAGES).headers["x-fastgw-attempts"])
        for _ in range(6)
    ]
    assert max(attempts) == 3  # a worker's first try walked 401 -> 429 -> good
    assert attempts[-1] == 1  # cooled keys are skipped afterwards


def test_breaker_opens_after_repeated_failures(gw):
    client = oai(gw)
    attempts = [
        int(client.chat.completions.with_raw_response.create(model="failover-breaks", messages=MESSAGES).headers["x-fastgw-attempts"])
        for _ in range(8)
    ]
    assert attempts[-1] == 1  # the open breaker skips the dead target without trying it


def test_provider_probed_down_is_skipped_from_the_first_request(gw):
    time.sleep(0.5)  # a few probe intervals since the gateway started
    for _ in range(4):  # whichever worker answers has probed it already
        raw = oai(gw).chat.completions.with_raw_response.create(model="failover-probed", messages=MESSAGES)
        assert raw.headers["x-fastgw-provider"] == "openai"
        assert raw.headers["x-fastgw-attempts"] == "1"


def test_probe_tells_up_from_down(mocks):
    from fastgw.ai.frontdoor import ProviderRuntime
    from fastgw.ai.health import ProviderHealth
    from fastgw.ai.probes import probe
    from fastgw.config import load_text
    from fastgw.proxy.upstream import PoolSet

    async def verdicts() -> list[bool]:
        config = load_text(
            "providers:\n"
            f"  - {{name: up, type: anthropic, base_url: '{mocks['anthropic'].url}', api_keys: [k]}}\n"
            f"  - {{name: up2, type: gemini, base_url: '{mocks['gemini'].url}', api_keys: [k]}}\n"
            f"  - {{name: down, type: openai, base_url: 'http://127.0.0.1:{free_port()}/v1'}}\n"
        )
        pools, health = PoolSet(asyncio.get_running_loop()), ProviderHealth()
        runtimes = [ProviderRuntime(spec, pools, health) for spec in config["providers"]]
        return [await probe(runtime, 1.0) for runtime in runtimes]

    assert asyncio.run(verdicts()) == [True, True, False]


def test_client_errors_are_not_retried(gw):
    with pytest.raises(openai.BadRequestError):
        oai(gw).chat.completions.create(model="via-openai", messages=[])
    with pytest.raises(openai.NotFoundError):
        oai(gw).chat.completions.create(model="no-such-model", messages=MESSAGES)
    status, body = http_json("POST", gw.url + "/v1/chat/completions", b"{not json")
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = http_json("POST", gw.url + "/v1/messages", json.dumps({"model": "via-openai", "messages": "x"}).encode())
    assert status == 400 and body["type"] == "error"


def test_provider_keys_are_redacted_from_provider_errors():
    from fastgw.ai.frontdoor import ProviderRuntime
    from fastgw.ai.health import ProviderHealth
    from fastgw.config import load_text
    from fastgw.proxy.upstream import PoolSet

    config = load_text("providers: [{name: p, type: openai, api_keys: [sk-secret-123, sk-other-456]}]\n")
    runtime = ProviderRuntime(config["providers"][0], PoolSet(asyncio.new_event_loop()), ProviderHealth())
    assert runtime.redact("Incorrect API key provided: sk-secret-123.") == "Incorrect API key provided: ***."

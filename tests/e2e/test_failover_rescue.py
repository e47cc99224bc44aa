"""Failover that rescues what can be rescued, and credential errors told as such, seen through
the real OpenAI and Anthropic SDKs against a provider-fault fake written from the providers'
public docs (tests/support/fault_provider.py), on compiled and pure gateways.

* a provider 401/403 on its last key is a 502 ``upstream_auth_failed`` carrying the provider's
  message with the key redacted (was 429 "every API key is cooling down");
* a stream whose finish and usage arrived but that closed without ``[DONE]`` / ``message_stop``
  is a complete answer (was an appended "ended its stream early" error);
* a context-window error moves to a target with a larger window (was the client's 400);
* a short Retry-After on the last target is waited out; a 5xx is retried once on the same target.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import anthropic
import openai
import pytest

from tests.support.fault_provider import (
    FaultProvider,
    Reply,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_error,
    openai_stream,
    split_every,
)
from tests.support.gateway import Gateway

ONLY_KEY = "sk-live-ONLYKEY-1234567890"
CLAUDE_KEY = "sk-ant-api03-ONLYCLAUDE-987654"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fakes():
    started = {name: FaultProvider() for name in ("oa", "oa2", "an")}
    yield started
    for fake in started.values():
        fake.close()


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, fakes, tmp_path_factory):
    oa, oa2, an = fakes["oa"].url + "/v1", fakes["oa2"].url + "/v1", fakes["an"].url

    def provider(name, url, kind="openai", keys=("sk-fake",)):
        return {"name": name, "type": kind, "base_url": url, "api_keys": list(keys),
                "timeouts": {"connect": "2s", "first_byte": "10s", "idle": "10s"}}

    def model(name, *targets, **extra):
        return {"name": name, "targets": [t if isinstance(t, dict) else {"provider": t, "model": "m"} for t in targets],
                **extra}

    config = {
        "providers": [
            provider("auth-one", oa, keys=[ONLY_KEY]),
            provider("auth-two", oa, keys=["sk-bad-AAAA1111", "sk-good-BBBB2222"]),
            provider("auth-claude", an, "anthropic", keys=[CLAUDE_KEY]),
            provider("stream-oa", oa), provider("stream-an", an, "anthropic"),
            provider("ctx-small", oa), provider("ctx-big", oa2), provider("ctx-claude", an, "anthropic"),
            provider("rl-one", oa2), provider("rl-long", oa2),
            provider("err-one", oa), provider("err-two", oa), provider("err-next", oa2),
            provider("one-key", oa, keys=["sk-the-only-one"]),
        ],
        "models": [
            model("auth-one-m", "auth-one"), model("auth-two-m", "auth-two"), model("auth-claude-m", "auth-claude"),
            model("stream-m", "stream-oa"), model("stream-claude-m", "stream-an"),
            model("ctx-m", {"provider": "ctx-small", "model": "small", "context_window": 8192},
                  {"provider": "ctx-small", "model": "mid", "context_window": 8192},
                  {"provider": "ctx-claude", "model": "big", "context_window": 200000}),
            model("ctx-only-m", "ctx-small"),
            model("ctx-claude-first", {"provider": "ctx-claude", "model": "claude-small"},
                  {"provider": "ctx-big", "model": "gpt-big"}),
            model("rl-m", "rl-one", failover={"wait_retry_after": "2s"}),
            model("rl-long-m", "rl-long", failover={"wait_retry_after": "2s"}),
            model("err-m", "err-one", failover={"retry_delay": "50ms"}),
            model("err-noretry-m", "err-two", "err-next", failover={"retry_5xx": 0}),
            model("same-provider-m", {"provider": "one-key", "model": "small"}, {"provider": "one-key", "model": "large"},
                  failover={"retry_5xx": 0}),
        ],
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("rescue"), pure=request.param == "pure", workers=1)
    yield gateway
    gateway.stop()


def oai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)


# -- credentials ---------------------------------------------------------------------------------


def test_401_on_the_only_key_is_a_credential_error_not_a_rate_limit(gw, fakes):
    fakes["oa"].script(Reply(401, openai_error(
        f"Incorrect API key provided: {ONLY_KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")))
    for _ in range(2):  # the second request finds the key cooling down: still a credential error
        with pytest.raises(openai.APIStatusError) as err:
            oai(gw).chat.completions.create(model="auth-one-m", messages=HI)
        assert err.value.status_code == 502
        assert err.value.code == "upstream_auth_failed"
        assert "Incorrect API key provided" in err.value.message and "ONLYKEY" not in err.value.message
    assert len(fakes["oa"].requests) == 1  # the refused key sits out its cool-down


def test_401_on_the_only_anthropic_key_reaches_the_claude_sdk_as_a_502(gw, fakes):
    fakes["an"].script(Reply(401, anthropic_error("authentication_error", f"invalid x-api-key {CLAUDE_KEY}")))
    with pytest.raises(anthropic.APIStatusError) as err:
        claude(gw).messages.create(model="auth-claude-m", max_tokens=10, messages=HI)
    assert err.value.status_code == 502
    assert "invalid x-api-key" in str(err.value) and "ONLYCLAUDE" not in str(err.value)


def test_401_on_one_key_of_two_moves_to_the_next_key(gw, fakes):
    fakes["oa"].script(lambda r: Reply(401, openai_error("Incorrect API key provided", "invalid_request_error",
                                                         "invalid_api_key"))
                       if "sk-bad" in r.headers["authorization"] else Reply(200, openai_completion("good key")))
    for _ in range(3):
        assert oai(gw).chat.completions.create(model="auth-two-m", messages=HI).choices[0].message.content == "good key"
    assert sum("sk-bad" in r.headers["authorization"] for r in fakes["oa"].requests) == 1  # then cooled down


# -- streams that closed without their end marker ------------------------------------------------


def raw_post(gw, path: str, body: dict, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_a_complete_openai_stream_without_done_is_ended_normally(gw, fakes):
    fakes["oa"].script(Reply(200, split_every(openai_stream(["Hel", "lo", " wörld"], done=False), 23)))
    stream = oai(gw).chat.completions.create(model="stream-m", messages=HI, stream=True,
                                             stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello wörld"
    assert chunks[-1].usage.total_tokens == 16
    status, data = raw_post(gw, "/v1/chat/completions", {"model": "stream-m", "messages": HI, "stream": True})
    assert status == 200 and data.endswith(b"data: [DONE]\n\n") and b'"error"' not in data


def test_a_truncated_stream_still_ends_with_an_error(gw, fakes):
    fakes["oa"].script(Reply(200, openai_stream(["Hel", "lo"], done=False, finish=None, usage=False)))
    with pytest.raises(openai.APIError, match="ended its stream early"):
        list(oai(gw).chat.completions.create(model="stream-m", messages=HI, stream=True))


def test_a_complete_stream_without_done_through_the_anthropic_front_door(gw, fakes):
    fakes["oa"].script(Reply(200, split_every(openai_stream(["Hel", "lo"], done=False), 9)))
    with claude(gw).messages.stream(model="stream-m", max_tokens=50, messages=HI) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "Hello" and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 5


def test_a_complete_anthropic_stream_without_message_stop_is_ended_normally(gw, fakes):
    body = anthropic_stream([{"type": "text", "text": "all of it"}], stop=False)
    fakes["an"].script(Reply(200, split_every(body, 31)))
    with claude(gw).messages.stream(model="stream-claude-m", max_tokens=50, messages=HI) as stream:  # native
        message = stream.get_final_message()
    assert message.content[0].text == "all of it " and message.stop_reason == "end_turn"
    status, data = raw_post(gw, "/v1/messages", {"model": "stream-claude-m", "max_tokens": 50, "messages": HI,
                                                 "stream": True})
    assert status == 200 and data.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    chunks = list(oai(gw).chat.completions.create(model="stream-claude-m", messages=HI, stream=True))  # converted
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "all of it "
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- context windows -----------------------------------------------------------------------------


def test_a_context_window_error_fails_over_to_a_larger_window(gw, fakes):
    fakes["oa"].script(Reply(400, openai_error(
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9021 tokens. "
        "Please reduce the length of the messages.", "invalid_request_error", "context_length_exceeded", "messages")))
    fakes["an"].script(Reply(200, anthropic_message("from the big window")))
    raw = oai(gw).chat.completions.with_raw_response.create(model="ctx-m", messages=HI)
    assert raw.parse().choices[0].message.content == "from the big window"
    assert raw.headers["x-fastgw-model"] == "big"
    assert [r.json()["model"] for r in fakes["oa"].requests] == ["small"]  # "mid" is no larger: skipped
    with pytest.raises(openai.BadRequestError) as err:  # nothing larger left: the client's error
        oai(gw).chat.completions.create(model="ctx-only-m", messages=HI)
    assert "maximum context length is 8192 tokens" in err.value.message


def test_anthropics_prompt_is_too_long_fails_over_too(gw, fakes):
    fakes["an"].script(Reply(400, anthropic_error("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum")))
    fakes["oa2"].script(Reply(200, openai_completion("from gpt-big")))
    message = claude(gw).messages.create(model="ctx-claude-first", max_tokens=20, messages=HI)
    assert message.content[0].text == "from gpt-big"


# -- waiting and retrying ------------------------------------------------------------------------


def test_a_short_retry_after_is_waited_out_on_the_last_target(gw, fakes):
    rate_limited = Reply(429, openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                         headers={"retry-after": "1"})
    fakes["oa2"].script(rate_limited, Reply(200, openai_completion("after the wait")))
    started = time.monotonic()
    answer = oai(gw).chat.completions.create(model="rl-m", messages=HI)
    assert answer.choices[0].message.content == "after the wait"
    first, second = fakes["oa2"].requests
    assert second.at - first.at >= 0.95 and time.monotonic() - started < 8


def test_a_long_retry_after_is_answered_at_once(gw, fakes):
    fakes["oa2"].script(Reply(429, openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                              headers={"retry-after": "20"}))
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as err:
        oai(gw).chat.completions.create(model="rl-long-m", messages=HI)
    assert time.monotonic() - started < 5 and err.value.response.headers["retry-after"] == "20"
    assert len(fakes["oa2"].requests) == 1


def test_a_5xx_is_retried_once_on_the_same_target(gw, fakes):
    fakes["oa"].script(Reply(500, openai_error("The server had an error while processing your request.",
                                               "server_error", None)),
                       Reply(200, openai_completion("second try")))
    raw = oai(gw).chat.completions.with_raw_response.create(model="err-m", messages=HI)
    assert raw.parse().choices[0].message.content == "second try" and raw.headers["x-fastgw-attempts"] == "2"
    assert len(fakes["oa"].requests) == 2


def test_retry_5xx_zero_moves_to_the_next_target_at_once(gw, fakes):
    fakes["oa"].script(Reply(503, openai_error("overloaded", "server_error", None)))
    fakes["oa2"].script(Reply(200, openai_completion("next target")))
    assert oai(gw).chat.completions.create(model="err-noretry-m", messages=HI).choices[0].message.content == "next target"
    assert len(fakes["oa"].requests) == 1


def test_the_async_sdk_gets_the_complete_stream_and_the_credential_error(gw, fakes):
    async def run() -> tuple[str, int]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        fakes["oa"].script(Reply(200, split_every(openai_stream(["as", "ync"], done=False), 13)),
                           Reply(401, openai_error("Incorrect API key provided", "invalid_request_error",
                                                   "invalid_api_key")))
        text = "".join([c.choices[0].delta.content or "" async for c in
                        await client.chat.completions.create(model="stream-m", messages=HI, stream=True) if c.choices])
        try:
            await client.chat.completions.create(model="auth-one-m", messages=HI)
        except openai.APIStatusError as err:
            return text, err.status_code
        return text, 200

    assert asyncio.run(run()) == ("async", 502)


def test_a_later_target_of_the_same_provider_may_use_the_same_key(gw, fakes):
    """Neither a context-window error nor a 5xx is the key's fault: one key serves both targets."""
    too_long = Reply(400, openai_error("This model's maximum context length is 8192 tokens.", "invalid_request_error",
                                       "context_length_exceeded", "messages"))
    for first in (too_long, Reply(502, openai_error("Bad gateway.", "server_error", None))):
        fakes["oa"].script(lambda r, first=first: first if r.json()["model"] == "small"
                           else Reply(200, openai_completion("large answered")))
        answer = oai(gw).chat.completions.create(model="same-provider-m", messages=HI)
        assert answer.choices[0].message.content == "large answered"
        assert [r.json()["model"] for r in fakes["oa"].requests] == ["small", "large"]


def test_pings_after_the_final_message_delta_do_not_hide_a_complete_answer(gw, fakes):
    body = anthropic_stream([{"type": "text", "text": "done already"}], stop=False)
    events = [event + b"\n\n" for event in body.split(b"\n\n") if event]
    events += [b'event: ping\ndata: {"type": "ping"}\n\n'] * 3  # each its own read
    fakes["an"].script(Reply(200, events, piece_delay=0.03))
    with claude(gw).messages.stream(model="stream-claude-m", max_tokens=50, messages=HI) as stream:
        assert stream.get_final_message().content[0].text == "done already "

"""Each built-in filter through a real HttpConnection over a fake transport (tests/support/harness.py),
on the in-process mock provider or a loopback fake written from OpenAI's streaming docs."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from fastgw.filters import Filter, Phase, Status
from tests.support.harness import Client, Services

MESSAGES = [{"role": "user", "content": "hi"}]
MOCK = {"providers": [{"name": "mock", "type": "mock"}], "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}]}
KEY = "sk-team-a-0123456789"


def run(coro):
    return asyncio.run(coro)


def with_(base: dict, **extra: object) -> dict:
    return {**base, **extra}


def streamed_text(response) -> str:
    text = []
    for data in response.events():
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices") or ():
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


# -- auth -----------------------------------------------------------------------------------


def test_auth_answers_401_from_the_head_before_any_body_is_read(twins):
    async def go() -> None:
        svc = Services(with_(MOCK, consumers=[{"name": "a", "api_keys": [KEY]}]), asyncio.get_running_loop())
        c = Client(svc)
        # A 50 MB body is announced; not a byte of it is sent.
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 50000000\r\n"
               b"Content-Type: application/json\r\n\r\n")
        r = await c.response(timeout=1)
        assert r.status == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert c.transport.eof  # the unread body can't be skipped: the connection closes after the answer
        c = Client(svc)
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES},
                  {"Authorization": f"Bearer {KEY}"})
        assert (await c.response()).status == 200

    run(go())


def test_expect_100_continue_is_not_sent_to_a_caller_that_fails_auth(twins):
    async def go() -> None:
        svc = Services(with_(MOCK, consumers=[{"name": "a", "api_keys": [KEY]}]), asyncio.get_running_loop())
        c = Client(svc)
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 999\r\nExpect: 100-continue\r\n"
               b"x-api-key: wrong\r\n\r\n")
        await asyncio.sleep(0.01)
        assert not bytes(c.transport.out).startswith(b"HTTP/1.1 100")
        assert (await c.response()).status == 401

    run(go())


# -- transform on a model ------------------------------------------------------------------------


def test_model_transform_sets_defaults_and_response_headers(twins):
    config = with_(MOCK, models=[{"name": "mock-gpt", "targets": [{"provider": "mock"}],
                                  "transform": {"request": {"body": {"default": {"max_tokens": 3}}},
                                                "response": {"headers": {"add": {"x-tier": "gold"}}}}}])

    async def go() -> None:
        c = Client(Services(config, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES})
        r = await c.response()
        assert r.status == 200 and r.headers["x-tier"] == "gold"

    run(go())


# -- guard -------------------------------------------------------------------------------------


def test_guard_blocks_a_prompt_and_masks_a_streamed_answer_split_across_events(twins):
    config = with_(MOCK, guard={"rules": [
        {"name": "secret", "terms": ["forbidden"], "action": "block", "apply_to": ["prompt"]},
        {"name": "mock", "terms": ["mock answer"], "action": "mask", "apply_to": ["response"]},
    ]})

    async def go() -> None:
        svc = Services(config, asyncio.get_running_loop())
        c = Client(svc)
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": [{"role": "user", "content": "a forbidden word"}]})
        r = await c.response()
        assert r.status == 400 and r.json()["error"]["code"] == "content_filter"
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "stream": True, "messages": MESSAGES})
        r = await c.response()
        text = streamed_text(r)
        assert r.status == 200 and "mock answer" not in text and "fastgw mock-llm" in text
        assert r.events()[-1] == "[DONE]"

    run(go())


# -- rate limits -----------------------------------------------------------------------------------


def test_ratelimit_refuses_with_429_retry_after_and_ratelimit_headers(twins):
    config = with_(MOCK, limits=[{"name": "rpm", "requests": {"per_minute": 1}}])

    async def go() -> None:
        c = Client(Services(config, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES})
        first = await c.response()
        assert first.status == 200 and "x-ratelimit-remaining-requests" in first.headers
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES})
        second = await c.response()
        assert second.status == 429 and int(second.headers["retry-after"]) >= 1
        assert second.json()["error"]["code"] == "rate_limit_exceeded"

    run(go())


# -- cache (stores streamed answers too) ---------------------------------------------------------------


def test_cache_stores_a_streamed_answer_and_serves_it_plain(twins):
    config = with_(MOCK, cache={"ttl": "1m"})

    async def go() -> None:
        svc = Services(config, asyncio.get_running_loop())
        c = Client(svc)
        # The node store is shared by every process of this test session's parent: a fresh question.
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": f"cache me {uuid.uuid4()}"}]}
        c.request("POST", "/v1/chat/completions", {**body, "stream": True})
        streamed = await c.response()
        assert streamed.status == 200 and streamed.headers["x-fastgw-cache"] == "miss"
        for _ in range(50):  # the store is written off the request path
            await asyncio.sleep(0.01)
            c.request("POST", "/v1/chat/completions", body)
            hit = await c.response()
            if hit.headers.get("x-fastgw-cache") == "hit":
                break
        assert hit.headers["x-fastgw-cache"] == "hit"
        assert hit.json()["choices"][0]["message"]["content"] == streamed_text(streamed)

    run(go())


# -- usage, observe -----------------------------------------------------------------------------------


class NoUsageProvider:
    """An OpenAI-compatible server that streams chat chunks as OpenAI documents them but never
    reports usage (many compatible servers ignore stream_options), on a loopback socket."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            events = [
                b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
                b'"choices":[{"index":0,"delta":{"content":' + json.dumps(w).encode() + b'},"finish_reason":null}]}\n\n'
                for w in self.words
            ]
            events.append(b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
                          b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
            events.append(b"data: [DONE]\n\n")
            body = b"".join(events)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("guarded", [False, True])
def test_a_stream_without_reported_usage_is_metered_from_its_text_guarded_or_not(twins, tmp_path, guarded):
    """The 0.4.0 bug: a guarded pass-through stream from a provider that reports no usage
    was metered at 0 completion tokens (the guard's relay never fed the meter)."""
    words = ["Hello", " there", ",", " how", " are", " you", " today", "?"]

    async def go() -> dict:
        provider = NoUsageProvider(words)
        url = await provider.start()
        config = {"providers": [{"name": "p", "type": "openai-compatible", "base_url": url}],
                  "models": [{"name": "m", "targets": [{"provider": "p", "model": "gpt-4o"}]}],
                  "log": {"access": str(tmp_path / "access.log")}}
        if guarded:
            config["guard"] = {"rules": [{"name": "n", "terms": ["never-said"], "action": "mask", "apply_to": ["response"]}]}
        svc = Services(config, asyncio.get_running_loop(), log_path=tmp_path / "access.log")
        c = Client(svc)
        c.request("POST", "/v1/chat/completions", {"model": "m", "stream": True, "messages": MESSAGES})
        r = await c.response()
        provider.close()
        assert r.status == 200 and streamed_text(r) == "".join(words)
        return svc.log_lines()[-1]

    line = run(go())
    assert line["tokens_estimated"] is True
    assert line["completion_tokens"] == 8  # o200k: Hello| there|,| how| are| you| today|?


def test_observe_writes_one_access_line_per_request_plain_and_ai(twins, tmp_path):
    async def go() -> list:
        svc = Services(MOCK, asyncio.get_running_loop(), log_path=tmp_path / "a.log")
        svc.access_log.configure(str(tmp_path / "a.log"))
        c = Client(svc)
        c.request("GET", "/nothing-here")
        assert (await c.response(method=b"GET")).status == 404
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES})
        assert (await c.response()).status == 200
        return svc.log_lines()

    lines = run(go())
    assert [line["status"] for line in lines] == [404, 200]
    assert lines[1]["model"] == "mock-gpt" and lines[1]["prompt_tokens"] > 0 and lines[1]["tokens_estimated"] is False


# -- prompts ---------------------------------------------------------------------------------------


def test_prompts_expand_a_template_that_brings_the_model_and_refuse_an_unknown_one(twins):
    config = with_(MOCK, prompts={"templates": [
        {"name": "hello", "model": "mock-gpt", "messages": [{"role": "user", "content": "Say hi to {{who}}"}]}]})

    async def go() -> None:
        c = Client(Services(config, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", {"template": {"name": "hello", "variables": {"who": "Ada"}}})
        r = await c.response()
        assert r.status == 200 and r.headers["x-fastgw-model"] == "mock-gpt"
        c.request("POST", "/v1/chat/completions", {"template": {"name": "nope"}})
        r = await c.response()
        assert r.status == 404 and r.json()["error"]["code"] == "template_not_found"

    run(go())


# -- plain routes: auth and transform through the proxy handler -------------------------------------


class Echo:
    """A plain HTTP service on loopback that answers with what it received."""

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = json.dumps({"target": lines[0].split()[1], "headers": headers, "body": body.decode()}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                             % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_a_plain_route_runs_auth_and_transform_filters_from_config(twins):
    async def go() -> None:
        echo = Echo()
        upstream = await echo.start()
        config = {
            "consumers": [{"name": "svc", "api_keys": [KEY]}],
            "routes": [{"name": "api", "upstream": upstream, "filters": ["auth"],
                        "transform": {"request": {"headers": {"add": {"x-env": "prod"}}, "body": {"set": {"who": "gw"}}},
                                      "response": {"headers": {"add": {"x-served-by": "fastgw"}}}}}],
        }
        svc = Services(config, asyncio.get_running_loop())
        c = Client(svc)
        c.request("POST", "/api/x", {"a": 1})
        r = await c.response()
        assert r.status == 401  # from the head, before the body
        c = Client(svc)
        c.request("POST", "/api/x?q=1", {"a": 1}, {"Authorization": f"Bearer {KEY}"})
        r = await c.response()
        seen = r.json()
        assert r.status == 200 and r.headers["x-served-by"] == "fastgw"
        assert seen["headers"]["x-env"] == "prod" and json.loads(seen["body"]) == {"a": 1, "who": "gw"}
        assert seen["target"] == "/api/x?q=1"
        echo.server.close()

    run(go())


def test_a_plain_route_can_be_rate_limited(twins):
    async def go() -> None:
        echo = Echo()
        upstream = await echo.start()
        config = {"routes": [{"name": "api", "upstream": upstream, "filters": ["ratelimit"]}],
                  "limits": [{"name": "per-ip", "key": ["ip"], "requests": {"per_minute": 1}}]}
        c = Client(Services(config, asyncio.get_running_loop()))
        c.request("GET", "/x")
        first = await c.response(method=b"GET")
        assert first.status == 200 and first.headers["x-ratelimit-remaining-requests"] == "0"
        c.request("GET", "/x")
        second = await c.response(method=b"GET")
        assert second.status == 429 and int(second.headers["retry-after"]) >= 1
        echo.server.close()

    run(go())


# -- a filter that raises on the response side ------------------------------------------------------


class BrokenOnResponse(Filter):
    """Raises in every response hook (enabled per test by module:Class)."""

    name = "broken"
    phase = Phase.POLICY

    def on_response_headers(self, s, status, headers):
        raise KeyError("boom")

    def on_response(self, s, response):
        raise KeyError("boom")

    def on_sse_events(self, s, events):
        if s.stream_ending:  # after the first events went out: the stream's own error event
            raise KeyError("boom")
        return Status.CONTINUE


BROKEN = {"use": "tests.unit.filters.test_filters:BrokenOnResponse"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_response_filter_that_raises_ends_the_ai_answer_well_formed(twins, stream):
    config = with_(MOCK, models=[{"name": "mock-gpt", "targets": [{"provider": "mock"}], "filters": [BROKEN]}])

    async def go() -> None:
        c = Client(Services(config, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "stream": stream, "messages": MESSAGES})
        r = await c.response()
        if stream:  # the stream ends with OpenAI's error event, the body is complete
            assert r.status == 200 and json.loads(r.events()[-1])["error"]["code"] == "filter_error"
        else:
            assert r.status == 500 and r.json()["error"]["message"] == "filter 'broken' failed"
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES})
        assert (await c.response()).status in (200, 500)  # the connection still serves

    run(go())


def test_a_response_header_filter_that_raises_answers_500_on_a_plain_route(twins):
    async def go() -> None:
        echo = Echo()
        upstream = await echo.start()
        config = {"routes": [{"name": "api", "upstream": upstream, "filters": [BROKEN]}]}
        c = Client(Services(config, asyncio.get_running_loop()))
        c.request("GET", "/x")
        r = await c.response(method=b"GET")
        assert r.status == 500 and r.json()["error"]["code"] == "filter_error"
        c.request("GET", "/y")
        assert (await c.response(method=b"GET")).status == 500  # answered again on the same connection
        echo.server.close()

    run(go())

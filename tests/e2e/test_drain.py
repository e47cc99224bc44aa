"""Drains that cut nothing: SIGTERM and POST /drain with streams in flight, through the real SDKs.

A slow provider (tests/support/slow_provider.py, one event per 100 ms) keeps streams open
while the gateway drains: answers in flight keep their framing and finish; streams still
open at the drain deadline end with an error event in the client's dialect and a proper
end of the chunked body; new connections are refused meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import anthropic
import openai
import pytest

from tests.support.gateway import Gateway, RawClient, http_json
from tests.support.slow_provider import SlowProvider, answer_text

MESSAGES = [{"role": "user", "content": "count"}]


def gateway_config(provider: SlowProvider, drain: str) -> dict:
    return {
        "http": {"drain_timeout": drain},
        "providers": [
            {"name": "slow-openai", "type": "openai", "base_url": provider.url + "/v1", "api_keys": ["sk-slow"],
             "timeouts": {"first_byte": "10s", "idle": "10s"}},
            {"name": "slow-anthropic", "type": "anthropic", "base_url": provider.url, "api_keys": ["sk-ant-slow"],
             "timeouts": {"first_byte": "10s", "idle": "10s"}},
        ],
        "models": [
            {"name": "slow-gpt", "targets": [{"provider": "slow-openai", "model": "gpt-4o-mini"}]},
            {"name": "slow-claude", "targets": [{"provider": "slow-anthropic", "model": "claude-3-5-haiku-latest"}]},
        ],
    }


@pytest.fixture
def provider():
    slow = SlowProvider(words=20, delay=0.1)
    yield slow
    slow.stop()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def openai_streams(gw: Gateway, count: int, started: asyncio.Event) -> list:
    """``count`` concurrent streams through the OpenAI SDK; each result is the text or the exception."""
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    first = 0

    async def one() -> str | BaseException:
        nonlocal first
        try:
            stream = await client.chat.completions.create(model="slow-gpt", messages=MESSAGES, stream=True)
            parts, finish, seen = [], None, False
            async for chunk in stream:
                if not seen:
                    seen = True
                    first += 1
                    if first == count:
                        started.set()
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
            return "".join(parts) if finish == "stop" else AssertionError(f"finish_reason {finish!r}")
        except BaseException as exc:  # counted by the test
            return exc

    try:
        return await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await client.close()


@pytest.mark.parametrize("mode", ["compiled", "pure"])
def test_100_streams_survive_a_sigterm_drain_intact(tmp_path, provider, mode):
    gw = Gateway(gateway_config(provider, "30s"), tmp_path, pure=mode == "pure")
    results: list = []
    refused_while_draining: list[bool] = []

    async def run() -> None:
        started = asyncio.Event()
        streams = asyncio.ensure_future(openai_streams(gw, 100, started))
        await asyncio.wait_for(started.wait(), 20)  # all 100 are mid-stream
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        refused_while_draining.append(await asyncio.to_thread(refused, gw.port))
        results.extend(await streams)

    asyncio.run(run())
    complete = [r for r in results if r == answer_text(provider.words)]
    failures = [r for r in results if r not in complete]
    assert len(complete) == 100, failures[:3]
    assert refused_while_draining == [True]
    assert gw.proc.wait(15) == 0
    print(f"SIGTERM with 100 streams in flight ({mode}): {len(complete)} complete answers")


def read_raw_stream(port: int, path: str, body: dict, headers: str = "") -> tuple[int, dict, bytes]:
    """One streamed answer read to the end of its chunked body (ConnectionError if it is cut)."""
    client = RawClient(port, timeout=20)
    payload = json.dumps(body).encode()
    client.send(f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{headers}"
                f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    try:
        return client.read_response()
    finally:
        client.close()


def test_streams_past_the_drain_deadline_end_with_an_error_event_in_their_dialect(tmp_path):
    slow = SlowProvider(words=200, delay=0.1)  # 20 s: far past the 1 s deadline
    stalled = SlowProvider(stall=30)  # has not begun its answer at the deadline
    try:
        config = gateway_config(slow, "1s")
        config["providers"].append({"name": "stalled", "type": "openai", "base_url": stalled.url + "/v1",
                                    "api_keys": ["sk-stalled"], "timeouts": {"first_byte": "60s", "idle": "60s"}})
        config["models"].append({"name": "stalled-gpt", "targets": [{"provider": "stalled", "model": "gpt-4o"}]})
        gw = Gateway(config, tmp_path)
        raw: dict[str, tuple] = {}
        sdk: dict[str, BaseException | None] = {}

        def raw_openai() -> None:
            raw["openai"] = read_raw_stream(gw.port, "/v1/chat/completions",
                                            {"model": "slow-gpt", "messages": MESSAGES, "stream": True})

        def raw_anthropic() -> None:
            raw["anthropic"] = read_raw_stream(gw.port, "/v1/messages",
                                               {"model": "slow-claude", "max_tokens": 500, "messages": MESSAGES,
                                                "stream": True}, "anthropic-version: 2023-06-01\r\n")

        def sdk_openai() -> None:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)
            try:
                for _ in client.chat.completions.create(model="slow-gpt", messages=MESSAGES, stream=True):
                    pass
                sdk["openai"] = None
            except BaseException as exc:  # inspected below
                sdk["openai"] = exc

        def sdk_anthropic() -> None:
            client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=20)
            try:
                with client.messages.stream(model="slow-claude", max_tokens=500, messages=MESSAGES) as stream:
                    for _ in stream.text_stream:
                        pass
                sdk["anthropic"] = None
            except BaseException as exc:  # inspected below
                sdk["anthropic"] = exc

        def sdk_not_begun() -> None:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)
            try:
                client.chat.completions.create(model="stalled-gpt", messages=MESSAGES)
                sdk["not_begun"] = None
            except BaseException as exc:  # inspected below
                sdk["not_begun"] = exc

        threads = [threading.Thread(target=f)
                   for f in (raw_openai, raw_anthropic, sdk_openai, sdk_anthropic, sdk_not_begun)]
        for thread in threads:
            thread.start()
        wait_until(lambda: slow.streams_started == 4 and stalled.streams_started == 1, 10, "five requests to start")
        time.sleep(0.5)
        gw.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        assert gw.proc.wait(10) == 0

        status, headers, body = raw["openai"]  # read to its final 0-chunk: the body is whole
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        events = [e for e in body.decode().split("\n\n") if e]
        assert events[-1].startswith("data: ")
        error = json.loads(events[-1][len("data: "):])["error"]
        assert error["code"] == "gateway_draining" and "shutting down" in error["message"]
        assert len(events) > 2  # content was streaming before the deadline

        status, headers, body = raw["anthropic"]
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        events = [e for e in body.decode().split("\n\n") if e]
        assert events[0].startswith("event: message_start")
        name, data = events[-1].split("\n", 1)
        assert name == "event: error"
        payload = json.loads(data[len("data: "):])
        assert payload["type"] == "error" and "shutting down" in payload["error"]["message"]

        assert isinstance(sdk["openai"], openai.APIError) and "shutting down" in str(sdk["openai"])
        assert isinstance(sdk["anthropic"], anthropic.APIError) and "shutting down" in str(sdk["anthropic"])
        not_begun = sdk["not_begun"]  # nothing was sent yet: a 503 the client may retry elsewhere
        assert isinstance(not_begun, openai.APIStatusError) and not_begun.status_code == 503
        assert not_begun.code == "gateway_draining"
    finally:
        slow.stop()
        stalled.stop()


def test_post_drain_takes_the_node_out_while_streams_finish_and_undrain_restores_it(tmp_path, provider):
    gw = Gateway(gateway_config(provider, "30s"), tmp_path)
    try:
        assert http_json("GET", gw.admin + "/healthz")[0] == 200
        idle = RawClient(gw.port)  # an idle keep-alive connection: closed by the drain
        idle.send(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert idle.read_response()[0] == 200
        results: list = []

        async def run() -> None:
            started = asyncio.Event()
            streams = asyncio.ensure_future(openai_streams(gw, 10, started))
            await asyncio.wait_for(started.wait(), 20)
            status, answer = await asyncio.to_thread(http_json, "POST", gw.admin + "/drain", b"{}",
                                                     headers={"Content-Type": "application/json"})
            assert status == 200 and answer["draining"] is True and answer["pending"] == [], answer
            health = await asyncio.to_thread(http_json, "GET", gw.admin + "/healthz")
            assert health == (503, {"ready_workers": 0, "draining": True})
            assert await asyncio.to_thread(refused, gw.port)  # a load balancer's retry goes elsewhere
            results.extend(await streams)

        asyncio.run(run())
        assert results == [answer_text(provider.words)] * 10  # every stream finished intact
        assert idle.is_closed()
        assert gw.proc.poll() is None  # drained, not stopped
        assert [w["state"] for w in gw.status()["workers"]] == ["draining", "draining"]

        status, answer = http_json("POST", gw.admin + "/undrain", b"{}", headers={"Content-Type": "application/json"})
        assert status == 200 and answer["draining"] is False and answer["pending"] == [], answer
        assert http_json("GET", gw.admin + "/healthz") == (200, {"ready_workers": 2})
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)
        for _ in range(4):  # both workers accept again
            stream = client.chat.completions.create(model="slow-gpt", messages=MESSAGES, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer_text(provider.words)
    finally:
        assert gw.stop() == 0


def test_a_worker_respawned_while_the_node_is_drained_stays_out_until_undrain(tmp_path, provider):
    gw = Gateway(gateway_config(provider, "5s"), tmp_path, workers=1)
    try:
        assert http_json("POST", gw.admin + "/drain", b"{}", headers={"Content-Type": "application/json"})[0] == 200
        victim = gw.status()["workers"][0]["pid"]
        import os

        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (w := gw.status()["workers"][0])["pid"] not in (None, victim) and w["state"] == "draining",
                   10, "the respawned worker")
        assert refused(gw.port)
        assert http_json("POST", gw.admin + "/undrain", b"{}", headers={"Content-Type": "application/json"})[0] == 200
        gw.wait_ready(1)
        c = RawClient(gw.port)
        c.send(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
        try:
            assert c.read_response()[0] == 200
        except ConnectionError as exc:
            raise AssertionError(gw.stderr_text()) from exc
    finally:
        assert gw.stop() == 0

"""A connection draining: what it still answers, with which framing, and how the deadline ends it.

Real HttpConnections over a fake transport (tests/support/harness.py), on the in-process
mock provider with a delay per stream event.
"""

from __future__ import annotations

import asyncio
import json

from tests.support.harness import Client, Services, settle

MESSAGES = [{"role": "user", "content": "hi"}]
SLOW = {
    "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 10, "chunk_delay_ms": 20}}],
    "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
}
STALLED = {
    "providers": [{"name": "mock", "type": "mock", "options": {"stall_ms": 5000}}],
    "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
}
CHAT = {"model": "mock-gpt", "messages": MESSAGES, "stream": True}
CLAUDE = {"model": "mock-gpt", "max_tokens": 50, "messages": MESSAGES, "stream": True}


def run(coro):
    return asyncio.run(coro)


async def first_bytes(client: Client) -> None:
    for _ in range(500):
        if b"\r\n\r\n" in bytes(client.transport.out):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no response head")


def test_a_stream_in_flight_keeps_its_chunked_framing_to_the_last_chunk_then_closes(twins):
    async def go() -> None:
        c = Client(Services(SLOW, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", CHAT)
        await first_bytes(c)
        c.conn.start_drain()
        r = await c.response()
        assert r.status == 200 and r.headers["transfer-encoding"] == "chunked"
        assert "connection" not in r.headers  # the head went out before the drain: it stays as it was
        assert r.events()[-1] == "[DONE]"
        assert bytes(c.transport.out).endswith(b"0\r\n\r\n")
        await settle()
        assert c.transport.closed  # keep-alive ends with the exchange

    run(go())


def test_a_request_already_received_is_answered_with_connection_close(twins):
    async def go() -> None:
        c = Client(Services(SLOW, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", CHAT)
        c.request("GET", "/v1/models")  # pipelined behind the stream
        await first_bytes(c)
        c.conn.start_drain()
        first = await c.response()
        assert first.events()[-1] == "[DONE]"
        second = await c.response(method=b"GET")
        assert second.status == 200 and second.headers["connection"] == "close"
        await settle()
        assert c.transport.closed

    run(go())


def test_idle_connections_close_and_fresh_ones_may_still_send_their_request(twins):
    async def go() -> None:
        svc = Services(SLOW, asyncio.get_running_loop())
        idle = Client(svc)
        idle.request("GET", "/v1/models")
        assert (await idle.response(method=b"GET")).status == 200
        fresh = Client(svc)  # accepted, nothing sent yet
        idle.conn.start_drain()
        fresh.conn.start_drain()
        assert idle.transport.closed and not fresh.transport.closed
        fresh.request("GET", "/v1/models")
        r = await fresh.response(method=b"GET")
        assert r.status == 200 and r.headers["connection"] == "close"

    run(go())


def test_the_deadline_ends_an_openai_stream_with_an_error_event_and_the_last_chunk(twins):
    async def go() -> None:
        c = Client(Services(SLOW, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", CHAT)
        await first_bytes(c)
        c.conn.start_drain()
        c.conn.drain_deadline()
        r = await c.response()
        error = json.loads(r.events()[-1])["error"]
        assert error["code"] == "gateway_draining" and "shutting down" in error["message"]
        assert bytes(c.transport.out).endswith(b"0\r\n\r\n") and c.transport.closed

    run(go())


def test_the_deadline_ends_an_anthropic_stream_with_its_error_event(twins):
    async def go() -> None:
        c = Client(Services(SLOW, asyncio.get_running_loop()))
        c.request("POST", "/v1/messages", CLAUDE, {"anthropic-version": "2023-06-01"})
        await first_bytes(c)
        c.conn.drain_deadline()
        r = await c.response()
        last = [e for e in r.body.decode().split("\n\n") if e][-1]
        name, data = last.split("\n", 1)
        assert name == "event: error"
        assert json.loads(data[len("data: "):])["type"] == "error"
        assert bytes(c.transport.out).endswith(b"0\r\n\r\n") and c.transport.closed

    run(go())


def test_the_deadline_answers_503_before_anything_was_sent(twins):
    async def go() -> None:
        c = Client(Services(STALLED, asyncio.get_running_loop()))
        c.request("POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": MESSAGES})
        await settle()
        c.conn.drain_deadline()
        r = await c.response()
        assert r.status == 503 and r.json()["error"]["code"] == "gateway_draining"
        assert c.transport.closed

    run(go())

"""Concurrency limits through real gateways: streams held open by a loopback upstream.

Cluster mode shares one real Redis between two gateways of two workers each; local mode
runs one gateway whose workers share the node's slot table.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from tests.support.gateway import Gateway, RawClient
from tests.support.held_upstream import HeldUpstream
from tests.support.redis_server import RedisServer

KEY = "sk-streaming-team"
LIMIT = 5
LEASE = 2.0  # seconds: how long a dead gateway's slots outlive it in Redis
MESSAGES = [{"role": "user", "content": "tell me a long story"}]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def upstream() -> Iterator[HeldUpstream]:
    held = HeldUpstream()
    yield held
    held.stop()


def config(upstream: HeldUpstream, redis_url: str | None, **rule_extra: object) -> dict:
    out = {
        "providers": [{"name": "held", "type": "openai", "base_url": upstream.url + "/v1", "api_keys": ["k"]}],
        "models": [{"name": "m", "targets": [{"provider": "held", "model": "m"}]}],
        "consumers": [{"name": "team", "api_keys": [KEY]}],
        "routes": [{"name": "slow-api", "match": {"path": "/slow"}, "upstream": upstream.url}],
        "limits": [
            {"name": "streams", "match": {"models": ["m"]}, "key": ["consumer"], "concurrency": LIMIT, **rule_extra},
            {"name": "slow-route", "match": {"routes": ["slow-*"]}, "key": ["ip"], "concurrency": 2, **rule_extra},
        ],
    }
    if redis_url:
        out["redis"] = redis_url
    return out


class Streams:
    """Streaming chat requests through the openai SDK, one thread each, results recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.admitted: list[int] = []
        self.refused: list[tuple[int, float, str | None, str | None]] = []  # (i, seconds, code, retry-after)
        self.finished: list[int] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.clients: dict[int, openai.OpenAI] = {}

    def client(self, port: int) -> openai.OpenAI:
        if port not in self.clients:
            self.clients[port] = openai.OpenAI(  # its default pool allows 1000 connections
                api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=60
            )
        return self.clients[port]

    def open(self, i: int, port: int) -> None:
        client = self.client(port)

        def run() -> None:
            started = time.monotonic()
            try:
                stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            except openai.RateLimitError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                with self.lock:
                    self.refused.append(
                        (i, time.monotonic() - started, body.get("code"), exc.response.headers.get("retry-after"))
                    )
                return
            except Exception as exc:  # recorded: the test fails on it
                with self.lock:
                    self.errors.append(repr(exc))
                return
            try:
                chunks = iter(stream)
                next(chunks)
                with self.lock:
                    self.admitted.append(i)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                with self.lock:
                    (self.finished if text.endswith("there") else self.errors).append(i if text else text)
            except Exception as exc:
                with self.lock:
                    self.errors.append(repr(exc))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait_decided(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.admitted) + len(self.refused) + len(self.errors) >= count:
                    return
            time.sleep(0.02)
        raise AssertionError(f"only {len(self.admitted)} admitted and {len(self.refused)} refused of {count}")

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


def kill_gateway(gateway: Gateway) -> None:
    """SIGKILL the supervisor and its workers at once: a node that died."""
    os.killpg(gateway.proc.pid, signal.SIGKILL)
    gateway.proc.wait(10)


def test_sixty_streams_against_five_slots_across_two_gateways_and_four_workers(tmp_path, redis_server, upstream):
    gateways = [Gateway(config(upstream, redis_server.url, lease=LEASE), tmp_path, workers=2) for _ in range(2)]
    try:
        streams = Streams()
        for i in range(60):
            streams.open(i, gateways[i % 2].port)
        streams.wait_decided(60)
        # Exactly five are streaming; the 55 others were refused while those five still held
        # their slots (the upstream has not let any stream finish): refused at once, not queued.
        assert streams.errors == []
        assert len(streams.admitted) == LIMIT, (streams.admitted, len(streams.refused))
        assert upstream.in_flight == LIMIT and upstream.most == LIMIT
        assert len(streams.refused) == 55
        assert {(code, retry) for _, _, code, retry in streams.refused} == {("concurrency_limited", "1")}
        # Held past several lease times: the holders renew, so no sixth stream gets in.
        time.sleep(LEASE * 1.5)
        late = Streams()
        late.open(100, gateways[0].port)
        late.wait_decided(1)
        assert [code for _, _, code, _ in late.refused] == ["concurrency_limited"]
        upstream.release()
        streams.join()
        assert sorted(streams.finished) == sorted(streams.admitted)  # the five streams ended whole

        # Their slots are free again: five more get in (and no more).
        upstream.hold()
        again = Streams()
        for i in range(8):
            again.open(i, gateways[i % 2].port)
        again.wait_decided(8)
        assert (len(again.admitted), len(again.refused), again.errors) == (LIMIT, 3, [])

        # Kill the gateway holding them (all five go through gateway 0 here): its slots
        # free themselves within the lease, and gateway 1 can use them.
        upstream.release()
        again.join()
        upstream.hold()
        doomed = Streams()
        for i in range(LIMIT):
            doomed.open(i, gateways[0].port)
        doomed.wait_decided(LIMIT)
        assert len(doomed.admitted) == LIMIT
        kill_gateway(gateways[0])
        killed_at = time.monotonic()
        survivors = Streams()
        deadline = killed_at + LEASE * 3 + 5  # the lease, plus margins for a loaded machine
        admitted, n = 0, 0
        while admitted < LIMIT and time.monotonic() < deadline:
            probe = Streams()
            probe.open(n, gateways[1].port)
            probe.wait_decided(1)
            admitted += len(probe.admitted)
            survivors.threads += probe.threads
            n += 1
            if not probe.admitted:
                time.sleep(0.1)
        assert admitted == LIMIT, f"only {admitted} slots came back {time.monotonic() - killed_at:.1f}s after the kill"
        extra = Streams()
        extra.open(999, gateways[1].port)
        extra.wait_decided(1)
        assert len(extra.refused) == 1  # and not one more than the limit
        upstream.release()
    finally:
        upstream.release()
        for gw in gateways:
            gw.stop()


def test_local_slots_free_on_stream_end_disconnect_and_worker_crash(tmp_path, upstream):
    gateway = Gateway(config(upstream, None), tmp_path, workers=2)
    try:
        streams = Streams()
        for i in range(LIMIT + 3):
            streams.open(i, gateway.port)
        streams.wait_decided(LIMIT + 3)
        assert (len(streams.admitted), len(streams.refused), streams.errors) == (LIMIT, 3, [])
        upstream.wait_in_flight(LIMIT)

        # A client that disconnects mid-stream gives its slot back (on_done on that path too).
        raw = RawClient(gateway.port)
        body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True})
        raw.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body.encode())
        )
        raw.sock.settimeout(10)
        head = raw.sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 429"), head  # the five slots are taken
        raw.sock.close()

        upstream.release()
        streams.join()
        upstream.hold()
        holder = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        holder.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        response = holder.getresponse()
        assert response.status == 200
        response.read1(16)  # streaming: a slot is held
        # The client leaves mid-stream, with a reset (a FIN alone is a half-close, which by
        # contract still gets the answer).
        holder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        holder.sock.close()
        response.close()
        deadline = time.monotonic() + 10
        fresh = Streams()
        n = 0
        while len(fresh.admitted) < LIMIT and time.monotonic() < deadline:
            probe = Streams()
            probe.open(n, gateway.port)
            probe.wait_decided(1)
            fresh.admitted += probe.admitted
            fresh.threads += probe.threads
            n += 1
        assert len(fresh.admitted) == LIMIT  # the disconnected stream's slot came back

        # SIGKILL the workers holding the five: the supervisor frees their slots.
        for worker in gateway.status()["workers"]:
            os.kill(worker["pid"], signal.SIGKILL)
        gateway.wait_ready(2, timeout=30)
        after = Streams()
        for i in range(LIMIT + 1):
            after.open(i, gateway.port)
        after.wait_decided(LIMIT + 1)
        assert (len(after.admitted), len(after.refused)) == (LIMIT, 1), (after.admitted, after.refused, after.errors)
        assert "concurrency slot(s); freed" in gateway.stderr_text()
    finally:
        upstream.release()
        gateway.stop()


def test_plain_route_concurrency_by_route_name(tmp_path, upstream):
    gateway = Gateway(config(upstream, None), tmp_path, workers=2)
    try:
        holders = []
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
            conn.request("GET", "/slow/report")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read1(64).startswith(b"first piece")
            holders.append((conn, response))
        third = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        third.request("GET", "/slow/report")
        refused = third.getresponse()
        payload = json.loads(refused.read())
        assert refused.status == 429 and refused.getheader("retry-after") == "1"
        assert "concurrency limit 'slow-route' reached" in json.dumps(payload)
        upstream.release()
        for conn, response in holders:
            assert response.read().endswith(b"last piece\n")
            conn.close()
        third.request("GET", "/slow/report")
        assert third.getresponse().status == 200
    finally:
        upstream.release()
        gateway.stop()

"""Concurrency wait queues through real gateways (limits[].queue: {size, timeout}).

Cluster mode: two gateways of two workers each share one real Redis; local mode: one
gateway whose two workers share the node's slot table. A loopback upstream holds every
stream open until the test releases it, so what is in flight is exactly known.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import Gateway, RawClient
from tests.support.held_upstream import HeldUpstream
from tests.support.redis_server import RedisServer

KEY = "sk-queued-team"
LIMIT = 2
QUEUE = 3
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


def config(upstream: HeldUpstream, redis_url: str | None, timeout: str) -> dict:
    out = {
        "providers": [{"name": "held", "type": "openai", "base_url": upstream.url + "/v1", "api_keys": ["k"]}],
        "models": [{"name": "m", "targets": [{"provider": "held", "model": "m"}]}],
        "consumers": [{"name": "team", "api_keys": [KEY]}],
        "routes": [{"name": "slow-api", "match": {"path": "/slow"}, "upstream": upstream.url}],
        "limits": [
            {"name": "streams", "match": {"models": ["m"]}, "concurrency": LIMIT,
             "queue": {"size": QUEUE, "timeout": timeout}},
            {"name": "slow-route", "match": {"routes": ["slow-*"]}, "key": ["ip"], "concurrency": 1,
             "queue": {"size": 1, "timeout": "1s"}},
        ],
    }
    if redis_url:
        out["redis"] = redis_url
    return out


@pytest.fixture(params=["cluster", "local"])
def gateways(request, tmp_path, redis_server, upstream) -> Iterator[list[Gateway]]:
    cluster = request.param == "cluster"
    started = [
        Gateway(config(upstream, redis_server.url if cluster else None, "30s"), tmp_path, workers=2)
        for _ in range(2 if cluster else 1)
    ]
    yield started
    upstream.release()
    for gw in started:
        gw.stop()


class Streams:
    """Streaming chat requests through the openai SDK, one thread each; what happened to each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.admitted: dict[int, float] = {}  # i -> seconds until the first chunk
        self.refused: dict[int, tuple[float, str, str | None]] = {}  # i -> (seconds, message, retry-after)
        self.finished: list[int] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def open(self, i: int, port: int) -> None:
        client = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=60)

        def run() -> None:
            started = time.monotonic()
            try:
                stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
                chunks = iter(stream)
                next(chunks)
                with self.lock:
                    self.admitted[i] = time.monotonic() - started
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                with self.lock:
                    (self.finished if text else self.errors).append(i if text else f"{i}: empty")
            except openai.RateLimitError as exc:
                with self.lock:
                    self.refused[i] = (time.monotonic() - started, exc.message, exc.response.headers.get("retry-after"))
            except Exception as exc:  # recorded: the test fails on it
                with self.lock:
                    self.errors.append(repr(exc))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def decided(self) -> int:
        with self.lock:
            return len(self.admitted) + len(self.refused) + len(self.errors)

    def wait_decided(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.decided() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.decided()} of {count} decided: {self.admitted} {self.refused} {self.errors}")
            time.sleep(0.02)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


def raw_stream_request(port: int) -> RawClient:
    raw = RawClient(port)
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()
    raw.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return raw


def test_queued_requests_wait_for_slots_overflow_is_refused_and_a_leaver_frees_its_place(gateways, upstream):
    ports = [gw.port for gw in gateways]
    streams = Streams()
    for i in range(LIMIT):
        streams.open(i, ports[i % len(ports)])
    streams.wait_decided(LIMIT)
    upstream.wait_in_flight(LIMIT)
    # Two wait in the queue through the SDK, one through a raw connection that will leave.
    for i in range(LIMIT, LIMIT + QUEUE - 1):
        streams.open(i, ports[i % len(ports)])
    time.sleep(0.3)  # the SDK waiters are queued before the raw one (arrival order)
    leaver = raw_stream_request(ports[-1])
    time.sleep(1.0)
    assert streams.decided() == LIMIT, (streams.refused, streams.errors)  # queued: no answer yet
    assert upstream.in_flight == LIMIT

    # The queue is full: one more is refused at once, with Retry-After.
    overflow = Streams()
    overflow.open(100, ports[0])
    overflow.wait_decided(1)
    assert list(overflow.refused) == [100], (overflow.admitted, overflow.errors)
    seconds, message, retry_after = overflow.refused[100]
    assert "queue is full" in message and retry_after == "1" and seconds < 5

    # The raw client leaves (FIN): its place frees, so the next request queues instead of being refused.
    leaver.sock.close()
    time.sleep(0.5)
    streams.open(200, ports[0])
    time.sleep(1.5)
    assert streams.decided() == LIMIT, (streams.refused, streams.errors)
    assert 200 not in streams.refused

    # Slots free as the held streams end: every queued request is served, never more than LIMIT at once.
    upstream.release()
    streams.wait_decided(LIMIT + QUEUE - 1 + 1, timeout=60)
    streams.join()
    assert streams.errors == [] and streams.refused == {}
    assert sorted(streams.finished) == [0, 1, 2, 3, 200]
    assert upstream.most == LIMIT
    for event in ("queued", "queue_full", "queue_abandoned"):
        wait_for_event(gateways, event)


def limit_events(gw: Gateway, event: str) -> float:
    request = urllib.request.Request(gw.admin + "/metrics", headers=gw.admin_headers())
    text = urllib.request.urlopen(request, timeout=5).read().decode()
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "fastgw_limit_events_total" and s.labels.get("event") == event
    )


def wait_for_event(gateways: list[Gateway], event: str) -> None:
    """The limiter's counters reach /metrics once a second (summed over workers)."""
    deadline = time.monotonic() + 10
    while sum(limit_events(gw, event) for gw in gateways) < 1:
        assert time.monotonic() < deadline, f"fastgw_limit_events_total{{event={event!r}}} never counted"
        time.sleep(0.2)


def test_a_queued_request_is_refused_when_its_wait_times_out(gateways, upstream):
    port = gateways[0].port
    holder = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    holder.request("GET", "/slow/report")
    held = holder.getresponse()
    assert held.status == 200 and held.read1(64).startswith(b"first piece")
    waiting = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    started = time.monotonic()
    waiting.request("GET", "/slow/report")
    refused = waiting.getresponse()
    waited = time.monotonic() - started
    payload = json.loads(refused.read())
    assert refused.status == 429 and refused.getheader("retry-after") == "1"
    assert "no slot came free within 1s" in json.dumps(payload)
    assert 0.9 < waited < 10, waited
    upstream.release()
    assert held.read().endswith(b"last piece\n")
    waiting.request("GET", "/slow/report")  # the slot is free again: served without waiting
    assert waiting.getresponse().status == 200

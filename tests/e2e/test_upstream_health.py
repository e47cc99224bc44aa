"""Health of plain-route endpoints through real gateways: passive ejection, active checks, slow
start after a revival, admin drain and undrain, and zones (issue 13, items 6 and 7).

The upstreams are loopback servers that name themselves in every answer
(:mod:`tests.support.named_upstream`), so each test counts who served what. Shares measured over
time have wide margins: the machine is shared and slow.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.support.gateway import Gateway
from tests.support.named_upstream import NamedUpstream
from tests.support.provider_fakes import FakeServer


@pytest.fixture
def upstreams():
    made: list[NamedUpstream] = []

    def make(*names: str) -> list[NamedUpstream]:
        made.extend(NamedUpstream(name) for name in names)
        return made[-len(names):]

    yield make
    for upstream in made:
        upstream.close()


def get(gw: Gateway, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(gw.url + path, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def served(gw: Gateway, count: int, path: str = "/") -> Counter:
    """Who answered ``count`` requests (every one must succeed)."""
    answers = [get(gw, path) for _ in range(count)]
    assert all(status == 200 for status, _ in answers), answers
    return Counter(body for _, body in answers)


def endpoint_state(gw: Gateway, route: str, url: str) -> dict:
    status, listing = gw.admin_call("GET", "/upstreams")
    assert status == 200
    found = next(r for r in listing["routes"] if r["route"] == route)
    return next(e for e in found["endpoints"] if e["url"] == url)


def wait_state(gw: Gateway, route: str, url: str, state: str, timeout: float = 15.0, drive: bool = False) -> dict:
    """Wait until ``GET /upstreams`` shows ``url`` in ``state``; ``drive`` keeps sending requests
    meanwhile (passive detection learns only from them)."""
    deadline = time.monotonic() + timeout
    while True:
        entry = endpoint_state(gw, route, url)
        if entry["state"] == state:
            return entry
        assert time.monotonic() < deadline, f"{url} still {entry} after {timeout}s"
        if drive:
            get(gw)
        else:
            time.sleep(0.05)


def share_over(gw: Gateway, name: str, seconds: float) -> float:
    """The share of requests ``name`` answered while requests were sent for ``seconds``."""
    counts: Counter = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = get(gw)
        assert status == 200, body
        counts[body] += 1
    return counts[name] / sum(counts.values())


def metric_value(gw: Gateway, name: str, **labels: str) -> float:
    """The sum of a family's samples with ``labels``, once the workers published (once a second)."""
    time.sleep(1.5)
    text = urllib.request.urlopen(gw.admin + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def route(name: str, endpoints: list, **upstream: object) -> dict:
    return {"name": name, "match": {"path": "/"}, "upstream": {"endpoints": endpoints, **upstream}}


def test_killed_endpoint_is_ejected_passively_then_ramps_back(gateway, upstreams) -> None:
    a, b = upstreams("a", "b")
    gw = gateway({"routes": [route("svc", [a.url, b.url], slow_start="6s", outlier={
        "consecutive_5xx": 3, "consecutive_connect_failures": 2, "base_ejection": "8s", "max_ejection": "30s"})]})
    assert set(served(gw, 20)) == {"a", "b"}
    a.kill()
    # Every request still succeeds (a retry goes to b); a few connect failures eject a node-wide.
    assert served(gw, 30) == Counter(b=30)
    entry = endpoint_state(gw, "svc", a.url)
    assert entry["state"] == "ejected" and entry["ejections"] >= 1, entry
    assert metric_value(gw, "fastgw_upstream_ejections_total", endpoint=a.url) >= 1
    ejected_errors = metric_value(gw, "fastgw_upstream_requests_total", endpoint=a.url, status_class="connect_error")
    assert served(gw, 20) == Counter(b=20)  # while ejected, a is not even tried
    assert metric_value(gw, "fastgw_upstream_requests_total", endpoint=a.url,
                        status_class="connect_error") == ejected_errors
    a.revive()
    wait_state(gw, "svc", a.url, "slow_start", timeout=20)
    early = share_over(gw, "a", 1.5)
    time.sleep(3.5)
    late = share_over(gw, "a", 1.5)
    # Linear from 10 % of its weight: a is served at most about a quarter early on, half at the end.
    assert early < 0.33, (early, late)
    assert late > 0.38, (early, late)
    assert late > early + 0.1, (early, late)


def test_active_check_takes_a_dead_endpoint_out_and_brings_it_back_slowly(gateway, upstreams) -> None:
    a, b = upstreams("a", "b")
    gw = gateway({"routes": [route("svc", [a.url, b.url], slow_start="6s", health={
        "path": "/healthz", "interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
        "unhealthy_threshold": 2})]})
    wait_state(gw, "svc", a.url, "up")
    assert endpoint_state(gw, "svc", a.url)["health"] == "healthy"
    a.kill()  # no request is sent: only the checker can notice
    entry = wait_state(gw, "svc", a.url, "unhealthy")
    assert "Connection refused" in entry["last_check"], entry
    assert served(gw, 20) == Counter(b=20)
    assert metric_value(gw, "fastgw_upstream_requests_total", endpoint=a.url, status_class="connect_error") == 0
    assert metric_value(gw, "fastgw_upstream_endpoint_state", endpoint=a.url, state="unhealthy") == 1
    a.revive()
    wait_state(gw, "svc", a.url, "slow_start")
    early = share_over(gw, "a", 1.5)
    time.sleep(3.5)
    late = share_over(gw, "a", 1.5)
    assert early < 0.33 and late > 0.38 and late > early + 0.1, (early, late)
    # A check that fails on its status (the server answers, but 503) counts the same.
    a.healthy = False
    wait_state(gw, "svc", a.url, "unhealthy")
    assert served(gw, 10) == Counter(b=10)


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_drain_lets_the_request_in_flight_finish_and_undrain_slow_starts(gateway, upstreams, pure) -> None:
    a, b = upstreams("a", "b")
    gw = gateway({"routes": [route("svc", [a.url, b.url], slow_start="5s")]}, workers=1, pure=pure,
                 admin_token="t" * 32)
    outcome: dict = {}

    def slow() -> None:
        outcome["answer"] = get(gw, "/slow?s=3")

    client = threading.Thread(target=slow)
    client.start()  # a worker's first pick is the first endpoint
    deadline = time.monotonic() + 10
    while a.in_flight == 0:
        assert time.monotonic() < deadline, "the slow request never reached a"
        time.sleep(0.02)
    status, body = gw.admin_call("POST", "/upstreams/drain", json.dumps({"route": "svc", "endpoint": 0}).encode())
    assert status == 200 and body["drained"] and body["routes"] == ["svc"], body
    entry = endpoint_state(gw, "svc", a.url)
    assert entry["state"] == "drained" and entry["in_flight"] == 1, entry
    assert served(gw, 20) == Counter(b=20)  # no new request reaches a
    client.join(15)
    assert outcome["answer"] == (200, "a")  # the one in flight finished
    assert endpoint_state(gw, "svc", a.url)["in_flight"] == 0  # safe to stop it now
    status, body = gw.admin_call("POST", "/upstreams/undrain", json.dumps({"endpoint": a.url}).encode())
    assert status == 200 and not body["drained"], body
    assert endpoint_state(gw, "svc", a.url)["state"] == "slow_start"
    early = share_over(gw, "a", 1.0)
    time.sleep(3.5)
    late = share_over(gw, "a", 1.0)
    assert early < 0.33 and late > 0.38, (early, late)


def test_drain_errors_and_no_healthy_upstream(gateway, upstreams) -> None:
    (a,) = upstreams("a")
    gw = gateway({"routes": [route("svc", [a.url])]}, workers=2, admin_token="t" * 32)
    for request, code in [({"route": "nope", "endpoint": 0}, 404), ({"route": "svc", "endpoint": 5}, 404),
                          ({"endpoint": "http://127.0.0.1:1"}, 404), ({"endpoint": 0}, 400), ({}, 400)]:
        status, body = gw.admin_call("POST", "/upstreams/drain", json.dumps(request).encode())
        assert status == code, (request, body)
    status, _ = http_status(gw.admin + "/upstreams")  # behind the token like the rest
    assert status == 401
    gw.admin_call("POST", "/upstreams/drain", json.dumps({"route": "svc", "endpoint": a.url}).encode())
    try:
        urllib.request.urlopen(gw.url + "/", timeout=10)
        raise AssertionError("a drained endpoint served")
    except urllib.error.HTTPError as exc:
        status, body, headers = exc.code, exc.read().decode(), exc.headers
    assert status == 503 and json.loads(body)["error"]["code"] == "no_healthy_upstream", body
    assert headers["Retry-After"] == "1"
    deadline = time.monotonic() + 10
    while (found := gw.admin_call("GET", f"/diagnose?request_id={headers['x-request-id']}"))[0] != 200:
        assert time.monotonic() < deadline, found  # workers publish their failed requests on a tick
        time.sleep(0.1)
    found = found[1]
    assert found["cause"] == "no_healthy_upstream" and "POST /upstreams/undrain" in found["fix"], found
    gw.admin_call("POST", "/upstreams/undrain", json.dumps({"route": "svc", "endpoint": 0}).encode())
    assert get(gw) == (200, "a")


def http_status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_zones_prefer_local_and_spill_over(gateway, upstreams, pure) -> None:
    a, b, c = upstreams("a", "b", "c")
    endpoints = [{"url": a.url, "zone": "z1"}, {"url": b.url, "zone": "z1"}, {"url": c.url, "zone": "z2"}]
    outlier = {"consecutive_connect_failures": 1, "base_ejection": "30s", "max_ejection": "30s"}
    gw = gateway({"zone": "z1", "routes": [
        {**route("strict", endpoints, outlier=outlier, zones={"min_healthy": 0.6}), "match": {"path": "/strict"}},
        {**route("passive-off", endpoints), "match": {"path": "/passive-off"}},
        route("half", endpoints, outlier=outlier),
    ]}, pure=pure)
    assert set(served(gw, 30)) == {"a", "b"}  # local zone only
    a.kill()
    # A request that finds a dead: its retry goes to the other zone, not to b.
    answers = served(gw, 20, "/passive-off")
    errors = metric_value(gw, "fastgw_upstream_requests_total", route="passive-off", endpoint=a.url,
                          status_class="connect_error")
    # (c is never a first pick while the local zone is healthy: every c answered a retry; a retry
    # can also follow a pooled connection a closed, which is not counted as a connect error)
    assert errors >= 1 and answers["c"] >= errors, (answers, errors)
    # Route "half": a ejected leaves half the local weight healthy, enough for min_healthy 0.5.
    served(gw, 6)
    wait_state(gw, "half", a.url, "ejected", drive=True)
    assert served(gw, 20) == Counter(b=20)
    # Route "strict" wants 0.6: the same loss spills over to every healthy endpoint.
    assert set(served(gw, 20, "/strict")) == {"b", "c"}
    b.kill()
    served(gw, 6)
    wait_state(gw, "half", b.url, "ejected", drive=True)
    assert served(gw, 10) == Counter(c=10)  # no local endpoint left
    labels = {"route": "half", "zone": "z2", "status_class": "2xx"}
    assert metric_value(gw, "fastgw_upstream_requests_total", **labels) >= 10


class KillableFake(FakeServer):
    """The documented OpenAI fake, whose kept-alive connections :meth:`kill` cuts too."""

    def process_request(self, request, client_address) -> None:
        self.__dict__.setdefault("connections", []).append(request)
        super().process_request(request, client_address)

    def kill(self) -> None:
        self.shutdown()
        self.server_close()
        for conn in self.__dict__.get("connections", []):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def test_ai_targets_of_this_zone_are_tried_first_and_others_take_over(gateway) -> None:
    east, west = KillableFake(), KillableFake()
    try:
        providers = [{"name": name, "type": "openai", "base_url": server.url + "/v1", "api_keys": [f"sk-{name}"],
                      "breaker": {"failures": 1, "cooldown": "30s"}}
                     for name, server in (("east", east), ("west", west))]
        targets = [{"provider": "east", "model": "gpt-4o", "zone": "east"},
                   {"provider": "west", "model": "gpt-4o", "zone": "west"}]
        gw = gateway({"zone": "west", "providers": providers, "models": [{"name": "chat", "targets": targets}]},
                     workers=1)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        for _ in range(4):
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert len(west.bodies("/chat/completions")) == 4 and east.bodies("/chat/completions") == []
        west.kill()  # the local target is gone: its remote equal takes over
        for _ in range(3):
            answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content
        assert len(east.bodies("/chat/completions")) == 3
    finally:
        east.kill()
        west.kill()


class ModelList(BaseHTTPRequestHandler):
    """OpenAI's ``GET /v1/models`` (API reference, "List models"): what a provider probe calls."""

    protocol_version = "HTTP/1.1"
    probes: list[float] = []
    status = 200

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).probes.append(time.monotonic())
        body = json.dumps({"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1715367049,
                                                        "owned_by": "system"}]}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_provider_probes_run_once_per_node_and_every_worker_follows(gateway) -> None:
    handler = type("Models", (ModelList,), {"probes": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        gw = gateway({"providers": [{"name": "probed", "type": "openai", "base_url": url, "api_keys": ["sk-x"],
                                     "health_check": {"interval": "200ms", "timeout": "150ms"}}],
                      "models": [{"name": "chat", "targets": [{"provider": "probed", "model": "gpt-4o"}]}]}, workers=3)
        time.sleep(0.5)  # the followers' first probes (one each, at start) are over
        start = time.monotonic()
        time.sleep(2.0)
        probes = sum(1 for t in handler.probes if t >= start)
        # One prober: about 10 in 2 s at 200 ms (3 workers probing each would make about 30).
        assert 5 <= probes <= 14, probes
        status, listing = gw.admin_call("GET", "/upstreams")
        assert listing["providers"] == [{"provider": "probed", "health": "healthy", "probes_failed": 0}], listing
        handler.status = 503
        deadline = time.monotonic() + 10
        while gw.admin_call("GET", "/upstreams")[1]["providers"][0]["health"] != "unhealthy":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_added_by_a_push_slow_starts_and_the_first_ones_did_not(gateway, upstreams) -> None:
    a, b, c = upstreams("a", "b", "c")
    gw = gateway({"routes": [route("svc", [a.url, b.url], slow_start="6s")]})
    assert endpoint_state(gw, "svc", a.url)["state"] == "up"  # a node's first endpoints start at full weight
    status, answer = gw.push({"routes": [route("svc", [a.url, b.url, c.url], slow_start="6s")]})
    assert status == 200, answer
    assert endpoint_state(gw, "svc", c.url)["state"] == "slow_start"
    early = share_over(gw, "c", 1.5)
    time.sleep(3.5)
    late = share_over(gw, "c", 1.5)
    # a third of the traffic at full weight; from 10 % of its weight at first
    assert early < 0.22 and late > 0.26 and late > early + 0.08, (early, late)

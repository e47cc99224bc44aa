"""Overload protection through a real gateway: a busy worker sheds low priority first."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.request

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.echo_upstream import EchoUpstream
from tests.support.gateway import Gateway
from tests.support.held_upstream import HeldUpstream

KEYS = {"low": "sk-batch", "normal": "sk-app", "high": "sk-pager"}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def upstream():
    held = HeldUpstream()
    yield held
    held.stop()


def config(upstream: HeldUpstream) -> dict:
    return {
        "http": {"overload": {"max_in_flight": 2, "retry_after": 3}},
        "providers": [{"name": "held", "type": "openai", "base_url": upstream.url + "/v1", "api_keys": ["k"]}],
        "models": [{"name": "m", "targets": [{"provider": "held", "model": "m"}]}],
        "consumers": [
            {"name": "batch", "api_keys": [KEYS["low"]], "priority": "low"},
            {"name": "app", "api_keys": [KEYS["normal"]]},
            {"name": "pager", "api_keys": [KEYS["high"]], "priority": "high"},
        ],
        "routes": [
            {"name": "checkout", "match": {"path": "/checkout"}, "upstream": upstream.url, "priority": "high"},
            {"name": "reports", "match": {"path": "/reports"}, "upstream": upstream.url, "priority": "low"},
        ],
    }


def client(gw: Gateway, level: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEYS[level], base_url=gw.url + "/v1", max_retries=0, timeout=30)


def get(gw: Gateway, path: str) -> tuple[int, str | None, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("retry-after"), response.read()
    finally:
        conn.close()


def test_a_loaded_worker_sheds_low_then_normal_never_high(tmp_path, upstream):
    gw = Gateway(config(upstream), tmp_path, workers=1)
    try:
        # One stream in flight: load 0.5, everyone is served.
        first = client(gw, "normal").chat.completions.create(model="m", messages=MESSAGES, stream=True)
        next(iter(first))
        upstream.wait_in_flight(1)
        # Two in flight: load 1.0 for a low request (it counts every priority)...
        second = client(gw, "low").chat.completions.create(model="m", messages=MESSAGES, stream=True)
        next(iter(second))
        upstream.wait_in_flight(2)

        def shed(level: str) -> None:
            with pytest.raises(openai.InternalServerError) as info:
                client(gw, level).chat.completions.create(model="m", messages=MESSAGES)
            assert info.value.status_code == 503
            assert info.value.body["code"] == "overloaded"
            assert info.value.response.headers["retry-after"] == "3"

        shed("low")
        # ...but 0.5 for a normal one: admitted low traffic never gets normal traffic shed.
        third = client(gw, "normal").chat.completions.create(model="m", messages=MESSAGES, stream=True)
        next(iter(third))
        upstream.wait_in_flight(3)
        shed("normal")  # two normal in flight: 1.0
        # The Anthropic front door sheds in its own dialect.
        front = anthropic.Anthropic(api_key=KEYS["low"], base_url=gw.url, max_retries=0, timeout=30)
        with pytest.raises(anthropic.InternalServerError) as shed:
            front.messages.create(model="m", max_tokens=8, messages=MESSAGES)
        assert shed.value.status_code == 503 and shed.value.response.headers["retry-after"] == "3"
        assert shed.value.body["error"]["type"] == "api_error"  # Anthropic's type for a 5xx other than 529
        assert "overloaded" in shed.value.body["error"]["message"]
        # Plain routes: by the route's priority.
        status, retry, body = get(gw, "/reports/today")
        assert (status, retry) == (503, "3") and b"overloaded" in body
        # High priority is served however loaded the worker is.
        answer = client(gw, "high").chat.completions.create(model="m", messages=MESSAGES, stream=True)
        checkout = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        checkout.request("GET", "/checkout/cart")
        cart = checkout.getresponse()
        assert cart.status == 200
        upstream.wait_in_flight(5)
        upstream.release()
        assert cart.read() == b"first piece\nlast piece\n"
        checkout.close()
        for stream in (first, second, third, answer):
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello there"
        upstream.wait_in_flight(0)
        # Load gone: low priority is served again.
        assert get(gw, "/reports/today")[0] == 200
        shed_counts = {}
        deadline = time.monotonic() + 10  # workers publish their metrics about once a second
        while time.monotonic() < deadline and shed_counts.get("low", 0) < 3:
            text = urllib.request.urlopen(gw.admin + "/metrics", timeout=5).read().decode()
            shed_counts = {
                s.labels["priority"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "fastgw_overload_shed_total"
            }
            time.sleep(0.2)
        assert shed_counts == {"low": 3.0, "normal": 1.0}
    finally:
        upstream.release()
        gw.stop()


def test_a_shed_low_request_holds_its_connection_unread_for_the_pause(tmp_path, upstream):
    spec = config(upstream)
    spec["http"]["overload"] |= {"pause": "1s"}
    spec["routes"].append({"name": "api", "match": {"path": "/api"}, "upstream": upstream.url})  # normal priority
    gw = Gateway(spec, tmp_path, workers=1)
    try:
        streams = [client(gw, "high").chat.completions.create(model="m", messages=MESSAGES, stream=True)
                   for _ in range(3)]
        for stream in streams:
            next(iter(stream))
        upstream.wait_in_flight(3)  # load 1.0 and more: low and normal requests are shed

        def two_on_one_connection(path: str) -> tuple[int, int, float]:
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
            try:
                conn.request("GET", path)
                first = conn.getresponse()
                first.read()
                started = time.monotonic()
                conn.request("GET", path)  # at once, on the same keep-alive connection
                second = conn.getresponse()
                second.read()
                return first.status, second.status, time.monotonic() - started
            finally:
                conn.close()

        first, second, waited = two_on_one_connection("/reports/today")  # low: held 0.5-1.5 s
        assert (first, second) == (503, 503) and waited >= 0.45, waited
        first, second, waited = two_on_one_connection("/api/today")  # normal: read again at once
        assert (first, second) == (503, 503) and waited < 0.45, waited
        upstream.release()
        for stream in streams:
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello there"
        upstream.wait_in_flight(0)
        assert get(gw, "/reports/today")[0] == 200  # a fresh connection, load gone: served
    finally:
        upstream.release()
        gw.stop()


def test_a_busy_loop_sheds_low_priority_only_and_recovers(tmp_path):
    echo = EchoUpstream("fast")
    spec = {
        "http": {"overload": {"max_cpu": "3%", "retry_after": 2, "pause": 0}},
        "routes": [
            {"name": "reports", "match": {"path": "/reports"}, "upstream": echo.url, "priority": "low"},
            {"name": "api", "match": {"path": "/api"}, "upstream": echo.url},
            {"name": "checkout", "match": {"path": "/checkout"}, "upstream": echo.url, "priority": "high"},
        ],
    }
    gw = Gateway(spec, tmp_path, workers=1)
    statuses: dict[str, list[int]] = {"low": [], "normal": [], "high": []}
    flooding = threading.Event()
    flooding.set()

    def keep_asking(path: str, level: str, gap: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        while flooding.is_set():
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            statuses[level].append(response.status)
            if response.status == 503:
                assert response.getheader("retry-after") == "2"
            time.sleep(gap)
        conn.close()

    try:
        assert get(gw, "/reports/x")[0] == 200  # idle: a low request is served
        threads = [threading.Thread(target=keep_asking, args=("/reports/x", "low", 0)) for _ in range(4)]
        threads += [threading.Thread(target=keep_asking, args=(path, level, 0.02))
                    for path, level in (("/api/x", "normal"), ("/checkout/x", "high"))]
        for thread in threads:
            thread.start()
        time.sleep(3)
        flooding.clear()
        for thread in threads:
            thread.join(timeout=30)
        # The loop was busy past 3% of a core: low requests were shed, normal and high never were.
        assert 503 in statuses["low"] and 200 in statuses["low"], statuses["low"][:20]
        assert set(statuses["low"]) == {200, 503}
        assert statuses["normal"] and set(statuses["normal"]) == {200}
        assert statuses["high"] and set(statuses["high"]) == {200}
        time.sleep(0.3)  # the busy share decays within a few samples of the flood's end
        assert get(gw, "/reports/x")[0] == 200
    finally:
        flooding.clear()
        gw.stop()
        echo.stop()

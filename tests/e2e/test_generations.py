"""Config generations: pushes go live in every worker without cutting a stream."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from tests.support.gateway import Gateway, MockLLMProcess, RawClient


@pytest.fixture(scope="module")
def upstream():
    mock = MockLLMProcess()
    yield mock
    mock.stop()


def config_with_marker(upstream: MockLLMProcess, marker: str, extra_routes: int = 0) -> dict:
    routes = [
        {"name": f"r{i}", "match": {"path": {"exact": f"/r/{i}"}}, "upstream": upstream.url} for i in range(extra_routes)
    ]
    routes.append({"name": "echo", "match": {"path": "/echo"}, "upstream": {"endpoints": [upstream.url], "host_header": marker}})
    routes.append({"name": "default", "match": {"path": "/"}, "upstream": upstream.url})
    return {"routes": routes}


@pytest.fixture(params=["compiled", "pure"])
def gw(request, tmp_path, upstream):
    gateway = Gateway(config_with_marker(upstream, "gen-1"), tmp_path, pure=request.param == "pure")
    yield gateway
    assert gateway.stop() == 0


def served_marker(port: int) -> str:
    c = RawClient(port)
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, body = c.read_response()
    c.close()
    return {k.lower(): v for k, v in json.loads(body)["headers"]}["host"]


def test_stream_keeps_flowing_across_three_pushes(gw, upstream):
    events: list[bytes] = []
    errors: list[BaseException] = []

    def read_stream() -> None:
        try:
            c = RawClient(gw.port, timeout=10)
            c.send(b"GET /sse?n=30&delay_ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = c.read_response()
            assert status == 200
            events.extend(line for line in body.split(b"\n") if line.startswith(b"data:"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    reader = threading.Thread(target=read_stream)
    reader.start()
    time.sleep(0.3)
    for generation in (2, 3, 4):
        status, answer = gw.push(config_with_marker(upstream, f"gen-{generation}"))
        assert status == 200, answer
        assert answer["generation"] == generation
        gw.wait_ready(2, generation=generation, timeout=2)
        for _ in range(4):  # new requests see the new config, whichever worker takes them
            assert served_marker(gw.port) == f"gen-{generation}"
        time.sleep(0.5)
    reader.join(10)
    assert not errors, errors
    assert len(events) == 30  # the stream, started under generation 1, was never cut


def test_invalid_push_is_rejected_and_changes_nothing(gw, upstream):
    bad = config_with_marker(upstream, "gen-x")
    bad["routes"][0]["upstream"] = {"endpoints": ["ftp://nowhere"]}
    bad["routes"][1]["match"] = {"path": {"regex": "(unclosed"}}
    status, answer = gw.push(bad)
    assert status == 400
    errors = "\n".join(answer["error"]["errors"])
    assert "routes[0].upstream.endpoints[0]" in errors
    assert "routes[1].match.path" in errors
    assert {w["generation"] for w in gw.status()["workers"]} == {1}
    assert served_marker(gw.port) == "gen-1"


def test_push_of_10000_routes_is_live_in_every_worker(gw, upstream):
    started = time.monotonic()
    status, answer = gw.push(config_with_marker(upstream, "big", extra_routes=10_000))
    assert status == 200, answer
    gw.wait_ready(2, generation=answer["generation"], timeout=5)
    live_after = time.monotonic() - started
    c = RawClient(gw.port)
    c.send(b"GET /r/9999 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.read_response()[0] == 404  # routed to the mock, which has no /r/9999
    assert served_marker(gw.port) == "big"
    print(f"10,000-route generation live in every worker after {live_after:.3f}s")


def read_events_in_thread(port: int, path: bytes) -> tuple[threading.Thread, list, list]:
    events: list[bytes] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            c = RawClient(port, timeout=10)
            c.send(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            _, _, body = c.read_response()
            events.extend(line for line in body.split(b"\n") if line.startswith(b"data:"))
        except BaseException as exc:  # inspected by the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, events, errors


def test_sigterm_lets_an_inflight_stream_finish(tmp_path, upstream):
    gw = Gateway({"http": {"drain_timeout": "5s"}, **config_with_marker(upstream, "m")}, tmp_path)
    thread, events, errors = read_events_in_thread(gw.port, b"/sse?n=15&delay_ms=100")
    time.sleep(0.4)
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(ConnectionRefusedError):  # no new connections once draining
        RawClient(gw.port, timeout=1)
    thread.join(10)
    assert not errors, errors
    assert len(events) == 15
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - started < 4


def test_drain_timeout_cuts_a_stream_that_outlives_it(tmp_path, upstream):
    gw = Gateway({"http": {"drain_timeout": "1s"}, **config_with_marker(upstream, "m")}, tmp_path)
    thread, _, errors = read_events_in_thread(gw.port, b"/sse?n=100&delay_ms=100")
    time.sleep(0.4)
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - started < 3
    thread.join(5)
    assert errors and isinstance(errors[0], ConnectionError)  # cut: a truncated chunked body

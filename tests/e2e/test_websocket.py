"""WebSocket routes through a real gateway, with the ``websockets`` library on both ends.

The upstream is a real ``websockets`` echo server; it records every request head it sees so a
test can prove an upgrade never reached it (auth refused, route without ``websocket``).
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve

from tests.support.gateway import Gateway, RawClient

KEY = "ws-team-key-0001"
CONSUMERS = [{"name": "team", "api_keys": [KEY]}, {"name": "other", "api_keys": ["ws-other-key-0002"]}]
BIG = 200 * 1024  # beyond a 64 KiB frame length (the 8-byte length form of RFC 6455 5.2)


class EchoServer:
    """``websockets.serve`` in a thread: sends every message back as it came (text or binary)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []  # (path, Upgrade header) of every request head
        self.closes: dict[str, int | None] = {}  # path -> close code the upstream received (None: no close frame)
        self.server: Server = serve(self._echo, "127.0.0.1", 0, process_request=self._record,
                                    max_size=None, ping_interval=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, connection: ServerConnection, request) -> None:
        self.seen.append((request.path, request.headers.get("Upgrade")))

    def _echo(self, ws: ServerConnection) -> None:
        try:
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass
        received = ws.protocol.close_rcvd
        self.closes[ws.request.path] = received.code if received else None

    def upgrades_for(self, path: str) -> list[str | None]:
        return [upgrade for seen_path, upgrade in self.seen if seen_path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def ws_config(echo: EchoServer) -> dict:
    upstream = f"http://127.0.0.1:{echo.port}"
    return {
        "consumers": CONSUMERS,
        "routes": [
            {"name": "ws", "match": {"path": {"prefix": "/ws/"}}, "upstream": upstream},
            {"name": "ws-auth", "match": {"path": {"prefix": "/auth/"}}, "upstream": upstream, "filters": ["auth"]},
            {"name": "ws-off", "match": {"path": {"prefix": "/off/"}}, "upstream": upstream, "websocket": False},
            {"name": "ws-idle", "match": {"path": {"prefix": "/idle/"}},
             "upstream": {"endpoints": [upstream], "timeouts": {"tunnel_idle": "1s"}}},
            {"name": "ws-capped", "match": {"path": {"prefix": "/capped/"}}, "upstream": upstream, "filters": ["auth"]},
        ],
        "limits": [{"name": "tunnels", "match": {"routes": ["ws-capped"]}, "key": ["consumer"], "concurrency": 2}],
    }


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory, echo) -> Iterator[Gateway]:
    # One worker: the concurrency slots and the metrics are then one worker's.
    gateway = Gateway(ws_config(echo), tmp_path_factory.mktemp("ws"), pure=request.param == "pure", workers=1)
    yield gateway
    assert gateway.stop() == 0


def open_ws(gw: Gateway, path: str, key: str | None = None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return connect(f"ws://127.0.0.1:{gw.port}{path}", additional_headers=headers, open_timeout=10,
                   close_timeout=5, max_size=None, ping_interval=None)


def refused_status(gw: Gateway, path: str, key: str | None = None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(gw, path, key).close()
    return refused.value.response.status_code


def test_text_and_binary_messages_echo_both_ways_including_large_ones(gw):
    with open_ws(gw, "/ws/echo") as ws:
        ws.send("hello, tunnel")
        assert ws.recv(timeout=10) == "hello, tunnel"
        payload = bytes(range(256)) * (BIG // 256)
        ws.send(payload)
        assert ws.recv(timeout=20) == payload
        text = "é" * BIG  # a large text frame, multi-byte UTF-8
        ws.send(text)
        assert ws.recv(timeout=20) == text
        for i in range(20):  # many small frames, coalesced or split by TCP as it likes
            ws.send(f"m{i}")
        assert [ws.recv(timeout=10) for _ in range(20)] == [f"m{i}" for i in range(20)]


def test_auth_runs_before_the_upgrade(gw, echo):
    before = len(echo.upgrades_for("/auth/secret"))
    assert refused_status(gw, "/auth/secret") == 401
    assert refused_status(gw, "/auth/secret", "not-a-key") == 401
    assert len(echo.upgrades_for("/auth/secret")) == before  # the upstream never saw those upgrades
    with open_ws(gw, "/auth/secret", KEY) as ws:
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=10) == b"\x00\x01"
    assert echo.upgrades_for("/auth/secret")[before:] == ["websocket"]


def test_a_route_without_websocket_forwards_no_upgrade(gw, echo):
    status = refused_status(gw, "/off/echo")
    assert status in (400, 426)  # the echo server got a plain GET: no tunnel
    assert echo.upgrades_for("/off/echo") and all(upgrade is None for upgrade in echo.upgrades_for("/off/echo"))


def test_a_tunnel_keeps_flowing_across_a_config_push(gw, echo):
    with open_ws(gw, "/ws/push") as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        generation = gw.status()["generation"]
        pushed = ws_config(echo)
        pushed["routes"].append({"name": "extra", "match": {"path": {"prefix": "/extra/"}},
                                 "upstream": f"http://127.0.0.1:{echo.port}"})
        status, body = gw.push(pushed)
        assert status == 200, body
        gw.wait_ready(1, generation=generation + 1)
        for message in ("after", b"\xff" * 70_000):
            ws.send(message)
            assert ws.recv(timeout=20) == message
    with open_ws(gw, "/extra/new") as ws:  # and the new generation serves new tunnels
        ws.send("new")
        assert ws.recv(timeout=10) == "new"


def test_an_idle_tunnel_is_closed(gw):
    with open_ws(gw, "/idle/quiet") as ws:
        ws.send("awake")
        assert ws.recv(timeout=10) == "awake"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)  # tunnel_idle is 1s: the gateway cuts it
        assert time.monotonic() - started >= 0.9


def test_open_tunnels_per_consumer_are_capped_by_a_concurrency_limit(gw):
    with ExitStack() as held:
        first = held.enter_context(open_ws(gw, "/capped/a", KEY))
        held.enter_context(open_ws(gw, "/capped/b", KEY))
        assert refused_status(gw, "/capped/c", KEY) == 429  # refused before the upgrade
        with open_ws(gw, "/capped/other", "ws-other-key-0002") as ws:  # another consumer has its own slots
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
        first.send("still here")
        assert first.recv(timeout=10) == "still here"
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the slot frees once the tunnel has ended on the gateway's side
            try:
                third = open_ws(gw, "/capped/c", KEY)
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                assert time.monotonic() < deadline, "the closed tunnel's slot never came back"
                time.sleep(0.1)
        with third:
            third.send("third")
            assert third.recv(timeout=10) == "third"


def metric(gw: Gateway, pattern: str) -> float | None:
    request = urllib.request.Request(gw.admin + "/metrics", headers=gw.admin_headers())
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    found = re.search("^" + re.escape(pattern) + r" (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def wait_metric(gw: Gateway, pattern: str, ok, timeout: float = 15.0) -> float | None:
    """Workers publish metrics on a tick: poll until ``ok(value)``."""
    deadline = time.monotonic() + timeout
    value = metric(gw, pattern)
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = metric(gw, pattern)
    return value


def test_open_tunnels_and_bytes_each_way_are_counted(gw):
    out_key = 'fastgw_websocket_bytes_total{route="ws",direction="client_to_upstream"}'
    in_key = 'fastgw_websocket_bytes_total{route="ws",direction="upstream_to_client"}'
    open_key = 'fastgw_websocket_tunnels_open{route="ws"}'
    sent_before = metric(gw, out_key) or 0
    received_before = metric(gw, in_key) or 0
    with open_ws(gw, "/ws/metrics") as ws:
        payload = os.urandom(100_000)  # incompressible: permessage-deflate leaves it as large
        ws.send(payload)
        assert ws.recv(timeout=20) == payload
        assert wait_metric(gw, open_key, lambda v: v == 1) == 1
        # Client frames are masked and both carry headers: at least the payload each way.
        assert wait_metric(gw, out_key, lambda v: (v or 0) - sent_before >= 100_000) - sent_before >= 100_000
        assert wait_metric(gw, in_key, lambda v: (v or 0) - received_before >= 100_000) - received_before >= 100_000
    assert wait_metric(gw, open_key, lambda v: v == 0) == 0  # counted down exactly once when it ended


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_the_drain_deadline_tells_both_sides_of_a_tunnel_it_goes_away(gateway, echo, pure):
    gw = gateway(ws_config(echo) | {"http": {"drain_timeout": "1s"}}, pure=pure, workers=1)
    path = f"/ws/drain-{pure}"
    with open_ws(gw, path) as ws:
        ws.send("before the drain")
        assert ws.recv(timeout=10) == "before the drain"
        assert gw.stop() == 0  # SIGTERM: the tunnel outlives the 1s drain timeout
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
    deadline = time.monotonic() + 10
    while path not in echo.closes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert echo.closes[path] == 1001  # the upstream was told too, in a masked frame it accepted


def test_at_the_drain_deadline_no_close_frame_goes_into_the_middle_of_a_frame(gateway, echo):
    gw = gateway(ws_config(echo) | {"http": {"drain_timeout": "1s"}}, workers=1)
    client = RawClient(gw.port, timeout=15)
    client.send(b"GET /ws/mid-frame HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    status, _, _ = client.read_response_head_only()
    assert status == 101 and client.buf == b""
    # A masked binary frame announcing 1000 payload bytes, of which only 10 are sent.
    client.send(b"\x82\xfe\x03\xe8" + b"\x00\x00\x00\x00" + b"0123456789")
    time.sleep(0.5)  # let the gateway relay it before the drain
    assert gw.stop() == 0
    while client._fill():
        pass
    assert client.buf == b"\x88\x02\x03\xe9"  # the client side was between frames: told 1001
    deadline = time.monotonic() + 10
    while "/ws/mid-frame" not in echo.closes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert echo.closes["/ws/mid-frame"] is None  # the upstream side was mid-frame: only closed
    client.close()

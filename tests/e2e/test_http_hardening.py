"""HTTP hardening (issue 10), tried as an attacker would: raw sockets on loopback against a
real ``fastgw run``, in front of a deliberately misbehaving upstream (tests/support/bad_upstream).

Each test names the "Why" bullet it covers; each failed before the fix.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from tests.support.bad_upstream import BadUpstream
from tests.support.gateway import Gateway, RawClient, http_json


@pytest.fixture(scope="module")
def bad():
    upstream = BadUpstream()
    yield upstream
    upstream.close()


def hardening_config(bad: BadUpstream, **http) -> dict:
    return {
        "http": {"header_timeout": "2s", "body_timeout": "2s", "body_min_rate": 240, "send_timeout": "1s", **http},
        "routes": [
            {"name": "no-ws", "match": {"path": {"prefix": "/nows/"}}, "upstream": bad.url, "websocket": False},
            {"name": "tunnel", "match": {"path": {"prefix": "/tun/"}},
             "upstream": {"endpoints": [bad.url], "timeouts": {"tunnel_idle": "1s"}}},
            {"name": "fake", "match": {"path": {"prefix": "/fake/"}}, "upstream": bad.url},
        ],
    }


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory, bad):
    # One worker: the pooled upstream connection a poisoned answer would sit on is shared.
    gateway = Gateway(hardening_config(bad), tmp_path_factory.mktemp("hardening"), pure=request.param == "pure",
                      workers=1)
    yield gateway
    assert gateway.stop() == 0


def raw_exchange(client: RawClient, request: bytes) -> tuple[int, bytes, bytes]:
    """Send one request; the status, the raw head (to count headers) and the body."""
    client.send(request)
    while b"\r\n\r\n" not in client.buf:
        if not client._fill():
            raise ConnectionError(f"closed before a head; got {client.buf!r}")
    raw_head = client.buf.split(b"\r\n\r\n", 1)[0]
    head_only = request.startswith(b"HEAD ")
    status, _, body = client.read_response(head_only=head_only)
    return status, raw_head, body


def get(gw: Gateway, path: str, method: str = "GET") -> tuple[int, bytes, bytes]:
    c = RawClient(gw.port)
    try:
        return raw_exchange(c, f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    finally:
        c.close()


def next_client_is_not_poisoned(gw: Gateway) -> None:
    """Several fresh clients in a row: each must get its own answer, never the leftover bytes."""
    for _ in range(3):
        status, _, body = get(gw, "/fake/echo")
        assert status == 200 and b"poisoned" not in body
        assert json.loads(body)["target"] == "/fake/echo"


# -- response desync / pool poisoning -----------------------------------------------------------


def test_bytes_beyond_content_length_never_reach_the_next_client(gw, bad):
    status, _, body = get(gw, "/fake/overflow")
    assert (status, body) == (200, b"ok")
    next_client_is_not_poisoned(gw)


@pytest.mark.parametrize("method, segment, want", [
    ("HEAD", "head-body", 200), ("GET", "no-content-body", 204), ("GET", "not-modified-body", 304),
])
def test_a_body_where_none_may_be_discards_the_connection(gw, method, segment, want):
    status, _, body = get(gw, f"/fake/{segment}", method)
    assert status == want and body == b""
    next_client_is_not_poisoned(gw)


@pytest.mark.parametrize("segment", ["cl-te", "two-cl", "cl-list", "bad-chunk", "huge-chunk"])
def test_conflicting_or_invalid_response_framing_is_502_and_the_connection_closed(gw, bad, segment):
    before = bad.closed
    status, _, body = get(gw, f"/fake/{segment}")
    assert status == 502 and json.loads(body)["error"]["type"] == "upstream_error"
    deadline = time.monotonic() + 5
    while bad.closed == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bad.closed > before  # the upstream connection was closed, not pooled
    next_client_is_not_poisoned(gw)


def test_a_response_is_relayed_with_exactly_one_framing_header(gw):
    status, raw_head, body = get(gw, "/fake/same-cl")
    assert (status, body) == (200, b"hello")
    framing = [line for line in raw_head.lower().split(b"\r\n") if line.startswith((b"content-length", b"transfer-encoding"))]
    assert framing == [b"content-length: 5"]


def test_equal_content_length_list_in_a_request_is_collapsed(gw, bad):
    c = RawClient(gw.port)
    status, _, body = raw_exchange(c, b"POST /fake/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello")
    assert status == 200
    seen = json.loads(body)
    assert seen["body"] == "hello"
    assert [v for k, v in seen["headers"] if k.lower() == "content-length"] == ["5"]


def test_differing_content_length_list_in_a_request_is_400_and_closed(gw, bad):
    c = RawClient(gw.port)
    status, _, _ = raw_exchange(c, b"POST /fake/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!")
    assert status == 400 and c.is_closed()


# -- upgrades ---------------------------------------------------------------------------------------


def test_h2c_upgrade_is_stripped_and_nothing_is_smuggled(gw, bad):
    c = RawClient(gw.port)
    status, raw_head, body = raw_exchange(
        c, b"GET /fake/h2c HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert status == 200  # the upstream saw a plain HTTP/1.1 request and answered it
    seen = json.loads(body)
    names = {k.lower() for k, _ in seen["headers"]}
    assert not names & {"upgrade", "http2-settings", "connection"}
    # The connection is still HTTP/1.1 through the gateway: a smuggled request is routed (404).
    status, _, _ = raw_exchange(c, b"GET /admin/secret HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 404
    assert not bad.requests_to("secret")


def test_websocket_is_not_tunnelled_on_a_route_that_disallows_it(gw, bad):
    c = RawClient(gw.port)
    status, _, body = raw_exchange(
        c, b"GET /nows/echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert status == 200
    assert not {k.lower() for k, _ in json.loads(body)["headers"]} & {"upgrade", "connection"}


def test_websocket_tunnel_works_and_is_closed_when_idle(gw, bad):
    c = RawClient(gw.port)
    c.send(b"GET /tun/ws HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, headers, _ = c.read_response(head_only=True)
    assert status == 101 and headers["upgrade"].lower() == "websocket"
    c.send(b"PING /inside HTTP/1.1\r\n\r\n")  # the fake answers anything inside a tunnel
    status, _, body = c.read_response()
    assert (status, body) == (200, b"secret")
    started = time.monotonic()
    assert c.is_closed(wait=10)  # tunnel_idle is 1s
    assert time.monotonic() - started < 8


# -- slow or stuck peers ----------------------------------------------------------------------------


def test_trickled_body_is_cut_with_408(gw):
    c = RawClient(gw.port, timeout=15)
    c.send(b"POST /fake/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n")
    started = time.monotonic()
    got = None
    for _ in range(40):  # 1 byte / 0.5 s: never silent for body_timeout, far below body_min_rate
        try:
            c.send(b"x")
        except OSError:
            break
        c.sock.settimeout(0.5)
        try:
            got = c.sock.recv(65536)
        except TimeoutError:
            continue
        c.buf += got
        break
    c.sock.settimeout(10)
    status, _, _ = c.read_response()
    assert status == 408
    assert time.monotonic() - started < 8  # body_timeout 2s (+ 40/240 s); the trickle would take 20s


def test_client_that_does_not_read_is_disconnected(gw, bad):
    c = RawClient(gw.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(b"GET /fake/stream HTTP/1.1\r\nHost: t\r\n\r\n")
    before = bad.closed
    deadline = time.monotonic() + 15  # send_timeout is 1s
    while bad.closed == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bad.closed > before  # the upstream connection was let go
    assert wait_for_metric(gw, 'fastgw_connection_events_total{reason="send_timeout"}')
    c.close()
    next_client_is_not_poisoned(gw)


# -- request-target and Host -------------------------------------------------------------------------


def test_absolute_form_target_is_routed_and_its_authority_replaces_host(gw):
    c = RawClient(gw.port)
    status, _, body = raw_exchange(c, b"GET http://api.example.org:8080/fake/echo?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    assert status == 200
    seen = json.loads(body)
    assert seen["target"] == "/fake/echo?q=1"
    assert [v for k, v in seen["headers"] if k.lower() == "host"] == ["api.example.org:8080"]


@pytest.mark.parametrize("host", [b"ex ample.org", b"a/b", b"user@host", b"host:port", b"[::1"])
def test_invalid_host_is_400_and_closed(gw, bad, host):
    c = RawClient(gw.port)
    status, _, _ = raw_exchange(c, b"GET /fake/echo HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
    assert status == 400 and c.is_closed()


def test_http10_keep_alive_is_answered_with_keep_alive(gw):
    c = RawClient(gw.port)
    for path in (b"/fake/echo", b"/nowhere"):  # a proxied answer and a local one
        status, raw_head, _ = raw_exchange(c, b"GET %b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % path)
        assert status in (200, 404)
        assert b"\r\nconnection: keep-alive" in raw_head.lower()
    assert not c.is_closed(wait=0.5)


# -- connection caps ---------------------------------------------------------------------------------


def test_connection_caps_refuse_with_503_and_count(tmp_path, bad):
    gateway = Gateway(hardening_config(bad, max_connections=6, max_connections_per_ip=4), tmp_path, workers=1)
    try:
        held = [RawClient(gateway.port) for _ in range(4)]
        for c in held:  # each is served (and so surely accepted) before the next one
            assert raw_exchange(c, b"GET /fake/echo HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        extra = RawClient(gateway.port)
        extra.sock.settimeout(5)
        status, _, body = extra.read_response()
        assert status == 503 and json.loads(body)["error"]["code"] == "too_many_connections"
        assert extra.is_closed()
        held.pop().close()
        time.sleep(0.3)
        c = RawClient(gateway.port)
        assert raw_exchange(c, b"GET /fake/echo HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        assert wait_for_metric(gateway, 'fastgw_connection_events_total{reason="refused_per_ip"} 1')
    finally:
        gateway.stop()


def wait_for_metric(gateway: Gateway, line: str, timeout: float = 5.0) -> bool:
    """Workers publish their metrics about once a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(gateway.admin + "/metrics", timeout=5) as resp:
            if line in resp.read().decode():
                return True
        time.sleep(0.2)
    return False


def test_status_endpoint_still_answers(gw):
    assert http_json("GET", gw.admin + "/status")[0] == 200


# -- the AI front door -------------------------------------------------------------------------------


def test_ai_door_never_tunnels_and_garbage_json_is_a_400_without_traceback(tmp_path):
    config = {"providers": [{"name": "mock", "type": "mock"}],
              "models": [{"name": "m", "targets": [{"provider": "mock", "model": "m"}]}]}
    gateway = Gateway(config, tmp_path, workers=1)
    try:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        c = RawClient(gateway.port)
        status, raw_head, answer = raw_exchange(
            c, b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        assert status == 200 and json.loads(answer)["object"] == "chat.completion"
        assert b"upgrade" not in raw_head.lower()
        deep = b'{"model": "m", "messages": ' + b"[" * 100_000
        for _ in range(50):
            c = RawClient(gateway.port)
            status, _, answer = raw_exchange(c, b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                                                b"Content-Length: %d\r\n\r\n%b" % (len(deep), deep))
            assert status == 400 and json.loads(answer)["error"]["code"] == "json_too_deep"
            c.close()
        assert "Traceback" not in gateway.stderr_text()
    finally:
        gateway.stop()

"""The HTTP/1.1 proxy core, end to end: a real ``fastgw run`` in front of the mock upstream.

Every test runs against both builds: the Cython hot paths and their pure-Python twins.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest

from tests.support.gateway import Gateway, MockLLMProcess, RawClient, free_port


@pytest.fixture(scope="module")
def upstream():
    mock = MockLLMProcess()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def upstream_b():
    mock = MockLLMProcess()
    yield mock
    mock.stop()


class UpgradeEchoServer:
    """An upstream that answers an Upgrade request with 101, then echoes raw bytes back."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            request, _, early = head.partition(b"\r\n\r\n")
            assert b"upgrade: websocket" in request.lower()
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            if early:
                conn.sendall(early)
            while data := conn.recv(4096):
                conn.sendall(data)


@pytest.fixture(scope="module")
def ws_upstream():
    server = UpgradeEchoServer()
    yield server
    server.sock.close()


class Blackhole:
    """A listener whose accept queue is full, so new connections hang in the handshake."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(3):  # fill the queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()


@pytest.fixture(scope="module")
def blackhole():
    hole = Blackhole()
    yield hole
    hole.close()


def routes_for(
    upstream: MockLLMProcess, upstream_b: MockLLMProcess, dead_port: int, ws_port: int, blackhole_port: int
) -> list[dict]:
    return [
        {"name": "blackhole", "match": {"path": {"prefix": "/blackhole"}}, "upstream": {"endpoints": [f"http://127.0.0.1:{blackhole_port}"], "timeouts": {"connect": "300ms"}}},
        {"name": "ws", "match": {"path": {"exact": "/ws"}}, "upstream": f"http://127.0.0.1:{ws_port}"},
        {"name": "by-host", "match": {"host": "api.example.com", "path": "/"}, "upstream": {"endpoints": [upstream.url], "host_header": "upstream"}},
        {"name": "by-header", "match": {"path": "/echo", "headers": {"x-tenant": "blue"}}, "upstream": {"endpoints": [upstream_b.url], "host_header": "upstream"}},
        {"name": "regex", "match": {"path": {"regex": "^/items/[0-9]+$"}, "methods": ["GET"]}, "upstream": {"endpoints": [upstream.url], "strip_prefix": "/items", "host_header": "upstream"}},
        {"name": "stripped", "match": {"path": {"prefix": "/svc/"}}, "upstream": {"endpoints": [upstream.url], "strip_prefix": "/svc"}},
        {"name": "balanced", "match": {"path": {"prefix": "/lb/"}}, "upstream": {"endpoints": [upstream.url, upstream_b.url], "strip_prefix": "/lb", "host_header": "upstream"}},
        {"name": "dead", "match": {"path": {"prefix": "/dead"}}, "upstream": {"endpoints": [f"http://127.0.0.1:{dead_port}"]}},
        {"name": "half-dead", "match": {"path": {"prefix": "/half/"}}, "upstream": {"endpoints": [f"http://127.0.0.1:{dead_port}", upstream.url], "strip_prefix": "/half"}},
        {"name": "slow", "match": {"path": {"prefix": "/slow"}}, "upstream": {"endpoints": [upstream.url], "timeouts": {"first_byte": "300ms", "idle": "1s"}}},
        {"name": "exact", "match": {"path": {"exact": "/json"}}, "upstream": upstream.url},
        {"name": "default", "match": {"path": "/"}, "upstream": upstream.url},
    ]


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory, upstream, upstream_b, ws_upstream, blackhole):
    config = {
        "http": {"drain_timeout": "3s", "header_timeout": "1s", "max_body_size": "8m", "max_header_size": "8k", "max_headers": 50},
        "routes": routes_for(upstream, upstream_b, free_port(), ws_upstream.port, blackhole.port),
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("gw"), pure=request.param == "pure")
    gateway.upstreams = (upstream, upstream_b)
    yield gateway
    assert gateway.stop() == 0


def echo(client: RawClient, request: bytes) -> tuple[int, dict, dict]:
    client.send(request)
    status, headers, body = client.read_response()
    return status, headers, json.loads(body)


def header_map(echoed: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in echoed["headers"]}


def test_simple_get_and_via(gw):
    c = RawClient(gw.port)
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.read_response()
    assert status == 200
    assert json.loads(body)["ok"] is True
    assert "fastgw" in headers["via"]


def test_forwarding_headers_and_hop_by_hop_removed(gw):
    c = RawClient(gw.port)
    status, _, seen = echo(
        c,
        b"GET /echo/a?q=1 HTTP/1.1\r\nHost: front.example\r\nConnection: keep-alive, X-Private\r\n"
        b"X-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.1.1.1\r\n"
        b"Proxy-Connection: keep-alive\r\nX-Custom: kept\r\n\r\n",
    )
    assert status == 200
    h = header_map(seen)
    assert seen["path"] == "/echo/a" and seen["query"] == "q=1"
    assert h["host"] == "front.example"  # preserved by default
    assert h["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["via"] == "1.1 fastgw"
    assert h["x-custom"] == "kept"
    for hop in ("x-private", "keep-alive", "te", "proxy-connection"):
        assert hop not in h, hop


def test_keep_alive_and_pipelining_in_order(gw):
    c = RawClient(gw.port)
    for i in range(3):
        status, _, seen = echo(c, b"GET /echo/ka%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        assert status == 200 and seen["path"] == f"/echo/ka{i}"
    c.send(b"".join(b"GET /echo/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(8)))
    for i in range(8):
        status, _, body = c.read_response()
        assert status == 200 and json.loads(body)["path"] == f"/echo/p{i}"


def test_large_content_length_body_streams_through(gw):
    body = bytes(range(256)) * 4096  # 1 MiB
    c = RawClient(gw.port, timeout=10)
    c.send(b"POST /echo/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 65536):
        c.send(body[i : i + 65536])
    status, _, raw = c.read_response()
    seen = json.loads(raw)
    assert status == 200
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body(gw):
    parts = [b"hello ", b"chunked ", b"world" * 1000]
    framed = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    c = RawClient(gw.port)
    c.send(b"POST /echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + framed)
    status, _, raw = c.read_response()
    seen = json.loads(raw)
    assert status == 200
    assert seen["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert "chunked" in header_map(seen).get("transfer-encoding", "")


def test_expect_100_continue(gw):
    c = RawClient(gw.port)
    c.send(b"POST /echo/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = c.read_response()
    assert status == 100
    c.send(b"hello")
    status, _, raw = c.read_response()
    seen = json.loads(raw)
    assert status == 200 and seen["body"] == "hello"
    assert "expect" not in header_map(seen)


def test_large_response_to_a_slow_reader(gw):
    n = 8 * 1024 * 1024
    c = RawClient(gw.port, timeout=20)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    time.sleep(0.5)  # let the gateway hit back-pressure before we read
    status, headers, body = c.read_response()
    assert status == 200 and len(body) == n
    assert int(headers["content-length"]) == n
    # The upstream connection went back to the pool while reading was paused for this slow
    # client; whoever reuses it next must still get an answer.
    for _ in range(6):
        other = RawClient(gw.port, timeout=3)
        other.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.read_response()[0] == 200
        other.close()


def test_chunked_response_is_relayed(gw):
    c = RawClient(gw.port)
    c.send(b"GET /bytes?n=100000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.read_response()
    assert status == 200 and len(body) == 100000
    assert headers["transfer-encoding"] == "chunked"


def test_http10_client_gets_close_delimited_body(gw):
    c = RawClient(gw.port)
    c.send(b"GET /bytes?n=5000&chunked=1 HTTP/1.0\r\n\r\n")
    status, headers, body = c.read_response()
    assert status == 200 and len(body) == 5000
    assert "transfer-encoding" not in headers
    assert c.is_closed()


def test_sse_relay(gw):
    c = RawClient(gw.port)
    c.send(b"GET /sse?n=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.read_response()
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.count(b"data:") == 5


def test_upgrade_is_tunnelled_both_ways(gw):
    c = RawClient(gw.port)
    c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    status, headers, _ = c.read_response()
    assert status == 101 and headers["upgrade"] == "websocket"
    for message in (b"ping", b"\x81\x05hello", bytes(range(256)) * 100):
        c.send(message)
        got = c.buf
        while len(got) < len(message):
            got += c.sock.recv(65536)
        c.buf = b""
        assert got == message


# -- routing -------------------------------------------------------------------------------


def test_routing_by_host_header_regex_and_strip_prefix(gw):
    upstream, upstream_b = gw.upstreams
    c = RawClient(gw.port)
    _, _, seen = echo(c, b"GET /echo/h HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n")
    assert header_map(seen)["host"] == f"127.0.0.1:{upstream.port}"  # by-host route, host_header upstream
    _, _, seen = echo(c, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Tenant: blue\r\n\r\n")
    assert header_map(seen)["host"] == f"127.0.0.1:{upstream_b.port}"  # by-header route
    status, _, _ = echo(c, b"GET /svc/echo/s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    c.send(b"GET /items/42 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = c.read_response()
    assert status == 404 and json.loads(body)["error"]["type"]  # the mock has no /42: stripped prefix reached it


def test_round_robin_over_two_endpoints(gw):
    upstream, upstream_b = gw.upstreams
    c = RawClient(gw.port)
    hosts = [header_map(echo(c, b"GET /lb/echo HTTP/1.1\r\nHost: x\r\n\r\n")[2])["host"] for _ in range(10)]
    assert hosts.count(f"127.0.0.1:{upstream.port}") == 5
    assert hosts.count(f"127.0.0.1:{upstream_b.port}") == 5


# -- errors --------------------------------------------------------------------------------


def test_no_route_is_404_json_and_connection_survives(gw):
    c = RawClient(gw.port)
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Tenant: red\r\n\r\n")
    assert c.read_response()[0] == 200  # falls through to the default route
    # a dead upstream: 502, OpenAI-shaped, and the client connection stays usable
    c.send(b"GET /dead HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.read_response()
    assert status == 502
    assert json.loads(body)["error"]["type"] == "upstream_error"
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.read_response()[0] == 200


def test_retry_on_next_endpoint_when_one_is_down(gw):
    c = RawClient(gw.port)
    for _ in range(4):
        status, _, seen = echo(c, b"POST /half/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        assert status == 200 and seen["body"] == "hi"


def test_first_byte_timeout_is_504_and_connection_survives(gw):
    c = RawClient(gw.port)
    started = time.monotonic()
    c.send(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = c.read_response()
    assert status == 504 and time.monotonic() - started < 2.0
    assert json.loads(body)["error"]["message"]
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.read_response()[0] == 200


def test_connect_timeout_is_504(gw):
    c = RawClient(gw.port)
    started = time.monotonic()
    c.send(b"GET /blackhole HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = c.read_response()
    assert status == 504 and time.monotonic() - started < 2
    assert "timed out" in json.loads(body)["error"]["message"]
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.read_response()[0] == 200


def test_head_request_has_no_body_and_keeps_the_connection(gw):
    c = RawClient(gw.port)
    c.send(b"HEAD /json HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = c.read_response_head_only()
    assert status == 200 and int(headers["content-length"]) > 0
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = c.read_response()
    assert status == 200 and json.loads(body)["ok"] is True


def test_client_connection_close_is_honoured(gw):
    c = RawClient(gw.port)
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = c.read_response()
    assert status == 200 and headers["connection"] == "close"
    assert c.is_closed()


def test_upstream_garbage_is_502(gw):
    c = RawClient(gw.port)
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Mock-Garbage: 1\r\n\r\n")
    assert c.read_response()[0] == 502
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.read_response()[0] == 200


def test_upstream_cut_mid_stream_truncates_the_client_stream(gw):
    c = RawClient(gw.port)
    c.send(_chat_request(stream=True, extra=b"X-Mock-Cut-After: 2\r\n"))
    with pytest.raises(ConnectionError):
        c.read_response()


def _chat_request(stream: bool, extra: bytes = b"") -> bytes:
    body = json.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]}).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%bContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (extra, len(body), body)
    )


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)) + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
    ],
)
def test_malformed_and_oversized_requests(gw, request_bytes, status):
    c = RawClient(gw.port)
    c.send(request_bytes)
    got, headers, body = c.read_response()
    assert got == status
    assert json.loads(body)["error"]["message"]
    assert headers["connection"] == "close"
    assert c.is_closed()


def test_chunked_body_over_the_limit_is_413(gw):
    c = RawClient(gw.port, timeout=10)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 1024 * 1024
    try:
        for _ in range(12):  # 12 MiB > 8 MiB
            c.send(b"%x\r\n%b\r\n" % (len(chunk), chunk))
    except OSError:
        pass  # the gateway may close once it has answered
    status, _, _ = c.read_response()
    assert status == 413


def test_slow_but_steady_upload_is_not_a_timeout(gw):
    c = RawClient(gw.port)
    c.send(b"POST /echo/slow-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    for _ in range(10):  # 2 s in all, header_timeout is 1 s: each byte is progress
        time.sleep(0.2)
        c.send(b"x")
    status, _, raw = c.read_response()
    assert status == 200 and json.loads(raw)["body"] == "x" * 10


def test_client_half_close_after_request_still_gets_the_answer(gw):
    c = RawClient(gw.port)
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    status, _, _ = c.read_response()
    assert status == 200
    # The FIN may arrive before or after the head went out (so "Connection: close" may
    # or may not be in it); either way the gateway closes once the answer is complete.
    assert c.is_closed()


def test_answer_before_the_body_is_read_reaches_the_client(gw):
    c = RawClient(gw.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n" + b"y" * 200_000)
    status, _, _ = c.read_response()
    assert status == 413


def test_slowloris_gets_408(gw):
    c = RawClient(gw.port)
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    status, _, _ = c.read_response()
    assert status == 408 and 0.8 < time.monotonic() - started < 3
    assert c.is_closed()


def test_idle_keepalive_connection_is_closed_quietly(gw, tmp_path, upstream):
    gateway = Gateway({"http": {"keepalive_timeout": "300ms"}, "routes": [{"match": {"path": "/"}, "upstream": upstream.url}]}, tmp_path, workers=1)
    try:
        c = RawClient(gateway.port)
        c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
        assert c.is_closed(wait=2)
        assert c.buf == b""
    finally:
        gateway.stop()


def test_shared_listener_mode_serves(tmp_path, upstream):
    gateway = Gateway(
        {"routes": [{"match": {"path": "/"}, "upstream": upstream.url}]},
        tmp_path,
        workers=2,
        listen_options={"reuse_port": False},
    )
    try:
        for _ in range(20):
            c = RawClient(gateway.port)
            c.send(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert c.read_response()[0] == 200
            c.close()
        deadline = time.monotonic() + 2
        while sum(w["requests_total"] for w in gateway.status()["workers"]) < 20:  # counters publish per tick
            assert time.monotonic() < deadline, gateway.status()
            time.sleep(0.05)
    finally:
        assert gateway.stop() == 0

"""Slow or stuck peers are bounded (issue 10): many trickling uploads are cut within the body
timeout while a normal client is served, and a client that stops reading an AI stream is
disconnected without counting against the provider's circuit breaker."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import threading
import time
import urllib.request

import openai
import pytest

from tests.support.bad_upstream import BadUpstream
from tests.support.gateway import Gateway, RawClient

SLOW_CLIENTS = 1000


@pytest.fixture(scope="module")
def bad():
    upstream = BadUpstream()
    yield upstream
    upstream.close()


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_a_thousand_slow_bodies_are_cut_while_a_normal_client_is_served(tmp_path, bad, pure):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > SLOW_CLIENTS + 200, f"ulimit -n is {soft}: too low for {SLOW_CLIENTS} client sockets"
    body_timeout = 2.0
    gateway = Gateway({"http": {"body_timeout": f"{body_timeout}s", "body_min_rate": 240},
                       "routes": [{"match": {"path": "/"}, "upstream": bad.url}]}, tmp_path, workers=1, pure=pure)
    sel = selectors.DefaultSelector()
    sent_at: dict[socket.socket, float] = {}
    cut_after: dict[socket.socket, float] = {}
    normal: list[int] = []
    stop = threading.Event()

    def normal_client() -> None:
        c = RawClient(gateway.port, timeout=15)
        while not stop.is_set():
            c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
            normal.append(c.read_response()[0])
            time.sleep(0.1)

    try:
        for _ in range(SLOW_CLIENTS):
            s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx")
            s.setblocking(False)
            sent_at[s] = time.monotonic()
            sel.register(s, selectors.EVENT_READ)
        worker = threading.Thread(target=normal_client, daemon=True)
        worker.start()
        deadline = time.monotonic() + body_timeout + 60
        next_trickle = time.monotonic() + 0.5
        while len(cut_after) < SLOW_CLIENTS and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                assert not data or data.startswith(b"HTTP/1.1 408 ")
                cut_after[s] = time.monotonic() - sent_at[s]
                sel.unregister(s)
            if time.monotonic() >= next_trickle:  # one more byte from every uncut client: never silent
                for s in list(sent_at):
                    if s not in cut_after:
                        try:
                            s.send(b"x")
                        except OSError:
                            pass
                next_trickle = time.monotonic() + 0.5
        stop.set()
        worker.join(15)
        assert len(cut_after) == SLOW_CLIENTS
        # Each is cut once its body falls below the rate after the body_timeout grace; the
        # margin is for a loaded machine (1,000 heads are parsed and 1,000 timers fire).
        assert max(cut_after.values()) < body_timeout + 15, sorted(cut_after.values())[-5:]
        assert min(cut_after.values()) > body_timeout * 0.9
        assert normal and set(normal) == {200}
    finally:
        stop.set()
        for s in sent_at:
            s.close()
        gateway.stop()


class EndlessProvider:
    """An OpenAI-compatible provider (chat completions, per the public API reference) whose
    streams never end: a client that stops reading backs the gateway up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, body = buf.split(b"\r\n\r\n", 1)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
            while len(body) < length:
                body += conn.recv(65536)
            request = json.loads(body)
            try:
                if not request.get("stream"):
                    answer = json.dumps({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": request["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n%b" % (len(answer), answer))
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                words = "lorem ipsum " * 200
                event = b"data: " + json.dumps({
                    "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": request["model"],
                    "choices": [{"index": 0, "delta": {"content": words}, "finish_reason": None}]}).encode() + b"\n\n"
                while True:
                    conn.sendall(event * 16)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def test_clients_that_stop_reading_never_open_the_providers_breaker(tmp_path):
    provider = EndlessProvider()
    config = {
        "http": {"send_timeout": "1s"},
        "providers": [{"name": "p", "type": "openai", "base_url": f"http://127.0.0.1:{provider.port}/v1",
                       "api_keys": ["k"], "timeouts": {"idle": "1s"}, "breaker": {"failures": 1, "cooldown": "60s"}}],
        "models": [{"name": "m", "targets": [{"provider": "p", "model": "m"}]}],
    }
    gateway = Gateway(config, tmp_path, workers=1)
    stalled = []
    try:
        request = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}).encode()
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", gateway.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%b" % (len(request), request))
            stalled.append(s)  # and never read from
        time.sleep(6)  # well past the provider's idle timeout (1s) and the send timeout (1s)
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "hi"  # not 503 circuit_open (one blamed failure opens it)
        time.sleep(1.5)  # workers publish their metrics about once a second
        with urllib.request.urlopen(gateway.admin + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'fastgw_connection_events_total{reason="send_timeout"} 3' in metrics  # each stalled reader was cut
        assert "fastgw_upstream_errors_total{" not in metrics  # and none was blamed on the provider
    finally:
        for s in stalled:
            s.close()
        gateway.stop()
        provider.close()

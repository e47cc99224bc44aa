"""The request pipeline through real `fastgw run` processes: a plugin filter from config on a
plain route and on an AI model, a 401 before a large body is read, and streams metered from
their text when the provider reports no usage (guarded or not)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.support.gateway import Gateway, http_json

STAMP = {"use": "tests.support.stamp_filter:Stamp", "value": "blue"}
KEY = "sk-pipeline-0123456789abcdef"


class Upstream(BaseHTTPRequestHandler):
    """A plain HTTP service."""

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class NoUsageProvider(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that streams as OpenAI documents but never sends
    the usage chunk (servers that ignore stream_options.include_usage)."""

    protocol_version = "HTTP/1.1"
    words = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        events = [
            "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}) + "\n\n"
            for w in self.words
        ]
        events.append("data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n")
        events.append("data: [DONE]\n\n")
        body = "".join(events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(handler: type) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def upstream():
    server = serve(Upstream)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_plugin_filter_from_config_on_a_plain_route_and_on_an_ai_model(tmp_path, upstream):
    config = {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "stamped", "targets": [{"provider": "mock", "model": "mock-gpt"}], "filters": [STAMP]},
                   {"name": "plain-model", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
        "routes": [{"name": "svc", "match": {"path": "/svc"}, "upstream": upstream, "filters": [STAMP]},
                   {"name": "other", "upstream": upstream}],
    }
    gw = Gateway(config, tmp_path, workers=1)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="stamped", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-stamp"] == "blue"
        raw = client.chat.completions.with_raw_response.create(model="stamped", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-stamp-seen"] == "1"  # on_done ran once for the first request
        assert "x-stamp" not in client.chat.completions.with_raw_response.create(
            model="plain-model", messages=[{"role": "user", "content": "hi"}]).headers
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="stamped", messages=[{"role": "user", "content": "hi"}], user="deny")

        status, body, headers = http_get(gw.port, "/svc/x")
        assert status == 200 and headers["x-stamp"] == "blue" and json.loads(body) == {"ok": True}
        status, body, _ = http_get(gw.port, "/svc/x", {"x-deny": "1"})
        assert status == 403 and json.loads(body)["error"]["code"] == "stamp_denied"
        status, _, headers = http_get(gw.port, "/elsewhere")
        assert status == 200 and "x-stamp" not in headers
    finally:
        gw.stop()


def test_an_unknown_filter_is_refused_with_its_path(tmp_path):
    from fastgw.config import ConfigError, load_text

    with pytest.raises(ConfigError) as err:
        load_text("routes: [{upstream: 'http://127.0.0.1:1', filters: [{use: 'no_such_pkg.mod:Thing'}, authh]}]\n")
    text = str(err.value)
    assert "routes[0].filters[0].use: module 'no_such_pkg.mod' is not importable" in text
    assert "routes[0].filters[1].name: unknown filter 'authh'; did you mean 'auth'?" in text


def http_get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, {k.lower(): v for k, v in response.getheaders()}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/svc"])
def test_401_is_sent_before_a_large_body_is_read(tmp_path, upstream, path):
    config = {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
        "consumers": [{"name": "team", "api_keys": [KEY]}],
        "routes": [{"name": "svc", "match": {"path": "/svc"}, "upstream": upstream, "filters": ["auth"]}],
    }
    gw = Gateway(config, tmp_path, workers=1)
    try:
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        # 200 MB announced (above max_body_size too), only the head and 64 KiB sent.
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode() + b"x" * 65536)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert time.monotonic() - started < 2
        sock.settimeout(5)
        rest = b""
        while chunk := sock.recv(65536):  # the gateway closes: the unread body can't be skipped
            rest += chunk
        body = (answer + rest).split(b"\r\n\r\n", 1)[1]
        assert b"Connection: close" in answer
        error = json.loads(body)
        assert (error["error"]["type"] if path != "/v1/messages" else error["type"]) in ("authentication_error", "error")
        sock.close()
        # With the key the same gateway serves the request.
        status, _ = http_json("POST", gw.url + "/v1/chat/completions",
                              json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode(),
                              headers={"Authorization": f"Bearer {KEY}"})
        assert status == 200
    finally:
        gw.stop()


@pytest.mark.parametrize("guarded", [False, True])
def test_a_stream_without_reported_usage_is_metered_from_its_text(tmp_path, guarded):
    provider = serve(NoUsageProvider)
    log = tmp_path / "access.log"
    config = {
        "providers": [{"name": "p", "type": "openai-compatible",
                       "base_url": f"http://127.0.0.1:{provider.server_address[1]}/v1"}],
        "models": [{"name": "m", "targets": [{"provider": "p", "model": "gpt-4o"}]}],  # o200k: counted exactly
        "log": {"access": str(log)},
    }
    if guarded:
        config["guard"] = {"rules": [{"name": "never", "terms": ["never-said"], "action": "mask", "apply_to": ["response"]}]}
    gw = Gateway(config, tmp_path, workers=1)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True) if chunk.choices)
        assert text == "".join(NoUsageProvider.words)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not log.read_text().strip():
            time.sleep(0.05)
        line = json.loads(log.read_text().splitlines()[-1])
        assert line["tokens_estimated"] is True
        assert line["completion_tokens"] == 10  # o200k: The| quick| brown| fox| jumps| over| the| lazy| dog|.
    finally:
        gw.stop()
        provider.shutdown()

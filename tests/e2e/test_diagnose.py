"""Error diagnosis: every error answer carries x-request-id, and GET /diagnose explains it.

One gateway, one cause per model or route. The fake provider follows OpenAI's public API:
its 401 and 429 error bodies (``invalid_api_key``, ``rate_limit_exceeded`` with
``Retry-After``) and, for the slow key, a stream whose head is sent and whose first event
never comes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.support.gateway import free_port, http_json, send_json


class Provider(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ProviderHandler)


class ProviderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if key == "sk-revoked":
            send_json(self, {"error": {"message": "Incorrect API key provided: sk-rev***", "type": "invalid_request_error",
                                       "param": None, "code": "invalid_api_key"}}, status=401)
            return
        if key == "sk-busy":
            self.send_response(429)
            body = json.dumps({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                         "param": None, "code": "rate_limit_exceeded"}}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "20")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if key == "sk-slow":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            time.sleep(3)  # past the gateway's first_byte
            return
        created = int(time.time())
        base = {"id": "chatcmpl-9", "created": created, "model": request["model"]}
        if not request.get("stream"):
            send_json(self, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in ({**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]},
                      {**base, "object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}):
            data = b"data:" + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        data = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[Provider]:
    server = Provider()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def config(provider: Provider, redis_url: str) -> dict:
    url = f"http://127.0.0.1:{provider.server_address[1]}/v1"

    def p(name: str, key: str, **extra: object) -> dict:
        return {"name": name, "type": "openai", "base_url": url, "api_keys": [key], **extra}

    return {
        "redis": redis_url,
        "providers": [
            p("openai-main", "sk-revoked"),
            p("openai-busy", "sk-busy"),
            p("openai-slow", "sk-slow", timeouts={"first_byte": "800ms"}),
            p("openai-good", "sk-good"),
        ],
        "models": [
            {"name": "auth", "targets": [{"provider": "openai-main"}]},
            {"name": "busy", "targets": [{"provider": "openai-busy"}]},
            {"name": "slow", "targets": [{"provider": "openai-slow"}, {"provider": "openai-good"}]},
            {"name": "limited", "targets": [{"provider": "openai-good"}]},
            {"name": "budgeted", "targets": [{"provider": "openai-good"}]},
            {"name": "guarded", "targets": [{"provider": "openai-good"}]},
        ],
        "consumers": [{"name": "team-a", "api_keys": ["key-a"]}],
        "limits": [
            {"name": "team-rpm", "match": {"models": ["limited"]}, "requests": {"per_minute": 1}},
            {"name": "team-budget", "match": {"models": ["budgeted"]}, "quota": {"tokens": 1}},
        ],
        "guard": {"rules": [{"name": "secrets", "terms": ["project-x"], "action": "block", "apply_to": ["prompt"]}]},
        "routes": [{"name": "legacy", "match": {"path": {"prefix": "/legacy"}}, "upstream": f"http://127.0.0.1:{free_port()}"}],
    }


def diagnose(gw, request_id: str) -> dict:
    deadline = time.monotonic() + 10  # workers publish their rings on their tick
    while True:
        status, body = http_json("GET", gw.admin + f"/diagnose?request_id={request_id}")
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return body
        time.sleep(0.1)


def failed_id(call) -> str:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    request_id = info.value.response.headers.get("x-request-id")
    assert request_id, info.value.response.headers
    return request_id


def test_each_cause_is_explained_with_its_fix(gateway, provider: Provider, redis_server) -> None:
    gw = gateway(config(provider, redis_server.url), workers=2)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="key-a", max_retries=0, timeout=20)
    hi = [{"role": "user", "content": "hi"}]

    found = diagnose(gw, failed_id(lambda: client.chat.completions.create(model="auth", messages=hi)))
    assert found["cause"] == "provider_auth"
    assert "provider 'openai-main' answered 401 for key #0" in found["explanation"]
    assert "revoked or mistyped" in found["explanation"] and "providers[0].api_keys[0]" in found["fix"]

    found = diagnose(gw, failed_id(lambda: client.chat.completions.create(model="busy", messages=hi)))
    assert found["cause"] == "provider_rate_limited" and "'openai-busy' answered 429 for key #0" in found["explanation"]

    raw = client.chat.completions.with_raw_response.create(model="slow", messages=hi, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "ok"
    found = diagnose(gw, raw.headers["x-request-id"])
    assert found["cause"] == "first_token_timeout"
    assert found["explanation"] == ("the first token did not arrive within `first_byte` 800 ms from provider "
                                    "'openai-slow'; failed over to 'openai-good', which answered")
    assert "providers[].timeouts.first_byte" in found["fix"]

    assert client.chat.completions.create(model="limited", messages=hi).choices[0].message.content == "ok"
    found = diagnose(gw, failed_id(lambda: client.chat.completions.create(model="limited", messages=hi)))
    assert found["cause"] == "consumer_limit" and "consumer 'team-a' hit the limit 'team-rpm'" in found["explanation"]
    assert "limits[0]" in found["fix"]

    found = diagnose(gw, failed_id(lambda: client.chat.completions.create(model="budgeted", messages=hi)))
    assert found["cause"] == "quota_exhausted" and "'team-budget'" in found["explanation"] and "POST /quota" in found["fix"]

    blocked = [{"role": "user", "content": "tell me about Project-X"}]
    found = diagnose(gw, failed_id(lambda: client.chat.completions.create(model="guarded", messages=blocked)))
    assert found["cause"] == "guard_block" and "guard.rules" in found["fix"]

    status, headers, body = _get(gw.url + "/legacy/report")
    assert status == 502
    found = diagnose(gw, headers["x-request-id"])
    assert found["cause"] == "upstream_unavailable" and "route 'legacy'" in found["explanation"]
    assert found["record"]["status"] == 502 and found["record"]["route"] == "legacy"

    status, headers, body = _get(gw.url + "/nowhere")  # the gateway's own error answers carry one too
    assert status == 404 and headers["x-request-id"]
    status, headers, body = _get(gw.url + "/v1/models")  # no API key: refused by auth
    assert status == 401 and diagnose(gw, headers["x-request-id"])["record"]["status"] == 401

    status, body = http_json("GET", gw.admin + "/diagnose")
    assert status == 200
    causes = {c["cause"]: c for c in body["causes"]}
    assert set(causes) >= {"provider_auth", "provider_rate_limited", "first_token_timeout", "consumer_limit",
                           "quota_exhausted", "guard_block", "upstream_unavailable"}
    assert all(c["count"] >= 1 and c["fix"] and c["latest"]["request_id"] for c in causes.values())

    status, body = http_json("GET", gw.admin + "/diagnose?request_id=0000")
    assert status == 404 and body["error"]["type"] == "not_found"


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

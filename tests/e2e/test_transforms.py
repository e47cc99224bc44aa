"""Per-route and per-model request/response transformation, through a real gateway."""

from __future__ import annotations

import json

import openai

from tests.e2e.test_prompts import CaptureProvider
from tests.support.gateway import Gateway, RawClient

ROUTE_RULES = {
    "request": {
        "headers": {"add": {"x-env": "prod"}, "remove": ["x-debug"], "rename": {"x-old": "x-new"}},
        "query": {"add": {"api-version": "2024-10-21"}, "remove": ["debug"]},
        "body": {"set": {"temperature": 0.2}, "default": {"max_tokens": 512}, "remove": ["user"]},
    },
    "response": {"headers": {"add": {"x-served-by": "fastgw"}, "remove": ["content-type"]}},
}


def test_route_rewrites_headers_query_body_and_response_headers(tmp_path, mock_llm):
    upstream = mock_llm()
    routes = [
        {"name": "rewritten", "match": {"path": "/echo"}, "upstream": upstream.url, "transform": ROUTE_RULES},
        {"name": "untouched", "match": {"path": "/"}, "upstream": upstream.url},
    ]
    gw = Gateway({"routes": routes}, tmp_path, workers=1)
    try:
        c = RawClient(gw.port)
        body = json.dumps({"max_tokens": 9, "user": "u1", "prompt": "hi"}).encode()
        c.send(
            b"POST /echo/x?keep=1&debug=yes HTTP/1.1\r\nHost: x\r\nX-Debug: 1\r\nX-Old: v\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        status, headers, raw = c.read_response()
        seen = json.loads(raw)
        assert status == 200
        sent_headers = {k.lower(): v for k, v in seen["headers"]}
        assert sent_headers["x-env"] == "prod" and sent_headers["x-new"] == "v"
        assert "x-debug" not in sent_headers and "x-old" not in sent_headers
        assert seen["query"] == "keep=1&api-version=2024-10-21"
        assert json.loads(seen["body"]) == {"max_tokens": 9, "prompt": "hi", "temperature": 0.2}
        assert int(sent_headers["content-length"]) == seen["body_length"]  # the rewritten length
        assert headers["x-served-by"] == "fastgw" and "content-type" not in headers
        # a chunked body is rewritten too, and sent with a length
        framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        c.send(b"POST /echo/y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + framed)
        status, _, raw = c.read_response()
        assert status == 200 and json.loads(json.loads(raw)["body"])["temperature"] == 0.2
        # a body that is not JSON is refused, and other routes are untouched
        c.send(b"POST /echo/z HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert c.read_response()[0] == 400
        c2 = RawClient(gw.port)
        c2.send(b"GET /json?debug=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = c2.read_response()
        assert status == 200 and "x-served-by" not in headers
    finally:
        assert gw.stop() == 0


def test_model_body_defaults_and_response_headers(tmp_path):
    capture = CaptureProvider()
    config = {
        "providers": [{"name": "cap", "type": "openai-compatible", "base_url": capture.url}],
        "models": [{
            "name": "m", "targets": [{"provider": "cap", "model": "up"}],
            "transform": {"request": {"body": {"default": {"max_tokens": 256}, "set": {"user": "gateway"}}},
                          "response": {"headers": {"add": {"x-tier": "gold"}}}},
        }],
    }
    gw = Gateway(config, tmp_path, workers=1)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-tier"] == "gold"
        assert capture.bodies[-1]["max_tokens"] == 256 and capture.bodies[-1]["user"] == "gateway"
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=7)
        assert capture.bodies[-1]["max_tokens"] == 7  # a default never overrides the client
    finally:
        gw.stop()
        capture.server.shutdown()

"""A request answered before its body arrived (a refusal from the head) keeps its connection
when the body is small and of known length: the rest is read and dropped. A large or
chunked one still closes the connection after the answer (its rest cannot be skipped cheaply)."""

from __future__ import annotations

import json

from tests.support.gateway import Gateway, RawClient

KEY = "sk-early-team"


def config() -> dict:
    return {
        "providers": [{"name": "p", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_keys": ["k"]}],
        "models": [{"name": "m", "targets": [{"provider": "p", "model": "m"}]}],
        "consumers": [{"name": "team", "api_keys": [KEY]}],
    }


def post_head(length: int, key: str | None = None) -> bytes:
    auth = b"" if key is None else b"Authorization: Bearer " + key.encode() + b"\r\n"
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n" + auth
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length)


def test_a_small_body_answered_early_is_skipped_and_the_connection_kept(tmp_path):
    gw = Gateway(config(), tmp_path, workers=1)
    try:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        c = RawClient(gw.port)
        c.send(post_head(len(body)))  # no key: refused from the head, before any body byte
        status, headers, _ = c.read_response()
        assert status == 401 and headers.get("connection") != "close"
        c.send(body[:10])
        c.send(body[10:] + b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n")
        status, _, listed = c.read_response()
        assert status == 200 and json.loads(listed)["data"][0]["id"] == "m"  # the body was not read as a request
        c.close()
    finally:
        gw.stop()


def test_a_gateway_reply_from_the_head_skips_a_small_body_too(tmp_path):
    gw = Gateway(config(), tmp_path, workers=1)
    try:
        c = RawClient(gw.port)
        c.send(b"POST /nowhere HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\n")  # no route: 404 from the head
        status, headers, _ = c.read_response()
        assert status == 404 and headers.get("connection") != "close"
        c.send(b'{"a": 1}GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ' + KEY.encode() + b"\r\n\r\n")
        assert c.read_response()[0] == 200
        c.close()
    finally:
        gw.stop()


def test_a_large_body_answered_early_closes_the_connection(tmp_path):
    gw = Gateway(config(), tmp_path, workers=1)
    try:
        c = RawClient(gw.port)
        c.send(post_head(100_000))
        status, headers, _ = c.read_response()
        assert status == 401 and headers.get("connection") == "close"
        assert c.is_closed()
    finally:
        gw.stop()

"""Consumer auth at the AI front door, through ``fastgw run``, with the real SDKs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import anthropic
import openai
import pytest

from tests.support.gateway import Gateway, http_json

SECRET = "s" * 40
KEY_A = "sk-team-a-0123456789"
KEY_B = "sk-team-b-0123456789"
ISSUER = "https://issuer.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: str = SECRET) -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def claims(**overrides) -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": "fastgw", "sub": "team-b", "exp": now + 300, "iat": now} | overrides


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory):
    config = {
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 3}}],
        "models": [
            {"name": "small", "targets": [{"provider": "mock", "model": "mock-small"}]},
            {"name": "large", "targets": [{"provider": "mock", "model": "mock-large"}]},
        ],
        "consumers": [
            {"name": "team-a", "api_keys": [KEY_A], "models": ["small"]},
            {"name": "team-b", "api_keys": [KEY_B], "models": ["*"]},
        ],
        "auth": {"jwt": [{"issuer": ISSUER, "audience": "fastgw", "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}]},
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("auth"), pure=request.param == "pure")
    yield gateway
    assert gateway.stop() == 0


def chat(gw: Gateway, key: str, model: str = "small"):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def raw_chat(gw: Gateway, headers: dict[str, str], model: str = "small") -> tuple[int, dict]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    return http_json("POST", gw.url + "/v1/chat/completions", body, headers={"content-type": "application/json", **headers})


def test_api_keys_in_each_header(gw):
    assert chat(gw, KEY_A).choices[0].message.content
    client = anthropic.Anthropic(base_url=gw.url, api_key=KEY_B, max_retries=0)
    assert client.messages.create(model="large", max_tokens=20, messages=[{"role": "user", "content": "hi"}]).content
    for header in ("x-api-key", "api-key"):
        status, body = raw_chat(gw, {header: KEY_A})
        assert status == 200, body


def test_missing_and_wrong_keys_are_401(gw):
    status, body = raw_chat(gw, {})
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as err:
        chat(gw, "sk-wrong")
    assert "sk-wrong" not in str(err.value)


def test_model_not_allowed_is_403_and_models_list_is_filtered(gw):
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, KEY_A, model="large")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY_A, max_retries=0)
    assert [m.id for m in client.models.list()] == ["small"]


def test_jwt_accepted_and_each_failure_mode(gw):
    assert chat(gw, hs256(claims()), model="large").choices
    failures = {
        "expired": hs256(claims(exp=int(time.time()) - 600)),
        "wrong audience": hs256(claims(aud="someone-else")),
        "wrong issuer": hs256(claims(iss="https://evil.test")),
        "bad signature": hs256(claims(), secret="x" * 40),
        "unknown consumer": hs256(claims(sub="team-z")),
    }
    for reason, token in failures.items():
        with pytest.raises(openai.AuthenticationError):
            chat(gw, token)
            pytest.fail(reason)

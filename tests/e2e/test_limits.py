"""Token limits and quotas through real gateways sharing a real Redis."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import Gateway, http_json
from tests.support.redis_server import RedisServer

KEY = "sk-limited-team"
TPM = 3000  # tokens per minute: a burst of 3000, then 50 tokens/s
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()  # started by its constructor
    yield server
    server.kill()


def limited_config(redis_url: str, **rule_extra) -> dict:
    return {
        "redis": redis_url,
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 8}}],
        "models": [
            {"name": "m", "targets": [{"provider": "mock", "model": "mock-gpt"}]},
            {"name": "budgeted", "targets": [{"provider": "mock", "model": "mock-gpt"}]},
        ],
        "consumers": [{"name": "team", "api_keys": [KEY]}],
        "limits": [
            {"name": "team-tpm", "match": {"models": ["m"]}, "key": ["consumer"], "tokens": {"per_minute": TPM}, **rule_extra},
            {"name": "team-budget", "match": {"models": ["budgeted"]}, "quota": {"tokens": 100}},
        ],
    }


def chat(conn: http.client.HTTPConnection, model: str = "m") -> tuple[int, dict, dict]:
    body = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 8})
    conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())


def test_tokens_per_minute_holds_across_two_gateways_and_four_workers(tmp_path, redis_server):
    gateways = [Gateway(limited_config(redis_server.url), tmp_path, workers=2) for _ in range(2)]
    try:
        admitted, refused = [], []
        lock = threading.Lock()
        started = time.monotonic()
        stop_at = started + 4.0

        def hammer(port: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while time.monotonic() < stop_at:
                status, _, body = chat(conn)
                with lock:
                    if status == 200:
                        admitted.append(body["usage"]["total_tokens"])
                    else:
                        assert status == 429, body
                        refused.append(status)
            conn.close()

        threads = [threading.Thread(target=hammer, args=(gw.port,)) for gw in gateways for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        allowed = TPM + TPM / 60 * elapsed
        assert refused, "the load never reached the limit"
        assert abs(sum(admitted) - allowed) / allowed < 0.01, (sum(admitted), allowed, len(admitted), len(refused))
    finally:
        for gw in gateways:
            gw.stop()


@pytest.fixture
def gw(tmp_path, redis_server):
    gateway = Gateway(limited_config(redis_server.url, on_redis_down="closed"), tmp_path, workers=2)
    yield gateway
    gateway.stop()


def test_429_carries_retry_after_and_openai_ratelimit_headers(gw, redis_server):
    redis_server.restart()  # a fresh budget for this test's consumer key
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    status, headers, _ = chat(conn)
    assert status == 200
    assert int(headers["x-ratelimit-limit-tokens"]) == TPM
    assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < TPM
    assert headers["x-ratelimit-reset-tokens"].endswith("s")
    while status == 200:
        status, headers, body = chat(conn)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert int(headers["retry-after"]) >= 1
    assert int(headers["x-ratelimit-remaining-tokens"]) < 20  # less than this request needs
    deadline = time.monotonic() + 5
    while True:  # the rejection is counted in /metrics (summed over workers, published each second)
        text = urllib.request.urlopen(gw.admin + "/metrics", timeout=5).read().decode()
        rejected = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "fastgw_ratelimit_rejections_total" and s.labels.get("rule") == "team-tpm"
        )
        if rejected >= 1:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_redis_down_applies_the_policy_and_recovers_without_restart(gw, redis_server):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    redis_server.kill()
    try:
        statuses = {chat(conn)[0] for _ in range(4)}
        assert statuses == {503}  # on_redis_down: closed
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while chat(conn)[0] != 200:  # the worker notices Redis is back within its retry interval
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_quota_exhaustion_and_top_up(gw, redis_server):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    quota = gw.admin + "/quota"
    status, body = gw.admin_call("POST", "/quota", json.dumps({"rule": "team-budget", "consumer": "team", "action": "reset"}).encode())
    assert status == 200 and body["used"] == 0 and body["limit"] == 100
    served = 0
    while True:
        status, _, body = chat(conn, "budgeted")
        if status != 200:
            break
        served += 1
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert served >= 1
    status, body = http_json("GET", quota + "?rule=team-budget&consumer=team")
    assert status == 200 and body["used"] > 0 and body["remaining"] < 20
    status, body = gw.admin_call("POST", "/quota", json.dumps({"rule": "team-budget", "consumer": "team", "action": "top_up", "amount": 500}).encode())
    assert status == 200 and body["limit"] == 600
    assert chat(conn, "budgeted")[0] == 200
    assert http_json("GET", quota + "?rule=nope&consumer=team")[0] == 404


def test_usage_records_reach_the_billing_stream(tmp_path, redis_server):
    import redis

    config = limited_config(redis_server.url) | {"log": {"usage_stream": "fastgw:usage:test"}}
    gateway = Gateway(config, tmp_path, workers=2)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        usages = [chat(conn)[2]["usage"] for _ in range(3)]
        client = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 5
        while len(records := client.xrange("fastgw:usage:test")) < 3:
            assert time.monotonic() < deadline, records
            time.sleep(0.1)
        fields = [{k.decode(): v.decode() for k, v in record.items()} for _, record in records]
        assert {f["consumer"] for f in fields} == {"team"} and {f["provider"] for f in fields} == {"mock"}
        assert sorted(int(f["prompt_tokens"]) + int(f["completion_tokens"]) for f in fields) == sorted(
            u["total_tokens"] for u in usages
        )
    finally:
        gateway.stop()

"""Gray-release lanes through real gateways: tagging by header, cookie, consumer and sticky weight,
routing to the lane's endpoints or model targets, fallback to the base lane, the propagation
header the upstream sees, and per-lane metrics on the admin plane."""

from __future__ import annotations

import http.client
import json
import re
import time

import openai
import pytest

from tests.e2e.test_cli import fastgw
from tests.e2e.test_diagnose import diagnose
from tests.support.echo_upstream import EchoUpstream
from tests.support.gateway import free_port
from tests.support.metrics import samples, value
from tests.support.provider_fakes import FakeServer

KEYS = {"alice": "sk-alice-lane-key-0001", "bob": "sk-bob-lane-key-0002"}


@pytest.fixture(scope="module")
def upstreams():
    found = {name: EchoUpstream(name) for name in ("base", "base2", "hdr", "beta", "team", "canary")}
    yield found
    for upstream in found.values():
        upstream.stop()


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    """One request on its own connection (so requests spread over the workers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(body or b"{}")
    finally:
        conn.close()


def wait_for_metrics(admin: str, expected: dict[tuple, float]) -> dict:
    """Workers publish about once a second: poll until every expected sample is there."""
    deadline = time.monotonic() + 10
    while True:
        found = samples(admin)
        missing = {key: want for key, want in expected.items() if value(found, key[0], **dict(key[1])) != want}
        if not missing:
            return found
        assert time.monotonic() < deadline, (missing, {k: v for k, v in found.items() if "lane" in str(k)})
        time.sleep(0.2)


def metric(name: str, **labels: str) -> tuple:
    return name, tuple(sorted(labels.items()))


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_header_cookie_and_consumer_lanes_route_and_propagate(tmp_path, gateway, upstreams, pure):
    log_path = tmp_path / "access.log"
    config = {
        "log": {"access": str(log_path)},
        "consumers": [{"name": name, "api_keys": [key]} for name, key in KEYS.items()],
        "auth": {"anonymous": True},
        "lanes": [
            {"name": "hdr", "match": {"headers": {"x-env": "canary"}}},
            {"name": "beta", "match": {"cookies": {"release": "beta"}}},
            {"name": "team", "match": {"consumers": ["alice"]}},
        ],
        "routes": [{
            "name": "svc", "match": {"path": "/"}, "filters": [{"name": "auth", "optional": True}],
            "upstream": {"endpoints": [
                upstreams["base"].url, upstreams["base2"].url,
                {"url": upstreams["hdr"].url, "lane": "hdr"},
                {"url": upstreams["beta"].url, "lane": "beta"},
                {"url": upstreams["team"].url, "lane": "team"},
            ]},
        }],
    }
    gw = gateway(config, pure=pure)

    # Untagged requests never reach a lane's endpoints, and a forged lane header is not trusted:
    # the upstream sees no lane header at all.
    for forged in (None, "hdr", "team", "base"):
        for _ in range(4):
            status, _, echo = get(gw.port, "/x", {"x-fastgw-lane": forged} if forged else {})
            assert status == 200 and echo["upstream"] in ("base", "base2"), echo
            assert "x-fastgw-lane" not in echo["headers"]

    status, _, echo = get(gw.port, "/x", {"x-env": "canary", "x-fastgw-lane": "team"})
    assert status == 200 and echo["upstream"] == "hdr"
    assert echo["headers"]["x-fastgw-lane"] == ["hdr"]  # ours replaces the client's
    assert get(gw.port, "/x", {"x-env": "prod"})[2]["upstream"] in ("base", "base2")

    status, _, echo = get(gw.port, "/x", {"Cookie": "theme=dark; release=beta"})
    assert echo["upstream"] == "beta" and echo["headers"]["x-fastgw-lane"] == ["beta"]
    assert get(gw.port, "/x", {"Cookie": "release=stable"})[2]["upstream"] in ("base", "base2")

    status, _, echo = get(gw.port, "/x", bearer("alice"))
    assert echo["upstream"] == "team" and echo["headers"]["x-fastgw-lane"] == ["team"]
    assert get(gw.port, "/x", bearer("bob"))[2]["upstream"] in ("base", "base2")
    assert get(gw.port, "/x", {**bearer("alice"), "x-env": "canary"})[2]["upstream"] == "hdr"  # first lane wins

    wait_for_metrics(gw.admin, {
        metric("fastgw_requests_total", route="svc", status_class="2xx", lane="hdr"): 2,
        metric("fastgw_requests_total", route="svc", status_class="2xx", lane="beta"): 1,
        metric("fastgw_requests_total", route="svc", status_class="2xx", lane="team"): 1,
        metric("fastgw_requests_total", route="svc", status_class="2xx", lane="base"): 16 + 3,
        metric("fastgw_request_duration_seconds_count", route="svc", lane="hdr"): 2,
    })
    lanes = [json.loads(line).get("lane") for line in log_path.read_text().splitlines()]
    assert sorted(lane for lane in lanes if lane) == ["beta", "hdr", "hdr", "team"]
    assert lanes.count(None) == 19  # the base lane is the field's absence


def test_weighted_canary_is_sticky_per_consumer_across_workers_and_gateways(tmp_path, gateway, upstreams):
    consumers = [{"name": f"c{i:03d}", "api_keys": [f"sk-lane-consumer-{i:03d}-key"]} for i in range(200)]
    config = {
        "consumers": consumers,
        "auth": {"anonymous": True},
        "lanes": [{"name": "canary", "match": {"weight": 20}}],
        "routes": [{
            "name": "svc", "match": {"path": "/"}, "filters": [{"name": "auth", "optional": True}],
            "upstream": {"endpoints": [upstreams["base"].url, {"url": upstreams["canary"].url, "lane": "canary"}]},
        }],
    }
    first, second = gateway(config, workers=2), gateway(config, workers=2)
    lane_of = {}
    for consumer in consumers:
        auth = {"Authorization": f"Bearer {consumer['api_keys'][0]}"}
        seen = {get(gw.port, "/", auth)[2]["upstream"] for gw in (first, second, first)}
        assert len(seen) == 1, (consumer["name"], seen)  # one consumer, one lane, whichever worker or node
        lane_of[consumer["name"]] = seen.pop()
    share = sum(upstream == "canary" for upstream in lane_of.values()) / len(consumers)
    assert 0.10 <= share <= 0.32, share  # 20% of 200 consumers, within about 3 standard deviations
    # Anonymous requests have no sticky key: they stay in the base lane (documented choice).
    assert {get(first.port, "/")[2]["upstream"] for _ in range(20)} == {"base"}


def test_cookie_sticky_canary_issues_a_cookie_and_keeps_the_lane(gateway, upstreams):
    config = {
        "lanes": [{"name": "web", "match": {"weight": 50}, "sticky": "cookie"}],
        "routes": [{"name": "site", "match": {"path": "/"},
                    "upstream": {"endpoints": [upstreams["base"].url, {"url": upstreams["canary"].url, "lane": "web"}]}}],
    }
    gw = gateway(config)
    in_lane = 0
    for _ in range(100):
        status, headers, echo = get(gw.port, "/page")
        assert status == 200
        cookie = re.fullmatch(r"fastgw-sticky=([0-9a-f]{32}); Path=/; Max-Age=\d+; HttpOnly; SameSite=Lax",
                              headers["set-cookie"])
        assert cookie, headers["set-cookie"]
        first = echo["upstream"]
        for _ in range(3):  # the browser sends it back: same lane, no new cookie
            status, again, echo = get(gw.port, "/page", {"Cookie": f"a=b; fastgw-sticky={cookie.group(1)}"})
            assert echo["upstream"] == first and "set-cookie" not in again
        in_lane += first == "canary"
    assert 25 <= in_lane <= 75, in_lane  # 50% of 100 fresh clients (random keys), 5 standard deviations


def test_fallback_to_base_and_fallback_none(gateway, upstreams):
    dead_soft, dead_strict = (f"http://127.0.0.1:{free_port()}" for _ in range(2))  # nothing listens there
    config = {
        "lanes": [
            {"name": "soft", "match": {"headers": {"x-lane": "soft"}}},
            {"name": "strict", "match": {"headers": {"x-lane": "strict"}}, "fallback": "none"},
        ],
        "routes": [
            {"name": "plain", "match": {"path": "/plain"}, "upstream": upstreams["base"].url},
            {"name": "dead", "match": {"path": "/dead"}, "upstream": {"endpoints": [
                upstreams["base"].url, {"url": dead_soft, "lane": "soft"}, {"url": dead_strict, "lane": "strict"}]}},
            {"name": "only", "match": {"path": "/only"},
             "upstream": {"endpoints": [{"url": upstreams["hdr"].url, "lane": "soft"}]}},
        ],
    }
    gw = gateway(config)
    # A lane without endpoints on a route: the base lane serves it (fallback: base), still tagged...
    status, _, echo = get(gw.port, "/plain", {"x-lane": "soft"})
    assert status == 200 and echo["upstream"] == "base" and echo["headers"]["x-fastgw-lane"] == ["soft"]
    # ...or it is refused with a clear code (fallback: none).
    status, headers, error = get(gw.port, "/plain", {"x-lane": "strict"})
    assert status == 503 and error["error"]["code"] == "lane_unavailable"
    assert "lane 'strict' has no endpoint on route 'plain'" in error["error"]["message"]
    found = diagnose(gw, headers["x-request-id"])
    assert found["cause"] == "lane_unavailable" and found["record"]["lane"] == "strict"
    assert "lanes[1]" in found["fix"] and "fallback: base" in found["fix"]
    # Every endpoint of the lane failing: the base lane serves (fallback: base), or the failure stands.
    status, _, echo = get(gw.port, "/dead", {"x-lane": "soft"})
    assert status == 200 and echo["upstream"] == "base" and echo["headers"]["x-fastgw-lane"] == ["soft"]
    assert get(gw.port, "/dead", {"x-lane": "strict"})[0] == 502
    assert all(get(gw.port, "/dead")[2]["upstream"] == "base" for _ in range(6))  # base never tries a lane's
    # A route whose endpoints are all in lanes serves no untagged request.
    status, _, error = get(gw.port, "/only")
    assert status == 503 and error["error"]["code"] == "lane_unavailable"
    assert get(gw.port, "/only", {"x-lane": "soft"})[2]["upstream"] == "hdr"
    wait_for_metrics(gw.admin, {
        metric("fastgw_lane_fallbacks_total", lane="soft", reason="no_endpoint"): 1,
        metric("fastgw_lane_fallbacks_total", lane="soft", reason="failed"): 1,
        metric("fastgw_requests_total", route="plain", status_class="5xx", lane="strict"): 1,
        metric("fastgw_requests_total", route="dead", status_class="5xx", lane="strict"): 1,
        metric("fastgw_requests_total", route="only", status_class="5xx", lane="base"): 1,
    })


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_ai_model_targets_by_lane_with_the_openai_sdk(gateway, pure):
    fake = FakeServer()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = {
        "providers": [
            {"name": "main", "type": "openai", "base_url": fake.url + "/v1", "api_keys": ["sk-provider-main-0001"],
             "pass_headers": ["x-fastgw-lane", "x-env"]},  # even allow-listed, a client's lane header never passes
            {"name": "dead", "type": "openai", "base_url": dead, "api_keys": ["sk-provider-dead-0002"]},
        ],
        "lanes": [
            {"name": "canary", "match": {"headers": {"x-env": "canary"}}},
            {"name": "strict", "match": {"headers": {"x-env": "strict"}}, "fallback": "none"},
            {"name": "rescue", "match": {"headers": {"x-env": "rescue"}}},
        ],
        "models": [{"name": "chat", "targets": [
            {"provider": "main", "model": "base-model"},
            {"provider": "main", "model": "canary-model", "lane": "canary"},
            {"provider": "dead", "model": "rescue-model", "lane": "rescue"},
        ]}],
    }
    gw = gateway(config, pure=pure)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]

    def sent_lane() -> list[str]:
        _, headers, _ = fake.requests[-1]
        return [v for k, v in headers.items() if k.lower() == "x-fastgw-lane"]

    answer = client.chat.completions.create(model="chat", messages=messages, extra_headers={"x-fastgw-lane": "canary"})
    assert answer.model == "base-model" and sent_lane() == []  # forged: base lane, header stripped
    answer = client.chat.completions.create(model="chat", messages=messages, extra_headers={"x-env": "canary"})
    assert answer.model == "canary-model" and sent_lane() == ["canary"]
    chunks = list(client.chat.completions.create(model="chat", messages=messages, stream=True,
                                                 extra_headers={"x-env": "canary"}))
    assert {c.model for c in chunks} == {"canary-model"} and sent_lane() == ["canary"]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="chat", messages=messages, extra_headers={"x-env": "strict"})
    assert refused.value.status_code == 503 and refused.value.code == "lane_unavailable"
    # The lane's only target is down: the base lane's serves, and still hears which lane it serves.
    answer = client.chat.completions.create(model="chat", messages=messages, extra_headers={"x-env": "rescue"})
    assert answer.model == "base-model" and sent_lane() == ["rescue"]
    assert [body["model"] for _, _, body in fake.requests] == ["base-model", "canary-model", "canary-model", "base-model"]
    wait_for_metrics(gw.admin, {
        metric("fastgw_ai_requests_total", consumer="", model="chat", provider="main", status="200", lane="canary"): 2,
        metric("fastgw_ai_requests_total", consumer="", model="chat", provider="main", status="200", lane="base"): 1,
        metric("fastgw_ai_requests_total", consumer="", model="chat", provider="", status="503", lane="strict"): 1,
        metric("fastgw_ai_requests_total", consumer="", model="chat", provider="main", status="200", lane="rescue"): 1,
        metric("fastgw_lane_fallbacks_total", lane="rescue", reason="failed"): 1,
        metric("fastgw_ai_ttft_seconds_count", model="chat", provider="main", lane="canary"): 1,
    })
    fake.shutdown()


def test_check_names_lane_errors_by_field_path(tmp_path):
    bad = tmp_path / "lanes.yaml"
    bad.write_text(
        "providers: [{name: mock, type: mock}]\n"
        "lanes:\n"
        "  - {name: canary, match: {weight: 150}}\n"
        "  - {name: beta, match: {consumers: [nobody]}}\n"
        "models: [{name: m, targets: [{provider: mock, lane: canery}]}]\n"
        "routes: [{upstream: {endpoints: [{url: 'http://127.0.0.1:9', lane: gamma}]}}]\n"
    )
    result = fastgw("check", "-c", str(bad))
    assert result.returncode == 1
    for path in ("lanes[0].match.weight", "lanes[1].match.consumers[0]", "models[0].targets[0].lane",
                 "routes[0].upstream.endpoints[0].lane"):
        assert f"  {path}" in result.stderr, (path, result.stderr)
    assert "did you mean 'canary'" in result.stderr


def test_cached_answers_stay_in_their_lane(gateway):
    """A canary's answers are not served to the base lane from the response cache, nor the other way;
    a lane without targets of its own for the model shares the base lane's answers."""
    base, canary = FakeServer(), FakeServer()
    config = {
        "providers": [{"name": "base", "type": "openai", "base_url": base.url + "/v1", "api_keys": ["sk-provider-0003"]},
                      {"name": "canary", "type": "openai", "base_url": canary.url + "/v1", "api_keys": ["sk-provider-0004"]}],
        "lanes": [{"name": "canary", "match": {"headers": {"x-env": "canary"}}},
                  {"name": "other", "match": {"headers": {"x-env": "other"}}}],
        "models": [{"name": "chat", "targets": [{"provider": "base", "model": "base-model"},
                                                {"provider": "canary", "model": "canary-model", "lane": "canary"}]}],
        "cache": {"ttl": "5m", "scope": "global"},
    }
    gw = gateway(config, workers=1)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)

    def ask(env: str | None) -> tuple[str | None, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "Which version are you?"}],
            extra_headers={"x-env": env} if env else {})
        return raw.headers.get("x-fastgw-cache"), raw.headers.get("x-fastgw-provider")

    assert ask(None) == ("miss", "base")
    assert ask("canary") == ("miss", "canary")  # the base lane's cached answer is not the canary's
    assert ask("canary")[0] == "hit"
    assert ask(None)[0] == "hit"
    assert ask("other")[0] == "hit"  # no target of its own: the base lane's answers
    assert (len(base.requests), len(canary.requests)) == (1, 1)
    base.shutdown()
    canary.shutdown()


def test_a_lane_whose_endpoints_are_all_out_falls_back_or_answers_503(gateway, upstreams):
    """Endpoint health (drain here) decides what a lane may use: none eligible -> the base lane's
    (fallback: base), or 503 no_healthy_upstream (fallback: none); untagged requests never move."""
    config = {
        "lanes": [{"name": "soft", "match": {"headers": {"x-lane": "soft"}}},
                  {"name": "strict", "match": {"headers": {"x-lane": "strict"}}, "fallback": "none"}],
        "routes": [{"name": "svc", "match": {"path": "/"}, "upstream": {"endpoints": [
            upstreams["base"].url, {"url": upstreams["hdr"].url, "lane": "soft"},
            {"url": upstreams["canary"].url, "lane": "strict"}]}}],
    }
    gw = gateway(config)
    assert get(gw.port, "/", {"x-lane": "soft"})[2]["upstream"] == "hdr"
    for index in (1, 2):
        status, body = gw.admin_call("POST", "/upstreams/drain", json.dumps({"route": "svc", "endpoint": index}).encode())
        assert status == 200 and body["drained"], body
    status, _, echo = get(gw.port, "/", {"x-lane": "soft"})
    assert status == 200 and echo["upstream"] == "base" and echo["headers"]["x-fastgw-lane"] == ["soft"]
    status, _, error = get(gw.port, "/", {"x-lane": "strict"})
    assert status == 503 and error["error"]["code"] == "no_healthy_upstream"
    assert get(gw.port, "/")[2]["upstream"] == "base"
    wait_for_metrics(gw.admin, {metric("fastgw_lane_fallbacks_total", lane="soft", reason="unhealthy"): 1})

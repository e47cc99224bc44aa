"""``lanes``, ``lanes_header`` and the ``lane`` tags of endpoints and model targets: shapes and errors with field paths."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text

BASE = """
consumers: [{name: alice, api_keys: [ka]}, {name: bob, api_keys: [kb]}]
providers: [{name: mock, type: mock}]
"""


def test_normalised_shape_and_defaults() -> None:
    config = load_text(BASE + """
lanes:
  - {name: canary, match: {headers: {X-Env: canary}, weight: 12.5}}
  - name: beta
    match: {cookies: {release: [beta, "2"]}, consumers: [alice]}
    fallback: none
    header: X-Beta-Lane
  - {name: web, match: {weight: 50}, sticky: cookie, sticky_cookie: sid}
routes:
  - match: {path: /}
    upstream: {endpoints: ["http://127.0.0.1:9", {url: "http://127.0.0.1:10", lane: canary},
                           {url: "http://127.0.0.1:11", lane: base}]}
models:
  - name: m
    targets: [{provider: mock, model: a}, {provider: mock, model: b, lane: beta}]
""", env={})
    canary, beta, web = config["lanes"]
    assert config["lanes_header"] == "x-fastgw-lane"
    assert canary == {"name": "canary", "match": {"headers": {"x-env": ["canary"]}, "cookies": {}, "consumers": None,
                                                   "weight": 12.5},
                      "sticky": "consumer", "sticky_cookie": "fastgw-sticky", "fallback": "base",
                      "header": "x-fastgw-lane"}
    assert beta["match"]["cookies"] == {"release": ["beta", "2"]} and beta["match"]["consumers"] == ["alice"]
    assert beta["fallback"] == "none" and beta["header"] == "x-beta-lane"
    assert web["sticky"] == "cookie" and web["sticky_cookie"] == "sid"
    endpoints = config["routes"][0]["upstream"]["endpoints"]
    assert [e.get("lane") for e in endpoints] == [None, "canary", None]  # "base" spelled out is no tag
    assert [t.get("lane") for t in config["models"][0]["targets"]] == [None, "beta"]
    assert load_text("lanes_header: X-Lane\n", env={})["lanes_header"] == "x-lane"
    assert load_text("{}", env={})["lanes"] == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("lanes: [{match: {weight: 5}}]\n", "lanes[0].name: required"),
        ("lanes: [{name: base, match: {weight: 5}}]\n", "lanes[0].name: 'base' is the lane of untagged"),
        ("lanes: [{name: 'a b', match: {weight: 5}}]\n", "lanes[0].name: a lane name is"),
        ("lanes: [{name: a, match: {weight: 5}}, {name: a, match: {weight: 5}}]\n", "lanes[1].name: duplicate name"),
        ("lanes: [{name: a}]\n", "lanes[0].match: required"),
        ("lanes: [{name: a, match: {}}]\n", "lanes[0].match: list at least one of"),
        ("lanes: [{name: a, match: {weight: 0}}]\n", "lanes[0].match.weight: must be above 0 and at most 100"),
        ("lanes: [{name: a, match: {weight: 101}}]\n", "lanes[0].match.weight: must be above 0 and at most 100"),
        ("lanes: [{name: a, match: {weight: 1.005}}]\n", "lanes[0].match.weight: at most two decimals"),
        ("lanes: [{name: a, match: {weight: ten}}]\n", "lanes[0].match.weight: expected a percentage"),
        ("lanes: [{name: a, match: {weight: true}}]\n", "lanes[0].match.weight: expected a percentage"),
        ("lanes: [{name: a, match: {weigth: 5}}]\n", "lanes[0].match.weigth: unknown key; did you mean 'weight'?"),
        ("lanes: [{name: a, match: {headers: {'bad name': x}}}]\n", "lanes[0].match.headers.bad name: expected a header name"),
        ("lanes: [{name: a, match: {headers: {x-a: [ok, {}]}}}]\n", "lanes[0].match.headers.x-a[1]: expected a value"),
        ("lanes: [{name: a, match: {cookies: {c: 'a;b'}}}]\n", "lanes[0].match.cookies.c: expected a value"),
        ("lanes: [{name: a, match: {consumers: []}}]\n", "lanes[0].match.consumers: list at least one consumer"),
        (BASE + "lanes: [{name: a, match: {consumers: [alcie]}}]\n",
         "lanes[0].match.consumers[0]: unknown consumer 'alcie'; did you mean 'alice'?"),
        ("lanes: [{name: a, match: {headers: {x: y}}, sticky: consumer}]\n", "lanes[0].sticky: sticky applies to match.weight"),
        ("lanes: [{name: a, match: {weight: 5}, sticky: ip}]\n", "lanes[0].sticky: expected one of consumer, cookie"),
        ("lanes: [{name: a, match: {weight: 5}, sticky_cookie: s}]\n", "lanes[0].sticky_cookie: only used with sticky: cookie"),
        ("lanes: [{name: a, match: {weight: 5}, fallback: other}]\n", "lanes[0].fallback: expected one of base, none"),
        ("lanes: [{name: a, match: {weight: 5}, header: host}]\n", "lanes[0].header: 'host' is a header the gateway"),
        ("lanes_header: content-length\n", "lanes_header: 'content-length' is a header the gateway"),
        ("lanes: [{name: canary, match: {weight: 5}}]\n"
         "routes: [{upstream: {endpoints: [{url: 'http://127.0.0.1:9', lane: canery}]}}]\n",
         "routes[0].upstream.endpoints[0].lane: unknown lane 'canery'; did you mean 'canary'?"),
        ("routes: [{upstream: {endpoints: [{url: 'http://127.0.0.1:9', lane: 7}]}}]\n",
         "routes[0].upstream.endpoints[0].lane: expected a non-empty string"),
        (BASE + "lanes: [{name: canary, match: {weight: 5}}]\n"
         "models: [{name: m, targets: [{provider: mock, lane: beta}]}]\n",
         "models[0].targets[0].lane: unknown lane 'beta'; defined: canary"),
    ],
)
def test_errors_name_the_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, env={})
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors

"""``upstream.health``, ``outlier``, ``slow_start``, ``zones``, endpoints' and targets' ``zone``, and the
node's ``zone``: shapes, defaults and errors with field paths."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text

UPSTREAM = "routes: [{name: svc, upstream: {endpoints: [{url: 'http://127.0.0.1:9', zone: z1}], %s}}]\n"


def test_normalised_shapes_and_defaults() -> None:
    config = load_text(
        "zone: z1\n" + UPSTREAM % "health: {path: /healthz, expect: [200, '300-301']}, outlier: {}, slow_start: 30s",
        env={},
    )
    upstream = config["routes"][0]["upstream"]
    assert upstream["health"] == {"path": "/healthz", "expect": [[200, 200], [300, 301]], "interval": 5.0,
                                  "timeout": 1.0, "healthy_threshold": 2, "unhealthy_threshold": 3}
    assert upstream["outlier"] == {"consecutive_5xx": 5, "consecutive_connect_failures": 3, "base_ejection": 30.0,
                                   "max_ejection": 300.0}
    assert upstream["slow_start"] == 30.0 and upstream["zones"] == {"min_healthy": None}
    assert upstream["endpoints"][0]["zone"] == "z1"
    assert config["zone"] == {"name": "z1", "min_healthy": 0.5}
    assert load_text("zone: {name: z2, min_healthy: 0.8}\n", env={})["zone"] == {"name": "z2", "min_healthy": 0.8}
    plain = load_text("routes: [{upstream: 'http://127.0.0.1:9'}]\n", env={})
    assert plain["zone"] is None
    assert [plain["routes"][0]["upstream"][k] for k in ("health", "outlier", "slow_start")] == [None, None, 0.0]
    assert load_text(UPSTREAM % "health: {expect: 204}", env={})["routes"][0]["upstream"]["health"]["expect"] == [
        [204, 204]]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (UPSTREAM % "health: {path: healthz}", "routes[0].upstream.health.path: expected a path starting with '/'"),
        (UPSTREAM % "health: {expect: 700}", "routes[0].upstream.health.expect: expected a status"),
        (UPSTREAM % "health: {expect: [200, '399-200']}", "routes[0].upstream.health.expect[1]: expected a status"),
        (UPSTREAM % "health: {expect: []}", "routes[0].upstream.health.expect: list at least one"),
        (UPSTREAM % "health: {interval: 1s, timeout: 2s}", "routes[0].upstream.health.timeout: must be shorter"),
        (UPSTREAM % "health: {healthy_threshold: 0}", "routes[0].upstream.health.healthy_threshold: must be between"),
        (UPSTREAM % "health: {every: 1s}", "routes[0].upstream.health.every: unknown key"),
        (UPSTREAM % "outlier: {consecutive_5xx: -1}", "routes[0].upstream.outlier.consecutive_5xx: must be >= 0"),
        (UPSTREAM % "outlier: {base_ejection: 1m, max_ejection: 10s}",
         "routes[0].upstream.outlier.max_ejection: must be at least base_ejection"),
        (UPSTREAM % "slow_start: soon", "routes[0].upstream.slow_start: expected a duration"),
        (UPSTREAM % "zones: {min_healthy: 2}", "routes[0].upstream.zones.min_healthy: expected a share between 0 and 1"),
        (UPSTREAM % "zones: {local: z1}", "routes[0].upstream.zones.local: unknown key"),
        ("routes: [{upstream: {endpoints: [{url: 'http://127.0.0.1:9', zone: ''}]}}]\n",
         "routes[0].upstream.endpoints[0].zone: expected a non-empty string"),
        ("zone: {min_healthy: 0.5}\n", "zone.name: required"),
        ("zone: {name: z1, min_healthy: yes}\n", "zone.min_healthy: expected a share"),
        ("zone: 5\n", "zone: expected a mapping"),
        ("providers: [{name: p, type: mock}]\nmodels: [{name: m, targets: [{provider: p, zone: 7}]}]\n",
         "models[0].targets[0].zone: expected a non-empty string"),
        ("routes: [{name: a, match: {path: /a}, upstream: {endpoints: ['http://127.0.0.1:9'], health: {path: /a}}},"
         " {name: b, upstream: {endpoints: ['http://127.0.0.1:9'], health: {path: /b}}}]\n",
         "routes[1].upstream.health: http://127.0.0.1:9 is already checked differently by routes[0]"),
    ],
)
def test_errors_name_the_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, env={})
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_the_same_check_on_two_routes_is_one_check() -> None:
    text = ("routes: [{name: a, match: {path: /a}, upstream: {endpoints: ['http://127.0.0.1:9'], health: {path: /h}}},"
            " {name: b, upstream: {endpoints: ['http://127.0.0.1:9'], health: {path: /h}}},"
            " {name: c, match: {path: /c}, upstream: 'http://127.0.0.1:9'}]\n")
    assert len(load_text(text, env={})["routes"]) == 3

"""``http.overload`` and the priorities of consumers and routes: shapes and errors with field paths."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text

ROUTE = 'routes: [{match: {path: /}, upstream: "http://127.0.0.1:9", priority: high}]\n'


def test_normalised_shape_and_defaults() -> None:
    config = load_text(
        "http: {overload: {max_loop_lag: 50ms}}\nconsumers: [{name: a, api_keys: [k], priority: low}, {name: b, api_keys: [j]}]\n"
        + ROUTE,
        env={},
    )
    assert config["http"]["overload"] == {"max_cpu": None, "max_in_flight": None, "max_loop_lag": 0.05, "retry_after": 1, "pause": 1.0}
    assert [c["priority"] for c in config["consumers"]] == ["low", None]
    assert config["routes"][0]["priority"] == "high"
    assert load_text("{}", env={})["http"]["overload"] is None
    # the pause defaults to the Retry-After the shed answer gives
    assert load_text("http: {overload: {max_in_flight: 8, retry_after: 3}}\n", env={})["http"]["overload"]["pause"] == 3.0
    for given in ("80%", 0.8, "80 %"):
        assert load_text(f"http: {{overload: {{max_cpu: {given}}}}}\n", env={})["http"]["overload"]["max_cpu"] == 0.8


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("http: {overload: {}}\n", "http.overload: expected max_cpu, max_in_flight or max_loop_lag"),
        ("http: {overload: {max_cpu: 120%}}\n", "http.overload.max_cpu: expected a share of one core"),
        ("http: {overload: {max_cpu: 0}}\n", "http.overload.max_cpu: expected a share of one core"),
        ("http: {overload: {max_cpu: lots}}\n", "http.overload.max_cpu: expected a share of one core"),
        ("http: {overload: {max_in_flight: 0}}\n", "http.overload.max_in_flight: must be >= 1"),
        ("http: {overload: {max_loop_lag: fast}}\n", "http.overload.max_loop_lag: expected a duration"),
        ("http: {overload: {max_in_flight: 9, retry: 1}}\n", "http.overload.retry: unknown key"),
        ("consumers: [{name: a, api_keys: [k], priority: urgent}]\n", "consumers[0].priority: expected one of"),
        (ROUTE.replace("high", "top"), "routes[0].priority: expected one of"),
    ],
)
def test_errors_name_the_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, env={})
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors

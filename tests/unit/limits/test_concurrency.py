"""Concurrency limits without Redis: the node's slot table, forked holders, config errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import pytest

from fastgw.config import ConfigError, load_text
from fastgw.limits import Limiter, RequestContext
from fastgw.limits.local import LocalLimitStore, key_hash
from fastgw.limits.slots import PROBE

FORK = multiprocessing.get_context("fork")


def limits(yaml_text: str) -> list[dict]:
    return load_text("limits:\n" + yaml_text, env={})["limits"]


def ctx(consumer: str = "team-a", route: str | None = None) -> RequestContext:
    return RequestContext(consumer, "gpt-4o" if route is None else "", "10.0.0.1", route=route)


def test_at_most_n_in_flight_and_release_frees_a_slot() -> None:
    limiter = Limiter(limits("  - {name: cc, concurrency: 2}\n"), store=LocalLimitStore())
    cc = limiter.concurrency
    rules = cc.applies(ctx())
    first, second = (cc.acquire_nowait(rules, ctx()) for _ in range(2))
    assert first.allowed and second.allowed
    refused = cc.acquire_nowait(rules, ctx())
    assert (refused.allowed, refused.status, refused.code, refused.kind) == (False, 429, "concurrency_limited", "concurrency")
    assert ("retry-after", "1") in refused.headers
    assert "2 of 2 requests in flight" in refused.message
    assert cc.acquire_nowait(rules, ctx("team-b")).allowed  # keyed per consumer
    cc.release(first.reservation)
    cc.release(first.reservation)  # twice is once
    assert cc.acquire_nowait(rules, ctx()).allowed
    assert not cc.acquire_nowait(rules, ctx()).allowed


def test_all_or_none_across_rules() -> None:
    limiter = Limiter(
        limits("  - {name: per-consumer, concurrency: 5}\n  - {name: per-ip, concurrency: 1, key: [ip]}\n"),
        store=LocalLimitStore(),
    )
    cc = limiter.concurrency
    rules = cc.applies(ctx())
    assert cc.acquire_nowait(rules, ctx()).allowed
    refused = cc.acquire_nowait(rules, ctx())
    assert refused.rule == "per-ip"
    store_hash = key_hash("fastgw:cc:per-consumer:team-a")
    assert limiter.concurrency._table.in_flight(store_hash) == 1  # the refused request took nothing


def test_route_rules_match_only_their_routes() -> None:
    limiter = Limiter(
        limits("  - {name: api, concurrency: 1, match: {routes: ['api-*']}}\n"), store=LocalLimitStore()
    )
    assert limiter.limits_route("api-v1") and not limiter.limits_route("web")
    cc = limiter.concurrency
    assert cc.applies(ctx(route="api-v1")) and not cc.applies(ctx(route="web")) and not cc.applies(ctx())


def _hold(table: Any, h: int, ready) -> None:
    assert table.acquire([(h, 10)], os.getpid())[0]
    ready.set()
    signal.pause()


def test_a_killed_worker_slots_are_freed_by_release_pid(slot_table: type) -> None:
    table = slot_table()
    h = key_hash("fastgw:cc:cc:team-a")
    ready = FORK.Event()
    proc = FORK.Process(target=_hold, args=(table, h, ready))
    proc.start()
    assert ready.wait(20)
    assert table.acquire([(h, 10)], os.getpid())[0]
    assert table.in_flight(h) == 2  # one node-wide count across processes
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(20)
    assert table.release_pid(proc.pid) == 1
    assert table.in_flight(h) == 1


def test_entries_are_reused_after_release(slot_table: type) -> None:
    table = slot_table(entries=PROBE)
    pid = os.getpid()
    for round_ in range(3):  # more keys over time than entries: released ones are reused
        hashes = [key_hash(f"k{round_}-{i}") for i in range(PROBE)]
        for h in hashes:
            assert table.acquire([(h, 1)], pid)[0]
        table.release(hashes, pid)
    assert all(table.in_flight(key_hash(f"k2-{i}")) == 0 for i in range(PROBE))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("  - {name: a, concurrency: 0}\n", "limits[0].concurrency: must be >= 1, found 0"),
        (
            "  - {name: a, concurrency: 2, requests: {per_second: 1}}\n",
            "limits[0].requests: not allowed in a concurrency rule",
        ),
        ("  - {name: a, requests: {per_second: 1}, lease: 5}\n", "limits[0].lease: only a concurrency rule"),
        ("  - {name: a, concurrency: 2, lease: 0}\n", "limits[0].lease: must be > 0, found 0"),
        ("  - {name: a, concurrency: 2, match: {routes: web}}\n", "limits[0].match.routes: expected"),
    ],
)
def test_config_errors_name_the_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text("limits:\n" + text, env={})
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_a_route_rule_cannot_count_tokens() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("limits:\n  - {name: a, tokens: {per_minute: 9}, match: {routes: [web]}}\n", env={})
    assert info.value.errors[0].startswith("limits[0].tokens: a plain route has no token count")

"""Limits without Redis: GCRA math, rule matching, keys, headers, config errors, the node store.

The node store tests fork real processes sharing one ``LocalLimitStore``, as the
supervisor's workers do.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.config import ConfigError, load_text
from fastgw.limits import Limiter, RequestContext, gcra
from fastgw.limits.local import PROBE, LocalLimitStore, key_hash
from fastgw.limits.quotas import QuotaAdmin, output_reservation
from fastgw.limits.rules import Rule

FORK = multiprocessing.get_context("fork")


def limits(yaml_text: str) -> list[dict]:
    return load_text("limits:\n" + yaml_text, env={})["limits"]


def errors(yaml_text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text("limits:\n" + yaml_text, env={})
    return info.value.errors


class Clock:
    """A hand-driven clock for the local store."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ctx(
    consumer: str | None = "team-a",
    model: str = "gpt-4o",
    ip: str | None = "10.1.2.3",
    headers: dict[bytes, bytes] | None = None,
    query: bytes = b"",
) -> RequestContext:
    return RequestContext(consumer, model, ip, (headers or {}).get, query)


def reserve(limiter: Limiter, request: RequestContext, tokens_in: int, tokens_out: int = 0):
    decision = limiter.reserve_nowait(request, tokens_in, tokens_out)
    assert decision is not None, "local mode never needs to await"
    return decision


# -- GCRA ------------------------------------------------------------------------------------


def test_gcra_burst_is_the_whole_window_then_refill_is_continuous() -> None:
    tat, now = 0.0, 100.0
    for i in range(10):  # 10 per minute: all 10 at once
        verdict = gcra.check(tat, now, 60, 10, 1)
        assert verdict.allowed and verdict.remaining == 9 - i
        tat = verdict.tat
    denied = gcra.check(tat, now, 60, 10, 1)
    assert not denied.allowed and denied.tat == tat and denied.remaining == 0
    assert denied.wait == pytest.approx(6.0) and denied.reset == pytest.approx(60.0)
    assert not gcra.check(tat, now + 5.9, 60, 10, 1).allowed
    assert gcra.check(tat, now + 6.0, 60, 10, 1).allowed  # one emission interval later, one more
    assert gcra.check(tat, now + 60, 60, 10, 10).allowed  # a full window later, a full burst


def test_gcra_weighted_cost_retry_after_and_too_large() -> None:
    assert gcra.check(0, 10, 60, 1000, 1000).allowed  # exactly the whole bucket fits
    never = gcra.check(0, 10, 60, 1000, 1001)
    assert not never.allowed and never.wait == math.inf
    half = gcra.check(0, 10, 60, 1000, 500)
    assert half.remaining == 500 and half.reset == pytest.approx(30.0)
    again = gcra.check(half.tat, 10, 60, 1000, 800)
    assert not again.allowed and again.wait == pytest.approx(18.0)  # 300 missing at 1000/60 per second
    assert gcra.check(half.tat, 10 + 18.0, 60, 1000, 800).allowed


def test_gcra_adjust_refunds_and_charges_extra() -> None:
    verdict = gcra.check(0, 10, 60, 1000, 1000)
    refunded = gcra.adjust(verdict.tat, 10, 60, 1000, -800)  # reserved 1000, used 200
    assert gcra.check(refunded, 10, 60, 1000, 800).allowed
    assert not gcra.check(refunded, 10, 60, 1000, 801).allowed
    extra = gcra.adjust(verdict.tat, 10, 60, 1000, 2000)  # reserved 1000, used 3000: in debt
    assert gcra.check(extra, 10 + 180, 60, 1000, 1000).allowed
    assert not gcra.check(extra, 10 + 179, 60, 1000, 1000).allowed
    assert gcra.adjust(5.0, 10, 60, 1000, -50) < 10  # a refund past full is simply full


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 2.0), st.integers(1, 300)), min_size=1, max_size=300),
    st.integers(1, 5000),
)
def test_gcra_never_admits_more_than_burst_plus_rate(steps: list[tuple[float, int]], limit: int) -> None:
    tat, now, admitted, period = 0.0, 0.0, 0, 10.0
    for gap, cost in steps:
        now += gap
        verdict = gcra.check(tat, now, period, limit, cost)
        if verdict.allowed:
            tat, admitted = verdict.tat, admitted + cost
        else:
            assert verdict.wait > 0 and verdict.remaining < cost
    assert admitted <= limit + limit / period * now + 1e-6 * limit


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0201, "21ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.9996, "1m0s"),
        (360, "6m0s"),
        (3723.25, "1h2m3.25s"),
        (86400, "24h0m0s"),
    ],
)
def test_reset_header_format(seconds: float, text: str) -> None:
    assert gcra.reset_text(seconds) == text


# -- rules -----------------------------------------------------------------------------------


def rule(match: str, key: str = "[consumer]") -> Rule:
    return Rule(limits(f"  - {{name: r, match: {match}, key: {key}, requests: {{per_second: 1}}}}\n")[0])


def test_match_consumers_with_wildcards_and_anonymous() -> None:
    r = rule("{consumers: [team-a, 'ops-*', anonymous]}")
    assert r.matches(ctx("team-a")) and r.matches(ctx("ops-eu")) and r.matches(ctx(None))
    assert not r.matches(ctx("team-b"))
    assert rule("{consumers: ['*']}").matches(ctx(None))


def test_match_models_headers_cidrs_and_all_must_hold() -> None:
    models = rule("{models: ['gpt-4*']}")
    assert models.matches(ctx(model="gpt-4o")) and not models.matches(ctx(model="claude"))
    tier = rule("{headers: {X-Tier: free}}")
    assert tier.matches(ctx(headers={b"x-tier": b"free"}))
    assert not tier.matches(ctx(headers={b"x-tier": b"Free"})) and not tier.matches(ctx())
    nets = rule("{cidrs: [10.0.0.0/8, '::1/128']}")
    assert nets.matches(ctx(ip="10.9.9.9")) and nets.matches(ctx(ip="::1"))
    assert nets.matches(ctx(ip="::ffff:10.0.0.1"))  # IPv4 client on a dual-stack socket
    assert not nets.matches(ctx(ip="11.0.0.1")) and not nets.matches(ctx(ip=None))
    assert not nets.matches(ctx(ip="not-an-ip"))
    both = rule("{consumers: [team-a], models: [gpt-4o]}")
    assert both.matches(ctx()) and not both.matches(ctx(model="x")) and not both.matches(ctx("team-b"))
    assert rule("{}").matches(ctx(None, "anything", None))


def test_keys_per_part_escaped() -> None:
    r = rule("{}", "[consumer, model, ip, 'header:X-Team', 'query:user']")
    request = ctx("a:b", "gpt-4o", "::1", {b"x-team": b"red"}, b"user=j%20d&x=1")
    assert r.key(request) == "a%3Ab:gpt-4o:%3A%3A1:red:j%20d"
    assert r.key(ctx(None, "m", None)) == "anonymous:m:::"


def test_every_matching_rule_applies_all_or_none() -> None:
    clock = Clock()
    limiter = Limiter(
        limits(
            "  - {name: per-consumer, tokens: {per_minute: 1000}}\n"
            "  - {name: per-model, key: [model], match: {models: ['gpt-*']}, tokens: {per_minute: 1500}}\n"
            "  - {name: other, match: {models: [claude]}, requests: {per_second: 1}}\n"
        ),
        store=LocalLimitStore(),
        clock=clock,
    )
    a, b = ctx("a"), ctx("b")
    assert reserve(limiter, a, 900).allowed
    assert a.matched is not None and [r.name for r in a.matched] == ["per-consumer", "per-model"]
    denied = reserve(limiter, b, 700)  # b's own budget is fine; the shared model budget is not
    assert not denied.allowed and "per-model" in denied.message
    assert reserve(limiter, b, 600).allowed  # the refused request charged nothing anywhere
    assert not reserve(limiter, a, 200).allowed  # a's 100 left, and nothing was taken by the failure


def test_no_matching_rule_is_free_and_synchronous() -> None:
    limiter = Limiter(
        limits("  - {name: r, match: {consumers: [x]}, requests: {per_second: 1}}\n"), store=LocalLimitStore()
    )
    request = ctx("team-a")
    assert not limiter.needs_check(request)
    decision = limiter.reserve_nowait(request, 10**9)
    assert (
        decision is not None and decision.allowed and decision.headers == () and decision.reservation is None
    )
    assert not Limiter([], store=LocalLimitStore()).needs_check(ctx())


def test_headers_report_the_tightest_counter_and_retry_after() -> None:
    clock = Clock()
    limiter = Limiter(
        limits(
            "  - {name: wide, requests: {per_second: 10, per_minute: 300}, tokens: {per_minute: 100000}}\n"
            "  - {name: narrow, tokens: {per_day: 20000}}\n"
        ),
        store=LocalLimitStore(),
        clock=clock,
    )
    decision = reserve(limiter, ctx(), 15000)
    assert dict(decision.headers) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "100ms",
        "x-ratelimit-limit-tokens": "20000",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "18h0m0s",
    }
    denied = reserve(limiter, ctx(), 6000)
    assert (denied.status, denied.code) == (429, "rate_limit_exceeded")
    assert denied.retry_after == pytest.approx(86400 / 20000 * 1000)
    assert ("retry-after", "4320") in denied.headers
    too_big = reserve(limiter, ctx(), 200000)
    assert too_big.retry_after is None and "more than limit" in too_big.message


def test_reservation_reconciliation_local() -> None:
    clock = Clock()
    limiter = Limiter(
        limits("  - {name: tpm, tokens: {per_minute: 6000}}\n"), store=LocalLimitStore(), clock=clock
    )
    first = reserve(limiter, ctx(), 1000)
    assert dict(first.headers)["x-ratelimit-remaining-tokens"] == "5000"
    limiter.settle(first.reservation, 200)  # 800 refunded
    assert dict(reserve(limiter, ctx(), 0).headers)["x-ratelimit-remaining-tokens"] == "5800"
    second = reserve(limiter, ctx(), 1000)
    limiter.settle(second.reservation, 2000, 1000)  # used 3000: 2000 more charged
    limiter.settle(second.reservation, 0)  # settled once only
    assert dict(reserve(limiter, ctx(), 0).headers)["x-ratelimit-remaining-tokens"] == "2800"


def test_output_reservation() -> None:
    assert output_reservation({"max_tokens": 100}) == 100
    assert output_reservation({"max_completion_tokens": 50, "max_tokens": 100}) == 50
    assert output_reservation({"max_tokens": "9"}, default=7) == 7 and output_reservation({}) == 1024


# -- quotas (node ledger) --------------------------------------------------------------------


def test_quota_exhaustion_top_up_reset_local() -> None:
    store = LocalLimitStore()
    spec = limits("  - {name: budget, match: {consumers: [team-a]}, quota: {tokens: 1000}}\n")
    limiter, admin = Limiter(spec, store=store), QuotaAdmin(spec, store, None)
    first = reserve(limiter, ctx(), 600)
    assert first.allowed and first.headers == ()
    denied = reserve(limiter, ctx(), 300, 300)
    assert (denied.status, denied.code) == (
        429,
        "insufficient_quota",
    ) and "600 of 1000 tokens" in denied.message
    limiter.settle(first.reservation, 100)  # 500 back
    assert admin.get("budget", "team-a") == {
        "rule": "budget",
        "consumer": "team-a",
        "unit": "tokens",
        "limit": 1000.0,
        "used": 100.0,
        "remaining": 900.0,
    }
    assert reserve(limiter, ctx(), 900).allowed and not reserve(limiter, ctx(), 1).allowed
    assert admin.top_up("budget", "team-a", 500)["limit"] == 1500.0
    assert reserve(limiter, ctx(), 500).allowed
    assert admin.reset("budget", "team-a")["used"] == 0.0
    assert admin.set_limit("budget", "team-a", 10)["remaining"] == 10.0
    assert not reserve(limiter, ctx(), 11).allowed
    assert admin.get("budget", "team-b")["limit"] == 1000.0  # untouched consumers follow the rule
    with pytest.raises(KeyError):
        admin.get("nope", "team-a")
    with pytest.raises(ValueError):
        admin.top_up("budget", "team-a", -1)


def test_cost_quota_prices_by_first_matching_pattern() -> None:
    spec = limits(
        "  - name: usd\n"
        "    quota: {cost: 1.0, prices: {'gpt-4o-mini': {input: 0.15, output: 0.6}, 'gpt-4o*': {input: 2.5, output: 10}}}\n"
    )
    store = LocalLimitStore()
    limiter, admin = Limiter(spec, store=store), QuotaAdmin(spec, store, None)
    decision = reserve(limiter, ctx(model="gpt-4o"), 100_000, 50_000)  # 0.25 + 0.5 USD
    assert decision.allowed
    assert admin.get("usd", "team-a")["used"] == pytest.approx(0.75)
    limiter.settle(decision.reservation, 100_000, 10_000)  # 0.35 actually
    assert admin.get("usd", "team-a")["used"] == pytest.approx(0.35)
    assert reserve(limiter, ctx(model="gpt-4o-mini"), 1_000_000, 0).allowed  # 0.15
    assert not reserve(limiter, ctx(model="gpt-4o"), 200_004, 0).allowed  # 0.50001 > 0.5 left
    unpriced = reserve(limiter, ctx(model="claude"), 1)
    assert (unpriced.status, unpriced.code) == (403, "model_not_priced")


# -- the node store across processes ---------------------------------------------------------


def _hammer_local(store: LocalLimitStore, spec: list[dict], deadline: float, seed: int, out) -> None:
    limiter, rng = Limiter(spec, store=store), random.Random(seed)
    admitted = denied = 0
    last_start = 0.0
    while time.monotonic() < deadline:
        cost = rng.randint(1, 100)
        last_start = time.monotonic()
        if reserve(limiter, ctx("n", "m"), cost).allowed:
            admitted += cost
        else:
            denied += 1
    out.send((admitted, denied, last_start))


def test_local_store_is_one_budget_per_node_across_forked_workers() -> None:
    """Two forked workers share the store: after the burst, admitted tokens = rate x time within 1%."""
    store = LocalLimitStore()
    spec = limits("  - {name: tpm, key: [model], tokens: {per_minute: 600000}}\n")
    limiter = Limiter(spec, store=store)
    assert reserve(limiter, ctx("n", "m"), 600000).allowed  # the burst, drained by the "supervisor"
    start = time.monotonic()
    deadline = start + 3.0
    pipes, procs = [], []
    for seed in range(2):
        receive, send = FORK.Pipe(duplex=False)
        proc = FORK.Process(target=_hammer_local, args=(store, spec, deadline, seed, send))
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join(5)
    admitted = sum(r[0] for r in results)
    expected = 600000 / 60 * (max(r[2] for r in results) - start)
    print(f"local: admitted {admitted} tokens after the burst, limit allows {expected:.0f}")
    assert abs(admitted - expected) <= 0.01 * expected
    assert all(r[0] > 0.2 * expected and r[1] > 0 for r in results)  # both drew on one budget, held back


def test_a_worker_killed_inside_the_lock_does_not_wedge_the_node() -> None:
    store = LocalLimitStore()
    ready = FORK.Event()

    def hold_lock_forever() -> None:
        store._lock()
        ready.set()
        time.sleep(60)

    proc = FORK.Process(target=hold_lock_forever)
    proc.start()
    assert ready.wait(5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    limiter = Limiter(limits("  - {name: r, requests: {per_second: 1}}\n"), store=store)
    assert reserve(limiter, ctx(), 0).allowed  # the kernel released the dead worker's lock


def test_full_probe_window_evicts_the_counter_closest_to_full() -> None:
    store = LocalLimitStore(slots=PROBE, quota_slots=PROBE)
    now = 50.0
    hashes = [key_hash(f"k{i}") for i in range(PROBE + 1)]
    for i, h in enumerate(hashes[:PROBE]):  # fill every slot; k0 is the least used
        allowed, _, _ = store.reserve([(h, 60.0, 100.0, 1.0 + i)], [], now)
        assert allowed
    assert store.evictions == 0
    assert store.reserve([(hashes[-1], 60.0, 100.0, 100.0)], [], now)[0]
    assert store.evictions == 1
    # k0 was forgotten: a full bucket again (evicting k1 in turn); the others kept their counts
    assert store.reserve([(hashes[0], 60.0, 100.0, 100.0)], [], now)[0]
    assert not store.reserve([(hashes[5], 60.0, 100.0, 100.0)], [], now)[0]
    # an expired counter is reused in place, without an eviction
    assert store.reserve([(key_hash("late"), 60.0, 100.0, 1.0)], [], now + 3600)[0]
    assert store.evictions == 2  # k0's comeback evicted k1


def _charge_quota(store: LocalLimitStore, spec: list[dict], seed: int) -> None:
    limiter, rng = Limiter(spec, store=store), random.Random(seed)
    for _ in range(300):
        decision = reserve(limiter, ctx("team-a"), 50)
        assert decision.allowed
        limiter.settle(decision.reservation, rng.randint(0, 100))


def test_concurrent_quota_charges_lose_no_update_local() -> None:
    store = LocalLimitStore()
    spec = limits("  - {name: budget, quota: {tokens: 100000000}}\n")
    procs = [FORK.Process(target=_charge_quota, args=(store, spec, seed)) for seed in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(20)
        assert proc.exitcode == 0
    rngs = [random.Random(seed) for seed in range(3)]
    expected = sum(rng.randint(0, 100) for rng in rngs for _ in range(300))
    assert QuotaAdmin(spec, store, None).get("budget", "team-a")["used"] == expected


# -- config ----------------------------------------------------------------------------------


def test_config_normalised_shape() -> None:
    rules = limits(
        "  - name: team-tpm\n"
        "    match: {consumers: [team-a, '*'], models: ['gpt-4*'], headers: {X-Tier: free}, cidrs: [10.1.2.3/8, '::1']}\n"
        "    key: [consumer, model, 'header:X-Team']\n"
        "    tokens: {per_minute: 100000, per_day: 2000000}\n"
        "    requests: {per_second: 10}\n"
        "    on_redis_down: open\n"
        "    nodes: 3\n"
        "  - {name: budget, quota: {tokens: 5000000}}\n"
    )
    assert rules == [
        {
            "name": "team-tpm",
            "match": {
                "consumers": ["team-a", "*"],
                "models": ["gpt-4*"],
                "routes": None,
                "headers": {"x-tier": "free"},
                "cidrs": ["10.0.0.0/8", "::1/128"],
            },
            "key": ["consumer", "model", "header:x-team"],
            "tokens": {"per_minute": 100000, "per_day": 2000000},
            "requests": {"per_second": 10},
            "concurrency": None,
            "lease": 10.0,
            "queue": None,
            "quota": None,
            "on_redis_down": "open",
            "nodes": 3,
        },
        {
            "name": "budget",
            "match": {"consumers": None, "models": None, "routes": None, "headers": None, "cidrs": None},
            "key": ["consumer"],
            "tokens": {},
            "requests": {},
            "concurrency": None,
            "lease": 10.0,
            "queue": None,
            "quota": {"tokens": 5000000},
            "on_redis_down": "closed",
            "nodes": 1,
        },
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("  - {tokens: {per_minute: 1}}\n", "limits[0].name: required"),
        ("  - {name: 'a b', tokens: {per_minute: 1}}\n", "limits[0].name: may hold only"),
        (
            "  - {name: a, tokens: {per_minute: 1}}\n  - {name: a, requests: {per_second: 1}}\n",
            "limits[1].name: duplicate name 'a' (already used by limits[0])",
        ),
        ("  - {name: a}\n", "limits[0]: a rule needs tokens, requests, concurrency or quota"),
        ("  - {name: a, token: {per_minute: 1}}\n", "limits[0].token: unknown key; did you mean 'tokens'?"),
        (
            "  - {name: a, tokens: {per_minut: 1}}\n",
            "limits[0].tokens.per_minut: unknown key; did you mean 'per_minute'?",
        ),
        ("  - {name: a, tokens: {per_minute: 0}}\n", "limits[0].tokens.per_minute: must be >= 1, found 0"),
        ("  - {name: a, tokens: {}}\n", "limits[0].tokens: expected at least one of per_second"),
        (
            "  - {name: a, requests: {per_second: 1}, key: [user]}\n",
            "limits[0].key[0]: expected one of consumer",
        ),
        ("  - {name: a, requests: {per_second: 1}, key: ['header:']}\n", "limits[0].key[0]: expected one of"),
        (
            "  - {name: a, requests: {per_second: 1}, key: [ip, ip]}\n",
            "limits[0].key[1]: duplicate key part 'ip'",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, key: []}\n",
            "limits[0].key: at least one key part is required",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, match: {cidrs: [10.0.0.300/8]}}\n",
            "limits[0].match.cidrs[0]: expected a CIDR",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, match: {cidrs: [5]}}\n",
            "limits[0].match.cidrs[0]: expected a CIDR",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, match: {headers: {'x y': a}}}\n",
            "limits[0].match.headers.x y: invalid header name",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, match: {headers: {x: 1}}}\n",
            "limits[0].match.headers.x: expected a string, found integer 1",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, match: {user: [x]}}\n",
            "limits[0].match.user: unknown key",
        ),
        (
            "  - {name: a, requests: {per_second: 1}, on_redis_down: maybe}\n",
            "limits[0].on_redis_down: expected one of local, open, closed",
        ),
        (
            "  - {name: a, quota: {tokens: 5}, on_redis_down: local}\n",
            "limits[0].on_redis_down: expected one of open, closed",
        ),
        (
            "  - {name: a, quota: {tokens: 5}, tokens: {per_minute: 1}}\n",
            "limits[0].tokens: not allowed in a quota rule",
        ),
        ("  - {name: a, quota: {tokens: 5}, key: [ip]}\n", "limits[0].key: not allowed in a quota rule"),
        (
            "  - {name: a, quota: {tokens: 5, cost: 1}}\n",
            "limits[0].quota: expected exactly one of tokens, cost",
        ),
        ("  - {name: a, quota: {cost: 1}}\n", "limits[0].quota.prices: required"),
        (
            "  - {name: a, quota: {cost: 0, prices: {'*': {input: 1, output: 1}}}}\n",
            "limits[0].quota.cost: must be > 0",
        ),
        (
            "  - {name: a, quota: {cost: 1, prices: {'*': {input: 1}}}}\n",
            "limits[0].quota.prices.*.output: required",
        ),
        (
            "  - {name: a, quota: {cost: 1, prices: {'*': {input: -1, output: 1}}}}\n",
            "limits[0].quota.prices.*.input: must be >= 0",
        ),
        (
            "  - {name: a, quota: {tokens: 5, prices: {'*': {input: 1, output: 1}}}}\n",
            "limits[0].quota.prices: only a cost quota has prices",
        ),
        ("  - 5\n", "limits[0]: expected a mapping, found integer 5"),
    ],
)
def test_config_errors_name_the_field(text: str, error: str) -> None:
    assert any(e.startswith(error) for e in errors(text)), errors(text)


def test_config_reports_every_problem_at_once() -> None:
    found = errors("  - {name: a, tokens: {per_minute: x}, nodes: 0, match: {models: [1]}}\n")
    assert found == [
        "limits[0].match.models[0]: expected a non-empty string, found integer 1",
        "limits[0].tokens.per_minute: expected an integer, found string 'x'",
        "limits[0].nodes: must be >= 1, found 0",
    ]


def test_asyncio_reserve_in_local_mode_needs_no_loop_io() -> None:
    limiter = Limiter(limits("  - {name: r, requests: {per_second: 2}}\n"), store=LocalLimitStore())

    async def run() -> list[bool]:
        return [(await limiter.reserve(ctx(), 0)).allowed for _ in range(3)]

    assert asyncio.run(run()) == [True, True, False]

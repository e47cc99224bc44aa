"""Cluster-wide limits against a real redis-server: accuracy across processes, reconciliation,
Redis outages (each ``on_redis_down`` policy, recovery without a rebuild) and quotas."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from typing import TYPE_CHECKING

import pytest
import redis

from fastgw.config import load_text
from fastgw.limits import Decision, Limiter, RequestContext
from fastgw.limits.cluster import RedisLink
from fastgw.limits.local import LocalLimitStore
from fastgw.limits.quotas import QuotaAdmin

if TYPE_CHECKING:
    from tests.support.redis_server import RedisServer

FORK = multiprocessing.get_context("fork")


def limits(yaml_text: str) -> list[dict]:
    return load_text("limits:\n" + yaml_text, env={})["limits"]


def ctx(consumer: str | None = "team-a", model: str = "gpt-4o") -> RequestContext:
    return RequestContext(consumer, model, "10.0.0.1")


async def reserve(limiter: Limiter, request: RequestContext, tokens_in: int, tokens_out: int = 0) -> Decision:
    return limiter.reserve_nowait(request, tokens_in, tokens_out) or await limiter.reserve(
        request, tokens_in, tokens_out
    )


def remaining(decision: Decision) -> int:
    return int(dict(decision.headers)["x-ratelimit-remaining-tokens"])


def test_reserve_settle_and_keys_in_redis(redis_server: RedisServer) -> None:
    spec = limits("  - {name: tpm, key: [consumer, model], tokens: {per_minute: 6000}}\n")

    async def run() -> None:
        link = RedisLink(redis_server.url)
        limiter = Limiter(spec, store=LocalLimitStore(), redis=link)
        assert limiter.reserve_nowait(ctx(), 1000) is None  # cluster mode: one round trip needed
        first = await reserve(limiter, ctx(), 1000)
        assert first.allowed and remaining(first) == 5000
        limiter.settle(first.reservation, 200)  # 800 refunded
        await limiter.flush()
        assert remaining(await reserve(limiter, ctx(), 0)) == 5800
        second = await reserve(limiter, ctx(), 1000)
        limiter.settle(second.reservation, 1000, 2000)  # 2000 more charged
        await limiter.flush()
        assert remaining(await reserve(limiter, ctx(), 0)) == 2800
        denied = await reserve(limiter, ctx(), 3000)
        assert not denied.allowed and denied.retry_after == pytest.approx(2.0, abs=0.05)
        await link.close()

    asyncio.run(run())
    client = redis.Redis.from_url(redis_server.url)
    assert client.keys("*") == [b"fastgw:rl:tpm:tokens-per_minute:team-a:gpt-4o"]
    assert 0 < client.pttl("fastgw:rl:tpm:tokens-per_minute:team-a:gpt-4o") <= 60_000 * 3200 / 6000 + 2


def test_all_or_none_across_rules_and_script_reload(redis_server: RedisServer) -> None:
    spec = limits(
        "  - {name: mine, tokens: {per_minute: 1000}}\n"
        "  - {name: shared, key: [model], tokens: {per_minute: 1500}, requests: {per_hour: 100}}\n"
    )

    async def run() -> None:
        link = RedisLink(redis_server.url)
        limiter = Limiter(spec, store=LocalLimitStore(), redis=link)
        assert (await reserve(limiter, ctx("a"), 900)).allowed
        redis.Redis.from_url(redis_server.url).script_flush()  # NOSCRIPT next: falls back to EVAL
        denied = await reserve(limiter, ctx("b"), 700)
        assert not denied.allowed and "shared" in denied.message
        assert dict(denied.headers)["x-ratelimit-remaining-requests"] == "99"  # nothing charged
        assert (await reserve(limiter, ctx("b"), 600)).allowed
        assert not (await reserve(limiter, ctx("a"), 200)).allowed
        assert limiter.stats["redis_errors"] == 0
        await link.close()

    asyncio.run(run())


# -- accuracy across nodes and workers ----------------------------------------------------------

LIMIT = 1_200_000  # tokens per minute: 20,000 per second after the burst
SPEC = "  - {name: tpm, key: [model], tokens: {per_minute: 1200000}}\n"
KEY = "fastgw:rl:tpm:tokens-per_minute:shared"


def _hammer_redis(url: str, store: LocalLimitStore, deadline: float, seed: int, out) -> None:
    async def run() -> tuple[int, int, int, float, float]:
        # Generous timeout: two CPUs run four workers and Redis; a fallback would spoil the count.
        link = RedisLink(url, timeout=2.0)
        limiter = Limiter(limits(SPEC), store=store, redis=link)
        rng = random.Random(seed)
        admitted = allowed = denied = 0
        last_start = 0.0
        while time.monotonic() < deadline:
            cost = rng.randint(1, 200)
            last_start = time.time()  # Redis TIME reads the same clock: Redis runs on this host
            if (await reserve(limiter, ctx(f"c{seed}", "shared"), cost)).allowed:
                admitted, allowed = admitted + cost, allowed + 1
            else:
                denied += 1
        seconds, micros = map(int, await link.command("TIME"))
        assert limiter.stats["redis_errors"] == 0
        await link.close()
        return admitted, allowed, denied, last_start, seconds + micros / 1e6

    out.send(asyncio.run(run()))


def test_two_nodes_two_workers_share_one_budget_within_one_percent(redis_server: RedisServer) -> None:
    """4 processes (2 nodes x 2 workers) hammer one key; admitted = rate x elapsed within 1%.

    The burst is drained first, so the count measures the rate itself (with the burst in
    it, 1% of burst + rate x 4 s would hide a 15% error in the rate). The last request
    started between the latest ``last_start`` and the latest Redis TIME read after it.
    """
    client = redis.Redis.from_url(redis_server.url)
    spec = limits(SPEC)

    async def drain_burst() -> None:
        link = RedisLink(redis_server.url)
        assert (
            await Limiter(spec, store=LocalLimitStore(), redis=link).reserve(ctx("x", "shared"), LIMIT)
        ).allowed
        await link.close()

    asyncio.run(drain_burst())
    start = float(client.get(KEY)) / 1e6 - 60  # the burst's TAT is its Redis time + one period
    nodes = [LocalLimitStore(), LocalLimitStore()]
    deadline = time.monotonic() + 4.0
    pipes, procs = [], []
    for worker in range(4):
        receive, send = FORK.Pipe(duplex=False)
        proc = FORK.Process(
            target=_hammer_redis, args=(redis_server.url, nodes[worker // 2], deadline, worker, send)
        )
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join(5)
    admitted = sum(r[0] for r in results)
    rate = LIMIT / 60
    allowed_by_rate = rate * (max(r[3] for r in results) - start)
    at_most = rate * (max(r[4] for r in results) - start)
    print(
        f"cluster: {sum(r[1] for r in results)} admitted / {sum(r[2] for r in results)} refused requests; "
        f"{admitted} tokens after the burst vs {allowed_by_rate:.0f} allowed "
        f"({(admitted - allowed_by_rate) / allowed_by_rate:+.3%}); with the burst "
        f"{(LIMIT + admitted) / (LIMIT + allowed_by_rate) - 1:+.4%}"
    )
    assert all(r[2] > 0 for r in results)  # every worker was held back: the limit was the bottleneck
    assert admitted <= at_most  # never more than the limit allows
    assert abs(admitted - allowed_by_rate) <= 0.01 * allowed_by_rate


# -- Redis down -------------------------------------------------------------------------------

OUTAGE = (
    "  - {name: loc, key: [model], match: {models: [m-local]}, tokens: {per_minute: 100}, nodes: 2}\n"
    "  - {name: opn, key: [model], match: {models: [m-open]}, requests: {per_second: 1}, on_redis_down: open}\n"
    "  - {name: cls, key: [model], match: {models: [m-closed]}, requests: {per_minute: 1000}, on_redis_down: closed}\n"
)


async def _wait_up(link: RedisLink, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not link.up:
        assert time.monotonic() < deadline, "the limiter did not reconnect"
        await asyncio.sleep(0.02)


def test_redis_killed_policies_apply_then_recovery_without_rebuild(
    redis_server: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    async def run() -> None:
        link = RedisLink(redis_server.url, timeout=0.2, retry_interval=0.1)
        limiter = Limiter(limits(OUTAGE), store=LocalLimitStore(), redis=link)
        assert (await reserve(limiter, ctx(model="m-open"), 0)).allowed
        redis_server.kill()

        # local: this node alone enforces 100 / nodes = 50 tokens a minute
        first = await reserve(limiter, ctx(model="m-local"), 30)
        assert first.allowed and dict(first.headers)["x-ratelimit-limit-tokens"] == "50"
        assert limiter.stats["redis_errors"] == 1 and not link.up
        refused = await reserve(limiter, ctx(model="m-local"), 30)
        assert (refused.status, refused.code) == (429, "rate_limit_exceeded")
        # open: not counted at all (Redis would refuse the second request this second)
        assert all([(await reserve(limiter, ctx(model="m-open"), 0)).allowed for _ in range(5)])
        # closed: refused with 503
        closed = await reserve(limiter, ctx(model="m-closed"), 0)
        assert (closed.status, closed.code) == (503, "rate_limiter_unavailable")
        assert limiter.reserve_nowait(ctx(model="m-closed"), 0) == closed  # while down: no await needed
        assert limiter.stats["redis_errors"] == 1  # down: requests no longer wait on Redis
        assert limiter.stats["fallbacks"] == 9 and limiter.stats["rejections"] == 3

        redis_server.start()  # same port; the same limiter and link pick it up
        await _wait_up(link)
        assert (await reserve(limiter, ctx(model="m-closed"), 0)).allowed
        assert (await reserve(limiter, ctx(model="m-open"), 0)).allowed  # the restarted Redis is empty
        assert not (await reserve(limiter, ctx(model="m-open"), 0)).allowed  # counted in Redis again
        assert limiter.stats["fallbacks"] == 9
        await link.close()

    asyncio.run(run())
    stderr = capfd.readouterr().err
    assert stderr.count("Redis unavailable") == 1, stderr  # one warning per outage, not per request
    assert stderr.count("Redis is back") == 1


def test_frozen_redis_times_out_and_falls_back(redis_server: RedisServer) -> None:
    async def run() -> None:
        link = RedisLink(redis_server.url, timeout=0.1, retry_interval=0.1)
        limiter = Limiter(limits(OUTAGE), store=LocalLimitStore(), redis=link)
        assert (await reserve(limiter, ctx(model="m-local"), 1)).allowed
        redis_server.freeze()
        started = time.monotonic()
        assert (await reserve(limiter, ctx(model="m-local"), 1)).allowed
        assert 0.09 < time.monotonic() - started < 0.5  # waited for the timeout, once
        started = time.monotonic()
        assert (await reserve(limiter, ctx(model="m-local"), 1)).allowed
        assert time.monotonic() - started < 0.05
        assert limiter.stats["redis_errors"] == 1
        redis_server.thaw()
        await _wait_up(link)
        assert (await reserve(limiter, ctx(model="m-local"), 1)).allowed
        await link.close()

    asyncio.run(run())


def test_settlement_lost_while_redis_is_down_is_counted(redis_server: RedisServer) -> None:
    async def run() -> None:
        link = RedisLink(redis_server.url, timeout=0.1, retry_interval=10)
        limiter = Limiter(
            limits("  - {name: t, tokens: {per_minute: 1000}}\n"), store=LocalLimitStore(), redis=link
        )
        decision = await reserve(limiter, ctx(), 500)
        redis_server.kill()
        limiter.settle(decision.reservation, 100)
        await limiter.flush()
        assert limiter.stats["lost_settlements"] == 1 and limiter.stats["redis_errors"] == 1
        limiter.settle(decision.reservation, 100)  # once only
        assert limiter.stats["lost_settlements"] == 1
        await link.close()

    asyncio.run(run())


# -- quotas in Redis ----------------------------------------------------------------------------

QUOTA = "  - {name: budget, match: {consumers: [team-a]}, quota: {tokens: 1000}}\n"


def test_quota_exhaustion_top_up_and_reset_in_redis(redis_server: RedisServer) -> None:
    spec = limits(QUOTA)
    admin = QuotaAdmin(spec, None, redis_server.url)

    async def run() -> None:
        link = RedisLink(redis_server.url)
        limiter = Limiter(spec, store=LocalLimitStore(), redis=link)
        first = await reserve(limiter, ctx(), 600)
        assert first.allowed
        denied = await reserve(limiter, ctx(), 500)
        assert (denied.status, denied.code) == (429, "insufficient_quota")
        limiter.settle(first.reservation, 700)  # used more than reserved
        await limiter.flush()
        assert admin.get("budget", "team-a")["used"] == 700
        assert not (await reserve(limiter, ctx(), 301)).allowed
        assert admin.top_up("budget", "team-a", 500) == {
            "rule": "budget",
            "consumer": "team-a",
            "unit": "tokens",
            "limit": 1500.0,
            "used": 700.0,
            "remaining": 800.0,
        }
        assert (await reserve(limiter, ctx(), 800)).allowed
        assert not (await reserve(limiter, ctx(), 1)).allowed
        assert admin.reset("budget", "team-a")["used"] == 0
        assert (await reserve(limiter, ctx(), 1500)).allowed
        assert admin.set_limit("budget", "team-a", 2000)["remaining"] == 500
        assert (await reserve(limiter, ctx("team-b"), 10**6)).allowed  # the rule does not match team-b
        redis_server.kill()
        down = await reserve(limiter, ctx(), 1)
        assert (down.status, down.code) == (503, "rate_limiter_unavailable")  # quotas default to closed
        await link.close()

    asyncio.run(run())
    with pytest.raises(redis.exceptions.RedisError):
        admin.get("budget", "team-a")


def _charge_quota(url: str, seed: int, out) -> None:
    async def run() -> int:
        link = RedisLink(url, timeout=2.0)
        limiter = Limiter(limits(QUOTA.replace("1000", "100000000")), store=LocalLimitStore(), redis=link)
        rng, total = random.Random(seed), 0

        async def one() -> int:
            decision = await reserve(limiter, ctx(), 50)
            assert decision.allowed
            actual = rng.randint(0, 100)
            limiter.settle(decision.reservation, actual)
            return actual

        for _ in range(20):  # 20 rounds of 10 concurrent requests
            total += sum(await asyncio.gather(*(one() for _ in range(10))))
        await limiter.flush()
        assert limiter.stats["redis_errors"] == 0
        await link.close()
        return total

    out.send(asyncio.run(run()))


def test_concurrent_quota_charges_lose_no_update_in_redis(redis_server: RedisServer) -> None:
    pipes, procs = [], []
    for seed in range(4):
        receive, send = FORK.Pipe(duplex=False)
        proc = FORK.Process(target=_charge_quota, args=(redis_server.url, seed, send))
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    expected = sum(pipe.recv() for pipe in pipes)
    for proc in procs:
        proc.join(5)
    admin = QuotaAdmin(limits(QUOTA), None, redis_server.url)
    assert admin.get("budget", "team-a")["used"] == expected

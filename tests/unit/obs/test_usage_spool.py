"""The usage spool file, and the usage sink against a real Redis that dies and returns."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis

from fastgw.limits import Limiter, RequestContext
from fastgw.limits.cluster import RedisLink
from fastgw.limits.local import LocalLimitStore
from fastgw.obs.accesslog import UsageSink
from fastgw.obs.metrics import Gateway, Registry
from fastgw.obs.spool import Spool, SpoolBusy
from tests.support.redis_server import RedisServer

STREAM = "fastgw:usage"


def test_spool_appends_reads_and_truncates_once_replayed(tmp_path) -> None:
    spool = Spool(str(tmp_path / "spool"), 0, max_bytes=1 << 20)
    assert not spool.pending
    assert spool.append([{"n": i} for i in range(5)]) == 0
    records, offset = spool.read(3)
    assert records == [{"n": 0}, {"n": 1}, {"n": 2}]
    spool.commit(offset)
    assert spool.pending
    records, offset = spool.read(10)
    assert records == [{"n": 3}, {"n": 4}]
    spool.commit(offset)
    assert not spool.pending and os.path.getsize(spool.path) == 0
    spool.close()


def test_spool_survives_reopening_cuts_a_torn_record_and_is_bounded(tmp_path) -> None:
    spool = Spool(str(tmp_path), 1, max_bytes=100)
    assert spool.append([{"n": 1}, {"n": 2}]) == 0
    spool.close()
    with open(tmp_path / "usage-1.spool", "ab") as f:
        f.write(b'{"n": 3, "cut mid-wr')  # a crash in the middle of an append
    again = Spool(str(tmp_path), 1, max_bytes=100)
    assert again.torn == len(b'{"n": 3, "cut mid-wr')
    assert again.read(10)[0] == [{"n": 1}, {"n": 2}]
    assert again.append([{"pad": "x" * 40}, {"pad": "y" * 40}]) == 1  # the second would pass 100 bytes
    with pytest.raises(SpoolBusy):  # one process per file
        Spool(str(tmp_path), 1, max_bytes=100)
    again.close()


def stream_ids(server: RedisServer) -> list[str]:
    client = redis.Redis.from_url(server.url)
    return [fields[b"id"].decode() for _, fields in client.xrange(STREAM)]


def record(sink: UsageSink, n: int, owed: list | None = None) -> None:
    sink.record(consumer="team", model="m", provider="p", prompt_tokens=n, completion_tokens=1, estimated=False,
                cost=0.0, owed=owed)


def test_records_of_a_frozen_redis_are_spooled_and_replayed_exactly_once(redis_server: RedisServer, tmp_path) -> None:
    metrics = Gateway(Registry())

    async def run() -> None:
        spool = Spool(str(tmp_path), 0, max_bytes=1 << 20)
        sink = UsageSink(redis_server.url, STREAM, maxlen=10_000, worker=0, spool=spool, retry_delay=0.1,
                         metrics=metrics)
        sink.start()
        for n in range(10):
            record(sink, n)
        await asyncio.sleep(0.3)
        # Frozen: the batch sent meanwhile times out and is spooled, yet Redis still runs it when
        # it wakes up; its replay must then add nothing.
        redis_server.freeze()
        for n in range(10, 40):
            record(sink, n)
            await asyncio.sleep(0.01)
        await asyncio.sleep(2.5)
        assert spool.pending
        redis_server.thaw()
        for n in range(40, 50):
            record(sink, n)
        for _ in range(100):
            if not spool.pending and len(stream_ids(redis_server)) == 50:
                break
            await asyncio.sleep(0.05)
        await sink.close()
        spool.close()

    asyncio.run(run())
    ids = stream_ids(redis_server)
    assert len(ids) == 50 and len(set(ids)) == 50
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == list(range(1, 51))  # in order, none twice
    counts = {key[0]: value for key, value in metrics.usage_spool.values.items()}
    assert counts["spooled"] >= 30 and counts["replayed"] == counts["spooled"] and "dropped" not in counts


def test_a_replay_after_a_crash_before_truncation_adds_nothing_twice(redis_server: RedisServer, tmp_path) -> None:
    """The script ran but the spool was not truncated (a crash in between): the next start replays
    the same records, and the writer's high-water mark skips them."""

    async def run() -> None:
        spool = Spool(str(tmp_path), 0, max_bytes=1 << 20)
        sink = UsageSink(redis_server.url, STREAM, maxlen=10_000, worker=0, spool=spool, retry_delay=0.1)
        sink.start()
        for n in range(5):
            record(sink, n)
        held = list(sink._queue)
        await sink.close()
        assert len(stream_ids(redis_server)) == 5
        spool.append(held)  # what a crash before the truncation leaves behind
        spool.close()
        reopened = Spool(str(tmp_path), 0, max_bytes=1 << 20)
        assert reopened.pending
        next_sink = UsageSink(redis_server.url, STREAM, maxlen=10_000, worker=0, spool=reopened, retry_delay=0.1)
        next_sink.start()
        record(next_sink, 99)
        for _ in range(100):
            if not reopened.pending and len(stream_ids(redis_server)) >= 6:
                break
            await asyncio.sleep(0.05)
        await next_sink.close()
        reopened.close()

    asyncio.run(run())
    ids = stream_ids(redis_server)
    assert len(ids) == 6 and len(set(ids)) == 6


def test_open_quota_use_during_an_outage_is_charged_when_redis_returns(redis_server: RedisServer, tmp_path) -> None:
    """``on_redis_down: open`` lets requests through uncounted; their real use rides on the usage
    record and reaches the ledger with it, once."""
    from fastgw.config import load_text

    limits = load_text(
        "limits:\n  - {name: budget, match: {consumers: [team]}, quota: {tokens: 1000000}, on_redis_down: open}\n"
    )["limits"]
    ledger = "fastgw:quota:budget:team"

    async def run() -> None:
        link = RedisLink(redis_server.url)
        limiter = Limiter(limits, store=LocalLimitStore(), redis=link)
        spool = Spool(str(tmp_path), 0, max_bytes=1 << 20)
        sink = UsageSink(redis_server.url, STREAM, maxlen=10_000, worker=0, spool=spool, retry_delay=0.1)
        sink.start()
        redis_server.kill()
        for used in (100, 250):
            ctx = RequestContext("team", "m", "127.0.0.1", lambda name: None, {})
            decision = await limiter.reserve(ctx, 50, 500)
            assert decision.allowed  # open: Redis down lets it through
            limiter.settle(decision.reservation, used - 10, 10)
            assert decision.reservation.owed == [(ledger, float(used))]
            record(sink, used - 10, owed=decision.reservation.owed)
        await asyncio.sleep(0.3)
        redis_server.start()
        for _ in range(100):
            if not spool.pending:
                break
            await asyncio.sleep(0.05)
        await sink.close()
        spool.close()
        await link.close()

    asyncio.run(run())
    client = redis.Redis.from_url(redis_server.url)
    assert float(client.hget(ledger, "used")) == 350.0
    assert len(stream_ids(redis_server)) == 2


def test_a_restart_with_fewer_workers_takes_over_the_orphaned_spools(tmp_path) -> None:
    for slot in range(4):
        spool = Spool(str(tmp_path), slot, max_bytes=1 << 20)
        spool.append([{"slot": slot, "n": n} for n in range(3)])
        spool.close()
    first, second = Spool(str(tmp_path), 0, max_bytes=1 << 20), Spool(str(tmp_path), 1, max_bytes=1 << 20)
    assert first.absorb_orphans(2) == (3, 0) and second.absorb_orphans(2) == (3, 0)
    assert sorted(os.listdir(tmp_path)) == ["usage-0.spool", "usage-1.spool"]
    assert [r["slot"] for r in first.read(100)[0]] == [0, 0, 0, 2, 2, 2]
    assert [r["slot"] for r in second.read(100)[0]] == [1, 1, 1, 3, 3, 3]
    first.close()
    second.close()


def test_records_are_dropped_only_past_the_spool_bound_and_loudly(tmp_path, capfd) -> None:
    from tests.support.gateway import free_port

    metrics = Gateway(Registry())

    async def run() -> None:
        spool = Spool(str(tmp_path), 0, max_bytes=2000)  # room for a handful of records
        sink = UsageSink(f"redis://127.0.0.1:{free_port()}/0", STREAM, maxlen=100, worker=0, spool=spool,
                         retry_delay=0.05, metrics=metrics)
        sink.start()
        for n in range(40):
            record(sink, n)
        await asyncio.sleep(0.3)
        await sink.close()
        assert 0 < spool.size <= 2000
        spool.close()

    asyncio.run(run())
    counts = {key[0]: value for key, value in metrics.usage_spool.values.items()}
    assert counts["spooled"] + counts["dropped"] == 40 and counts["spooled"] >= 5
    assert metrics.log_dropped.values[("usage", "spool_full")] == counts["dropped"]
    assert f"ERROR: {counts['dropped']} usage record(s) DROPPED" in capfd.readouterr().err

"""Concurrency wait queues on the node's slot table: served in arrival order, bounded, timed out, left."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from typing import Any

import pytest
import uvloop

from fastgw.config import ConfigError, load_text
from fastgw.limits import Limiter, RequestContext
from fastgw.limits.local import LocalLimitStore, key_hash

FORK = multiprocessing.get_context("fork")


def limits(yaml_text: str) -> list[dict]:
    return load_text("limits:\n" + yaml_text, env={})["limits"]


def ctx(consumer: str = "team-a") -> RequestContext:
    return RequestContext(consumer, "gpt-4o", "10.0.0.1")


def run(coro):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def take(cc, rules):
    """What the filter does: the quick answer, else a wait with a Waiter."""
    decision = cc.acquire_nowait(rules, ctx())
    if decision is not None:
        return decision
    return await cc.acquire(rules, ctx(), cc.waiter(rules))


def test_queued_requests_are_served_in_arrival_order_as_slots_free() -> None:
    async def scenario():
        limiter = Limiter(limits("  - {name: cc, concurrency: 1, queue: {size: 3, timeout: 5s}}\n"),
                          store=LocalLimitStore())
        cc = limiter.concurrency
        rules = cc.applies(ctx())
        first = await take(cc, rules)
        assert first.allowed
        order: list[int] = []

        async def queued(i: int):
            decision = await take(cc, rules)
            order.append(i)
            await asyncio.sleep(0.05)
            cc.release(decision.reservation)
            return decision

        tasks = []
        for i in range(3):
            tasks.append(asyncio.ensure_future(queued(i)))
            await asyncio.sleep(0.01)  # arrival order 0, 1, 2
        h = key_hash("fastgw:cc:cc:team-a")
        assert cc._table.waiting(h) == 3
        overflow = await take(cc, rules)  # a fourth waiter does not fit: refused at once
        assert (overflow.allowed, overflow.status, overflow.code) == (False, 429, "concurrency_limited")
        assert "queue is full" in overflow.message and ("retry-after", "1") in overflow.headers
        cc.release(first.reservation)
        results = await asyncio.gather(*tasks)
        assert all(d.allowed for d in results) and order == [0, 1, 2]
        assert cc._table.waiting(h) == 0 and cc._table.in_flight(h) == 0
        assert limiter.stats["queued"] == 3 and limiter.stats["queue_full"] == 1

    run(scenario())


def test_a_waiter_times_out_and_one_that_leaves_frees_its_place() -> None:
    async def scenario():
        limiter = Limiter(limits("  - {name: cc, concurrency: 1, queue: {size: 1, timeout: 300ms}}\n"),
                          store=LocalLimitStore())
        cc = limiter.concurrency
        rules = cc.applies(ctx())
        holder = await take(cc, rules)
        started = time.monotonic()
        timed_out = await take(cc, rules)
        waited = time.monotonic() - started
        assert not timed_out.allowed and "within 0.3s" in timed_out.message and 0.25 < waited < 3
        waiter = cc.waiter(rules)
        pending = asyncio.ensure_future(cc.acquire(rules, ctx(), waiter))
        await asyncio.sleep(0.05)
        assert (await take(cc, rules)).message.endswith("its queue is full; retry later")
        waiter.leave()  # the client went
        left = await pending
        assert not left.allowed and "closed its side while queued" in left.message
        assert cc._table.waiting(key_hash("fastgw:cc:cc:team-a")) == 0
        cc.release(holder.reservation)
        assert limiter.stats["queue_timeouts"] == 1 and limiter.stats["queue_abandoned"] == 1

    run(scenario())


def test_a_new_request_does_not_jump_the_queue(slot_table: type) -> None:
    table = slot_table()
    h = key_hash("k")
    pid = os.getpid()
    assert table.set_waiting(h, pid + 1, 1, time.monotonic(), bound=5)  # another worker's waiter
    assert not table.acquire([(h, 1)], pid)[0]  # a free slot, but promised to that waiter
    assert table.acquire([(h, 1)], pid, arrival=time.monotonic() - 10, ahead_here=[0])[0]  # older than it


def _wait_in_other_worker(table: Any, h: int, arrival: float, ready, served) -> None:
    assert table.set_waiting(h, os.getpid(), 1, arrival, bound=5)
    ready.set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if table.acquire([(h, 1)], os.getpid(), arrival, [0])[0]:
            served.set()
            table.set_waiting(h, os.getpid(), 0, 0.0)
            return
        time.sleep(0.005)


def test_the_oldest_waiter_across_processes_gets_the_slot_first(slot_table: type) -> None:
    table = slot_table()
    h = key_hash("fastgw:cc:shared:team-a")
    pid = os.getpid()
    assert table.acquire([(h, 1)], pid)[0]
    ready, served = FORK.Event(), FORK.Event()
    older = time.monotonic()
    proc = FORK.Process(target=_wait_in_other_worker, args=(table, h, older, ready, served))
    proc.start()
    assert ready.wait(20)
    younger = time.monotonic()
    assert table.set_waiting(h, pid, 1, younger, bound=5)
    table.release([h], pid)
    assert served.wait(20)  # the other process's older waiter took the freed slot
    assert not table.acquire([(h, 1)], pid, younger, [0])[0]  # held by it now
    proc.join(20)
    assert proc.exitcode == 0
    assert table.release_pid(proc.pid) == 1  # its slot, freed as the supervisor would
    assert table.acquire([(h, 1)], pid, younger, [0])[0]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("  - {name: a, requests: {per_second: 1}, queue: {size: 2}}\n", "limits[0].queue: only a concurrency rule"),
        ("  - {name: a, concurrency: 2, queue: {timeout: 1s}}\n", "limits[0].queue.size: required"),
        ("  - {name: a, concurrency: 2, queue: {size: 0}}\n", "limits[0].queue.size: must be >= 1"),
        ("  - {name: a, concurrency: 2, queue: {size: 2, timeout: soon}}\n", "limits[0].queue.timeout: expected a duration"),
        ("  - {name: a, concurrency: 2, queue: {size: 2, wait: 1s}}\n", "limits[0].queue.wait"),
    ],
)
def test_queue_config_errors_name_the_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text("limits:\n" + text, env={})
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_queue_config_is_normalised() -> None:
    rule = limits("  - {name: a, concurrency: 2, queue: {size: 8}}\n")[0]
    assert rule["queue"] == {"size": 8, "timeout": 2.0}

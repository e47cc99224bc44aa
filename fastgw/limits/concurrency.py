"""Concurrency limits: at most N requests in flight per key, held until the request ends.

A request takes one slot of every matching ``concurrency`` rule before the call (all or
none) and gives them back in the filter's ``on_done``, which runs once on every exit path
(a finished stream, an error, a client that left). Where the slots live:

* no ``redis``: the node's :class:`~fastgw.limits.slots.SlotTable` in shared memory,
  counted per worker so the supervisor frees a crashed worker's slots;
* ``redis``: a sorted set per key, one member per holder scored with its lease's expiry.
  ``acquire.lua`` drops expired members and takes a slot atomically; while it holds
  slots, a worker renews their leases every ``lease / 3`` (one script call for all), so a
  node that dies stops renewing and its slots free themselves within ``lease``;
* Redis down: each rule's ``on_redis_down`` — ``local`` counts on the node's table with
  ``concurrency / nodes``, ``open`` lets the request through, ``closed`` refuses (503).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from typing import TYPE_CHECKING

from fastgw.limits.decision import ALLOWED, Decision
from fastgw.limits.local import key_hash
from fastgw.limits.rules import RequestContext, Rule
from fastgw.limits.slots import SlotTable, SlotTableFull

if TYPE_CHECKING:
    from fastgw.limits.cluster import RedisLink

RETRY_AFTER = 1
"""Seconds a refused client is told to wait: when a slot frees is unknown (a stream's length)."""
_NODE = secrets.token_hex(6)
_SERIAL = itertools.count(1)


class Holding:
    """The slots one request holds, so :meth:`Concurrency.release` gives them back once."""

    __slots__ = ("local", "remote", "member", "pid", "released")

    def __init__(self, local: list[int], remote: list[tuple[str, int]], member: str) -> None:
        self.local = local  # key hashes in the node's slot table
        self.remote = remote  # (Redis key, lease in ms)
        self.member = member
        self.pid = os.getpid()
        self.released = False


class Concurrency:
    """The concurrency rules of one config generation (see the module docstring)."""

    def __init__(
        self, rules: list[Rule], table: SlotTable, redis: RedisLink | None, stats: dict[str, int]
    ) -> None:
        self.rules = [rule for rule in rules if rule.concurrency is not None]
        self._table = table
        self._redis = redis
        self.stats = stats
        self._held: dict[str, Holding] = {}
        self._renewer: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    def applies(self, ctx: RequestContext) -> list[Rule]:
        return [rule for rule in self.rules if rule.matches(ctx)]

    def acquire_nowait(self, rules: list[Rule], ctx: RequestContext) -> Decision | None:
        """The decision when no Redis round trip is needed, else None."""
        if not rules:
            return ALLOWED
        if self._redis is not None and self._redis.up:
            return None
        return self._without_redis(rules, ctx)

    async def acquire(self, rules: list[Rule], ctx: RequestContext) -> Decision:
        """Take a slot of every rule for this request (in Redis), or refuse."""
        redis = self._redis
        if redis is None or not redis.up:
            return self._without_redis(rules, ctx)
        member = f"{_NODE}:{os.getpid()}:{next(_SERIAL)}"
        keys = [self._key(rule, ctx) for rule in rules]
        args: list[str | int | float] = [member]
        leases = [max(1, round(rule.lease * 1000)) for rule in rules]
        for rule, lease in zip(rules, leases, strict=True):
            args += [rule.concurrency or 0, lease]
        reply = await redis.acquire(keys, args)
        if reply is None:
            self.stats["redis_errors"] += 1
            return self._without_redis(rules, ctx)
        if reply[0] != 1:
            return self._refused(rules, reply[1:])
        holding = Holding([], list(zip(keys, leases, strict=True)), member)
        self._held[member] = holding
        if self._renewer is None:
            interval = min(rule.lease for rule in self.rules) / 3
            self._renewer = asyncio.get_running_loop().create_task(self._renew(redis, interval))
        return Decision(True, reservation=holding)

    def _without_redis(self, rules: list[Rule], ctx: RequestContext) -> Decision:
        if self._redis is not None:  # configured but down
            self.stats["fallbacks"] += 1
            for rule in rules:
                if rule.on_redis_down == "closed":
                    self.stats["rejections"] += 1
                    message = f"limit '{rule.name}' cannot be checked: Redis is unavailable"
                    return Decision(
                        False, 503, "rate_limiter_unavailable", message,
                        retry_after=1.0, headers=(("retry-after", "1"),), rule=rule.name, kind="concurrency",
                    )
            rules = [rule for rule in rules if rule.on_redis_down == "local"]
            if not rules:
                return ALLOWED
        hashes = [key_hash(self._key(rule, ctx)) for rule in rules]
        limits = [max(1, (rule.concurrency or 0) // rule.nodes) for rule in rules]
        try:
            allowed, held = self._table.acquire(list(zip(hashes, limits, strict=True)), os.getpid())
        except SlotTableFull as exc:
            self.stats["rejections"] += 1
            return Decision(False, 503, "concurrency_table_full", str(exc), rule=rules[0].name, kind="concurrency")
        if not allowed:
            return self._refused(rules, held, limits)
        return Decision(True, reservation=Holding(hashes, [], ""))

    def _refused(self, rules: list[Rule], held: list[int], limits: list[int] | None = None) -> Decision:
        self.stats["rejections"] += 1
        limits = limits or [rule.concurrency or 0 for rule in rules]
        rule, count, limit = next(
            (r, h, n) for r, h, n in zip(rules, held, limits, strict=True) if h >= n
        )
        message = (
            f"concurrency limit '{rule.name}' reached: {count} of {limit} requests in flight; "
            f"retry when one ends"
        )
        return Decision(
            False, 429, "concurrency_limited", message, retry_after=float(RETRY_AFTER),
            headers=(("retry-after", str(RETRY_AFTER)),), rule=rule.name, kind="concurrency",
        )

    def release(self, holding: Holding | None) -> None:
        """Give back what ``holding`` took; once, and never waiting (Redis in the background)."""
        if holding is None or holding.released:
            return
        holding.released = True
        if holding.local:
            self._table.release(holding.local, holding.pid)
        if not holding.remote:
            return
        self._held.pop(holding.member, None)
        redis = self._redis
        if redis is None or not redis.up:
            return  # the lease frees it
        keys = [key for key, _ in holding.remote]
        task = asyncio.get_running_loop().create_task(redis.release(keys, [holding.member] * len(keys)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _renew(self, redis: RedisLink, interval: float) -> None:
        """Renew every held lease each ``interval`` while anything is held."""
        try:
            while self._held:
                await asyncio.sleep(interval)
                keys: list[str] = []
                args: list[str | int | float] = []
                for holding in list(self._held.values()):
                    for key, lease in holding.remote:
                        keys.append(key)
                        args += [holding.member, lease]
                if keys and redis.up and not await redis.renew(keys, args):
                    self.stats["redis_errors"] += 1
        finally:
            self._renewer = None

    async def flush(self) -> None:
        """Wait for releases still on their way to Redis."""
        while self._pending:
            await asyncio.gather(*self._pending)

    @staticmethod
    def _key(rule: Rule, ctx: RequestContext) -> str:
        return f"fastgw:cc:{rule.name}:{rule.key(ctx)}"

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

Wait queues (``queue: {size, timeout}``): a request over the limit waits, first come first
served, for up to ``timeout``; past ``size`` waiters it is refused at once. Waiting is a
coroutine (:meth:`Concurrency.acquire` under the filter's ``spawn``), never a blocked loop.
A waiter is woken at once when a request of its own worker gives back a slot of its key,
and otherwise polls with back-off (from 2 ms, doubling, to 25 ms on the node's table and
5 ms to 50 ms on Redis): a release in another worker or node is seen within one poll, at
the cost of a lock and scan (or one script call) per poll, and nothing to subscribe or
signal across processes. Fairness is in the shared state, not in who polls first: the
node's table keeps each worker's waiting count and oldest arrival (see
:mod:`fastgw.limits.slots`), Redis a sorted set of waiters by arrival per key
(``acquire_queued.lua``), and a request may take a slot only when the waiters ahead of it
leave one free. A waiter leaves its places when it is served, times out, or its client
goes (``on_done``, or end-of-file from the client while queued: :meth:`Waiter.leave`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from typing import TYPE_CHECKING

from fastgw.limits.decision import ALLOWED, Decision
from fastgw.limits.local import key_hash
from fastgw.limits.rules import RequestContext, Rule, key_of
from fastgw.limits.slots import SlotTable, SlotTableFull
from fastgw.proc import PID

if TYPE_CHECKING:
    from fastgw.limits.cluster import RedisLink

RETRY_AFTER = 1
"""Seconds a refused client is told to wait: when a slot frees is unknown (a stream's length)."""
_NODE = secrets.token_hex(6)
_SERIAL = itertools.count(1)
LOCAL_POLL = (0.002, 0.025)
"""A queued request's first and longest pause between tries on the node's slot table (s)."""
REDIS_POLL = (0.005, 0.05)
"""The same against Redis, where each try is a round trip."""
HASH_CACHE = 8192
"""Key hashes remembered per generation (a key's name and hash cost more than the slot itself)."""


class Waiter:
    """One request that may queue for slots: when it arrived, and how to wake it or make it leave."""

    __slots__ = ("arrival", "wake", "gone")

    def __init__(self) -> None:
        self.arrival = 0.0
        self.wake = asyncio.Event()
        self.gone = False

    def leave(self) -> None:
        """The client went (or closed its side): stop waiting at once, giving the place back."""
        self.gone = True
        self.wake.set()


class Holding:
    """The slots one request holds, so :meth:`Concurrency.release` gives them back once."""

    __slots__ = ("local", "remote", "member", "pid", "released")

    def __init__(self, local: list[int], remote: list[tuple[str, int]], member: str) -> None:
        self.local = local  # key hashes in the node's slot table
        self.remote = remote  # (Redis key, lease in ms)
        self.member = member
        self.pid = PID.value
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
        self._queues: dict[int | str, list[Waiter]] = {}  # this worker's waiters per key, oldest first
        self._hashes: dict[tuple[str, tuple[str, ...]], int] = {}
        self._by_route: dict[str, list[Rule]] | None = (
            {} if all(rule.by_route_only for rule in self.rules) else None
        )  # the rules per plain route, when only route names decide (a generation's routes: bounded)

    def applies(self, ctx: RequestContext) -> list[Rule]:
        if self._by_route is not None and ctx.route is not None:  # the route's name decides: looked up once
            rules = self._by_route.get(ctx.route)
            if rules is None:
                rules = self._by_route[ctx.route] = [rule for rule in self.rules if rule.matches(ctx)]
            return rules
        return [rule for rule in self.rules if rule.matches(ctx)]

    @staticmethod
    def waiter(rules: list[Rule]) -> Waiter | None:
        """A :class:`Waiter` for a request that may queue (a rule of it has a queue), else None."""
        return Waiter() if any(rule.queue_size for rule in rules) else None

    def acquire_nowait(self, rules: list[Rule], ctx: RequestContext) -> Decision | None:
        """The decision when neither a Redis round trip nor a wait is needed, else None."""
        if not rules:
            return ALLOWED
        if self._redis is not None and self._redis.up:
            return None
        decision, queueable = self._without_redis(rules, ctx)
        return None if queueable else decision

    async def acquire(self, rules: list[Rule], ctx: RequestContext, waiter: Waiter | None = None) -> Decision:
        """Take a slot of every rule for this request, waiting in the rules' queues if
        ``waiter`` is given and they have one; or refuse."""
        redis = self._redis
        if redis is None or not redis.up:
            decision, queueable = self._without_redis(rules, ctx)
            if not queueable or waiter is None:
                return decision
            return await self._wait_local(rules, ctx, waiter)
        member = f"{_NODE}:{PID.value}:{next(_SERIAL)}"
        keys = [self._key(rule, ctx) for rule in rules]
        leases = [max(1, round(rule.lease * 1000)) for rule in rules]
        if waiter is not None:
            return await self._wait_redis(rules, ctx, waiter, redis, member, keys, leases)
        args: list[str | int | float] = [member]
        for rule, lease in zip(rules, leases, strict=True):
            args += [rule.concurrency or 0, lease]
        reply = await redis.acquire(keys, args)
        if reply is None:
            self.stats["redis_errors"] += 1
            return self._without_redis(rules, ctx)[0]
        if reply[0] != 1:
            return self._refused(rules, reply[1:])
        return self._hold_remote(redis, keys, leases, member)

    def _hold_remote(self, redis: RedisLink, keys: list[str], leases: list[int], member: str) -> Decision:
        holding = Holding([], list(zip(keys, leases, strict=True)), member)
        self._held[member] = holding
        if self._renewer is None:
            interval = min(rule.lease for rule in self.rules) / 3
            self._renewer = asyncio.get_running_loop().create_task(self._renew(redis, interval))
        return Decision(True, reservation=holding)

    # -- waiting for a slot -------------------------------------------------------------

    async def _wait_redis(
        self, rules: list[Rule], ctx: RequestContext, waiter: Waiter, redis: RedisLink,
        member: str, keys: list[str], leases: list[int],
    ) -> Decision:
        """Try behind the keys' Redis queues (``acquire_queued.lua``); wait while it says so."""
        queues = [self._queue_key(rule, ctx) if rule.queue_size else key + ":q" for rule, key in zip(rules, keys, strict=True)]
        args: list[str | int | float] = [member]
        for rule, lease in zip(rules, leases, strict=True):
            args += [rule.concurrency or 0, lease, rule.queue_size, max(1, round(rule.queue_timeout * 1000))]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(rule.queue_timeout for rule in rules if rule.queue_size)
        delay, cap = REDIS_POLL
        local_ids = [key for key, rule in zip(keys, rules, strict=True) if rule.queue_size]
        queued = False
        try:
            while True:
                reply = await redis.acquire_queued(keys + queues, args)
                if reply is None:  # Redis failed: on_redis_down, queueing locally until the same deadline
                    self.stats["redis_errors"] += 1
                    decision, queueable = self._without_redis(rules, ctx)
                    return await self._wait_local(rules, ctx, waiter, deadline) if queueable else decision
                outcome, held = reply[0], reply[1:]
                if outcome == 1:
                    queued = False  # the script took it out of every queue
                    return self._hold_remote(redis, keys, leases, member)
                if outcome == 0:
                    return self._refused(rules, held)
                if outcome == -1:
                    return self._queue_full(rules)
                if not queued:
                    queued = True
                    self.stats["queued"] += 1
                    self._join(local_ids, waiter)
                outcome_wait = await self._pause(waiter, deadline, delay, loop)
                if outcome_wait is not None:
                    return outcome_wait(rules)
                delay = min(delay * 2, cap)
        finally:
            self._part(local_ids, waiter)
            if queued and redis.up:  # left without a slot: give the queue places back
                task = loop.create_task(redis.release([q for q, r in zip(queues, rules, strict=True) if r.queue_size],
                                                      [member] * len(local_ids)))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _wait_local(
        self, rules: list[Rule], ctx: RequestContext, waiter: Waiter, deadline: float | None = None
    ) -> Decision:
        """Queue on the node's slot table (the rules' ``queue.size`` over ``nodes``) and retry."""
        if self._redis is not None:  # Redis down: only the rules that count locally then
            rules = [rule for rule in rules if rule.on_redis_down == "local"]
        pid = PID.value
        hashes = [self._hash(rule, ctx) for rule in rules]
        items = [(h, rule.node_limit) for h, rule in zip(hashes, rules, strict=True)]
        queued = [(h, rule) for h, rule in zip(hashes, rules, strict=True) if rule.queue_size]
        loop = asyncio.get_running_loop()
        waiter.arrival = time.monotonic()
        joined: list[int] = []
        try:
            for h, rule in queued:
                mine = self._queues.get(h, [])
                oldest = mine[0].arrival if mine else waiter.arrival
                if not self._table.set_waiting(h, pid, len(mine) + 1, oldest, max(1, rule.queue_size // rule.nodes)):
                    return self._queue_full(rules)
                self._join([h], waiter)
                joined.append(h)
        except SlotTableFull as exc:
            self._leave_local(joined, waiter, pid)
            self.stats["rejections"] += 1
            return Decision(False, 503, "concurrency_table_full", str(exc), rule=rules[0].name, kind="concurrency")
        self.stats["queued"] += 1
        if deadline is None:
            deadline = loop.time() + min(rule.queue_timeout for _, rule in queued)
        delay, cap = LOCAL_POLL
        try:
            while True:
                ahead = [self._queues[h].index(waiter) if rule.queue_size else 0 for h, rule in zip(hashes, rules, strict=True)]
                try:
                    allowed, _ = self._table.acquire(items, pid, waiter.arrival, ahead)
                except SlotTableFull:
                    allowed = False
                if allowed:
                    return Decision(True, reservation=Holding(hashes, [], ""))
                outcome = await self._pause(waiter, deadline, delay, loop)
                if outcome is not None:
                    return outcome(rules)
                delay = min(delay * 2, cap)
        finally:
            self._leave_local(joined, waiter, pid)

    def _leave_local(self, hashes: list[int], waiter: Waiter, pid: int) -> None:
        self._part(hashes, waiter)
        for h in hashes:
            mine = self._queues.get(h, [])
            with contextlib.suppress(SlotTableFull):
                self._table.set_waiting(h, pid, len(mine), mine[0].arrival if mine else 0.0)

    async def _pause(self, waiter: Waiter, deadline: float, delay: float, loop: asyncio.AbstractEventLoop):
        """Wait for a wake-up, ``delay`` or the deadline; the refusal to give, or None to try again."""
        remaining = deadline - loop.time()
        if remaining <= 0:
            return self._timed_out
        if not waiter.gone:
            waiter.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.wake.wait(), min(delay, remaining))
        if waiter.gone:
            return self._abandoned
        return None

    def _join(self, ids: list, waiter: Waiter) -> None:
        for key in ids:
            self._queues.setdefault(key, []).append(waiter)

    def _part(self, ids: list, waiter: Waiter) -> None:
        for key in ids:
            mine = self._queues.get(key)
            if mine is not None and waiter in mine:
                mine.remove(waiter)
                if not mine:
                    del self._queues[key]

    def _wake(self, ids) -> None:
        """A slot of these keys was given back here: the oldest local waiter tries now."""
        queues = self._queues
        for key in ids:
            mine = queues.get(key)
            if mine:
                mine[0].wake.set()

    def _queue_full(self, rules: list[Rule]) -> Decision:
        self.stats["queue_full"] += 1
        self.stats["rejections"] += 1
        rule = next(rule for rule in rules if rule.queue_size)
        message = f"concurrency limit '{rule.name}' reached and its queue is full; retry later"
        return self._refusal(rule, message)

    def _timed_out(self, rules: list[Rule]) -> Decision:
        self.stats["queue_timeouts"] += 1
        self.stats["rejections"] += 1
        rule = min((rule for rule in rules if rule.queue_size), key=lambda r: r.queue_timeout)
        message = f"concurrency limit '{rule.name}' reached: no slot came free within {rule.queue_timeout:g}s in its queue"
        return self._refusal(rule, message)

    def _abandoned(self, rules: list[Rule]) -> Decision:
        self.stats["queue_abandoned"] += 1
        rule = next(rule for rule in rules if rule.queue_size)
        return self._refusal(rule, f"concurrency limit '{rule.name}': the client closed its side while queued")

    @staticmethod
    def _refusal(rule: Rule, message: str) -> Decision:
        return Decision(
            False, 429, "concurrency_limited", message, retry_after=float(RETRY_AFTER),
            headers=(("retry-after", str(RETRY_AFTER)),), rule=rule.name, kind="concurrency",
        )

    def _without_redis(self, rules: list[Rule], ctx: RequestContext) -> tuple[Decision, bool]:
        """The decision on the node's table, and whether the request may queue instead."""
        if self._redis is not None:  # configured but down
            self.stats["fallbacks"] += 1
            for rule in rules:
                if rule.on_redis_down == "closed":
                    self.stats["rejections"] += 1
                    message = f"limit '{rule.name}' cannot be checked: Redis is unavailable"
                    return Decision(
                        False, 503, "rate_limiter_unavailable", message,
                        retry_after=1.0, headers=(("retry-after", "1"),), rule=rule.name, kind="concurrency",
                    ), False
            rules = [rule for rule in rules if rule.on_redis_down == "local"]
            if not rules:
                return ALLOWED, False
        items = [(self._hash(rule, ctx), rule.node_limit) for rule in rules]
        try:
            allowed, held = self._table.acquire(items, PID.value)
        except SlotTableFull as exc:
            self.stats["rejections"] += 1
            return Decision(False, 503, "concurrency_table_full", str(exc), rule=rules[0].name, kind="concurrency"), False
        if allowed:
            return Decision(True, reservation=Holding([h for h, _ in items], [], "")), False
        limits = [limit for _, limit in items]
        # Full, or free slots promised to waiters: it may queue unless a rule without a queue is full.
        queueable = any(r.queue_size for r in rules) and not any(
            not r.queue_size and h >= n for r, h, n in zip(rules, held, limits, strict=True)
        )
        if queueable:
            return ALLOWED, True  # not a decision: the caller queues (acquire_nowait answers None)
        return self._refused(rules, held, limits), False

    def _refused(self, rules: list[Rule], held: list[int], limits: list[int] | None = None) -> Decision:
        self.stats["rejections"] += 1
        limits = limits or [rule.concurrency or 0 for rule in rules]
        rule, count, limit = next(
            ((r, h, n) for r, h, n in zip(rules, held, limits, strict=True) if h >= n),
            (rules[0], held[0], limits[0]),  # full for its waiters: in flight is below the limit
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
            if self._queues:
                self._wake(holding.local)
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
        if self._queues:  # after the release was sent: one connection keeps the order
            self._wake(keys)

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

    def _hash(self, rule: Rule, ctx: RequestContext) -> int:
        """The node-table hash of ``_key(rule, ctx)``, remembered by the key's raw parts."""
        parts = rule.key_parts(ctx)
        cached = self._hashes.get((rule.name, parts))
        if cached is None:
            if len(self._hashes) >= HASH_CACHE:
                self._hashes.clear()
            cached = self._hashes[rule.name, parts] = key_hash(f"fastgw:cc:{rule.name}:{key_of(parts)}")
        return cached

    @staticmethod
    def _queue_key(rule: Rule, ctx: RequestContext) -> str:
        return f"fastgw:ccq:{rule.name}:{rule.key(ctx)}"

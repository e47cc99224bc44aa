"""The :class:`Limiter` of one config generation: reserve before the call, settle after it.

Every rule that matches a request applies; one Redis script (or one locked update of the
local store) checks and charges all of their counters, or none. See the package docstring
for where limiters are built and how a request uses one. This module holds no I/O library.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastgw.limits.concurrency import Concurrency
from fastgw.limits.decision import ALLOWED, Decision
from fastgw.limits.gcra import reset_text
from fastgw.limits.local import LocalLimitStore, QuotaTableFull, key_hash
from fastgw.limits.quotas import Quota, quota_key
from fastgw.limits.rules import RequestContext, Rule, Window
from fastgw.names import ANONYMOUS

if TYPE_CHECKING:
    from fastgw.limits.cluster import RedisLink

__all__ = ["ALLOWED", "Decision", "Limiter", "Reservation"]

STATS = (
    "redis_errors", "fallbacks", "rejections", "lost_settlements",
    "queued", "queue_full", "queue_timeouts", "queue_abandoned",
)
"""``Limiter.stats`` counters: Redis calls that failed; requests decided without Redis
because it was down; requests refused; settlements dropped because Redis was down; and of
concurrency wait queues: requests that waited, were refused because the queue was full,
waited out the timeout, or whose client left while waiting."""




@dataclass(frozen=True, slots=True)
class _Charge:
    """One GCRA counter a request touches."""

    rule: Rule
    window: Window
    key: str
    cost: float


@dataclass(frozen=True, slots=True)
class _Debit:
    """One quota ledger a request draws on."""

    rule: Rule
    quota: Quota
    key: str
    amount: float


class Reservation:
    """What was charged, so :meth:`Limiter.settle` can charge the difference once."""

    __slots__ = ("remote", "token_charges", "debits", "model", "reserved", "settled", "unbilled", "owed")

    def __init__(
        self,
        remote: bool,
        token_charges: list[tuple[_Charge, float]],
        debits: list[_Debit],
        model: str,
        reserved: int,
    ) -> None:
        self.remote = remote
        self.token_charges = token_charges  # with the limit enforced on each
        self.debits = debits
        self.model = model
        self.reserved = reserved
        self.settled = False
        self.unbilled: list[_Debit] = []  # open quotas passed while Redis was down: charged later
        self.owed: list[tuple[str, float]] = []  # after settle: quota keys and amounts still to charge


_Rates = list[tuple[float, int, float, float]]
"""Per charge: ``(limit, remaining, reset seconds, wait seconds)``."""
_Quotas = list[tuple[bool, float, float]]
"""Per debit: ``(fits, limit, used)``."""


class Limiter:
    """The rate limits and quotas of one config generation (see the module docstring)."""

    def __init__(
        self,
        limits: list[dict],
        *,
        store: LocalLimitStore,
        redis: RedisLink | None = None,
        stats: dict[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = [Rule(spec) for spec in limits]
        self._rate_rules = [rule for rule in self.rules if rule.concurrency is None]
        self._quotas = {rule.name: Quota(rule.quota) for rule in self.rules if rule.quota}
        self._store = store
        self._redis = redis
        self._clock = clock
        self.stats = stats if stats is not None else {}
        for name in STATS:
            self.stats.setdefault(name, 0)
        self._pending: set[asyncio.Task] = set()
        self.concurrency = Concurrency(self.rules, store.slots, redis, self.stats)

    def limits_route(self, name: str) -> bool:
        """Whether a rule names the plain route ``name`` (its chain then gets the limit filter)."""
        return any(rule.applies_to_route(name) for rule in self.rules)

    # -- reserving ---------------------------------------------------------------------------

    def needs_check(self, ctx: RequestContext) -> bool:
        """Whether any rule applies to ``ctx`` (remembered on it); if not, the request is free."""
        if ctx.matched is None:
            ctx.matched = [rule for rule in self._rate_rules if rule.matches(ctx)] if self._rate_rules else []
        return bool(ctx.matched)

    def reserve_nowait(
        self, ctx: RequestContext, input_tokens: int, output_tokens: int = 0
    ) -> Decision | None:
        """The decision if it needs no Redis round trip (no rule, local mode, Redis down), else None."""
        if not self.needs_check(ctx):
            return ALLOWED
        if self._redis is not None and self._redis.up:
            return None
        return self._without_redis(ctx, input_tokens, output_tokens)

    async def reserve(self, ctx: RequestContext, input_tokens: int, output_tokens: int = 0) -> Decision:
        """Check every applicable rule and window, and charge all of them or none.

        Rate limits charge ``input + output`` tokens (and 1 request); cost quotas price the
        two parts separately, so pass the split when it is known.
        """
        if not self.needs_check(ctx):
            return ALLOWED
        redis = self._redis
        if redis is None or not redis.up:
            return self._without_redis(ctx, input_tokens, output_tokens)
        plan = self._plan(ctx, input_tokens, output_tokens)
        if isinstance(plan, Decision):
            return plan
        charges, debits = plan
        keys = [c.key for c in charges] + [d.key for d in debits]
        args: list[str | int | float] = [len(charges)]
        for c in charges:
            args += [c.window.period * 1e6, c.window.limit, c.cost]
        for d in debits:
            args += [d.quota.limit, d.amount]
        reply = await redis.reserve(keys, args)
        if reply is None:
            self.stats["redis_errors"] += 1
            return self._degraded(ctx, charges, debits, input_tokens + output_tokens)
        allowed, rates, quotas = _parse_reply(reply, charges, len(debits))
        reservation = Reservation(
            True,
            [(c, float(c.window.limit)) for c in charges if c.window.kind == "tokens"],
            debits,
            ctx.model,
            input_tokens + output_tokens,
        )
        return self._decision(ctx, allowed, charges, rates, debits, quotas, reservation)

    def _plan(
        self, ctx: RequestContext, input_tokens: int, output_tokens: int
    ) -> tuple[list[_Charge], list[_Debit]] | Decision:
        assert ctx.matched is not None
        tokens = input_tokens + output_tokens
        charges, debits = [], []
        for rule in ctx.matched:
            if rule.quota:
                quota = self._quotas[rule.name]
                amount = quota.charge(ctx.model, input_tokens, output_tokens)
                if amount is None:
                    self.stats["rejections"] += 1
                    message = f"model '{ctx.model}' has no price in quota '{rule.name}'"
                    return Decision(False, 403, "model_not_priced", message)
                debits.append(_Debit(rule, quota, quota_key(rule.name, ctx.consumer or ANONYMOUS), amount))
                continue
            key = rule.key(ctx)
            for window in rule.windows:
                counter = f"fastgw:rl:{rule.name}:{window.kind}-{window.name}:{key}"
                charges.append(
                    _Charge(rule, window, counter, 1.0 if window.kind == "requests" else float(tokens))
                )
        return charges, debits

    def _without_redis(self, ctx: RequestContext, input_tokens: int, output_tokens: int) -> Decision:
        plan = self._plan(ctx, input_tokens, output_tokens)
        if isinstance(plan, Decision):
            return plan
        if self._redis is None:
            return self._local(ctx, *plan, input_tokens + output_tokens)
        return self._degraded(ctx, plan[0], plan[1], input_tokens + output_tokens)

    def _degraded(self, ctx: RequestContext, charges: list[_Charge], debits: list[_Debit], tokens: int) -> Decision:
        """Redis is down: each rule's ``on_redis_down`` says whether to count locally, allow or refuse.

        An ``open`` quota lets the request through uncounted; what it really used is owed
        (:meth:`settle` fills ``Reservation.owed``) and charged to the ledger with the
        request's usage record once Redis is back (:class:`fastgw.obs.accesslog.UsageSink`)."""
        self.stats["fallbacks"] += 1
        for rule in ctx.matched or ():
            if rule.on_redis_down == "closed":
                self.stats["rejections"] += 1
                message = f"limit '{rule.name}' cannot be checked: Redis is unavailable"
                return Decision(
                    False,
                    503,
                    "rate_limiter_unavailable",
                    message,
                    retry_after=1.0,
                    headers=(("retry-after", "1"),),
                )
        local = [c for c in charges if c.rule.on_redis_down == "local"]
        decision = self._local(ctx, local, [], tokens)  # the open quotas are not counted now
        if decision.reservation is not None:
            decision.reservation.unbilled = debits
        return decision

    def _local(
        self, ctx: RequestContext, charges: list[_Charge], debits: list[_Debit], tokens: int
    ) -> Decision:
        limits = [c.window.limit / c.rule.nodes for c in charges]
        try:
            allowed, verdicts, quotas = self._store.reserve(
                [
                    (key_hash(c.key), c.window.period, limit, c.cost)
                    for c, limit in zip(charges, limits, strict=True)
                ],
                [(key_hash(d.key), d.quota.limit, d.amount) for d in debits],
                self._clock(),
            )
        except QuotaTableFull as exc:
            self.stats["rejections"] += 1
            return Decision(False, 503, "quota_ledger_full", str(exc))
        rates = [(limit, v.remaining, v.reset, v.wait) for limit, v in zip(limits, verdicts, strict=True)]
        tokens_charged = [
            (c, limit) for c, limit in zip(charges, limits, strict=True) if c.window.kind == "tokens"
        ]
        reservation = Reservation(False, tokens_charged, debits, ctx.model, tokens)
        return self._decision(ctx, allowed, charges, rates, debits, quotas, reservation)

    def _decision(
        self,
        ctx: RequestContext,
        allowed: bool,
        charges: list[_Charge],
        rates: _Rates,
        debits: list[_Debit],
        quotas: _Quotas,
        reservation: Reservation,
    ) -> Decision:
        headers = _headers(charges, rates)
        if allowed:
            return Decision(True, headers=headers, reservation=reservation)
        self.stats["rejections"] += 1
        for debit, (fits, limit, used) in zip(debits, quotas, strict=True):
            if not fits:
                unit = "USD" if debit.quota.unit == "usd" else "tokens"
                message = (
                    f"quota '{debit.rule.name}' of consumer '{ctx.consumer or ANONYMOUS}' is exhausted: "
                    f"{used:g} of {limit:g} {unit} used, this request needs up to {debit.amount:g}"
                )
                return Decision(
                    False, 429, "insufficient_quota", message, headers=headers, rule=debit.rule.name, kind="quota"
                )
        charge, (limit, _, _, wait) = max(
            ((c, r) for c, r in zip(charges, rates, strict=True) if r[3] > 0), key=lambda item: item[1][3]
        )
        what = f"{charge.window.kind} {charge.window.name.replace('_', ' ')}"
        if wait == math.inf:
            message = (
                f"request needs {charge.cost:g} {charge.window.kind}, more than limit "
                f"'{charge.rule.name}' allows ({limit:g} {what})"
            )
            return Decision(
                False, 429, "rate_limit_exceeded", message, headers=headers,
                rule=charge.rule.name, kind=charge.window.kind,
            )
        message = f"rate limit '{charge.rule.name}' reached ({limit:g} {what}); retry in {reset_text(wait)}"
        headers += (("retry-after", str(max(1, math.ceil(wait)))),)
        return Decision(
            False, 429, "rate_limit_exceeded", message, retry_after=wait, headers=headers,
            rule=charge.rule.name, kind=charge.window.kind,
        )

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float | None:
        """USD cost of a call, by the first cost quota whose price table covers ``model``
        (the price tables live in the quota rules); None when no quota prices it."""
        for quota in self._quotas.values():
            if quota.unit == "usd":
                amount = quota.charge(model, input_tokens, output_tokens, cached_tokens, cache_write_tokens)
                if amount is not None:
                    return amount
        return None

    # -- settling ----------------------------------------------------------------------------

    def settle(
        self,
        reservation: Reservation | None,
        input_tokens: int,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> None:
        """Charge actual usage against the reservation: the difference, refunded when negative.

        Never waits: local counters are updated now, Redis ones by a background task (see
        :meth:`flush`). A reservation is settled once; later calls do nothing.
        """
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        for debit in reservation.unbilled:
            actual = debit.quota.charge(reservation.model, input_tokens, output_tokens, cached_tokens, cache_write_tokens)
            if actual:
                reservation.owed.append((debit.key, actual))
        delta = input_tokens + output_tokens - reservation.reserved
        rates = [(c, limit, float(delta)) for c, limit in reservation.token_charges] if delta else []
        quotas = []
        for debit in reservation.debits:
            actual = debit.quota.charge(reservation.model, input_tokens, output_tokens, cached_tokens, cache_write_tokens)
            if actual is not None and actual != debit.amount:
                quotas.append((debit, actual - debit.amount))
        if not rates and not quotas:
            return
        if not reservation.remote:
            self._store.settle(
                [(key_hash(c.key), c.window.period, limit, d) for c, limit, d in rates],
                [(key_hash(debit.key), debit.quota.limit, d) for debit, d in quotas],
                self._clock(),
            )
            return
        if self._redis is None or not self._redis.up:
            reservation.owed += [(debit.key, d) for debit, d in quotas]  # charged with the usage record
            if rates:
                self.stats["lost_settlements"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._settle_remote(self._redis, rates, quotas))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_remote(
        self, redis: RedisLink, rates: list[tuple[_Charge, float, float]], quotas: list[tuple[_Debit, float]]
    ) -> None:
        keys = [c.key for c, _, _ in rates] + [debit.key for debit, _ in quotas]
        args: list[str | int | float] = [len(rates)]
        for c, limit, delta in rates:
            args += [c.window.period * 1e6, limit, delta]
        args += [d for _, d in quotas]
        if not await redis.settle(keys, args):
            self.stats["redis_errors"] += 1
            self.stats["lost_settlements"] += 1

    async def flush(self) -> None:
        """Wait for settlements still on their way to Redis (before closing a generation)."""
        while self._pending:
            await asyncio.gather(*self._pending)
        await self.concurrency.flush()


def _parse_reply(reply: list, charges: list[_Charge], debits: int) -> tuple[bool, _Rates, _Quotas]:
    """``reserve.lua``'s flat reply -> ``(allowed, rates, quotas)`` (times are microseconds there)."""
    rates = []
    for i, charge in enumerate(charges):
        remaining, reset, wait = reply[1 + 3 * i : 4 + 3 * i]
        rates.append(
            (float(charge.window.limit), remaining, reset / 1e6, math.inf if wait < 0 else wait / 1e6)
        )
    at = 1 + 3 * len(charges)
    quotas = [
        (reply[at + 3 * j] == 1, float(reply[at + 3 * j + 1]), float(reply[at + 3 * j + 2]))
        for j in range(debits)
    ]
    return reply[0] == 1, rates, quotas


def _headers(charges: list[_Charge], rates: _Rates) -> tuple[tuple[str, str], ...]:
    """OpenAI's ``x-ratelimit-*`` headers, for the tightest counter of each kind."""
    out: list[tuple[str, str]] = []
    for kind in ("requests", "tokens"):
        tightest: tuple[float, int, float, float] | None = None
        for charge, rate in zip(charges, rates, strict=True):
            if charge.window.kind == kind and (tightest is None or rate[1] < tightest[1]):
                tightest = rate
        if tightest is not None:
            limit, remaining, reset, _ = tightest
            out += [
                (f"x-ratelimit-limit-{kind}", str(int(limit))),
                (f"x-ratelimit-remaining-{kind}", str(remaining)),
                (f"x-ratelimit-reset-{kind}", reset_text(reset)),
            ]
    return tuple(out)

"""Per-consumer budgets: how a call is charged, the reservation estimate, and admin operations.

A quota is a running total per (rule, consumer): ``used`` against ``limit``, in tokens or
USD. The ledger is the hash ``fastgw:quota:{rule}:{consumer}`` (fields ``limit``, ``used``)
in Redis, or a slot of the node's :class:`~fastgw.limits.local.LocalLimitStore` without
Redis. ``limit`` is only stored once an admin sets or tops it up; until then the rule's
configured amount applies, so editing the config changes every untouched consumer.

Budgets are charged in two steps, like rate limits: the limiter reserves an estimate
before the call (prompt tokens + ``max_tokens``, priced) atomically with the check, so
concurrent first requests cannot all pass a check that only one of them fits (LiteLLM's
check-then-increment overshoot); the actual usage is settled afterwards.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastgw.limits.local import LocalLimitStore, key_hash
from fastgw.names import wildcard

PER_TOKEN = 1e-6
"""Prices are written per million tokens."""


def quota_key(rule: str, consumer: str) -> str:
    return f"fastgw:quota:{rule}:{quote(consumer, safe='')}"


class Quota:
    """One quota rule's budget: its unit, the configured limit and what a call costs."""

    __slots__ = ("limit", "unit", "_prices")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.unit = "tokens" if "tokens" in spec else "usd"
        self.limit = float(spec["tokens"] if "tokens" in spec else spec["cost"])
        self._prices = [
            (
                wildcard([pattern]),
                price["input"] * PER_TOKEN,
                price["output"] * PER_TOKEN,
                price.get("cached_input", price["input"]) * PER_TOKEN,
                price.get("cache_write", price["input"]) * PER_TOKEN,
            )
            for pattern, price in (spec.get("prices") or {}).items()
        ]

    def charge(
        self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float | None:
        """What a call costs against this budget; None when a cost quota has no price for ``model``.

        ``input_tokens`` includes the prompt-cache reads (``cached_tokens``) and writes, as OpenAI's
        prompt_tokens does: those parts are priced at ``cached_input`` / ``cache_write`` when given."""
        if self.unit == "tokens":
            return float(input_tokens + output_tokens)
        for matches, per_input, per_output, per_cached, per_write in self._prices:
            if matches(model):
                cached = min(cached_tokens, input_tokens)
                written = min(cache_write_tokens, input_tokens - cached)
                plain = input_tokens - cached - written
                return plain * per_input + cached * per_cached + written * per_write + output_tokens * per_output
        return None


def output_reservation(request: dict[str, Any], default: int = 1024) -> int:
    """Output tokens to reserve for a call: the client's own cap (``max_completion_tokens``,
    ``max_tokens``), else ``default``; settling charges the real count either way.

    The input side is the prompt's count (:func:`fastgw.tokencount.count_chat`).
    """
    for name in ("max_completion_tokens", "max_tokens"):
        cap = request.get(name)
        if type(cap) is int and cap > 0:
            return cap
    return default


class QuotaAdmin:
    """Atomic reads and changes of one consumer's budget, for the admin API.

    Build it in the supervisor per config generation with the shared store (and the Redis
    URL when set). Methods are synchronous and may be called from several admin threads;
    they raise ``KeyError`` for an unknown quota rule, ``ValueError`` for a bad amount and
    ``redis.exceptions.RedisError`` when Redis does not answer.
    """

    def __init__(
        self, limits: list[dict], store: LocalLimitStore | None, redis_url: str | None, timeout: float = 1.0
    ) -> None:
        self._quotas = {rule["name"]: Quota(rule["quota"]) for rule in limits if rule["quota"]}
        self._store = store
        self._lock = threading.Lock()  # store record locks are per process, not per thread
        self._redis = None
        if redis_url:
            import redis  # imported here: the supervisor loads redis only when it is configured

            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self._top_up = self._redis.register_script(
                (Path(__file__).with_name("scripts") / "top_up.lua").read_text()
            )
        elif store is None:
            raise ValueError("QuotaAdmin needs the node's LocalLimitStore when there is no Redis")

    def get(self, rule: str, consumer: str) -> dict[str, Any]:
        quota = self._quota(rule)
        key = quota_key(rule, consumer)
        with self._lock:
            if self._redis is not None:
                limit, used = self._redis.hmget(key, "limit", "used")
                return self._view(rule, consumer, quota, _float(limit, quota.limit), _float(used, 0.0))
            return self._view(rule, consumer, quota, *self._local().quota(key_hash(key), quota.limit))

    def set_limit(self, rule: str, consumer: str, amount: float) -> dict[str, Any]:
        quota = self._quota(rule)
        key = quota_key(rule, consumer)
        amount = _amount(amount)
        with self._lock:
            if self._redis is not None:
                self._redis.hset(key, "limit", repr(amount))
            else:
                self._local().update_quota(key_hash(key), quota.limit, limit=amount)
        return self.get(rule, consumer)

    def top_up(self, rule: str, consumer: str, amount: float) -> dict[str, Any]:
        """Raise the consumer's limit by ``amount`` (from the rule's limit if it had none of its own)."""
        quota = self._quota(rule)
        key = quota_key(rule, consumer)
        amount = _amount(amount)
        with self._lock:
            if self._redis is not None:
                limit, used = self._top_up(keys=[key], args=[repr(quota.limit), repr(amount)])
                return self._view(rule, consumer, quota, float(limit), float(used))
            return self._view(
                rule, consumer, quota, *self._local().update_quota(key_hash(key), quota.limit, add=amount)
            )

    def reset(self, rule: str, consumer: str) -> dict[str, Any]:
        """Start a new budget period: ``used`` back to 0, the limit kept."""
        quota = self._quota(rule)
        key = quota_key(rule, consumer)
        with self._lock:
            if self._redis is not None:
                self._redis.hset(key, "used", "0")
            else:
                self._local().update_quota(key_hash(key), quota.limit, used=0.0)
        return self.get(rule, consumer)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def _quota(self, rule: str) -> Quota:
        try:
            return self._quotas[rule]
        except KeyError:
            raise KeyError(f"no quota rule named {rule!r}") from None

    def _local(self) -> LocalLimitStore:
        assert self._store is not None
        return self._store

    @staticmethod
    def _view(rule: str, consumer: str, quota: Quota, limit: float, used: float) -> dict[str, Any]:
        return {
            "rule": rule,
            "consumer": consumer,
            "unit": quota.unit,
            "limit": limit,
            "used": used,
            "remaining": max(0.0, limit - used),
        }


def _float(value: bytes | None, default: float) -> float:
    return default if value is None else float(value)


def _amount(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"expected a finite number >= 0, found {value!r}")
    return float(value)

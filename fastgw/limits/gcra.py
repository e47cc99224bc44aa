"""GCRA (generic cell rate algorithm) with a weighted cost, plus the header formatting.

Why GCRA rather than fixed windows (Higress) or a token bucket with two fields:

* one value per key, the theoretical arrival time (TAT): one Redis string or one 16-byte
  shared-memory slot, and one read-modify-write per check;
* exact and smooth: capacity refills continuously at ``limit / period``, so there is no
  window edge at which two windows' worth passes at once;
* cost-weighted: a request of ``cost`` units moves TAT by ``cost * period / limit``, so
  requests (cost 1) and tokens (cost = tokens) use the same code;
* refundable: settling a reservation moves TAT back (used less than reserved) or forward
  (used more), so "reserve before, reconcile after" is one atomic update.

The bucket holds ``limit`` units (burst = the whole window amount): a request fits when
``max(TAT, now) + cost * interval - now <= period``. The functions here are unit-free; the
local store passes seconds, the Redis script mirrors them in microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_SLACK = 1e-9
"""Relative float slack: a request that exactly empties the bucket must fit."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One key's answer: if allowed, its state after charging; if not, its state now."""

    allowed: bool
    tat: float
    remaining: int
    """Whole units still available."""
    reset: float
    """Time until the bucket is full again."""
    wait: float
    """Time until ``cost`` would fit: 0 when allowed, ``inf`` when it never will (cost > limit)."""


def check(tat: float, now: float, period: float, limit: float, cost: float) -> Verdict:
    """Would ``cost`` fit now? (Charging is the caller's choice: it stores ``tat`` if all fit.)"""
    interval = period / limit
    base = tat if tat > now else now
    after = base + cost * interval
    if cost > limit * (1 + _SLACK):
        return Verdict(False, base, _remaining(base, now, period, interval), base - now, math.inf)
    wait = after - period - now
    if wait > period * _SLACK:
        return Verdict(False, base, _remaining(base, now, period, interval), base - now, wait)
    return Verdict(True, after, _remaining(after, now, period, interval), after - now, 0.0)


def adjust(tat: float, now: float, period: float, limit: float, delta: float) -> float:
    """TAT after charging ``delta`` more units (a refund when negative); ``<= now`` means full."""
    return (tat if tat > now else now) + delta * period / limit


def _remaining(tat: float, now: float, period: float, interval: float) -> int:
    return max(0, math.floor((now + period - tat) / interval + _SLACK))


def reset_text(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format (Go durations): ``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``."""
    ms = math.ceil(seconds * 1000 - 1e-6) if seconds > 0 else 0
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    text = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    return f"{hours}h{text}" if hours else text

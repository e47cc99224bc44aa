"""Overload shedding near the threshold: low requests are shed with a chance that rises from
RAMP_FROM of their threshold to certainty at it (no all-or-none flips); normal ones only at it."""

from __future__ import annotations

import random

from fastgw.filters.overload import RAMP_FROM, Overload


def shed_share(share: float, level: int, draws: int = 20000) -> float:
    return sum(Overload._shed(share, level) for _ in range(draws)) / draws


def test_at_or_past_the_threshold_every_priority_that_can_be_shed_is():
    assert Overload._shed(1.0, 0) and Overload._shed(1.5, 0)
    assert Overload._shed(1.0, 1) and Overload._shed(2.0, 1)


def test_below_the_ramp_nothing_is_shed_and_normal_never_before_the_threshold():
    assert shed_share(RAMP_FROM - 0.01, 0) == 0.0
    assert shed_share(0.99, 1) == 0.0


def test_on_the_ramp_low_requests_are_shed_in_proportion():
    random.seed(7)
    middle = (RAMP_FROM + 1.0) / 2
    assert abs(shed_share(middle, 0) - 0.5) < 0.03
    near = RAMP_FROM + 0.9 * (1.0 - RAMP_FROM)
    assert abs(shed_share(near, 0) - 0.9) < 0.03
    assert shed_share(RAMP_FROM + 0.2 * (1.0 - RAMP_FROM), 0) < shed_share(middle, 0)

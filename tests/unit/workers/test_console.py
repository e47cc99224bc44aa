"""The console's ring of per-second changes and its percentile maths, on real metric registries."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from fastgw.obs.metrics import AI_DURATION_BUCKETS, Gateway, merge
from workers.console import HISTORY, KEPT, TOP, WINDOW, ConsoleHistory, quantile, totals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def history(gateway: Gateway, size: int = HISTORY) -> tuple[ConsoleHistory, Clock]:
    clock = Clock()
    ring = ConsoleHistory(gateway.registry.snapshot, size=size, clock=clock)
    ring.sample()  # the baseline: no sample yet
    return ring, clock


def step(ring: ConsoleHistory, clock: Clock, seconds: float = 1.0) -> None:
    clock.now += seconds
    ring.sample()


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert quantile(bounds, [0, 10, 0, 0], 0.5) == 1.5  # half way through (1, 2]
    assert quantile(bounds, [10, 0, 0, 0], 0.5) == 0.5  # the first bucket starts at 0
    assert quantile(bounds, [5, 0, 5, 0], 0.9) == 2.0 + 2.0 * 0.8  # rank 9 of 10: 4/5 into (2, 4]
    assert quantile(bounds, [0, 0, 0, 3], 0.99) == 4.0  # the +Inf bucket answers the highest bound
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [1, 0, 0, 0], 0.0) == 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=400.0, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from((0.5, 0.9, 0.99)))
def test_quantile_lies_in_the_bucket_of_the_true_quantile(values: list[float], q: float) -> None:
    """The estimate is never outside the bucket that holds the exact order statistic."""
    gateway = Gateway()
    for value in values:
        gateway.ai_duration.observe(("m", "p"), value)
    counts = gateway.ai_duration.values[("m", "p")][:-1]
    estimate = quantile(AI_DURATION_BUCKETS, counts, q)
    exact = sorted(values)[max(0, math.ceil(q * len(values)) - 1)]
    edges = (0.0, *AI_DURATION_BUCKETS, math.inf)
    bucket = next(i for i in range(1, len(edges)) if exact <= edges[i])
    low, high = edges[bucket - 1], min(edges[bucket], AI_DURATION_BUCKETS[-1])
    assert low - 1e-9 <= estimate <= high + 1e-9, (estimate, exact, low, high)


def test_rates_percentiles_cache_ratio_and_the_window() -> None:
    gateway = Gateway()
    ring, clock = history(gateway)
    for _ in range(5):
        for i in range(10):
            gateway.ai_done(consumer="a", model="m", provider="p", status=200 if i else 502, seconds=0.3, ttft=0.04,
                            prompt_tokens=100, completion_tokens=20, cost=0.002)
        gateway.request_done("plain", 200, 0.003)
        gateway.cache_requests.inc(("m", "hit"))
        gateway.cache_requests.inc(("m", "miss"), 3)
        gateway.cache_requests.inc(("m", "unavailable"), 9)  # no lookup happened
        gateway.cache_saved_tokens.inc(("m",), 50)
        step(ring, clock, 2.0)  # two seconds between samples: rates are per second
    s = ring.series()
    assert len(s["t"]) == 5 and s["t"][-1] == 1010.0
    assert s["requests"] == [5.5] * 5 and s["errors"] == [0.5] * 5
    assert s["cache_saved_tokens"] == [25.0] * 5 and s["cache_hit_ratio"] == [0.25] * 5
    assert s["latency_p50"][-1] == quantile(AI_DURATION_BUCKETS, [0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.5)
    assert 0.25 < s["latency_p50"][-1] <= 0.5 and 0.025 < s["ttft_p99"][-1] <= 0.05
    assert 0.0025 < s["plain_latency_p90"][-1] <= 0.005
    groups = s["groups"]
    assert groups["tokens_in_by_consumer"] == {"labels": ["a"], "values": [[500.0] * 5]}
    assert groups["tokens_out_by_model"] == {"labels": ["m"], "values": [[100.0] * 5]}
    assert groups["cost_by_provider"]["labels"] == ["p"] and groups["cost_by_provider"]["values"][0][0] == 0.01
    # Idle: the percentiles and the hit ratio fade out once the window has passed.
    for _ in range(WINDOW):
        step(ring, clock)
    s = ring.series()
    assert s["latency_p50"][-2] is not None and s["latency_p50"][-1] is None
    assert s["cache_hit_ratio"][-1] is None and s["requests"][-1] == 0.0
    # A shorter range returns fewer points, with the percentiles still computed over whole windows.
    short = ring.series(seconds=WINDOW + 2)
    assert len(short["t"]) == WINDOW + 1 and short["latency_p50"][0] == s["latency_p50"][-WINDOW - 1]


def test_top_consumers_and_other_bound_the_series() -> None:
    gateway = Gateway()
    ring, clock = history(gateway)
    for _ in range(3):
        for c in range(40):  # consumer c sends c tokens: the largest are the last ones
            gateway.ai_done(consumer=f"c{c:02}", model="m", provider="p", status=200, seconds=0.1,
                            prompt_tokens=c + 1, completion_tokens=1)
        step(ring, clock)
    sample = ring.samples[-1]
    kept = sample.groups[("tokens_in", "consumer")]
    assert len(kept) == KEPT + 1 and kept["other"] == sum(range(1, 40 - KEPT + 1))  # folded when sampled
    group = ring.series()["groups"]["tokens_in_by_consumer"]
    assert group["labels"] == [f"c{c:02}" for c in range(39, 39 - TOP, -1)] + ["other"]
    assert group["values"][0] == [40.0] * 3
    assert sum(column[-1] for column in group["values"]) == sum(range(1, 41))  # nothing lost


def test_the_ring_is_bounded_and_a_counter_that_goes_down_counts_as_zero() -> None:
    gateway = Gateway()
    ring, clock = history(gateway, size=5)
    for _ in range(12):
        gateway.request_done("r", 200, 0.01)
        step(ring, clock)
    assert len(ring.samples) == 5 and ring.series()["requests"] == [1.0] * 5
    gateway.requests.values.clear()  # a snapshot evicted the series (it would restart from zero)
    step(ring, clock)
    assert ring.series()["requests"][-1] == 0.0


def test_totals_of_two_workers_merged() -> None:
    one, two = Gateway(), Gateway()
    one.ai_done(consumer="a", model="m", provider="p", status=429, seconds=0.1, prompt_tokens=3)
    two.ai_done(consumer="b", model="m", provider="p", status=200, seconds=0.1, prompt_tokens=4, completion_tokens=2)
    two.ratelimit_rejections.inc(("team-tpm", "tokens"))
    found = totals(merge(merge({}, one.registry.snapshot()), two.registry.snapshot()))
    assert found.scalars["requests"] == 2 and found.scalars["errors"] == 1
    assert found.groups[("tokens_in", "consumer")] == {"a": 3, "b": 4}
    assert found.groups[("tokens_out", "model")] == {"m": 2}
    assert found.groups[("rejections", "rule")] == {"team-tpm": 1}
    assert found.hists["latency"][1][1] == 2  # both in the (0.05, 0.1] bucket

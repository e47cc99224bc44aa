"""The web console's data: a ring of once-a-second samples of the node, kept by the supervisor.

A daemon thread sums the workers' metric snapshots (the same ones ``/metrics`` reads, which
each worker copies to shared memory once a second anyway) and keeps, for the last hour, what
changed in each second: request, error and cache counts, the latency and time-to-first-token
histogram buckets, and tokens, cost and limit rejections by label. Workers do nothing for the
console; all of this is supervisor-side arithmetic on counters they already keep.

Cardinality stays bounded twice: a sample keeps at most :data:`KEPT` label values per
breakdown (the rest is folded into ``"other"`` when the sample is taken), and ``/ui/data``
draws the :data:`TOP` largest over the range asked for, plus ``"other"``.

Percentiles are over a sliding :data:`WINDOW` of samples (a second holds too few requests for
a p99), interpolated inside the histogram bucket as Prometheus' ``histogram_quantile`` does.

The console's pages and their charting library (uPlot, vendored from npm under
``workers/ui/``) are static files: no CDN, nothing fetched from the internet.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastgw.obs.metrics import OTHER, Snapshot

UI_DIR = Path(__file__).resolve().parent / "ui"
UI_FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/ui/errors": ("errors.html", "text/html; charset=utf-8"),
    "/ui/errors.js": ("errors.js", "text/javascript; charset=utf-8"),
    "/ui/config": ("config.html", "text/html; charset=utf-8"),
    "/ui/config.js": ("config.js", "text/javascript; charset=utf-8"),
    "/ui/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/ui/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
}
HISTORY = 3600
"""One hour at one sample a second."""
TOP = 6
"""Label values drawn per breakdown; the rest is drawn as ``"other"``."""
KEPT = 16
"""Label values a sample keeps per breakdown, the largest first; the rest is folded into ``"other"``."""
WINDOW = 10
"""Samples (seconds) each percentile point covers."""
QUANTILES = (0.5, 0.9, 0.99)

HISTOGRAMS = {
    "latency": "fastgw_ai_request_duration_seconds",
    "plain_latency": "fastgw_request_duration_seconds",
    "ttft": "fastgw_ai_ttft_seconds",
}
"""Chart name -> histogram family, summed over its labels."""
BREAKDOWNS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "tokens_in": ("fastgw_tokens_total", "prompt", ("consumer", "model", "provider")),
    "tokens_out": ("fastgw_tokens_total", "completion", ("consumer", "model", "provider")),
    "cost": ("fastgw_cost_total", None, ("consumer", "model", "provider")),
    "rejections": ("fastgw_ratelimit_rejections_total", None, ("rule",)),
}
"""Series -> (family, required ``direction`` label or None, the labels it is broken down by)."""
SCALARS = ("requests", "errors", "cache_lookups", "cache_hits", "cache_saved_tokens")
CACHE_HITS = frozenset(("hit", "semantic_hit"))


@dataclass(slots=True)
class Totals:
    """Node-wide running totals read from one aggregated snapshot."""

    scalars: dict[str, float]
    groups: dict[tuple[str, str], dict[str, float]]
    """``(series, label) -> {label value: total}``."""
    hists: dict[str, tuple[tuple[float, ...], list[float]]]
    """Chart -> (bucket bounds, count per bucket, the last one +Inf)."""


@dataclass(slots=True)
class Sample:
    """What changed in one interval (only non-zero entries are kept)."""

    t: float
    span: float
    scalars: dict[str, float]
    groups: dict[tuple[str, str], dict[str, float]]
    hists: dict[str, list[float]]


def totals(snapshot: Snapshot) -> Totals:
    """The running totals the console charts, from an aggregated metrics snapshot."""
    scalars = dict.fromkeys(SCALARS, 0.0)
    plain = snapshot.get("fastgw_requests_total")
    if plain is not None:
        for (_, status_class), value in plain[4].items():
            scalars["requests"] += value
            if status_class in ("4xx", "5xx"):
                scalars["errors"] += value
    ai = snapshot.get("fastgw_ai_requests_total")
    if ai is not None:
        for (_, _, _, status), value in ai[4].items():
            scalars["requests"] += value
            if str(status) >= "400":
                scalars["errors"] += value
    cache = snapshot.get("fastgw_cache_requests_total")
    if cache is not None:
        for (_, result), value in cache[4].items():
            if result != "unavailable":
                scalars["cache_lookups"] += value
                if result in CACHE_HITS:
                    scalars["cache_hits"] += value
    saved = snapshot.get("fastgw_cache_saved_tokens_total")
    if saved is not None:
        scalars["cache_saved_tokens"] = float(sum(saved[4].values()))
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for series, (family, direction, dims) in BREAKDOWNS.items():
        found = snapshot.get(family)
        for dim in dims:
            groups[(series, dim)] = {}
        if found is None:
            continue
        names = found[2]
        where = [names.index(dim) for dim in dims]
        check = names.index("direction") if direction is not None else None
        for labels, value in found[4].items():
            if check is not None and labels[check] != direction:
                continue
            for dim, i in zip(dims, where, strict=True):
                into = groups[(series, dim)]
                label = sys.intern(labels[i] or "-")  # snapshots are unmarshalled afresh: one copy in the ring
                into[label] = into.get(label, 0.0) + value
    hists = {}
    for chart, family in HISTOGRAMS.items():
        found = snapshot.get(family)
        if found is None:
            continue
        bounds = found[3]
        counts = [0.0] * (len(bounds) + 1)
        for values in found[4].values():
            for i in range(len(counts)):
                counts[i] += values[i]
        hists[chart] = (bounds, counts)
    return Totals(scalars, groups, hists)


def _kept(changes: dict[str, float]) -> dict[str, float]:
    """The :data:`KEPT` largest changes, the rest summed into ``"other"``."""
    if len(changes) <= KEPT:
        return changes
    ranked = sorted(changes.items(), key=lambda item: item[1], reverse=True)
    out = dict(ranked[:KEPT])
    rest = sum(value for _, value in ranked[KEPT:])
    out[OTHER] = out.get(OTHER, 0.0) + rest
    return out


def difference(t: float, span: float, before: Totals, after: Totals) -> Sample:
    """What changed from ``before`` to ``after`` (a counter that went down counts as zero)."""
    scalars = {}
    for name, value in after.scalars.items():
        change = value - before.scalars.get(name, 0.0)
        if change > 0:
            scalars[name] = change
    groups = {}
    for key, values in after.groups.items():
        old = before.groups.get(key, {})
        changes = {}
        for label, value in values.items():
            change = value - old.get(label, 0.0)
            if change > 0:
                changes[label] = change
        if changes:
            groups[key] = _kept(changes)
    hists = {}
    for chart, (bounds, counts) in after.hists.items():
        old_bounds, old_counts = before.hists.get(chart, (bounds, [0.0] * len(counts)))
        if old_bounds != bounds:
            continue
        changes = [max(0.0, new - old) for new, old in zip(counts, old_counts, strict=True)]
        if any(changes):
            hists[chart] = changes
    return Sample(t, span, scalars, groups, hists)


def quantile(bounds: Sequence[float], counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a bucketed distribution, or None when it is empty.

    ``counts`` has one entry per bound (upper bound inclusive) plus the +Inf bucket. As in
    Prometheus' ``histogram_quantile``: linear inside the bucket the rank falls in, the first
    bucket starting at 0, and a rank in the +Inf bucket answering the highest finite bound.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


class ConsoleHistory:
    """The last hour of per-second changes, sampled by a daemon thread."""

    def __init__(
        self, collect: Callable[[], Snapshot], interval: float = 1.0, size: int = HISTORY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collect = collect
        self.interval = interval
        self.clock = clock
        self.samples: deque[Sample] = deque(maxlen=size)
        self.bounds: dict[str, tuple[float, ...]] = {}
        self._last: tuple[float, Totals] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastgw-console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception as exc:  # a bug here must not stop the charts for good
                sys.stderr.write(f"fastgw: console sample failed: {exc!r}\n")
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        """Take one sample: the change since the previous call."""
        now, current = self.clock(), totals(self.collect())
        for chart, (bounds, _) in current.hists.items():
            self.bounds[chart] = bounds
        if self._last is not None:
            then, before = self._last
            self.samples.append(difference(now, max(now - then, 1e-6), before, current))
        self._last = (now, current)

    def series(self, seconds: float = HISTORY) -> dict[str, Any]:
        """The last ``seconds`` as columns (uPlot's shape): rates per second, percentiles in
        seconds over :data:`WINDOW`, the cache hit ratio over the same window, and each
        breakdown's :data:`TOP` label values plus ``"other"``."""
        samples = list(self.samples)
        first = 0
        if samples:
            cutoff = samples[-1].t - seconds
            first = next((i for i, s in enumerate(samples) if s.t > cutoff), len(samples))
        shown = samples[first:]
        out: dict[str, Any] = {"t": [round(s.t, 3) for s in shown], "window": WINDOW}
        for name in ("requests", "errors", "cache_saved_tokens"):
            out[name] = [_rate(s.scalars.get(name, 0.0), s.span) for s in shown]
        hits = _windowed(samples, first, lambda s: s.scalars.get("cache_hits", 0.0))
        lookups = _windowed(samples, first, lambda s: s.scalars.get("cache_lookups", 0.0))
        out["cache_hit_ratio"] = [round(h / n, 4) if n else None for h, n in zip(hits, lookups, strict=True)]
        for chart, bounds in self.bounds.items():
            windows = _windowed_buckets(samples, first, chart, len(bounds) + 1)
            for q in QUANTILES:
                key = f"{chart}_p{round(q * 100)}"
                out[key] = [_seconds(quantile(bounds, counts, q)) for counts in windows]
        groups = {}
        for series, (_, _, dims) in BREAKDOWNS.items():
            for dim in dims:
                groups[f"{series}_by_{dim}"] = _breakdown(shown, (series, dim))
        out["groups"] = groups
        return out


def _rate(change: float, span: float) -> float:
    """Four significant digits: enough for a chart, and a USD cost per second stays visible."""
    return float(f"{change / span:.4g}") if change else 0.0


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _windowed(samples: list[Sample], first: int, value: Callable[[Sample], float]) -> list[float]:
    """For each sample from ``first`` on: the sum of ``value`` over it and the ones before it in
    :data:`WINDOW`."""
    out, total = [], 0.0
    values = [value(s) for s in samples]
    start = max(0, first - WINDOW + 1)
    for i in range(start, len(samples)):
        total += values[i]
        if i - WINDOW >= start:
            total -= values[i - WINDOW]
        if i >= first:
            out.append(total)
    return out


def _windowed_buckets(samples: list[Sample], first: int, chart: str, size: int) -> list[list[float]]:
    """Like :func:`_windowed`, for one histogram's bucket counts."""
    out, total = [], [0.0] * size
    start = max(0, first - WINDOW + 1)
    for i in range(start, len(samples)):
        add = samples[i].hists.get(chart)
        if add is not None and len(add) == size:
            total = [a + b for a, b in zip(total, add, strict=True)]
        if i - WINDOW >= start:
            drop = samples[i - WINDOW].hists.get(chart)
            if drop is not None and len(drop) == size:
                total = [max(0.0, a - b) for a, b in zip(total, drop, strict=True)]
        if i >= first:
            out.append(total)
    return out


def _breakdown(samples: list[Sample], key: tuple[str, str]) -> dict[str, Any]:
    """The :data:`TOP` label values by total over ``samples``, then ``"other"``, as rates."""
    sums: dict[str, float] = {}
    for s in samples:
        for label, value in s.groups.get(key, {}).items():
            sums[label] = sums.get(label, 0.0) + value
    top = [label for label, _ in sorted(sums.items(), key=lambda item: item[1], reverse=True) if label != OTHER][:TOP]
    labels = [*top, OTHER] if len(sums) > len(top) else top
    chosen = set(top)
    values: list[list[float]] = [[] for _ in labels]
    for s in samples:
        changes = s.groups.get(key, {})
        rest = 0.0
        for label, value in changes.items():
            if label not in chosen:
                rest += value
        for i, label in enumerate(top):
            values[i].append(_rate(changes.get(label, 0.0), s.span))
        if len(labels) > len(top):
            values[-1].append(_rate(rest, s.span))
    return {"labels": labels, "values": values}

"""Metrics recorded inside a worker, published to shared memory, summed by the supervisor.

Why this shape:

* **Recording is a dict update.** A worker is one thread running one event loop, so a
  counter is a plain ``dict[labels_tuple, number]`` and a histogram a ``dict[labels_tuple,
  list]``: no locks, no atomics, no syscalls on the request path.
* **Publishing is one copy a second.** The worker's tick calls :meth:`Registry.publish`,
  which ``marshal``-s the whole registry into the worker's own slot of a shared mapping
  (:class:`workers.metrics_shm.MetricsArea`). ``marshal`` is the fastest stdlib encoder
  for plain containers, and both ends run the same interpreter, so its version-bound
  format is no drawback; only our own forks write the mapping.
* **Aggregation happens at scrape time** in the supervisor (:func:`merge`): counters and
  histogram buckets are summed over every worker's latest snapshot plus the last
  snapshots of dead workers, so counters never go backwards when a worker restarts.
* **Cardinality is capped** per family and worker (:data:`MAX_LABEL_SETS`): a new label
  set beyond the cap is folded into the all-``"other"`` set and counted in
  ``fastgw_metrics_overflow_total``, so a client choosing label values (model names...)
  cannot grow a worker's memory or the scrape without bound.

:data:`GATEWAY` holds the gateway's standard families; each worker inherits it (empty)
through ``fork`` and records into it.
"""

from __future__ import annotations

import itertools
import marshal
import os
import re
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

MAX_LABEL_SETS = 10_000
"""Label sets per family per worker before new ones are folded into ``"other"``."""
PUBLISH_INTERVAL = 1.0
"""Seconds between snapshots: the staleness of ``/metrics`` versus the cost of a copy."""
OTHER = "other"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Plain proxied requests: sub-millisecond to slow upstreams."""
AI_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
"""Whole AI exchanges: a cached reply to a long generation."""
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Time to first token: 10 ms to 30 s."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Labels = tuple[str, ...]
Snapshot = dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...], dict]]
"""``{name: (kind, help, labelnames, buckets, values)}``; histogram values are
``[count per bucket (not cumulative; the last is +Inf)..., sum]``."""


class SnapshotTarget(Protocol):
    """Where a worker's snapshots go (``MetricsArea`` in production)."""

    capacity: int

    def write(self, slot: int, pid: int, blob: bytes) -> None: ...


class _Family:
    """Values per label set; the cap and label checks run only when a label set is new."""

    kind = ""

    def __init__(self, registry: Registry, name: str, help: str, labelnames: Sequence[str], limit: int | None) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} in {name}")
        self.registry = registry
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.buckets: tuple[float, ...] = ()
        self.limit = limit
        self.other: Labels = (OTHER,) * len(self.labelnames)
        self.values: dict[Labels, Any] = {}

    def _admit(self, labels: Labels) -> Labels:
        """The key a label set not yet in :attr:`values` is stored under (off the hot path)."""
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels!r}")
        labels = tuple(value if type(value) is str else str(value) for value in labels)
        if labels in self.values or self.limit is None or len(self.values) < self.limit:
            return labels
        self.registry.overflow.inc((self.name,))
        return self.other

    def snapshot(self) -> tuple[str, str, tuple[str, ...], tuple[float, ...], dict]:
        return self.kind, self.help, self.labelnames, self.buckets, self.values


class Counter(_Family):
    """A monotonic sum per label set (ints stay ints; floats, e.g. USD cost, are fine)."""

    kind = "counter"

    def inc(self, labels: Labels, value: float = 1) -> None:
        """Add ``value`` (must be >= 0; not checked, this is the hot path)."""
        try:
            self.values[labels] += value
        except KeyError:
            key = self._admit(labels)
            self.values[key] = self.values.get(key, 0) + value


class Gauge(_Family):
    """A level per label set that goes up and down; workers' levels are summed (merge) like counters."""

    kind = "gauge"

    def add(self, labels: Labels, value: float) -> None:
        """Move the level by ``value`` (negative to lower it)."""
        try:
            self.values[labels] += value
        except KeyError:
            key = self._admit(labels)
            self.values[key] = self.values.get(key, 0) + value


class Histogram(_Family):
    """Bucketed observations per label set, Prometheus ``le`` (upper bound inclusive) semantics."""

    kind = "histogram"

    def __init__(self, registry: Registry, name: str, help: str, labelnames: Sequence[str], limit: int | None,
                 buckets: Sequence[float]) -> None:
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        super().__init__(registry, name, help, labelnames, limit)
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be increasing and not empty")
        self.buckets = bounds

    def observe(self, labels: Labels, value: float) -> None:
        try:
            counts = self.values[labels]
        except KeyError:
            key = self._admit(labels)
            counts = self.values.get(key)
            if counts is None:
                counts = self.values[key] = [0] * (len(self.buckets) + 1) + [0.0]
        counts[bisect_left(self.buckets, value)] += 1
        counts[-1] += value


F = TypeVar("F", bound=_Family)


class Registry:
    """A worker's metric families; see the module docstring for why it is lock-free."""

    def __init__(self, max_label_sets: int = MAX_LABEL_SETS, interval: float = PUBLISH_INTERVAL) -> None:
        self.max_label_sets = max_label_sets
        self.interval = interval
        self._families: dict[str, _Family] = {}
        self._target: tuple[SnapshotTarget, int, int] | None = None
        self._published = 0.0
        # Their label values are family names: bounded, so never capped (the cap would recurse).
        self.overflow = self._add(Counter(
            self, "fastgw_metrics_overflow_total",
            "Observations folded into the 'other' label set because a family hit its label-set cap.",
            ("family",), None,
        ))
        self.dropped = self._add(Counter(
            self, "fastgw_metrics_dropped_total",
            "Label sets evicted (oldest first) because a worker's snapshot outgrew its shared-memory slot.",
            ("family",), None,
        ))

    def _add(self, family: F) -> F:
        known = self._families.get(family.name)
        if known is None:
            self._families[family.name] = family
            return family
        if not isinstance(known, type(family)) or (known.kind, known.labelnames, known.buckets) != (family.kind, family.labelnames, family.buckets):
            raise ValueError(f"metric {family.name} is already registered with another shape")
        return known

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``name`` (registering it again with the same shape returns the same one)."""
        return self._add(Counter(self, name, help, labelnames, self.max_label_sets))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(self, name, help, labelnames, self.max_label_sets))

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(self, name, help, labelnames, self.max_label_sets, buckets))

    def snapshot(self) -> Snapshot:
        """The live data (not a copy): encode it before the event loop runs again."""
        return {name: family.snapshot() for name, family in self._families.items()}

    def encode(self, capacity: int) -> bytes:
        """``marshal`` the registry into at most ``capacity`` bytes.

        Too large: the oldest label sets (dict order is insertion order) of the largest
        family are evicted an eighth at a time and counted in ``fastgw_metrics_dropped_total``.
        Evicting, rather than leaving them out of one snapshot, bounds the worker's memory
        too and keeps the count meaningful; a series that comes back restarts from zero,
        which Prometheus reads as a counter reset.
        """
        blob = marshal.dumps(self.snapshot())
        while len(blob) > capacity:
            family = max(self._families.values(), key=lambda f: len(f.values))
            if not family.values:
                raise ValueError(f"an empty registry does not fit in {capacity} bytes")
            evict = list(itertools.islice(family.values, max(1, len(family.values) // 8)))
            for key in evict:
                del family.values[key]
            self.dropped.inc((family.name,), len(evict))
            blob = marshal.dumps(self.snapshot())
        return blob

    def bind(self, target: SnapshotTarget, slot: int) -> None:
        """Publish into ``target``'s ``slot`` from now on (called in the worker after fork)."""
        self._target = (target, slot, os.getpid())
        self._published = 0.0

    def publish(self, force: bool = False) -> None:
        """Write a snapshot if :attr:`interval` passed (or ``force``); no-op until bound.

        Call it from every worker tick; ``force`` at the end of a drain so the last
        requests are counted before the process exits.
        """
        if self._target is None:
            return
        now = time.monotonic()
        if not force and now - self._published < self.interval:
            return
        target, slot, pid = self._target
        target.write(slot, pid, self.encode(target.capacity))
        self._published = now


# -- aggregation (supervisor side) -------------------------------------------------------


def merge(into: Snapshot, snapshot: Snapshot) -> Snapshot:
    """Add ``snapshot`` to ``into`` (counters and buckets summed); returns ``into``.

    ``into`` never shares mutable values with ``snapshot``. A family whose shape differs
    from the one already in ``into`` is skipped: all workers fork from one code base, so
    this only guards against garbage.
    """
    for name, (kind, help, labelnames, buckets, values) in snapshot.items():
        known = into.get(name)
        if known is None:
            copied = {k: list(v) for k, v in values.items()} if kind == "histogram" else dict(values)
            into[name] = (kind, help, labelnames, buckets, copied)
            continue
        if (known[0], known[2], known[3]) != (kind, labelnames, buckets):
            continue
        total = known[4]
        if kind == "histogram":
            for key, counts in values.items():
                have = total.get(key)
                if have is None:
                    total[key] = list(counts)
                else:
                    for i, count in enumerate(counts):
                        have[i] += count
        else:
            for key, value in values.items():
                total[key] = total.get(key, 0) + value
    return into


# -- the gateway's standard families --------------------------------------------------------


_STATUS_CLASSES = tuple(f"{digit}xx" for digit in range(10))


def status_class(status: int) -> str:
    """``204`` -> ``"2xx"``: the label for ``fastgw_requests_total`` (statuses have three digits)."""
    return _STATUS_CLASSES[status // 100] if 0 <= status < 1000 else f"{status // 100}xx"


class Gateway:
    """The gateway's metric families, with one helper per place a request finishes.

    Label values are strings; pass ``""`` for an unknown one (e.g. no consumer).
    """

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        # ``lane``: the request's gray-release lane, a configured lane name or "base" (bounded by the config).
        self.requests = r.counter(
            "fastgw_requests_total", "Plain (non-AI) requests by route, status class and lane.",
            ("route", "status_class", "lane"))
        self.request_duration = r.histogram(
            "fastgw_request_duration_seconds", "Plain request duration, head received to response sent.",
            ("route", "lane"), LATENCY_BUCKETS)
        self.ai_requests = r.counter(
            "fastgw_ai_requests_total", "AI requests by consumer, public model, serving provider, status and lane.",
            ("consumer", "model", "provider", "status", "lane"))
        self.ai_duration = r.histogram(
            "fastgw_ai_request_duration_seconds", "AI request duration, including failovers and streaming.",
            ("model", "provider", "lane"), AI_DURATION_BUCKETS)
        self.ai_ttft = r.histogram(
            "fastgw_ai_ttft_seconds", "Time to first token (first byte of a streamed answer).",
            ("model", "provider", "lane"), TTFT_BUCKETS)
        self.lane_fallbacks = r.counter(
            "fastgw_lane_fallbacks_total",
            "Lane requests served by the base lane (reason: no_endpoint|no_target where the lane has none, "
            "failed when all of the lane's failed).",
            ("lane", "reason"))
        self.tokens = r.counter(
            "fastgw_tokens_total", "Tokens (reported or estimated) by consumer, model, provider and direction (prompt|completion).",
            ("consumer", "model", "provider", "direction"))
        self.tokens_estimated = r.counter(
            "fastgw_tokens_estimated_total", "The part of fastgw_tokens_total that the gateway estimated because the provider reported no usage.",
            ("consumer", "model", "provider", "direction"))
        self.cost = r.counter("fastgw_cost_total", "Estimated spend in USD (models[].pricing, else a cost quota's prices).",
                              ("consumer", "model", "provider"))
        self.ratelimit_rejections = r.counter(
            "fastgw_ratelimit_rejections_total", "Requests rejected by a limit rule (kind: tokens|requests|quota).",
            ("rule", "kind"))
        self.overload_shed = r.counter(
            "fastgw_overload_shed_total", "Requests refused with 503 because their worker was overloaded.",
            ("priority",))
        self.upstream_errors = r.counter(
            "fastgw_upstream_errors_total", "Failed upstream attempts (kind: connect|timeout|status_5xx|invalid).",
            ("provider", "kind"))
        self.upstream_requests = r.counter(
            "fastgw_upstream_requests_total",
            "Attempts of plain routes at their endpoints, by endpoint, its zone and the outcome's status class "
            "(connect_error when no connection was made).",
            ("route", "endpoint", "zone", "status_class"))
        self.upstream_ejections = r.counter(
            "fastgw_upstream_ejections_total",
            "Passive ejections of plain-route endpoints (reason: consecutive_5xx|consecutive_connect_failures).",
            ("endpoint", "reason"))
        self.failovers = r.counter(
            "fastgw_failovers_total", "Attempts moved from one provider to another.",
            ("model", "from_provider", "to_provider"))
        self.redis_errors = r.counter("fastgw_redis_errors_total", "Failed Redis operations.", ("op",))
        self.internal_errors = r.counter(
            "fastgw_internal_errors_total",
            "Exceptions no layer handled, answered 500 or ended with an error event (where: connection|ai).",
            ("where",))
        self.waf_matches = r.counter(
            "fastgw_waf_matches_total", "WAF rule matches by rule id and mode (block, detect).", ("rule", "mode"))
        self.guard_hits = r.counter(
            "fastgw_guard_hits_total", "Content-filter matches by rule, category and side (prompt, response).",
            ("rule", "category", "side"))
        self.cache_requests = r.counter(
            "fastgw_cache_requests_total", "AI cache lookups by result (hit, semantic_hit, miss, unavailable).",
            ("model", "result"))
        self.cache_saved_tokens = r.counter(
            "fastgw_cache_saved_tokens_total", "Tokens answered from the cache instead of a provider.", ("model",))
        self.limit_events = r.counter(
            "fastgw_limit_events_total",
            "Limiter events: fallbacks (Redis down, on_redis_down applied), rejections, lost_settlements, "
            "queued, queue_full, queue_timeouts, queue_abandoned (concurrency wait queues).",
            ("event",))
        self.connection_events = r.counter(
            "fastgw_connection_events_total",
            "Client connections refused or cut (reason: refused_max|refused_per_ip|header_timeout|body_timeout|"
            "send_timeout|tunnel_idle|tls_handshake_failed|tls_handshake_timeout).",
            ("reason",))
        self.tls_handshakes = r.counter(
            "fastgw_tls_handshakes_total",
            "Completed TLS handshakes on the listener (resumed: true when a session ticket saved the full one).",
            ("resumed",))
        self.tunnels_open = r.gauge(
            "fastgw_websocket_tunnels_open", "WebSocket tunnels open now (after the 101, until either side ends).",
            ("route",))
        self.tunnel_bytes = r.counter(
            "fastgw_websocket_bytes_total",
            "Bytes relayed through WebSocket tunnels (direction: client_to_upstream|upstream_to_client).",
            ("route", "direction"))
        self.log_dropped = r.counter(
            "fastgw_log_dropped_total", "Access-log lines or usage records dropped (reason: write_error|queue_full|redis_error|spool_full).",
            ("log", "reason"))
        self.usage_spool = r.counter(
            "fastgw_usage_spool_total",
            "Usage records written to the local spool while Redis was unavailable, replayed from it into the "
            "stream, or dropped because the spool was full (event: spooled|replayed|dropped).",
            ("event",))

    def request_done(self, route: str, status: int, seconds: float, lane: str = "base") -> None:
        """A plain proxied request finished (``route`` is the config route's name)."""
        self.requests.inc((route, status_class(status), lane))
        self.request_duration.observe((route, lane), seconds)

    def ai_done(
        self,
        *,
        consumer: str,
        model: str,
        provider: str,
        status: int,
        seconds: float,
        ttft: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        estimated: bool = False,
        cost: float = 0.0,
        lane: str = "base",
    ) -> None:
        """An AI request finished: requests, duration, TTFT (streams), tokens and cost in one call."""
        self.ai_requests.inc((consumer, model, provider, str(status), lane))
        self.ai_duration.observe((model, provider, lane), seconds)
        if ttft is not None:
            self.ai_ttft.observe((model, provider, lane), ttft)
        for direction, count in (("prompt", prompt_tokens), ("completion", completion_tokens)):
            if count:
                self.tokens.inc((consumer, model, provider, direction), count)
                if estimated:
                    self.tokens_estimated.inc((consumer, model, provider, direction), count)
        if cost:
            self.cost.inc((consumer, model, provider), cost)


GATEWAY = Gateway()
"""The worker's standard families; created at import, so every fork starts from zero."""

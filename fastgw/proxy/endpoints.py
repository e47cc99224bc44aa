"""Which endpoints of an upstream may take the next request, and how much of it: health,
passive ejection, drain, slow start and zones, in one place.

Everything here is indexed by the endpoint's position in the upstream's endpoint list, as the
balancer is. The node-wide facts (drained, checked unhealthy, ejected, when it came back) live
in the shared :class:`~fastgw.proxy.endpoint_table.EndpointTable`; this worker's view of them
is re-read when the table's epoch moves or a time-based change is due (an ejection ends, a
slow-start ramp steps), never per request otherwise. The result is one factor per endpoint
(0 out, below 1 ramping, 1 full) handed to the balancer, plus the zone subset to pick from.

Zones: when this node has a zone and some endpoints are in it, requests go to the local
endpoints while their healthy share (weight of the eligible local endpoints over the weight of
all local endpoints) is at least ``min_healthy``; below that, to every eligible endpoint. A
retry goes to a zone not tried yet when one has an eligible endpoint. Endpoints without a zone
are in no zone (never local).

A caller may narrow the candidates further (``subset``: a gray-release lane's endpoints); the
zone preference then applies within that subset.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from fastgw.config.secrets import SCRUBBER
from fastgw.obs.metrics import GATEWAY
from fastgw.proxy.balancer import NONE_ELIGIBLE, Balancer
from fastgw.proxy.endpoint_table import UNHEALTHY, EndpointTable, slow_start_factor

RAMP_STEP = 0.5
"""Seconds between re-computations of a ramping endpoint's weight."""
_NEVER = float("inf")
_STATELESS = EndpointTable(1)
"""Stands in for endpoints no table has room for: one record nobody drains, checks or ejects."""

CONNECT_FAILURE, STATUS_5XX = "connect", "5xx"


def local_share(weights: list[int], local: list[int], eligible: list[bool]) -> float:
    """The healthy share of the local zone: eligible local weight over all local weight."""
    total = sum(weights[i] for i in local)
    return sum(weights[i] for i in local if eligible[i]) / total if total else 0.0


class EndpointSet:
    """One upstream's endpoints as this worker sees them; see the module docstring."""

    __slots__ = ("urls", "weights", "zones", "records", "balancer", "outlier", "slow_start", "local", "min_healthy",
                 "epoch", "tables", "next_refresh", "eligible", "factors", "preferred", "fails_5xx",
                 "fails_connect")

    def __init__(self, spec: dict[str, Any], balancer: Balancer, table: EndpointTable, private: EndpointTable,
                 zone: dict | None) -> None:
        endpoints = spec["endpoints"]
        self.urls = [e["url"] for e in endpoints]
        self.weights = [e["weight"] for e in endpoints]
        self.zones = [e.get("zone") for e in endpoints]
        self.balancer = balancer
        self.outlier = spec.get("outlier")
        self.slow_start = spec.get("slow_start") or 0.0
        self.records: list[tuple[EndpointTable, int]] = []
        for url in self.urls:
            record = table.find(url)
            if record is not None:
                self.records.append((table, record))
            else:  # not registered by the supervisor (a trial build, a full table): this worker's own
                own = private.find(url)
                own = own if own is not None else private.register(url)
                # Both tables full (tens of thousands of addresses): this endpoint is simply always in.
                self.records.append((private, own) if own is not None else (_STATELESS, 0))
        self.tables = tuple({id(t): t for t, _ in self.records}.values())
        name = zone["name"] if zone else None
        self.local = [i for i, z in enumerate(self.zones) if name is not None and z == name]
        if len(self.local) == len(self.urls):
            self.local = []  # all local: no preference to apply
        given = (spec.get("zones") or {}).get("min_healthy")
        self.min_healthy = given if given is not None else (zone["min_healthy"] if zone else 1.0)
        count = len(self.urls)
        self.eligible = [True] * count
        self.factors = [1.0] * count
        self.fails_5xx = [0] * count
        self.fails_connect = [0] * count
        self.preferred: list[int] | None = self.local or None
        self.epoch = -1
        self.next_refresh = 0.0

    # -- the view ------------------------------------------------------------------------

    def _epochs(self) -> int:
        tables = self.tables
        return tables[0].epoch if len(tables) == 1 else sum(t.epoch for t in tables)

    def refresh(self, now: float) -> None:
        """Re-read the node's states: factors for the balancer, the zone to prefer."""
        self.epoch = self._epochs()
        next_refresh = _NEVER
        eligible, factors = [], []
        for table, record in self.records:
            state = table.read(record)
            if state.drained or state.health == UNHEALTHY:
                factor = 0.0
            elif state.ejected_until > now:
                factor = 0.0
                next_refresh = min(next_refresh, state.ejected_until)
            else:
                factor = slow_start_factor(state.revived_at, now, self.slow_start)
                if factor < 1.0:
                    next_refresh = min(next_refresh, now + RAMP_STEP)
            eligible.append(factor > 0)
            factors.append(factor)
        self.next_refresh = next_refresh
        if factors != self.factors:
            self.balancer.set_factors(factors)
        self.eligible, self.factors = eligible, factors
        local = self.local
        if local and any(eligible[i] for i in local) and local_share(self.weights, local, eligible) >= self.min_healthy:
            self.preferred = local
        else:
            self.preferred = None

    def _current(self) -> None:
        now = time.monotonic()
        if now >= self.next_refresh or self._epochs() != self.epoch:
            self.refresh(now)

    # -- picking ---------------------------------------------------------------------------

    def choose(self, tried: frozenset[int] = frozenset(), subset: list[int] | None = None) -> int:
        """The endpoint for the next attempt, or :data:`NONE_ELIGIBLE` when none may take it."""
        self._current()
        eligible = self.eligible
        if subset is not None and not any(eligible[i] for i in subset):
            return NONE_ELIGIBLE
        if not tried:
            preferred = self.preferred
            if preferred is not None and subset is not None:
                preferred = [i for i in preferred if i in subset and eligible[i]] or subset
            index = self.balancer.pick(tried, preferred if preferred is not None else subset)
        else:  # a retry: to a zone not tried yet, if one has an eligible endpoint not tried
            zones = self.zones
            tried_zones = {zones[i] for i in tried}
            pool = subset if subset is not None else range(len(eligible))
            elsewhere = [i for i in pool if eligible[i] and i not in tried and zones[i] not in tried_zones]
            index = self.balancer.pick(tried, elsewhere or subset)
        if index != NONE_ELIGIBLE:
            table, record = self.records[index]
            table.add_in_flight(record, 1)
        return index

    def release(self, index: int) -> None:
        """The attempt :meth:`choose` gave ``index`` ended (answered, failed or abandoned)."""
        self.balancer.release(index)
        table, record = self.records[index]
        table.add_in_flight(record, -1)

    def any_eligible(self) -> bool:
        self._current()
        return any(self.eligible)

    # -- what requests learn (passive outlier detection) -----------------------------------

    def succeeded(self, index: int) -> None:
        self.fails_5xx[index] = 0
        self.fails_connect[index] = 0

    def failed(self, index: int, kind: str) -> None:
        """An attempt to ``index`` failed: ``CONNECT_FAILURE`` or ``STATUS_5XX`` (a 5xx answer,
        or no valid answer once connected). Enough in a row eject the endpoint node-wide."""
        outlier = self.outlier
        if outlier is None:
            return
        if kind == CONNECT_FAILURE:
            self.fails_connect[index] += 1
            count, limit = self.fails_connect[index], outlier["consecutive_connect_failures"]
        else:
            self.fails_5xx[index] += 1
            count, limit = self.fails_5xx[index], outlier["consecutive_5xx"]
        if not limit or count < limit:
            return
        self.fails_5xx[index] = self.fails_connect[index] = 0
        table, record = self.records[index]
        now = time.monotonic()
        if table is _STATELESS:
            return
        seconds = table.eject(record, now, outlier["base_ejection"], outlier["max_ejection"])
        if seconds:
            reason = "consecutive_connect_failures" if kind == CONNECT_FAILURE else "consecutive_5xx"
            GATEWAY.upstream_ejections.inc((self.urls[index], reason))
            sys.stderr.write(SCRUBBER(f"fastgw: ejected upstream endpoint {self.urls[index]} for {seconds:g}s "
                             f"({count} {reason.replace('_', ' ')})\n"))
        self.refresh(now)

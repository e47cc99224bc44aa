"""Adaptive overload protection: shed new low-priority requests before latency collapses.

Runs right after authentication (the consumer decides the priority) from the request head,
so a shed request costs no body read, no upstream call and no limiter round trip. Load is
this worker's, seen from the request's priority: for a low request, the share of the core its
loop is busy over ``max_cpu`` (busy normal traffic never sheds normal traffic: a worker busy
serving it is working, not overloaded, and lag says when it collapses); the requests in flight of that priority or higher over ``max_in_flight`` (so
admitted low requests never get normal ones shed), and event-loop lag over ``max_loop_lag``
(:mod:`fastgw.server.load`); the largest ratio counts.
See :mod:`fastgw.config.overload` for the thresholds per priority.

A shed ``low`` request also holds its connection unread for ``pause``: on a cheap route a 503 costs
the worker about as much as an answer (the parse, the route, the reply), so a client that
sends again at once would keep the loop as busy as before; unread, its next request waits
in the kernel and costs nothing until the pause ends (it was told ``Retry-After`` anyway).
Each pause is drawn from 0.5-1.5 x ``pause``: connections shed in one burst must not all be
read again in one burst. A ``normal`` request shed in a severe overload is only refused: its
client's next request is read at once, so normal traffic never waits out a pause.
"""

from __future__ import annotations

import random
from typing import Any

from fastgw.filters.api import Filter, Phase, Status
from fastgw.obs.metrics import GATEWAY
from fastgw.server.load import IN_FLIGHT, LEVELS, loop_lag
from fastgw.server.stream import Stream

SHED_AT = (0.75, 1.0, None)
"""Load ratio at which each priority (by LEVELS index) is shed; ``high`` never is."""
_LEVEL = {name: i for i, name in enumerate(LEVELS)}
RAMP_FROM = 0.85
"""Share of its threshold at which a ``low`` request may start being shed (see Overload._shed)."""


class Overload(Filter):
    name = "overload"
    phase = Phase.AUTHN
    priority = 100  # after the authenticating filters of the same phase

    def __init__(self, spec: dict[str, Any], consumers: list[dict], route_priority: str | None = None) -> None:
        super().__init__()
        self.max_cpu = spec.get("max_cpu")
        self.max_in_flight = spec["max_in_flight"]
        self.max_loop_lag = spec["max_loop_lag"]
        self.retry_after = spec["retry_after"]
        self.pause = spec["pause"]
        self.route_priority = route_priority
        self.consumers = {c["name"]: c["priority"] for c in consumers if c.get("priority")}

    def load(self, s: Stream, level: int) -> float:
        """This worker's load ratio as a request of ``level`` sees it (1.0: at a threshold)."""
        ratio = 0.0
        if self.max_in_flight:
            ratio = IN_FLIGHT.at_or_above(level) / self.max_in_flight
        if self.max_loop_lag or self.max_cpu:
            monitor = loop_lag(s.loop)
            if self.max_loop_lag:
                ratio = max(ratio, monitor.lag / self.max_loop_lag)
            if self.max_cpu and level == 0:  # a low request is shed once the loop is busy past max_cpu
                ratio = max(ratio, SHED_AT[0] * monitor.busy / self.max_cpu)
        return ratio

    @staticmethod
    def _shed(share: float, level: int) -> bool:
        """``share``: the load over this priority's threshold. ``low`` requests are shed with a
        chance that rises from 0 at RAMP_FROM of the threshold to 1 at it, so admission eases off
        as the load nears it instead of flipping between all and none (each flip let a wave of
        held clients in at once, and the loop's latency with it); ``normal`` ones at it."""
        if share >= 1.0:
            return True
        if level != 0 or share < RAMP_FROM:
            return False
        return random.random() < (share - RAMP_FROM) / (1.0 - RAMP_FROM)

    def on_request_headers(self, s: Stream) -> Status:
        name = None
        if s.consumer is not None:
            name = self.consumers.get(s.consumer.name)
        name = name or self.route_priority or "normal"
        level = _LEVEL[name]
        threshold = SHED_AT[level]
        if threshold is None or not self._shed(self.load(s, level) / threshold, level):
            IN_FLIGHT.counts[level] += 1
            s.vars[self.slot] = level
            return Status.CONTINUE
        GATEWAY.overload_shed.inc((name,))
        s.retry_after = float(self.retry_after)
        if level == 0:  # spread out: connections held together must not come back together
            s.hold_after = self.pause * (0.5 + random.random())
        return s.reply(
            503,
            "the gateway is overloaded; retry later",
            "overloaded",
            headers=b"retry-after: %d\r\n" % self.retry_after,
        )

    def on_done(self, s: Stream) -> None:
        level = s.vars[self.slot]
        if level is not None:
            IN_FLIGHT.counts[level] -= 1

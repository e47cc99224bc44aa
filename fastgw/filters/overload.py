"""Adaptive overload protection: shed new low-priority requests before latency collapses.

Runs right after authentication (the consumer decides the priority) from the request head,
so a shed request costs no body read, no upstream call and no limiter round trip. Load is
this worker's: requests in flight (others than this one) over ``max_in_flight``, and
event-loop lag over ``max_loop_lag`` (:mod:`fastgw.server.load`); the larger ratio counts.
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
from fastgw.server.load import loop_lag
from fastgw.server.stream import Stream

SHED_AT = {"low": 0.75, "normal": 1.0}
"""Load ratio at which each priority is shed; ``high`` never is."""


class Overload(Filter):
    name = "overload"
    phase = Phase.AUTHN
    priority = 100  # after the authenticating filters of the same phase

    def __init__(self, spec: dict[str, Any], consumers: list[dict], route_priority: str | None = None) -> None:
        super().__init__()
        self.max_in_flight = spec["max_in_flight"]
        self.max_loop_lag = spec["max_loop_lag"]
        self.retry_after = spec["retry_after"]
        self.pause = spec["pause"]
        self.route_priority = route_priority
        self.consumers = {c["name"]: c["priority"] for c in consumers if c.get("priority")}

    def load(self, s: Stream) -> float:
        """This worker's load ratio (1.0: at a threshold)."""
        ratio = 0.0
        if self.max_in_flight:
            ratio = (s.services.active_requests - 1) / self.max_in_flight
        if self.max_loop_lag:
            ratio = max(ratio, loop_lag(s.loop).lag / self.max_loop_lag)
        return ratio

    def on_request_headers(self, s: Stream) -> Status:
        level = None
        if s.consumer is not None:
            level = self.consumers.get(s.consumer.name)
        level = level or self.route_priority or "normal"
        threshold = SHED_AT.get(level)
        if threshold is None or self.load(s) < threshold:
            return Status.CONTINUE
        GATEWAY.overload_shed.inc((level,))
        s.retry_after = float(self.retry_after)
        if level == "low":  # spread out: connections held together must not come back together
            s.hold_after = self.pause * (0.5 + random.random())
        return s.reply(
            503,
            "the gateway is overloaded; retry later",
            "overloaded",
            headers=b"retry-after: %d\r\n" % self.retry_after,
        )

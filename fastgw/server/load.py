"""How loaded this worker is: its event loop's lag and busy share, and its requests in flight by priority.

A callback scheduled every :data:`INTERVAL` runs late by as long as other callbacks kept
the loop busy; that delay is the lag every new request would wait too. The reading decays
by half per 50 ms, so one slow callback does not shed load for long but a saturated loop
keeps it high. Sampling every 10 ms (not 50) lets shedding start within a few ms of a
saturated loop, before a backlog builds that every admitted request would wait behind.
The same timer reads the loop thread's CPU time: CPU used over wall time elapsed is the
share of the core the loop was busy (``busy``, averaged over ~30 ms). One monitor per
process and loop, started on first use.
"""

from __future__ import annotations

import asyncio
import time

INTERVAL = 0.01
"""Seconds between samples."""
DECAY = 0.5 ** (INTERVAL / 0.05)
"""Factor per sample: the reading halves every 50 ms."""
BUSY_WEIGHT = 0.3
"""Weight of the newest sample in the busy share (an average over about three samples)."""


class LoopLag:
    __slots__ = ("lag", "busy", "_loop", "_due", "_cpu", "_wall")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lag = 0.0
        self.busy = 0.0
        self._loop = loop
        self._cpu = time.thread_time()  # the loop's thread only: the worker's other threads are not the loop
        self._wall = time.monotonic()
        self._due = loop.time() + INTERVAL
        loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        now = self._loop.time()
        self.lag = max(now - self._due, self.lag * DECAY)
        cpu, wall = time.thread_time(), time.monotonic()
        if wall > self._wall:
            share = min(1.0, (cpu - self._cpu) / (wall - self._wall))
            self.busy += BUSY_WEIGHT * (share - self.busy)
        self._cpu, self._wall = cpu, wall
        self._due = now + INTERVAL
        self._loop.call_at(self._due, self._sample)


_MONITORS: dict[asyncio.AbstractEventLoop, LoopLag] = {}


def loop_lag(loop: asyncio.AbstractEventLoop) -> LoopLag:
    """The lag monitor of ``loop``, started on the first call."""
    monitor = _MONITORS.get(loop)
    if monitor is None:
        monitor = _MONITORS[loop] = LoopLag(loop)
    return monitor


LEVELS = ("low", "normal", "high")


class InFlight:
    """Requests in flight in this worker that passed overload protection, by priority.

    A request competes only with those of its own priority or higher: the low ones admitted
    (at most ``0.75 x max_in_flight``) never make a normal request look like an overload,
    so normal traffic is refused only when normal and high traffic alone fill the worker.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0, 0, 0]  # by LEVELS index

    def at_or_above(self, level: int) -> int:
        counts = self.counts
        return counts[2] if level == 2 else counts[1] + counts[2] if level == 1 else counts[0] + counts[1] + counts[2]


IN_FLIGHT = InFlight()
"""This process's counts: one worker per process, one loop per worker."""

"""How loaded this worker's event loop is: its lag, sampled by a timer that should be punctual.

A callback scheduled every :data:`INTERVAL` runs late by as long as other callbacks kept
the loop busy; that delay is the lag every new request would wait too. The reading decays
by half per 50 ms, so one slow callback does not shed load for long but a saturated loop
keeps it high. Sampling every 10 ms (not 50) lets shedding start within a few ms of a
saturated loop, before a backlog builds that every admitted request would wait behind.
One monitor per process and loop, started on first use.
"""

from __future__ import annotations

import asyncio

INTERVAL = 0.01
"""Seconds between samples."""
DECAY = 0.5 ** (INTERVAL / 0.05)
"""Factor per sample: the reading halves every 50 ms."""


class LoopLag:
    __slots__ = ("lag", "_loop", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lag = 0.0
        self._loop = loop
        self._due = loop.time() + INTERVAL
        loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        now = self._loop.time()
        self.lag = max(now - self._due, self.lag * DECAY)
        self._due = now + INTERVAL
        self._loop.call_at(self._due, self._sample)


_MONITORS: dict[asyncio.AbstractEventLoop, LoopLag] = {}


def loop_lag(loop: asyncio.AbstractEventLoop) -> LoopLag:
    """The lag monitor of ``loop``, started on the first call."""
    monitor = _MONITORS.get(loop)
    if monitor is None:
        monitor = _MONITORS[loop] = LoopLag(loop)
    return monitor

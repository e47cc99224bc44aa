"""The event-loop lag monitor on a real asyncio loop."""

from __future__ import annotations

import asyncio
import time

from fastgw.server.load import INTERVAL, loop_lag


def test_lag_rises_while_the_loop_is_blocked_and_decays_after() -> None:
    async def scenario() -> tuple[float, float, float]:
        monitor = loop_lag(asyncio.get_running_loop())
        assert monitor is loop_lag(asyncio.get_running_loop())  # one per loop
        await asyncio.sleep(INTERVAL * 4)
        idle = monitor.lag
        time.sleep(0.3)  # a callback hogging the loop, as a saturated worker's do
        await asyncio.sleep(INTERVAL / 2)
        blocked = monitor.lag
        await asyncio.sleep(INTERVAL * 20)
        return idle, blocked, monitor.lag

    idle, blocked, after = asyncio.run(scenario())
    assert blocked >= 0.2 > idle
    assert after < blocked / 4


def test_busy_share_follows_the_loop_threads_cpu() -> None:
    async def scenario() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        monitor = loop_lag(loop)
        await asyncio.sleep(INTERVAL * 8)  # idle: sleeping costs no CPU
        idle = monitor.busy

        def spin() -> None:  # a callback burning CPU for most of each interval
            ends = time.monotonic() + INTERVAL * 0.9
            while time.monotonic() < ends:
                pass
            if time.monotonic() < stop_at:
                loop.call_soon(spin)

        stop_at = time.monotonic() + INTERVAL * 15
        loop.call_soon(spin)
        await asyncio.sleep(INTERVAL * 15)
        busy = monitor.busy
        await asyncio.sleep(INTERVAL * 15)
        return idle, busy, monitor.busy

    idle, busy, after = asyncio.run(scenario())
    assert idle < 0.3
    assert busy > 0.6
    assert after < 0.3

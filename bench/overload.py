"""The `overload` scenario: a plain-route gateway under twice a saturating load, shedding on or off.

First the saturating rate is measured: a closed-loop wrk flood of the `priority: low` route
(2 x --json-connections connections) on the gateway without shedding; its 2xx req/s is the
saturation. Then the flood is *offered at twice that rate* on a fixed timetable, open loop
(scripts/paced.lua, wrk2's model: a late answer does not slow the timetable, missed slots
are sent at once) over FLOOD_CONNECTIONS connections, so the offered load does not depend
on how quickly the gateway answers or refuses. Meanwhile a light probe (2 connections,
default priority) measures the latency a normal client sees. With shedding on
(`http.overload`) the worker refuses the flood with 503 once it is loaded, so the probe's
admitted requests should keep a p99 near the unloaded one; with it off the probe queues
behind the flood. Reported per mode: the probe's p99 unloaded and under the flood, their
ratio, the flood's offered (target) and achieved rates, and the shed shares.

The probe and the flood's generator share the load core with the upstream, so a flood slows
the probe even when the gateway does nothing: after the loaded run the same paced flood, at
the rate it achieved, is aimed at the upstream directly while the probe measures the idle
gateway again. That p99 (`floor_p99_ms`) is what this machine's load core alone adds; the
loaded p99 is also reported against it. On 2 cores it is well above the unloaded p99, so a
ratio to the unloaded p99 below it cannot be observed here.

The connections bound what is in flight: when answers take longer than FLOOD_CONNECTIONS /
rate on average (shedding off, a saturated gateway), the achieved rate falls below the
target, as with any generator of bounded connections; it is reported beside the target.
"""

from __future__ import annotations

import time

import bodies
import targets
import wrk

PROBE_CONNECTIONS = 2
PROBE_PRIORITY = ["chrt", "-f", "50"]
"""The probe's wrk runs at a real-time priority on the load core, in every run: it is the
instrument, and the flood's generator beside it must not delay its reading of an answer."""
MAX_IN_FLIGHT = 64
MAX_CPU = "70%"
MAX_LOOP_LAG = "8ms"
FLOOD = bodies.chat("/low/json/v1/chat/completions", "gpt-4o-mini", stream=False)
PROBE = bodies.PLAIN_REQUESTS["json"]


def config(port: int, admin_port: int, workers: int, upstream_port: int, shedding: bool) -> str:
    """One catch-all route (normal priority) and a /low route to the same upstream answers."""
    upstream = f"http://{targets.HOST}:{upstream_port}"
    lines = [f"listen: {targets.HOST}:{port}", f"admin: {targets.HOST}:{admin_port}", f"workers: {workers}"]
    if shedding:
        lines += ["http:", f"  overload: {{max_cpu: {MAX_CPU}, max_in_flight: {MAX_IN_FLIGHT}, max_loop_lag: {MAX_LOOP_LAG}, retry_after: 1}}"]
    lines += [
        "routes:",
        "  - name: flood", "    match: {path: /low/}", "    priority: low",
        "    upstream: {endpoints: [" + upstream + "], strip_prefix: /low}",
        "  - name: upstream", "    match: {path: /}", f"    upstream: {upstream}",
    ]
    return "\n".join(lines) + "\n"


FLOOD_CONNECTIONS = 512
"""Connections carrying the fixed-rate flood: 2 x 15k req/s fit while answers average < 17 ms."""


def saturation(proc: targets.Process, connections: int, seconds: float, threads: int, pin: list[str]) -> float:
    """2xx req/s of a closed-loop flood of the low-priority route: the rate that saturates the gateway."""
    base = f"http://{targets.HOST}:{proc.info['port']}"
    flood = wrk.run(base, FLOOD, connections, threads, seconds, pin)
    return max(1.0, (flood.requests - flood.non2xx) / flood.seconds)


REPEATS = 3
"""Probe runs per reading; the median p99 is reported (one 5 s p99 on a shared VM moves by 2x)."""


def probe(base: str, seconds: float, pin: list[str]) -> tuple[float | None, list[wrk.WrkResult]]:
    """REPEATS probe runs back to back: their median p99 and the runs."""
    runs = [wrk.run(base, PROBE, PROBE_CONNECTIONS, 1, seconds, pin + PROBE_PRIORITY) for _ in range(REPEATS)]
    p99s = sorted(r.p99_ms for r in runs if r.p99_ms is not None)
    return (p99s[len(p99s) // 2] if p99s else None), runs


def floor(proc: targets.Process, upstream_port: int, rate: float, seconds: float, threads: int,
          pin: list[str]) -> float | None:
    """The probe's p99 through the idle gateway while the flood, at ``rate``, goes to the upstream."""
    base = f"http://{targets.HOST}:{proc.info['port']}"
    direct = f"http://{targets.HOST}:{upstream_port}"
    flood = wrk.Background(direct, PROBE, FLOOD_CONNECTIONS, threads, REPEATS * seconds + 30, pin,
                           rate=max(rate, 1.0))
    try:
        time.sleep(1)
        p99, _ = probe(base, seconds, pin)
    finally:
        flood.stop()
    return p99


def measure(proc: targets.Process, saturated_rps: float, seconds: float, threads: int,
            pin: list[str], upstream_port: int) -> dict[str, object]:
    base = f"http://{targets.HOST}:{proc.info['port']}"
    unloaded_p99, _ = probe(base, seconds, pin)
    target_rps = 2 * saturated_rps
    connections = FLOOD_CONNECTIONS
    flood = wrk.Background(base, FLOOD, connections, threads, REPEATS * seconds + 30, pin, rate=target_rps)
    try:
        time.sleep(1)  # the flood reaches its steady state
        loaded_p99, runs = probe(base, seconds, pin)
    finally:
        flooded = flood.stop()
    ratio = loaded_p99 / unloaded_p99 if loaded_p99 and unloaded_p99 else None
    floor_p99 = floor(proc, upstream_port, flooded.rps, seconds, threads, pin)
    return {
        "unloaded_p99_ms": unloaded_p99,
        "loaded_p99_ms": loaded_p99,
        "loaded_p99s_ms": [r.p99_ms for r in runs],
        "loaded_p50_ms": sorted(r.p50_ms or 0 for r in runs)[len(runs) // 2],
        "p99_ratio": ratio,
        "floor_p99_ms": floor_p99,
        "p99_ratio_to_floor": loaded_p99 / floor_p99 if loaded_p99 and floor_p99 else None,
        "probe_requests": sum(r.requests for r in runs),
        "probe_shed": sum(r.non2xx for r in runs),
        "saturation_rps": saturated_rps,
        "flood_target_rps": target_rps,
        "flood_connections": connections,
        "flood_rps": flooded.rps,
        "flood_requests": flooded.requests,
        "flood_shed": flooded.non2xx,
        "flood_shed_share": flooded.non2xx / flooded.requests if flooded.requests else None,
        "errors": sum(r.errors for r in runs) + sum(flooded.socket_errors.values()),
    }

"""The `overload` scenario: a plain-route gateway under twice a saturating load, shedding on or off.

A low-priority flood (2 x --json-connections connections on a `priority: low` route) saturates
the gateway while a light probe (2 connections, default priority) measures the latency a
normal client sees. With shedding on (`http.overload`), the worker refuses the flood with 503
once it is loaded, so the probe's admitted requests keep a p99 near the unloaded one; with it
off the probe queues behind the flood. Reported per mode: the probe's p99 unloaded and under
the flood, their ratio, and how much of the flood (and of the probe) was shed.
"""

from __future__ import annotations

import time

import bodies
import targets
import wrk

PROBE_CONNECTIONS = 2
MAX_IN_FLIGHT = 16
MAX_LOOP_LAG = "20ms"
FLOOD = bodies.chat("/low/json/v1/chat/completions", "gpt-4o-mini", stream=False)
PROBE = bodies.PLAIN_REQUESTS["json"]


def config(port: int, admin_port: int, workers: int, upstream_port: int, shedding: bool) -> str:
    """One catch-all route (normal priority) and a /low route to the same upstream answers."""
    upstream = f"http://{targets.HOST}:{upstream_port}"
    lines = [f"listen: {targets.HOST}:{port}", f"admin: {targets.HOST}:{admin_port}", f"workers: {workers}"]
    if shedding:
        lines += ["http:", f"  overload: {{max_in_flight: {MAX_IN_FLIGHT}, max_loop_lag: {MAX_LOOP_LAG}, retry_after: 1}}"]
    lines += [
        "routes:",
        "  - name: flood", "    match: {path: /low/}", "    priority: low",
        "    upstream: {endpoints: [" + upstream + "], strip_prefix: /low}",
        "  - name: upstream", "    match: {path: /}", f"    upstream: {upstream}",
    ]
    return "\n".join(lines) + "\n"


def measure(proc: targets.Process, flood_connections: int, seconds: float, threads: int,
            pin: list[str]) -> dict[str, object]:
    base = f"http://{targets.HOST}:{proc.info['port']}"
    unloaded = wrk.run(base, PROBE, PROBE_CONNECTIONS, 1, seconds, pin)
    flood = wrk.Background(base, FLOOD, flood_connections, threads, seconds + 30, pin)
    try:
        time.sleep(1)  # the flood reaches its steady state
        loaded = wrk.run(base, PROBE, PROBE_CONNECTIONS, 1, seconds, pin)
    finally:
        flooded = flood.stop()
    ratio = loaded.p99_ms / unloaded.p99_ms if loaded.p99_ms and unloaded.p99_ms else None
    return {
        "unloaded_p99_ms": unloaded.p99_ms,
        "loaded_p99_ms": loaded.p99_ms,
        "p99_ratio": ratio,
        "probe_requests": loaded.requests,
        "probe_shed": loaded.non2xx,
        "flood_rps": flooded.rps,
        "flood_requests": flooded.requests,
        "flood_shed": flooded.non2xx,
        "errors": loaded.errors + sum(flooded.socket_errors.values()),
    }

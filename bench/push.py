"""The `push` scenario: swap in a 10,000-route config under load and time it until every worker runs it.

This is the claim the generation design makes (no restart, no dropped request), so the two numbers
are the time from POST to "live in every worker" and the error count of the load around it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import bodies
import targets
import wrk


class PushUnavailable(RuntimeError):
    """The gateway has no working admin API, so there is nothing to push to."""


def worker_generations(status: dict) -> list[object]:
    """The generation each worker reports in /status (None where a worker does not say)."""
    return [w.get("generation") if isinstance(w, dict) else None for w in status.get("workers") or []]


def post_config(admin_port: int, body: bytes, timeout: float) -> tuple[int, dict]:
    """POST /config with a YAML body; returns the status and the JSON answer (empty if not JSON)."""
    req = urllib.request.Request(f"http://{targets.HOST}:{admin_port}/config", data=body, method="POST",
                                 headers=targets.admin_headers("application/yaml"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"body": raw[:500].decode("utf-8", "replace")}
    return code, answer if isinstance(answer, dict) else {"body": answer}


def _is_live(status: dict | None, workers: int, target: int) -> bool:
    if not targets.workers_ready(status, workers):
        return False
    gens = worker_generations(status)  # type: ignore[arg-type]
    return all(isinstance(g, int) and g >= target for g in gens)


def run(gateway: targets.Process, upstream_port: int, routes: int, settle: float, threads: int, pin: list[str],
        timeout: float = 60.0) -> dict[str, object]:
    """`json` load (50 connections) on the gateway; after `settle` s push; after live + `settle` s stop the load."""
    workers = int(gateway.info["workers"])  # type: ignore[call-overload]
    admin_port = int(gateway.info["admin_port"])  # type: ignore[call-overload]
    port = int(gateway.info["port"])  # type: ignore[call-overload]
    before = targets.admin_status(admin_port, timeout=5)
    if not targets.workers_ready(before, workers):
        raise PushUnavailable(f"admin /status on port {admin_port} does not list {workers} ready workers")
    known = [g for g in worker_generations(before) if isinstance(g, int)]  # type: ignore[arg-type]
    if len(known) != workers:
        raise PushUnavailable(f"/status workers carry no integer `generation`: {before}")
    body = targets.fastgw_plain_config(port, admin_port, workers, upstream_port, extra_routes=routes).encode()

    load = wrk.Background(f"http://{targets.HOST}:{port}", bodies.PLAIN_REQUESTS["json"], 50, threads,
                          max_seconds=2 * settle + 2 * timeout + 30, pin=pin)
    try:
        time.sleep(settle)
        start = time.perf_counter()
        code, answer = post_config(admin_port, body, timeout)
        post_s = time.perf_counter() - start
        if not 200 <= code < 300:
            raise RuntimeError(f"POST /config answered {code}: {answer}")
        target = answer.get("generation")
        if not isinstance(target, int):
            target = max(known) + 1
        polls = 0
        status: dict | None = None
        while not _is_live(status, workers, target):
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"generation {target} not live in every worker after {timeout:.0f} s: {status}")
            time.sleep(0.01)
            status = targets.admin_status(admin_port, timeout=5)
            polls += 1
        live_s = time.perf_counter() - start
        time.sleep(settle)
        result = load.stop()
    except BaseException:
        load.kill()
        raise
    return {
        "routes": routes + 1,
        "config_bytes": len(body),
        "generation_before": known,
        "generation_after": target,
        "post_ms": post_s * 1e3,
        "live_ms": live_s * 1e3,
        "status_polls": polls,
        "post_answer": answer,
        "load": result.as_dict(),
    }

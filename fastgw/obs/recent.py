"""The worker's ring of recent failed requests, published for the supervisor's ``/diagnose``.

A request is recorded when its answer was an error or when an attempt failed on the way
(a failover the client never saw). The ring is bounded (``RING_SIZE`` records), and the
worker's tick copies it, when it changed, into its own slot of a shared mapping the
supervisor reads (the same seqlocked regions as the metrics: no socket, no lock between
processes). Only failing requests pay for a record; a request without errors builds nothing.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Protocol

from fastgw.fastjson import dumps

RING_SIZE = 200
PUBLISH_INTERVAL = 1.0
"""Seconds between two copies of a changing ring: under a stream of errors (a flood being shed)
copying 200 records every tick stalled the loop for ~0.5 ms ten times a second. A failure after
a quiet second is still published on the next tick."""


class Area(Protocol):
    """Where a worker publishes (``workers.metrics_shm.MetricsArea``)."""

    capacity: int

    def write(self, slot: int, pid: int, blob: bytes) -> None: ...


def new_request_id() -> str:
    """Unique across workers and restarts without coordination: 64 random bits."""
    return os.urandom(8).hex()


class RecentErrors:
    def __init__(self, size: int = RING_SIZE) -> None:
        self.records: deque[dict[str, Any]] = deque(maxlen=size)
        self._target: tuple[Area, int, int] | None = None
        self._dirty = False
        self._published = -PUBLISH_INTERVAL

    def bind(self, area: Area, slot: int) -> None:
        """In the forked worker: publish into ``slot`` of ``area``."""
        self._target = (area, slot, os.getpid())

    def add(self, record: dict[str, Any]) -> None:
        record["time"] = time.time()
        self.records.append(record)
        self._dirty = True

    def publish(self, force: bool = False) -> None:
        """Copy the ring to shared memory if it changed, at most every PUBLISH_INTERVAL unless
        ``force`` (the worker's tick calls this; its exit forces the last copy)."""
        if not self._dirty or self._target is None:
            return
        now = time.monotonic()
        if not force and now - self._published < PUBLISH_INTERVAL:
            return
        area, slot, pid = self._target
        records = list(self.records)
        blob = dumps(records)  # msgspec: ~10x json.dumps on these records
        while len(blob) > area.capacity and records:  # keep the newest that fit
            records = records[len(records) // 4 + 1 :]
            blob = dumps(records)
        area.write(slot, pid, blob)
        self._dirty = False
        self._published = now


def failure_record(s: Any, duration: float, ttft: float | None) -> dict[str, Any]:
    """What ``/diagnose`` needs to explain one request (``s``: its Stream)."""
    if s.request_id is None:
        s.request_id = new_request_id()
    return {
        "request_id": s.request_id, "status": s.status, "code": s.error_code, "message": s.error,
        "route": s.route_name, "op": s.op, "model": s.model or None, "provider": s.provider or None,
        "consumer": s.consumer.name if s.consumer is not None else None, "limit": s.limit_name,
        "lane": s.lane.name if s.lane is not None else None,
        "attempts": s.attempts, "failures": s.failures or [], "duration": round(duration, 6),
        "ttft": round(ttft, 6) if ttft is not None else None,
    }


RECENT = RecentErrors()
"""This process's ring (one per worker)."""

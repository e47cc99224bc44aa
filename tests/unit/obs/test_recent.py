"""The ring of failed requests: bounded in the worker, and in what it publishes to shared memory."""

from __future__ import annotations

import json
import os

from fastgw.obs.recent import RecentErrors
from workers.metrics_shm import MetricsArea


def record(i: int) -> dict:
    return {"request_id": f"id-{i}", "status": 502, "message": "x" * 100}


def test_the_ring_keeps_the_newest_and_publishes_only_what_changed() -> None:
    area = MetricsArea(2, slot_size=64 * 1024)
    ring = RecentErrors(size=50)
    ring.bind(area, 1)
    for i in range(120):
        ring.add(record(i))
    assert [r["request_id"] for r in ring.records] == [f"id-{i}" for i in range(70, 120)]
    ring.publish()
    seq, pid, blob = area.read(1)
    assert pid == os.getpid() and [r["request_id"] for r in json.loads(blob)] == [f"id-{i}" for i in range(70, 120)]
    ring.publish()  # nothing new: no write
    assert area.read(1)[0] == seq
    assert area.read(0) is None
    area.close()


def test_a_ring_larger_than_its_slot_publishes_the_newest_records_that_fit() -> None:
    area = MetricsArea(1, slot_size=4096)
    ring = RecentErrors(size=200)
    ring.bind(area, 0)
    for i in range(200):
        ring.add(record(i))
    ring.publish()
    published = json.loads(area.read(0)[2])
    assert 0 < len(published) < 200 and published[-1]["request_id"] == "id-199"
    assert [r["request_id"] for r in published] == [f"id-{i}" for i in range(200 - len(published), 200)]
    area.close()

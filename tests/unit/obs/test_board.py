"""A worker's small published document: written to its slot only when it changed."""

from __future__ import annotations

import json
import os

from fastgw.obs.board import Board
from workers.metrics_shm import MetricsArea


def test_the_board_writes_only_changes_and_reports_a_document_too_large_for_its_slot() -> None:
    area = MetricsArea(2, slot_size=1024)
    board = Board()
    board.publish({"before": "bound"})  # not bound yet: nothing written
    assert area.read(1) is None
    board.bind(area, 1)
    board.publish({"breakers": []})
    seq, pid, blob = area.read(1)
    assert pid == os.getpid() and json.loads(blob) == {"breakers": []}
    board.publish({"breakers": []})
    assert area.read(1)[0] == seq  # unchanged: no write
    board.publish({"breakers": ["x" * 2000]})
    assert "too large" in json.loads(area.read(1)[2])["error"]
    assert area.read(0) is None
    area.close()

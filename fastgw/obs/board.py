"""A small JSON document a worker keeps in its slot of a shared area, for the supervisor to read.

Used for the providers' health (breakers, key cool-downs, probe verdicts) that ``/status`` and
the console show per worker: the worker's tick republishes it about once a second, and only
when it changed, into the same kind of seqlocked per-slot region as the metrics (no socket, no
lock between processes, nothing on the request path).
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastgw.obs.recent import Area


class Board:
    def __init__(self) -> None:
        self._target: tuple[Area, int, int] | None = None
        self._last = b""

    def bind(self, area: Area, slot: int) -> None:
        """In the forked worker: publish into ``slot`` of ``area``."""
        self._target = (area, slot, os.getpid())
        self._last = b""

    def publish(self, document: Any) -> None:
        """Write ``document`` if it differs from the last one written; no-op until bound."""
        if self._target is None:
            return
        blob = json.dumps(document, separators=(",", ":")).encode()
        area, slot, pid = self._target
        if len(blob) > area.capacity:
            blob = json.dumps({"error": f"too large for its slot ({len(blob)} bytes)"}).encode()
        if blob == self._last:
            return
        area.write(slot, pid, blob)
        self._last = blob


HEALTH = Board()
"""This worker's providers' health (:meth:`fastgw.ai.health.ProviderHealth.report`)."""

"""Unexpected errors on the event loop, logged once per class per interval.

A hostile client that finds an input we fail on would otherwise write a traceback per
request (a garbage flood filled stderr with hundreds); here the first of each class is one
line, the rest are counted and summed up in the next line of that class after the interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

INTERVAL = 60.0
MAX_CLASSES = 64  # distinct classes remembered; beyond it they share one bucket


class ErrorLog:
    __slots__ = ("_write", "_interval", "_last", "_suppressed")

    def __init__(self, write: Callable[[str], None], interval: float = INTERVAL) -> None:
        self._write = write
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def handle(self, loop: Any, context: dict[str, Any]) -> None:
        """An ``asyncio`` exception handler: one line, no traceback."""
        exc = context.get("exception")
        message = context.get("message", "error")
        key = f"{type(exc).__name__}: {message}" if exc is not None else message
        if key not in self._last and len(self._last) >= MAX_CLASSES:
            key = "other errors"
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        detail = f" ({exc!r})"[:300] if exc is not None else ""
        tail = f" [+{more} more in the last {self._interval:.0f}s]" if more else ""
        self._write(f"{key}{detail}{tail}")

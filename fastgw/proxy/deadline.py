"""A deadline that moves often and cheaply: one lazily re-armed timer per connection.

Moving a deadline *later* (progress on a stream, a request that arrived) is a float
store; only an *earlier* deadline re-arms the loop's timer. When the timer fires before
the current deadline it re-arms itself for the rest. A busy keep-alive connection so
costs about one timer operation per request instead of several.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    __slots__ = ("_loop", "_expired", "_handle", "_armed_at", "when", "active")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self.when = 0.0
        self.active = False

    def set(self, seconds: float) -> None:
        """Expire ``seconds`` from now (earlier or later than before)."""
        when = self._loop.time() + seconds
        self.when = when
        self.active = True
        if self._handle is None or when < self._armed_at:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = when
            self._handle = self._loop.call_at(when, self._fire)

    def extend(self, seconds: float) -> None:
        """Progress: push the deadline to ``seconds`` from now, never re-arming the timer."""
        self.when = self._loop.time() + seconds

    def stop(self) -> None:
        """Nothing to guard for now; the armed timer (if any) fires into nothing."""
        self.active = False

    def cancel(self) -> None:
        """For good (the connection is closing): release the loop's timer."""
        self.active = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if not self.active:
            return
        if self._loop.time() < self.when:
            self._armed_at = self.when
            self._handle = self._loop.call_at(self.when, self._fire)
            return
        self.active = False
        self._expired()

"""A node's upstream endpoint states, in shared memory: one record per endpoint address.

Created by the supervisor *before* it forks (next to ``ControlBlock``), so every worker
inherits the mapping. Stdlib only: the supervisor imports it.

Why per address (``http://host:port``, the key of a connection pool) and per node: health is
a property of the host, not of the route that names it. An endpoint the active check finds
down, one a worker ejected after consecutive failures, or one the admin drained is out for
every route and every worker of the node at once; the node probes each address once, not once
per worker.

Layout: a 64-byte header ``(epoch u64, count u32)`` then ``capacity`` records of
:data:`RECORD_SIZE` bytes: the address (UTF-8, NUL-padded), then the fields of
:class:`EndpointState`; then, per record, one u32 per worker slot: the requests that worker has
in flight at the endpoint (each slot written by its worker only; summed for ``GET /upstreams``,
so an operator sees when a drained endpoint has nothing left in flight). Records are appended by the supervisor only (when a generation that
names a new address is published) and never removed during a run; workers map addresses to
record numbers when they build a generation.

Writers, one per field: the supervisor writes ``drained``, ``health`` and ``revived_at`` (the
active checker and the admin API); workers write the ejection fields (passive outlier
detection: the last writer wins, which is harmless). Every change bumps ``epoch``; a worker
compares it (one 8-byte read) before each pick and re-reads the records when it moved, so a
drain reaches every worker's next request without any message.

Times are ``time.monotonic()`` seconds: one clock for every process of the node.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

HEADER_SIZE = 64
RECORD_SIZE = 256
ADDRESS_SIZE = 192
DEFAULT_CAPACITY = 65536
"""Addresses per node (16 MiB of address space; only the pages of records in use are touched)."""
_COUNT = struct.Struct("<I")
# drained, health, ejection_level, ejections, checks_failed, revived_at, ejected_until, last_checked, ejected_at
_FIELDS = struct.Struct("<IIIIIdddd")

SLOW_START_FLOOR = 0.1
"""The share of its weight an endpoint gets the moment it comes back; linear to 1 over ``slow_start``."""

PROVIDER_PREFIX = "provider:"
"""Records named ``provider:<name>`` hold an AI provider's probe verdict (fastgw.ai.probes)."""

HEALTH_UNKNOWN, HEALTHY, UNHEALTHY = 0, 1, 2
HEALTH_NAMES = {HEALTH_UNKNOWN: "unknown", HEALTHY: "healthy", UNHEALTHY: "unhealthy"}


@dataclass(slots=True)
class EndpointState:
    """One record, as read."""

    address: str
    drained: bool
    health: int  # HEALTH_UNKNOWN (no check, or none finished yet), HEALTHY, UNHEALTHY
    ejection_level: int  # how many times the back-off has doubled
    ejections: int  # ejections so far (metrics)
    checks_failed: int  # active checks that failed so far (metrics)
    revived_at: float  # when it last came back (healthy again, undrained, added by a push): slow start
    ejected_until: float  # passive ejection: out until then
    last_checked: float
    ejected_at: float


def slow_start_factor(since: float, now: float, slow_start: float) -> float:
    """An endpoint's share of its weight ``now`` when it came back at ``since``: from
    :data:`SLOW_START_FLOOR` rising linearly to 1 over ``slow_start`` seconds."""
    if slow_start <= 0 or now - since >= slow_start:
        return 1.0
    elapsed = max(0.0, now - since)
    return SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * elapsed / slow_start


class EndpointTable:
    """The shared mapping; see the module docstring."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, workers: int = 1) -> None:
        self.capacity = capacity
        self.workers = workers
        counters_at = HEADER_SIZE + RECORD_SIZE * capacity
        self._mm = mmap.mmap(-1, counters_at + 4 * capacity * workers, flags=mmap.MAP_SHARED)
        self._epoch = memoryview(self._mm)[:8].cast("Q")
        self._in_flight = memoryview(self._mm)[counters_at:].cast("I")
        self.slot = 0  # the worker slot this process counts in (bind)
        self._index: dict[str, int] = {}  # this process's view of address -> record
        self._seen = 0

    # -- the header ------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """Moves with every change of any record."""
        return self._epoch[0]

    def bump(self) -> None:
        self._epoch[0] = self._epoch[0] + 1

    @property
    def count(self) -> int:
        return _COUNT.unpack_from(self._mm, 8)[0]

    # -- addresses -------------------------------------------------------------------------

    def register(self, address: str, revived_at: float = float("-inf")) -> int | None:
        """The record of ``address``, appended if new (supervisor only); None when the table is
        full or the address too long (its endpoint then keeps a state of its own per worker).
        ``revived_at``: when it counts as having come back (slow start); -inf for never."""
        found = self.find(address)
        if found is not None:
            return found
        count = self.count
        data = address.encode()
        if count >= self.capacity or len(data) >= ADDRESS_SIZE:
            return None
        at = HEADER_SIZE + count * RECORD_SIZE
        self._mm[at : at + ADDRESS_SIZE] = data.ljust(ADDRESS_SIZE, b"\0")
        _FIELDS.pack_into(self._mm, at + ADDRESS_SIZE, 0, HEALTH_UNKNOWN, 0, 0, 0, revived_at, 0.0, 0.0, 0.0)
        _COUNT.pack_into(self._mm, 8, count + 1)  # after the record: a reader never sees half of one
        self._index[address] = count
        self.bump()
        return count

    def find(self, address: str) -> int | None:
        """The record of ``address``, or None if no generation named it yet."""
        count = self.count
        if count != self._seen:
            for record in range(self._seen, count):
                at = HEADER_SIZE + record * RECORD_SIZE
                self._index[self._mm[at : at + ADDRESS_SIZE].rstrip(b"\0").decode()] = record
            self._seen = count
        return self._index.get(address)

    # -- records ---------------------------------------------------------------------------

    def read(self, record: int) -> EndpointState:
        at = HEADER_SIZE + record * RECORD_SIZE
        address = self._mm[at : at + ADDRESS_SIZE].rstrip(b"\0").decode()
        drained, health, level, ejections, failed, revived, until, checked, ejected_at = _FIELDS.unpack_from(
            self._mm, at + ADDRESS_SIZE
        )
        return EndpointState(address, bool(drained), health, level, ejections, failed, revived, until, checked,
                             ejected_at)

    def states(self) -> list[EndpointState]:
        return [self.read(record) for record in range(self.count)]

    def _write(self, record: int, state: EndpointState) -> None:
        _FIELDS.pack_into(
            self._mm, HEADER_SIZE + record * RECORD_SIZE + ADDRESS_SIZE, int(state.drained), state.health,
            state.ejection_level, state.ejections, state.checks_failed, state.revived_at, state.ejected_until,
            state.last_checked, state.ejected_at,
        )
        self.bump()

    def set_drained(self, record: int, drained: bool, now: float) -> bool:
        """Drain or undrain (admin API); True if that changed anything. An undrained endpoint
        comes back through slow start."""
        state = self.read(record)
        if state.drained == drained:
            return False
        state.drained = drained
        if not drained:
            state.revived_at = now
        self._write(record, state)
        return True

    def set_health(self, record: int, health: int, now: float, *, failed_check: bool = False) -> None:
        """The active checker's verdict; becoming healthy again starts slow start."""
        state = self.read(record)
        changed = state.health != health
        if changed and health == HEALTHY and state.health == UNHEALTHY:
            state.revived_at = now
        state.health = health
        state.last_checked = now
        state.checks_failed += failed_check
        if changed or failed_check:
            self._write(record, state)
        else:  # only the time of the check: no worker needs to look again
            _FIELDS.pack_into(self._mm, HEADER_SIZE + record * RECORD_SIZE + ADDRESS_SIZE, int(state.drained),
                              state.health, state.ejection_level, state.ejections, state.checks_failed,
                              state.revived_at, state.ejected_until, state.last_checked, state.ejected_at)

    def eject(self, record: int, now: float, base: float, maximum: float) -> float:
        """Passive ejection (a worker): out for ``base`` doubled per ejection in a row, at most
        ``maximum``; an endpoint that stayed in for ``maximum`` since its last ejection ended
        starts again from ``base``. Returns the seconds ejected."""
        state = self.read(record)
        if state.ejected_until > now:
            return 0.0  # another worker was first
        if now - state.ejected_until > maximum:
            state.ejection_level = 0
        seconds = min(base * 2**state.ejection_level, maximum)
        state.ejection_level += 1
        state.ejections += 1
        state.ejected_at = now
        state.ejected_until = now + seconds
        state.revived_at = state.ejected_until  # slow start once it is back
        self._write(record, state)
        return seconds

    # -- requests in flight ----------------------------------------------------------------

    def bind(self, slot: int) -> None:
        """In a worker: count this process's requests in ``slot``'s column."""
        if not 0 <= slot < self.workers:
            raise IndexError(slot)
        self.slot = slot

    def add_in_flight(self, record: int, change: int) -> None:
        at = record * self.workers + self.slot
        value = self._in_flight[at] + change
        self._in_flight[at] = value if value > 0 else 0

    def in_flight(self, record: int) -> int:
        """Requests every worker has in flight at ``record``'s endpoint."""
        start = record * self.workers
        return sum(self._in_flight[start : start + self.workers])

    def clear_worker(self, slot: int) -> None:
        """A worker died (supervisor): what it had in flight is not any more."""
        for record in range(self.count):
            self._in_flight[record * self.workers + slot] = 0

    def close(self) -> None:
        self._in_flight.release()
        self._epoch.release()
        self._mm.close()

"""One node's concurrency slots: how many requests each key has in flight, per worker.

Lives beside :class:`~fastgw.limits.local.LocalLimitStore` (which owns one) in a ``memfd``
the supervisor maps before forking, so the workers of a node share one count per key.

Each entry is ``(key hash u64, worker pid u32, in flight i32, waiting i32, oldest f64)``:
a key's count is the sum of its entries, one per worker holding slots of it. ``waiting``
and ``oldest`` are that worker's queue for the key (``limits[].queue``): how many of its
requests wait for a slot, and when the first of them arrived (``time.monotonic()``, one
clock for every process of the machine). A waiter may take a slot only when the slots in
flight plus the waiters ahead of it are below the limit; the waiters ahead are its own
worker's older ones and every waiter of a worker whose oldest arrived earlier (an upper
bound: a worker's later waiters may be counted too, which can delay a younger waiter by
a poll, never let it overtake). The oldest waiter of the node always qualifies, and a
new request counts every waiter as ahead of it, so nobody jumps the queue. Keeping the holder's pid is what makes
a crash harmless: a worker SIGKILLed while it held slots never runs ``on_done``, so the
supervisor, when it reaps the worker, zeroes that pid's entries (:meth:`release_pid`)
and the node gets its slots back at once (no lease to wait out on one node).

The table is open addressing with linear probing over :data:`PROBE` entries. An entry
whose counts fell to 0 is reused in place (by any key); hashes are never reset to 0, so a
scan may stop at the first never-used entry without tombstones. Locking is the same POSIX
record lock as the limit store's (dropped by the kernel if its holder dies mid-update).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Sequence

PROBE = 64
"""Entries looked at per key: the most workers x keys that may collide in one window."""

_ENTRY = struct.Struct("<QIiid")


class SlotTableFull(RuntimeError):
    """Every entry in a key's probe window is busy: the slot cannot be recorded."""


class SlotTable:
    """Per-key in-flight counts of one node; see the module docstring."""

    def __init__(self, entries: int = 4096) -> None:
        if entries < PROBE or entries & (entries - 1):
            raise ValueError(f"entries must be a power of two >= {PROBE}")
        self._mask = entries - 1
        size = entries * _ENTRY.size
        self._fd = os.memfd_create("fastgw-slots")
        os.ftruncate(self._fd, size)
        self._mm = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)

    def _lock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)

    def _unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    def _scan(self, h: int, pid: int, arrival: float | None = None) -> tuple[int, int, int, int]:
        """``(in flight for h, offset of pid's entry or -1, offset of a free entry or -1,
        waiters ahead)``: with ``arrival`` None every waiter of h, else those of other
        workers whose oldest arrived before ``arrival``."""
        mm, mask = self._mm, self._mask
        total, own, free, ahead = 0, -1, -1, 0
        for i in range(PROBE):
            offset = ((h + i) & mask) * _ENTRY.size
            found, holder, count, waiting, oldest = _ENTRY.unpack_from(mm, offset)
            if found == 0:
                return total, own, free if free >= 0 else offset, ahead
            if found == h:
                total += count
                if holder == pid:
                    own = offset
                if waiting > 0 and (arrival is None or (holder != pid and oldest < arrival)):
                    ahead += waiting
            if count <= 0 and waiting <= 0 and free < 0:
                free = offset
        return total, own, free, ahead

    def acquire(
        self, items: Sequence[tuple[int, int]], pid: int, arrival: float | None = None,
        ahead_here: Sequence[int] | None = None,
    ) -> tuple[bool, list[int]]:
        """Take one slot of every ``(key hash, limit)`` for ``pid``, or none of them.

        A new request (``arrival`` None) counts every waiter of a key as ahead of it; a
        queued one, arrived at ``arrival``, counts ``ahead_here`` (its own worker's older
        waiters, per key) and other workers' waiters that arrived earlier (module docstring).
        Returns ``(allowed, in flight per key before this request)``. Raises
        :class:`SlotTableFull` (nothing taken) when an entry cannot be recorded.
        """
        self._lock()
        try:
            scans = [self._scan(h, pid, arrival) for h, _ in items]
            counts = [total for total, _, _, _ in scans]
            for i, ((_, limit), (total, _, _, ahead)) in enumerate(zip(items, scans, strict=True)):
                if ahead_here is not None:
                    ahead += ahead_here[i]
                if total + ahead >= limit:
                    return False, counts
            if any(own < 0 and free < 0 for _, own, free, _ in scans):
                raise SlotTableFull(f"all {PROBE} concurrency entries near a key are in use")
            done: list[int] = []
            for h, _ in items:  # scanned again per key: an entry one key takes may be another's free one
                _, own, free, _ = self._scan(h, pid)
                if own >= 0:
                    _, _, count, waiting, oldest = _ENTRY.unpack_from(self._mm, own)
                    _ENTRY.pack_into(self._mm, own, h, pid, count + 1, waiting, oldest)
                elif free >= 0:
                    _ENTRY.pack_into(self._mm, free, h, pid, 1, 0, 0.0)
                else:  # an earlier key of this request took the last free entry: none of them then
                    self._give_back(done, pid)
                    raise SlotTableFull(f"all {PROBE} concurrency entries near a key are in use")
                done.append(h)
            return True, counts
        finally:
            self._unlock()

    def set_waiting(self, h: int, pid: int, waiting: int, oldest: float, bound: int | None = None) -> bool:
        """Record that ``pid`` has ``waiting`` requests queued on key ``h``, the first since
        ``oldest``; with ``bound``, only if the key's waiters (this worker's counted as
        ``waiting``) stay within it. Returns whether it was recorded."""
        self._lock()
        try:
            _, own, free, everyone = self._scan(h, pid)
            if own >= 0:
                _, _, count, mine, _ = _ENTRY.unpack_from(self._mm, own)
            else:
                count, mine = 0, 0
            if bound is not None and everyone - mine + waiting > bound:
                return False
            at = own if own >= 0 else free
            if at < 0:
                if waiting <= 0:
                    return True
                raise SlotTableFull(f"all {PROBE} concurrency entries near a key are in use")
            _ENTRY.pack_into(self._mm, at, h, pid, count, max(0, waiting), oldest if waiting > 0 else 0.0)
            return True
        finally:
            self._unlock()

    def release(self, hashes: Sequence[int], pid: int) -> None:
        """Give back one slot of each key that ``pid`` took."""
        self._lock()
        try:
            self._give_back(hashes, pid)
        finally:
            self._unlock()

    def _give_back(self, hashes: Sequence[int], pid: int) -> None:
        for h in hashes:
            _, own, _, _ = self._scan(h, pid)
            if own >= 0:
                _, _, count, waiting, oldest = _ENTRY.unpack_from(self._mm, own)
                _ENTRY.pack_into(self._mm, own, h, pid, max(0, count - 1), waiting, oldest)

    def release_pid(self, pid: int) -> int:
        """Free every slot a (dead) worker held, and its queue places; returns how many
        slots. Called by the supervisor."""
        freed = 0
        self._lock()
        try:
            for offset in range(0, len(self._mm), _ENTRY.size):
                h, holder, count, waiting, _ = _ENTRY.unpack_from(self._mm, offset)
                if holder == pid and (count > 0 or waiting > 0):
                    freed += max(0, count)
                    _ENTRY.pack_into(self._mm, offset, h, pid, 0, 0, 0.0)
        finally:
            self._unlock()
        return freed

    def in_flight(self, h: int) -> int:
        """How many slots of key ``h`` are taken on this node."""
        self._lock()
        try:
            return self._scan(h, -1 & 0xFFFFFFFF)[0]
        finally:
            self._unlock()

    def waiting(self, h: int) -> int:
        """How many requests of this node wait for a slot of key ``h``."""
        self._lock()
        try:
            return self._scan(h, -1 & 0xFFFFFFFF)[3]
        finally:
            self._unlock()

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

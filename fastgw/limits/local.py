"""One node's limit counters and quota ledger, shared by all its workers.

Create one :class:`LocalLimitStore` in the supervisor *before* forking workers (next to
``ControlBlock``); every worker inherits the mapping and the file descriptor, so the
node has one budget, not one per worker (LiteLLM's "limit x replicas" bug, per process).

Layout (a ``memfd`` mapped ``MAP_SHARED``; pages are only touched when written):

* a 64-byte header: counters (evictions);
* ``slots`` rate slots ``(key hash u64, TAT f64)``: an open-addressing table, linear
  probing within :data:`PROBE` slots. A slot whose TAT has passed holds a full bucket,
  which is the same as no entry, so it is reused in place; slots are never emptied, which
  keeps probe chains intact without tombstones. When every slot in a key's probe window
  is busy, the one closest to full is evicted (counted): the table degrades by forgetting
  the least-used counter, never by failing;
* ``quota_slots`` quota slots ``(key hash u64, limit f64 (NaN: the rule's), used f64)``,
  never evicted: a budget must not be forgotten;
* beside them, in a memfd of its own, the concurrency slots (:mod:`fastgw.limits.slots`).

Locking: a POSIX record lock (``fcntl.lockf``) on the memfd, held for one synchronous
update (microseconds, no ``await`` inside). Chosen over a ``multiprocessing.Lock``
because the kernel drops a record lock when its holder dies: a worker SIGKILLed inside
the critical section cannot wedge the node's limiter (a semaphore would stay taken
forever and block every worker's event loop). Record locks belong to the process, not
the thread, so callers must not use one store from two threads of one process at once
(workers are single-threaded; :class:`fastgw.limits.quotas.QuotaAdmin` serialises the
supervisor's admin threads).

Times are ``time.monotonic()`` seconds: one clock for every process of the node.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
from collections.abc import Sequence

from fastgw import _speedups
from fastgw.limits import gcra

PROBE = 32
"""Rate slots looked at per key before evicting."""

_HEADER = 64
_EVICTIONS = struct.Struct("<Q")
_RATE = struct.Struct("<Qd")
_QUOTA = struct.Struct("<Qdd")


class QuotaTableFull(RuntimeError):
    """No quota slot is left for a new (rule, consumer): the ledger cannot grow."""


def key_hash(key: str) -> int:
    """A stable 64-bit hash (``hash()`` is salted per interpreter); 0 marks an empty slot."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1


RateItem = tuple[int, float, float, float]
"""``(key hash, period, limit, cost or delta)``."""
QuotaItem = tuple[int, float, float]
"""``(key hash, the rule's limit, amount or delta)``."""


class LocalLimitStore:
    """Shared counters for one node; see the module docstring for layout and locking."""

    def __init__(self, slots: int = 65536, quota_slots: int = 4096) -> None:
        for name, count in (("slots", slots), ("quota_slots", quota_slots)):
            if count < PROBE or count & (count - 1):
                raise ValueError(f"{name} must be a power of two >= {PROBE}")
        self._mask = slots - 1
        self._quota_mask = quota_slots - 1
        self._quotas_at = _HEADER + slots * _RATE.size
        size = self._quotas_at + quota_slots * _QUOTA.size
        self._fd = os.memfd_create("fastgw-limits")
        os.ftruncate(self._fd, size)
        self._mm = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)
        self.slots = _speedups.SlotTable()  # compiled or pure twin; concurrency limits: requests in flight per key and worker

    @property
    def evictions(self) -> int:
        return _EVICTIONS.unpack_from(self._mm, 0)[0]

    # -- locking ---------------------------------------------------------------------------

    def _lock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)

    def _unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    # -- rate slots ------------------------------------------------------------------------

    def _find(self, h: int) -> tuple[int, float] | None:
        """``(offset, TAT)`` of ``h``'s slot, or None."""
        mm, mask = self._mm, self._mask
        for i in range(PROBE):
            offset = _HEADER + ((h + i) & mask) * _RATE.size
            found, tat = _RATE.unpack_from(mm, offset)
            if found == h:
                return offset, tat
            if found == 0:
                return None
        return None

    def _place(self, h: int, now: float) -> int:
        """The offset where ``h`` lives or may be written (reusing or evicting a slot)."""
        mm, mask = self._mm, self._mask
        reusable = oldest = -1
        oldest_tat = math.inf
        for i in range(PROBE):
            offset = _HEADER + ((h + i) & mask) * _RATE.size
            found, tat = _RATE.unpack_from(mm, offset)
            if found == h:
                return offset
            if found == 0:
                return reusable if reusable >= 0 else offset
            if tat <= now and reusable < 0:
                reusable = offset
            if tat < oldest_tat:
                oldest, oldest_tat = offset, tat
        if reusable >= 0:
            return reusable
        _EVICTIONS.pack_into(mm, 0, self.evictions + 1)
        return oldest

    # -- quota slots -----------------------------------------------------------------------

    def _quota_slot(self, h: int, create: bool) -> int | None:
        mm, mask = self._mm, self._quota_mask
        for i in range(mask + 1):
            offset = self._quotas_at + ((h + i) & mask) * _QUOTA.size
            found = _QUOTA.unpack_from(mm, offset)[0]
            if found == h:
                return offset
            if found == 0:
                if not create:
                    return None
                _QUOTA.pack_into(mm, offset, h, math.nan, 0.0)
                return offset
        if create:
            raise QuotaTableFull(f"all {mask + 1} quota slots are in use")
        return None

    def _quota_state(self, h: int, default: float) -> tuple[int | None, float, float]:
        """``(offset or None, limit, used)``."""
        offset = self._quota_slot(h, create=False)
        if offset is None:
            return None, default, 0.0
        _, limit, used = _QUOTA.unpack_from(self._mm, offset)
        return offset, default if math.isnan(limit) else limit, used

    # -- requests --------------------------------------------------------------------------

    def reserve(
        self, rates: Sequence[RateItem], quotas: Sequence[QuotaItem], now: float
    ) -> tuple[bool, list[gcra.Verdict], list[tuple[bool, float, float]]]:
        """Check every rate and quota item, then charge all of them or none.

        Returns ``(allowed, verdicts, quotas)``; each quota is ``(fits, limit, used)`` with
        ``used`` after charging if allowed. Raises :class:`QuotaTableFull`.
        """
        self._lock()
        try:
            verdicts = []
            for h, period, limit, cost in rates:
                found = self._find(h)
                verdicts.append(gcra.check(found[1] if found else now, now, period, limit, cost))
            states = [(self._quota_state(h, default), amount) for h, default, amount in quotas]
            fits = [used + amount <= limit for (_, limit, used), amount in states]
            allowed = all(v.allowed for v in verdicts) and all(fits)
            if not allowed:
                return (
                    False,
                    verdicts,
                    [(ok, limit, used) for ok, ((_, limit, used), _) in zip(fits, states, strict=True)],
                )
            # Quota slots first: running out of them raises before anything was charged.
            offsets = [
                self._quota_slot(h, create=True) if offset is None else offset
                for (h, _, _), ((offset, _, _), _) in zip(quotas, states, strict=True)
            ]
            for (h, *_), verdict in zip(rates, verdicts, strict=True):
                _RATE.pack_into(self._mm, self._place(h, now), h, verdict.tat)
            charged = []
            for offset, ((_, limit, used), amount) in zip(offsets, states, strict=True):
                self._set_used(offset, used + amount)
                charged.append((True, limit, used + amount))
            return True, verdicts, charged
        finally:
            self._unlock()

    def settle(self, rates: Sequence[RateItem], quotas: Sequence[QuotaItem], now: float) -> None:
        """Apply reconciliation deltas (refunds when negative); a forgotten key stays forgotten."""
        self._lock()
        try:
            for h, period, limit, delta in rates:
                found = self._find(h)
                if found is not None:
                    _RATE.pack_into(self._mm, found[0], h, gcra.adjust(found[1], now, period, limit, delta))
                elif delta > 0:
                    _RATE.pack_into(
                        self._mm, self._place(h, now), h, gcra.adjust(now, now, period, limit, delta)
                    )
            for h, _, delta in quotas:
                offset = self._quota_slot(h, create=delta > 0)
                if offset is not None:
                    self._set_used(offset, max(0.0, _QUOTA.unpack_from(self._mm, offset)[2] + delta))
        finally:
            self._unlock()

    def _set_used(self, offset: int, used: float) -> None:
        struct.pack_into("<d", self._mm, offset + 16, used)

    # -- quota administration ---------------------------------------------------------------

    def quota(self, h: int, default: float) -> tuple[float, float]:
        """``(limit, used)`` of one ledger entry."""
        self._lock()
        try:
            _, limit, used = self._quota_state(h, default)
            return limit, used
        finally:
            self._unlock()

    def update_quota(
        self,
        h: int,
        default: float,
        *,
        limit: float | None = None,
        add: float = 0.0,
        used: float | None = None,
    ) -> tuple[float, float]:
        """Set the limit, then raise it by ``add``, and/or set ``used``; returns ``(limit, used)``.

        An entry never given a limit keeps following the rule's (a config change applies).
        """
        self._lock()
        try:
            offset = self._quota_slot(h, create=True)
            assert offset is not None
            _, stored, old_used = _QUOTA.unpack_from(self._mm, offset)
            if limit is not None:
                stored = limit
            if add:  # NaN (no override yet) starts from the rule's limit
                stored = (default if math.isnan(stored) else stored) + add
            new_used = old_used if used is None else used
            _QUOTA.pack_into(self._mm, offset, h, stored, new_used)
            return (default if math.isnan(stored) else stored), new_used
        finally:
            self._unlock()

    def close(self) -> None:
        self.slots.close()
        self._mm.close()
        os.close(self._fd)

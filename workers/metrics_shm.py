"""Per-worker metric snapshots in shared memory, and their aggregation in the supervisor.

A separate anonymous ``MAP_SHARED`` mapping (not part of :class:`workers.shm.ControlBlock`,
whose layout the config push depends on), created by the supervisor before it forks.
Each worker slot owns one region that only its worker writes (about once a second, see
:mod:`fastgw.obs.metrics`), so writers never contend; a per-region seqlock lets the
supervisor's admin thread copy a snapshot without ever seeing a torn one, and a CRC
catches what a seqlock alone would miss on weakly ordered CPUs. Pages are only touched
when written, so reserving 1 MiB per slot costs nothing until it is used.
"""

from __future__ import annotations

import marshal
import mmap
import struct
import threading
import time
import zlib
from dataclasses import dataclass

from fastgw.obs.metrics import GATEWAY, Registry, Snapshot, merge

SLOT_SIZE = 1024 * 1024
HEADER_SIZE = 64
# seq, pid, length, crc32
_HEADER = struct.Struct("<QqII")
READ_TRIES = 200
"""Attempts (0.5 ms apart while a write is in progress) before a read gives up."""


class MetricsArea:
    """``max_workers`` regions of ``slot_size`` bytes: a header, then a marshalled snapshot."""

    def __init__(self, max_workers: int, slot_size: int = SLOT_SIZE) -> None:
        if max_workers < 1 or slot_size <= HEADER_SIZE or slot_size % 8:
            raise ValueError("need at least one worker and a slot size above 64 that is a multiple of 8")
        self.max_workers = max_workers
        self.slot_size = slot_size
        self.capacity = slot_size - HEADER_SIZE
        self._mm = mmap.mmap(-1, max_workers * slot_size, flags=mmap.MAP_SHARED)
        # Eight-byte loads and stores of the sequence numbers, without building tuples.
        self._seqs = memoryview(self._mm).cast("Q")

    def _offset(self, slot: int) -> int:
        if not 0 <= slot < self.max_workers:
            raise IndexError(slot)
        return slot * self.slot_size

    def write(self, slot: int, pid: int, blob: bytes) -> None:
        """Replace ``slot``'s snapshot (only that slot's worker calls this)."""
        if len(blob) > self.capacity:
            raise ValueError(f"snapshot of {len(blob)} bytes does not fit in {self.capacity}")
        start = self._offset(slot)
        index = start // 8
        odd = self._seqs[index] | 1  # already odd if a previous worker died mid-write
        self._seqs[index] = odd
        self._mm[start + HEADER_SIZE : start + HEADER_SIZE + len(blob)] = blob
        _HEADER.pack_into(self._mm, start, odd, pid, len(blob), zlib.crc32(blob))
        self._seqs[index] = odd + 1

    def read(self, slot: int) -> tuple[int, int, bytes] | None:
        """``(seq, pid, snapshot bytes)``, or None if never written or no stable copy was had.

        A writer that died mid-write leaves the sequence odd forever: the caller keeps
        the copy it read before.
        """
        start = self._offset(slot)
        index = start // 8
        for _ in range(READ_TRIES):
            seq = self._seqs[index]
            if seq == 0:
                return None
            if seq & 1:
                time.sleep(0.0005)
                continue
            _, pid, length, crc = _HEADER.unpack_from(self._mm, start)
            blob = self._mm[start + HEADER_SIZE : start + HEADER_SIZE + min(length, self.capacity)]
            if self._seqs[index] == seq and zlib.crc32(blob) == crc:
                return seq, pid, blob
        return None

    def clear(self, slot: int) -> None:
        start = self._offset(slot)
        self._mm[start : start + HEADER_SIZE] = bytes(HEADER_SIZE)

    def close(self) -> None:
        self._seqs.release()
        self._mm.close()


@dataclass(slots=True)
class _Latest:
    seq: int
    pid: int
    snapshot: Snapshot


class WorkerMetrics:
    """The supervisor's view: every live worker's latest snapshot plus the retired total.

    A restarted worker counts from zero, so the last snapshot of each dead worker is
    folded into ``retired`` and stays in every sum: aggregated counters only go up.
    Methods take a lock: the admin thread scrapes while the main thread retires.
    """

    def __init__(self, max_workers: int, slot_size: int = SLOT_SIZE) -> None:
        self.area = MetricsArea(max_workers, slot_size)
        self._latest: list[_Latest | None] = [None] * max_workers
        self._retired: Snapshot = {}
        self._lock = threading.Lock()

    def bind_worker(self, slot: int, registry: Registry = GATEWAY.registry) -> None:
        """In the forked worker: publish ``registry`` into ``slot``."""
        registry.bind(self.area, slot)

    def _refresh(self, slot: int) -> None:
        """Read ``slot`` if it changed; a new pid there means the previous worker is gone."""
        found = self.area.read(slot)
        latest = self._latest[slot]
        if found is None or (latest is not None and latest.seq == found[0] and latest.pid == found[1]):
            return
        seq, pid, blob = found
        if latest is not None and latest.pid != pid:
            merge(self._retired, latest.snapshot)
        self._latest[slot] = _Latest(seq, pid, marshal.loads(blob))

    def retire(self, slot: int, pid: int) -> None:
        """The worker ``pid`` in ``slot`` exited: fold its final snapshot into the retired total.

        Call it when reaping, before the slot is respawned, so no snapshot is lost to the
        next worker's first write.
        """
        with self._lock:
            self._refresh(slot)
            latest = self._latest[slot]
            if latest is not None and latest.pid == pid:
                merge(self._retired, latest.snapshot)
                self._latest[slot] = None
                self.area.clear(slot)

    def collect(self) -> Snapshot:
        """The sum over retired and live workers (a fresh structure the caller may keep)."""
        with self._lock:
            for slot in range(self.area.max_workers):
                self._refresh(slot)  # first: it may fold a replaced worker into the retired total
            total = merge({}, self._retired)
            for latest in self._latest:
                if latest is not None:
                    merge(total, latest.snapshot)
            return total

    def close(self) -> None:
        self.area.close()

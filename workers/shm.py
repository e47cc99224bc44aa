"""Shared memory between the supervisor and its workers.

One anonymous ``MAP_SHARED`` mapping, created by the supervisor *before* it forks, so
every worker inherits it with no files to name or clean up:

* a seqlock-protected header naming the live config generation and where its blob is;
* two blob slots (double buffer): a new generation is written into the slot that is
  not live, then published by bumping the sequence number. Pages are only touched
  when written, so reserving a large slot costs no memory;
* the node's admin-drain flag (``POST /drain``), read by workers on their tick;
* one status record per worker slot (pid, generation served, the last generation it
  could not load, heartbeat, counters), written by the worker from inside its event loop
  and read by the supervisor; with it, the slot's last load error as text.

Workers poll ``seq`` (one 8-byte read) per new request and on a short timer; it only
changes when a generation is published.
"""

from __future__ import annotations

import mmap
import struct
import time
import zlib
from dataclasses import dataclass

HEADER_SIZE = 64
# seq, generation, slot, length, crc32
_HEADER = struct.Struct("<QQIII")
_NODE_AT = 32
"""Offset of the node's admin-drain flag (a uint32 of its own, outside the seqlock)."""
RECORD_SIZE = 64
# pid, generation, heartbeat, started, requests_total, active_requests, connections, state, failed_generation
_RECORD = struct.Struct("<qQddQIIIQ")
ERROR_SIZE = 1024
"""Bytes of a slot's load error (UTF-8, NUL-padded): why its worker refused a generation."""
MAX_WORKERS = 256
DEFAULT_SLOT_SIZE = 64 * 1024 * 1024

STATE_EMPTY = 0
STATE_BOOTING = 1
STATE_READY = 2
STATE_DRAINING = 3
STATE_NAMES = {STATE_EMPTY: "empty", STATE_BOOTING: "booting", STATE_READY: "ready", STATE_DRAINING: "draining"}


class BlobTooLarge(ValueError):
    """A generation does not fit in a slot (the supervisor rejects the push)."""


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    slot: int
    pid: int
    generation: int
    heartbeat: float
    started: float
    requests_total: int
    active_requests: int
    connections: int
    state: int
    failed_generation: int

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "unknown")


class ControlBlock:
    """The shared mapping; see the module docstring for its layout."""

    def __init__(self, max_workers: int = MAX_WORKERS, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        if not 1 <= max_workers <= MAX_WORKERS:
            raise ValueError(f"max_workers must be within 1..{MAX_WORKERS}")
        self.max_workers = max_workers
        self.slot_size = slot_size
        self._records_at = HEADER_SIZE
        self._errors_at = HEADER_SIZE + RECORD_SIZE * max_workers
        self._slots_at = self._errors_at + ERROR_SIZE * max_workers
        self._mm = mmap.mmap(-1, self._slots_at + 2 * slot_size, flags=mmap.MAP_SHARED)
        # A cast view reads the sequence number without building a tuple: this runs per request.
        self._seq_view = memoryview(self._mm)[:8].cast("Q")
        self._node_view = memoryview(self._mm)[_NODE_AT : _NODE_AT + 4].cast("I")

    # -- generations -------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """Changes (by 2) with every publish; odd while a publish is being written."""
        return self._seq_view[0]

    def check_size(self, blob: bytes) -> None:
        """Raise :class:`BlobTooLarge` if ``blob`` would not fit in a slot."""
        if len(blob) > self.slot_size:
            raise BlobTooLarge(f"generation is {len(blob)} bytes, slot holds {self.slot_size}")

    def publish(self, generation: int, blob: bytes) -> None:
        """Write ``blob`` into the idle slot and make it the live generation (supervisor only)."""
        self.check_size(blob)
        seq, _, live_slot, _, _ = _HEADER.unpack_from(self._mm, 0)
        slot = 1 - live_slot if seq else 0
        start = self._slots_at + slot * self.slot_size
        self._mm[start : start + len(blob)] = blob
        self._seq_view[0] = seq + 1  # odd: readers retry until the header is whole again
        _HEADER.pack_into(self._mm, 0, seq + 1, generation, slot, len(blob), zlib.crc32(blob))
        self._seq_view[0] = seq + 2

    def read(self) -> tuple[int, int, bytes] | None:
        """Return ``(seq, generation, blob)`` of the live generation, or None if none yet.

        A reader that overlaps a publish sees the sequence number change and retries; the
        CRC guards against a slot rewritten twice while we copied it.
        """
        for _ in range(1000):
            seq1 = self._seq_view[0]
            if seq1 == 0:
                return None
            if seq1 & 1:
                time.sleep(0.0005)
                continue
            _, generation, slot, length, crc = _HEADER.unpack_from(self._mm, 0)
            start = self._slots_at + slot * self.slot_size
            blob = self._mm[start : start + length]
            if self._seq_view[0] == seq1 and zlib.crc32(blob) == crc:
                return seq1, generation, blob
        raise RuntimeError("could not read a stable generation from shared memory")

    # -- node drain (POST /drain) ---------------------------------------------------------

    @property
    def draining(self) -> bool:
        """The admin asked this node to drain: workers stop accepting until it is cleared."""
        return bool(self._node_view[0])

    def set_draining(self, draining: bool) -> None:
        """Supervisor only; workers follow on their next tick."""
        self._node_view[0] = int(draining)

    # -- worker records ----------------------------------------------------------------

    def _slot_index(self, slot: int) -> int:
        if not 0 <= slot < self.max_workers:
            raise IndexError(slot)
        return slot

    def _record_offset(self, slot: int) -> int:
        return self._records_at + self._slot_index(slot) * RECORD_SIZE

    def write_record(
        self,
        slot: int,
        *,
        pid: int,
        generation: int,
        heartbeat: float,
        started: float,
        requests_total: int,
        active_requests: int,
        connections: int,
        state: int,
        failed_generation: int = 0,
    ) -> None:
        _RECORD.pack_into(
            self._mm,
            self._record_offset(slot),
            pid,
            generation,
            heartbeat,
            started,
            requests_total,
            active_requests,
            connections,
            state,
            failed_generation,
        )

    def write_error(self, slot: int, message: str) -> None:
        """Why the slot's worker could not load a generation; written before the record names it."""
        data = message.encode()[: ERROR_SIZE - 1]
        start = self._errors_at + self._slot_index(slot) * ERROR_SIZE
        self._mm[start : start + ERROR_SIZE] = data.ljust(ERROR_SIZE, b"\0")

    def read_error(self, slot: int) -> str:
        start = self._errors_at + self._slot_index(slot) * ERROR_SIZE
        return self._mm[start : start + ERROR_SIZE].split(b"\0", 1)[0].decode(errors="replace")

    def read_record(self, slot: int) -> WorkerRecord:
        return WorkerRecord(slot, *_RECORD.unpack_from(self._mm, self._record_offset(slot)))

    def clear_record(self, slot: int) -> None:
        self._mm[self._record_offset(slot) : self._record_offset(slot) + RECORD_SIZE] = bytes(RECORD_SIZE)
        self.write_error(slot, "")

    def close(self) -> None:
        self._seq_view.release()
        self._node_view.release()
        self._mm.close()

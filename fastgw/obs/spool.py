"""A worker's usage spool: an append-only file of the usage records Redis could not take yet.

One file per worker slot (``{dir}/usage-{slot}.spool``), one JSON record per line. Appends
are written and fsync'd a batch at a time (callers run them off the event loop), within
``max_bytes``: what does not fit is refused, and the caller counts it. Replay reads from
the start; the file is truncated only once everything in it reached the stream, and the
stream write is idempotent (see :class:`fastgw.obs.accesslog.UsageSink`), so a crash in
between replays records that are then skipped, never doubled. A record torn by a crash in
the middle of an append (a last line without its newline) is cut off when the file is
opened again and reported as lost. An ``flock`` keeps a second process off the file.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

READ_BLOCK = 1 << 20


class SpoolBusy(OSError):
    """Another process holds the spool file (two gateways configured with one directory)."""


class Spool:
    """The spool file of one worker slot; not thread-safe: one caller at a time."""

    def __init__(self, directory: str, slot: int, max_bytes: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"usage-{slot}.spool")
        self.max_bytes = max_bytes
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SpoolBusy(f"spool file {self.path} is in use by another process") from None
        self.size = os.fstat(self._fd).st_size
        self.read_at = 0
        self.torn = self._cut_torn_tail()

    @property
    def pending(self) -> bool:
        """Records wait in the file for the stream."""
        return self.size > self.read_at

    def _cut_torn_tail(self) -> int:
        """Drop a last line a crash left without its newline; returns its length in bytes."""
        end = self.size
        at = end
        while at > 0:
            start = max(0, at - 65536)
            block = os.pread(self._fd, at - start, start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            at = start
        else:
            keep = 0
        if keep < end:
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
            self.size = keep
        return end - keep

    def append(self, records: list[dict[str, Any]]) -> int:
        """Write and fsync ``records`` (blocking); returns how many did not fit in ``max_bytes``."""
        lines = [(json.dumps(record, separators=(",", ":")) + "\n").encode() for record in records]
        room = self.max_bytes - self.size
        fit = 0
        used = 0
        for line in lines:
            if used + len(line) > room:
                break
            used += len(line)
            fit += 1
        if fit:
            data = b"".join(lines[:fit])
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
            self.size += len(data)
        return len(lines) - fit

    def read(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` records from the replay position, and the offset after them."""
        records: list[dict[str, Any]] = []
        at = self.read_at
        while len(records) < limit and at < self.size:
            block = os.pread(self._fd, min(READ_BLOCK, self.size - at), at)
            newline = block.rfind(b"\n")
            if newline < 0:  # one line longer than a block: read it whole
                block = os.pread(self._fd, self.size - at, at)
                newline = block.rfind(b"\n")
            for line in block[: newline + 1].splitlines(keepends=True):
                if len(records) == limit:
                    break
                records.append(json.loads(line))
                at += len(line)
        return records, at

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` reached the stream; an emptied file is truncated."""
        self.read_at = offset
        if self.read_at >= self.size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self.size = self.read_at = 0

    def absorb_orphans(self, workers: int) -> tuple[int, int]:
        """Take over the files of slots a smaller restart no longer runs (slot ``j >= workers``
        goes to slot ``j % workers``): their records are appended here, then the file removed.

        Returns ``(moved, dropped)``. A crash before the removal leaves copies that the
        stream's high-water marks skip on replay."""
        directory, mine = os.path.split(self.path)
        slot = int(mine[len("usage-") : -len(".spool")])
        moved = dropped = 0
        for name in sorted(os.listdir(directory)):
            number = name[len("usage-") : -len(".spool")]
            if not (name.startswith("usage-") and name.endswith(".spool") and number.isdigit()):
                continue
            other_slot = int(number)
            if other_slot < workers or other_slot % workers != slot:
                continue
            try:
                other = Spool(directory, other_slot, max_bytes=self.max_bytes)
            except SpoolBusy:  # still written by a worker of another process: not an orphan
                continue
            try:
                while other.pending:
                    records, offset = other.read(10_000)
                    dropped += self.append(records)
                    moved += len(records)
                    other.read_at = offset
                os.unlink(other.path)
            finally:
                other.close()
        return moved, dropped

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1

"""The trial build of a pushed generation: a forked child does what every worker will do.

A config can validate and still not build: a plugin that fails on import, a semantic cache
without numpy. The supervisor therefore builds each pushed generation before publishing it,
in a child forked from itself exactly as workers are (same interpreter, modules, environment,
optional dependencies), with the workers' own code (:func:`workers.worker.trial_build`). The
supervisor itself stays free of worker code: only the child imports it.

The child reports through a pipe: one NUL byte if the generation built, else why not.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable

from fastgw.limits.local import LocalLimitStore
from fastgw.proc import die_with_parent

_BUILT = b"\0"
MAX_REASON = select.PIPE_BUF
"""Bytes of a reason: one write of at most PIPE_BUF is atomic, so the parent reads it whole."""


class GenerationRefused(Exception):
    """A pushed generation that did not become live anywhere; ``status`` is the admin API's answer
    (409: it cannot be built; 500: a worker did not load it)."""

    def __init__(self, status: int, generation: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.generation = generation
        self.reason = reason


def trial_build(
    blob: bytes, limit_store: LocalLimitStore, *, timeout: float, in_child: Callable[[], None]
) -> str | None:
    """Build ``blob`` in a forked child; None if it built, else the reason it did not.

    ``in_child`` runs first in the child, to shed the supervisor's state (signal wake-up).
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(blob, limit_store, write_end, parent, in_child)
    os.close(write_end)
    try:
        return _result(pid, read_end, timeout)
    finally:
        os.close(read_end)
        with contextlib.suppress(ChildProcessError):  # the supervisor's loop may have reaped it
            os.waitpid(pid, 0)


def _child(
    blob: bytes, limit_store: LocalLimitStore, out: int, parent: int, in_child: Callable[[], None]
) -> None:
    """Never returns; writes only through ``os.write`` (another thread may have held a stdio lock)."""
    reason = _BUILT
    try:
        in_child()
        if not die_with_parent(signal.SIGKILL, parent):
            os._exit(1)
        from workers.worker import trial_build as build

        build(blob, limit_store)
    except BaseException as exc:  # anything at all: the report is the point
        from fastgw.extras import describe_failure

        reason = describe_failure(exc).encode()[:MAX_REASON] or b"?"
    try:
        os.write(out, reason)
    finally:
        os._exit(0)


def _result(pid: int, read_end: int, timeout: float) -> str | None:
    """The child's one write (at most PIPE_BUF bytes, so it arrives whole), or EOF if it died first."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return f"the trial build took longer than {timeout:g}s"
        if select.select([read_end], [], [], left)[0]:
            break
    data = os.read(read_end, MAX_REASON)
    if data == _BUILT:
        return None
    return data.decode(errors="replace") if data else "the trial build died without a word (see the log)"

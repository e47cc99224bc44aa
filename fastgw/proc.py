"""Process plumbing shared by the gateway's supervisor (``workers/supervisor.py``) and the mock LLM's
fork supervisor (``fastgw/mock/process.py``)."""

from __future__ import annotations

import ctypes
import os
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent: int) -> bool:
    """In a forked child: have the kernel send ``sig`` to it when its parent dies, even by SIGKILL, so a
    killed parent leaves no orphans (Linux ``prctl(PR_SET_PDEATHSIG)``; nothing is set elsewhere).

    Returns False when ``parent`` (the pid that forked this process) is already gone, i.e. it died before
    the request took effect: the caller should exit. Raises OSError if the kernel refuses.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent


class _Pid:
    """This process's pid without a system call per use: read once, and again in a forked child."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.value = os.getpid()


PID = _Pid()
"""``PID.value`` is ``os.getpid()``, kept current across forks."""

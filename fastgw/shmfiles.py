"""Files a node keeps on tmpfs (``/dev/shm``): named after their supervisor, removed with it.

Today that is the node's response cache (:class:`fastgw.cache.store.NodeStore`). Each file is
named by its supervisor's pid *and start time*, so a later process that reuses the pid never
adopts it, in a directory only this user may enter (``/dev/shm`` is world-writable: another
user could otherwise plant the file or its ``-wal``). A supervisor removes its files when it
stops; one that was killed (SIGKILL, OOM) cannot, so every supervisor also removes, when it
starts, the files of supervisors that no longer run. Stdlib only: the supervisor imports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile

_NODE_FILE = re.compile(r"cache-(?P<pid>\d+)(?P<started>-\d+)?\.sqlite(?:-wal|-shm)?\Z")
SUFFIXES = ("", "-wal", "-shm")
"""The database and SQLite's WAL-mode companions."""


def _started(pid: int) -> str | None:
    """``-<start time>`` of a running process (field 22 of /proc/PID/stat), ``""`` if unreadable,
    None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # field 22, after the ")" closing the name
            return "-" + f.read().rsplit(b")", 1)[1].split()[19].decode()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        return ""


def directory() -> str:
    """This user's private directory on tmpfs (created on first use)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    path = os.path.join(base, f"fastgw-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a directory private to this user")
    return path


def node_path(supervisor: int | None = None) -> str:
    """The cache file of the calling worker's node: its supervisor's (the worker's parent
    process, or ``supervisor`` when the supervisor itself asks)."""
    pid = os.getppid() if supervisor is None else supervisor
    return os.path.join(directory(), f"cache-{pid}{_started(pid) or ''}.sqlite")


def remove_node_files(supervisor: int) -> None:
    """A stopping supervisor's own files."""
    path = node_path(supervisor)
    for suffix in SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def remove_orphans() -> list[str]:
    """Remove the files of supervisors that no longer run (killed before they could); returns
    their names. Files of running supervisors, this user's other gateways, are left alone."""
    try:
        folder = directory()
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _NODE_FILE.match(name)
        if m is None:
            continue
        running = _started(int(m["pid"]))
        if running is not None and (running == (m["started"] or "") or running == "" or not m["started"]):
            continue  # that supervisor (or, unknowable, maybe it) still runs
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed

"""Where a node's shared cache file lives in memory, and removing those a dead node left.

Stdlib only: the supervisor imports it before forking (no event loop, no I/O library).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile


def node_path(supervisor: int | None = None) -> str:
    """The file of the calling worker's node: its supervisor (the worker's parent process,
    or ``supervisor`` when the supervisor itself asks, to remove the file at exit).

    Named by the supervisor's pid and start time, so a later process that reuses the pid
    starts empty, in a directory only this user may enter (``/dev/shm`` is world-writable:
    another user could otherwise plant the file or its ``-wal``). The files of a supervisor
    that died without removing them are removed by the next one's start
    (:func:`remove_stale_node_files`).
    """
    pid = os.getppid() if supervisor is None else supervisor
    return os.path.join(_node_directory(), f"cache-{pid}{_start_tag(pid) or ''}.sqlite")


def _start_tag(pid: int) -> str | None:
    """``-<start time>`` of process ``pid`` (field 22 of its stat), ``""`` when /proc cannot
    say, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # field 22, after the ")" closing the name
            return "-" + f.read().rsplit(b")", 1)[1].split()[19].decode()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        return ""


def _node_directory() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    directory = os.path.join(base, f"fastgw-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{directory} is not a directory private to this user")
    return directory


_NODE_FILE = re.compile(r"cache-(\d+)(-\d+)?\.sqlite(?:-wal|-shm)?")


def remove_stale_node_files() -> list[str]:
    """Remove the node-cache files of supervisors that died without removing them (SIGKILL,
    the OOM killer): a file is stale when no running process has its pid *and* start time.
    Files of gateways still running are kept. Returns the names removed."""
    directory = _node_directory()
    removed = []
    for name in sorted(os.listdir(directory)):
        match = _NODE_FILE.fullmatch(name)
        if match is None:
            continue
        if _start_tag(int(match[1])) == (match[2] or ""):
            continue  # its supervisor is alive
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed

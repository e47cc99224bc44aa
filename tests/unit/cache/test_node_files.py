"""Node-cache files in /dev/shm: a supervisor that died without removing its own (SIGKILL)
leaves files the next start removes, while files of running gateways stay."""

from __future__ import annotations

import os
import subprocess
import sys

from fastgw.cache.nodefile import node_path, remove_stale_node_files


def touch(path: str) -> None:
    with open(path, "wb"):
        pass


def test_stale_files_go_and_live_ones_stay() -> None:
    live = node_path(os.getpid())  # this process is "a running supervisor"
    directory = os.path.dirname(live)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [os.path.join(directory, f"cache-{dead_pid}-12345.sqlite{suffix}") for suffix in ("", "-wal", "-shm")]
    reused = live.replace(".sqlite", "").rsplit("-", 1)[0] + "-1.sqlite"  # our pid, another start time
    unrelated = os.path.join(directory, "notes.txt")
    for path in (live, *stale, reused, unrelated):
        touch(path)
    try:
        removed = remove_stale_node_files()
        assert {os.path.basename(p) for p in (*stale, reused)} <= set(removed)
        assert os.path.exists(live) and os.path.exists(unrelated)
        assert not any(os.path.exists(p) for p in (*stale, reused))
    finally:
        for path in (live, *stale, reused, unrelated):
            if os.path.exists(path):
                os.unlink(path)

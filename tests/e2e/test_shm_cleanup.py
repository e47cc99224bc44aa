"""A node's files on tmpfs go with it, even when its supervisor was SIGKILLed and could not remove them.

The node cache (``cache.store: memory``) is a SQLite file in ``/dev/shm`` named after the
supervisor (pid and start time). A killed supervisor leaves it behind; the next one to start
removes it, and leaves the files of supervisors that still run alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai

from fastgw.cache.nodefile import node_path
from tests.support.gateway import Gateway

SUFFIXES = ("", "-wal", "-shm")


def directory() -> str:
    return os.path.dirname(node_path(os.getpid()))

CONFIG = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
    "cache": {"ttl": "5m"},
}


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_files_of_a_killed_supervisor_are_removed_at_the_next_start(tmp_path: Path) -> None:
    first = Gateway(CONFIG, tmp_path, workers=2)
    path = node_path(first.proc.pid)
    workers = [w["pid"] for w in first.status()["workers"]]
    client = openai.OpenAI(base_url=first.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "cache me"}])
    assert os.path.exists(path), os.listdir(directory())
    leftovers = [path + suffix for suffix in SUFFIXES if os.path.exists(path + suffix)]

    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    assert all(gone(pid) for pid in workers)  # the kernel took the workers with it
    assert all(os.path.exists(p) for p in leftovers)  # and nobody cleaned up

    # A file of a supervisor that still runs (this test process stands in) must stay.
    alive = node_path(os.getpid())
    Path(alive).write_bytes(b"")
    # And one of a pid that runs again, but as another process (started later): an orphan too.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    reused = os.path.join(directory(), f"cache-{sleeper.pid}-1.sqlite")
    Path(reused).write_bytes(b"")
    try:
        second = Gateway(CONFIG, tmp_path, workers=1)
        try:
            assert not any(os.path.exists(p) for p in leftovers)
            assert not os.path.exists(reused)
            assert os.path.exists(alive)
            own = node_path(second.proc.pid)
            client = openai.OpenAI(base_url=second.url + "/v1", api_key="unused", max_retries=0)
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "cache me"}])
            assert os.path.exists(own)
        finally:
            assert second.stop() == 0
        assert "node-cache file(s) left by a gateway that did not stop cleanly" in second.stderr_text()
        assert not any(os.path.exists(own + suffix) for suffix in SUFFIXES)  # a clean stop removes its own
    finally:
        sleeper.kill()
        sleeper.wait()
        os.unlink(alive)

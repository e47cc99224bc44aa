"""The supervisor with real processes and sockets: readiness, respawn, drain, pushes, admin API.

Most tests run the real ``fastgw run``. A few need worker behaviour the real worker should
never show (failing at boot, ignoring SIGTERM, a stalled loop on a short watchdog); they run
the supervisor with a small stand-in worker instead (:data:`STANDIN`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from fastgw.cache.nodefile import node_path
from tests.support.gateway import ROOT, Gateway, Proc, RawClient, free_port, http_json

MOCK = {
    "http": {"drain_timeout": "2s"},
    "providers": [{"name": "mock", "type": "mock", "api_keys": ["sk-very-secret"]}],
    "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
}

# -- helpers ----------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc (R, S, T, Z...), None once the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def get(port: int, path: str = "/v1/models", timeout: float = 15.0) -> int:
    """One request on a fresh connection; raises on any connection error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def raw_exchange(port: int, request: bytes) -> tuple[str, bytes]:
    """Send raw bytes, read until the server closes; returns (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


def worker_pids(status: dict) -> list[int]:
    return [w["pid"] for w in status["workers"]]


def stop_and_stderr(proc: Proc, sig: int = signal.SIGTERM) -> str:
    proc.stop(sig)
    return proc.stderr_text()


# -- the stand-in worker ----------------------------------------------------------------

STANDIN = r"""
import os, signal, sys, time
from fastgw.config import load_file
from workers.shm import STATE_READY
from workers.supervisor import Supervisor

path, mode = sys.argv[1], sys.argv[2]

def worker(slot, sock, control, heartbeat_interval, **shared):
    if mode == "config-error":
        sys.exit(4)
    if mode == "crash":
        sys.exit(1)
    on_term = signal.SIG_IGN if mode == "stubborn" else (lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    generation = control.read()[1]
    while True:
        control.write_record(
            slot, pid=os.getpid(), generation=generation, heartbeat=time.monotonic(), started=started,
            requests_total=0, active_requests=0, connections=0, state=STATE_READY,
        )
        time.sleep(heartbeat_interval)

supervisor = Supervisor(
    load_file(path), path, worker_main=worker, heartbeat_interval=0.05, heartbeat_timeout=1.0
)
sys.exit(supervisor.run())
"""


class StandIn(Proc):
    """The supervisor over :data:`STANDIN` workers; ``mode`` picks how those workers misbehave."""

    def __init__(self, tmp_path: Path, mode: str, *, drain: str = "2s", workers: int = 2) -> None:
        self.admin = f"http://127.0.0.1:{free_port()}"
        config = {
            "listen": f"127.0.0.1:{free_port()}",
            "admin": self.admin.removeprefix("http://"),
            "workers": workers,
            "http": {"drain_timeout": drain},
        }
        path = tmp_path / f"standin-{mode}.yaml"
        path.write_text(yaml.safe_dump(config))
        super().__init__([sys.executable, "-c", STANDIN, str(path), mode])

    def wait_ready(self, workers: int = 2) -> dict:
        status: dict = {}

        def ready() -> bool:
            nonlocal status
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited with {self.proc.returncode}: {self.stderr_tail()}")
            try:
                status = http_json("GET", self.admin + "/status")[1]
            except OSError:
                return False
            return sum(w["ready"] for w in status["workers"]) == workers

        wait_until(ready, 10, f"{workers} ready stand-in workers")
        return status


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    started: list[StandIn] = []

    def start(mode: str, **kwargs: object) -> StandIn:
        proc = StandIn(tmp_path, mode, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


# -- the real gateway -------------------------------------------------------------------


def test_workers_ready_admin_endpoints(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(MOCK, workers=2)
    status = gw.status()
    pids = worker_pids(status)
    assert len(set(pids)) == 2 and status["pid"] == gw.proc.pid
    assert all(w["state"] == "ready" and w["generation"] == 1 for w in status["workers"])
    assert status["generation"] == 1
    assert get(gw.port) == 200

    assert http_json("GET", gw.admin + "/healthz") == (200, {"ready_workers": 2})

    with urllib.request.urlopen(gw.admin + "/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    for name in ("fastgw_config_generation", "fastgw_worker_up", "fastgw_worker_requests_total"):
        assert any(line.startswith(name) for line in samples), name
    for line in samples:
        name_and_labels, value = line.rsplit(" ", 1)
        float(value)
        assert name_and_labels.startswith("fastgw_")
    assert 'fastgw_worker_up{slot="1"} 1' in samples

    with urllib.request.urlopen(gw.admin + "/config", timeout=5) as response:
        raw = response.read().decode()
        assert response.headers["X-Fastgw-Generation"] == "1"
    assert "sk-very-secret" not in raw
    assert json.loads(raw)["providers"][0]["api_keys"] == ["***"]


def test_admin_rejects_malformed_requests(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(MOCK, workers=1)
    assert http_json("GET", gw.admin + "/nope")[0] == 404
    code, body = http_json("DELETE", gw.admin + "/status")
    assert code == 405 and body["error"]["type"] == "method_not_allowed"
    for request, status in [
        (b"POST /config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/yaml\r\n\r\n", 411),
        (b"POST /config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/yaml\r\n"
         b"Content-Length: 999999999999\r\n\r\n", 413),
        (b"garbage\r\n\r\n", 400),
    ]:
        head, body = raw_exchange(gw.admin_port, request)
        assert head.startswith(f"HTTP/1.0 {status} ") and "error" in json.loads(body), (request, head)
    assert gw.status()["generation"] == 1  # and the supervisor is still fine


def test_kill9_worker_replaced_while_requests_keep_succeeding(gateway: Callable[..., Gateway]) -> None:
    """Connections queued on a dead worker's slot wait for its replacement: no resets."""
    gw = gateway(MOCK, workers=2)
    victim = gw.status()["workers"][0]["pid"]
    errors: list[BaseException] = []
    served = 0
    gate = threading.Lock()  # the kill happens between two requests of the loop, never mid-request
    done = threading.Event()

    def loop() -> None:
        nonlocal served
        while not done.is_set():
            with gate:
                try:
                    assert get(gw.port) == 200
                    served += 1
                except Exception as exc:
                    errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(0.2)
        with gate:
            # Stopped, the victim accepts nothing: new connections hashed to its slot queue
            # on the slot's socket, exactly as they would at the instant of a crash.
            os.kill(victim, signal.SIGSTOP)
            wait_until(lambda: proc_state(victim) == "T", 5, "the victim to stop")
        with ThreadPoolExecutor(8) as pool:
            batch = [pool.submit(get, gw.port) for _ in range(16)]
            time.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            assert [f.result() for f in batch] == [200] * 16
        status = gw.wait_ready(2)
        time.sleep(0.2)
    finally:
        done.set()
        thread.join()
    assert errors == [] and served > 0
    new = status["workers"][0]
    assert new["pid"] != victim and new["restarts"] == 1 and not alive(victim)
    stderr = stop_and_stderr(gw)
    assert f"(pid {victim}) was killed by SIGKILL (perhaps out of memory?); respawning in 0.1s" in stderr


def test_sigterm_drains_and_leaves_no_process(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(MOCK, workers=2)
    pids = worker_pids(gw.status())
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)  # the supervisor alone, as a service manager would
    assert gw.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 2 + 1 + 0.5  # drain_timeout + margin
    assert not any(alive(pid) for pid in pids)
    # Stop accepting means refused, not queued forever.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=2)


def test_sigkill_of_the_supervisor_takes_the_workers(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(MOCK, workers=2)
    pids = worker_pids(gw.status())
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(timeout=5)
    wait_until(lambda: not any(alive(pid) for pid in pids), 5, "PDEATHSIG to kill the workers")


def test_push_bumps_every_worker_and_rejects_invalid(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(MOCK, workers=2)
    code, body = gw.push({**MOCK, "models": [*MOCK["models"], {"name": "other", "targets": [{"provider": "mock"}]}]})
    assert (code, body) == (200, {"generation": 2, "warnings": []})
    gw.wait_ready(2, generation=2, timeout=5)

    code, body = gw.push({**MOCK, "providers": [{"name": "mock", "type": "no-such-type"}]})
    assert code == 400 and body["error"]["type"] == "invalid_config"
    assert any(e.startswith("providers[0].type") for e in body["error"]["errors"]), body
    code, body = gw.admin_call("POST", "/config", b"listen: [unclosed", "application/yaml")
    assert code == 400 and body["error"]["errors"]
    status = gw.status()
    assert status["generation"] == 2 and all(w["generation"] == 2 for w in status["workers"])

    # Keys bound at startup keep their running values, with a warning.
    code, body = gw.admin_call("POST", "/config", yaml.safe_dump({**gw.config, **MOCK, "workers": 5}).encode(), "application/yaml")
    assert code == 200 and body["generation"] == 3
    assert [w.split(":")[0] for w in body["warnings"]] == ["workers"]
    status = gw.wait_ready(2, generation=3, timeout=5)
    assert len(status["workers"]) == 2


def test_push_cli_exit_codes(gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = gateway(MOCK, workers=1)

    def push(path: Path, *extra: str) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "fastgw", "push", "-c", str(path), *extra]
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=30)

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**gw.config, **MOCK}))
    result = push(good, "--admin", gw.admin)
    assert result.returncode == 0 and "generation 2" in result.stdout, result.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MOCK, "workers": "many", "providers": [{"name": "p", "type": "nope"}]}))
    result = push(bad, "--admin", gw.admin)
    assert result.returncode == 1
    assert "workers:" in result.stderr and "providers[0].type:" in result.stderr

    result = push(good, "--admin", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "cannot reach the admin API" in result.stderr
    result = push(good, "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 2 and "cannot reach Redis" in result.stderr
    assert gw.status()["generation"] == 2


def test_busy_port_fails_fast_with_the_address(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "busy.yaml"
        path.write_text(yaml.safe_dump({**MOCK, "listen": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{free_port()}"}))
        args = [sys.executable, "-m", "fastgw", "run", "-c", str(path)]
        result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot start: cannot listen on http://127.0.0.1:{port}: Address already in use" in result.stderr


# -- the stand-in worker ----------------------------------------------------------------


def test_boot_config_error_halts_instead_of_fork_looping(standin: Callable[..., StandIn]) -> None:
    sup = standin("config-error")
    assert sup.proc.wait(timeout=10) == 4
    stderr = sup.stderr_text()
    assert "exited with code 4 (config error) before it became ready; halting" in stderr
    assert "respawning" not in stderr


def test_crash_loop_backs_off(standin: Callable[..., StandIn]) -> None:
    sup = standin("crash", workers=1)
    # Waited for, not slept: on a loaded machine the supervisor's own start can take a second.
    wait_until(lambda: sup.stderr_text().count("respawning in") >= 3, 20, "three respawns")
    stderr = stop_and_stderr(sup)
    assert sup.proc.returncode == 0
    delays = [line.rsplit(" ", 1)[1] for line in stderr.splitlines() if "respawning in" in line]
    assert delays[:3] == ["0.1s", "0.2s", "0.4s"], stderr


def test_stalled_worker_is_killed_and_replaced(standin: Callable[..., StandIn]) -> None:
    sup = standin("ok")
    victim = sup.wait_ready()["workers"][1]["pid"]
    os.kill(victim, signal.SIGSTOP)  # its "event loop" stops: no more heartbeats
    wait_until(lambda: not alive(victim), 5, "the watchdog to kill the stalled worker")
    status = sup.wait_ready()
    assert status["workers"][1]["pid"] != victim
    stderr = stop_and_stderr(sup)
    assert f"worker 1 (pid {victim}) sent no heartbeat for" in stderr
    assert f"(pid {victim}) was killed by SIGKILL (heartbeat timeout); respawning in 0.1s" in stderr


def test_second_signal_cuts_the_drain_short(standin: Callable[..., StandIn]) -> None:
    sup = standin("stubborn", drain="30s")
    pids = worker_pids(sup.wait_ready())
    started = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 3
    assert not any(alive(pid) for pid in pids)
    stderr = sup.stderr_text()
    assert "received SIGINT again; cutting the drain short" in stderr
    assert "still running at the end of the drain; killing it" in stderr


def test_node_cache_files_of_a_killed_supervisor_are_removed_by_the_next_start(
    gateway: Callable[..., Gateway],
) -> None:
    config = {**MOCK, "cache": {"store": "memory", "key": "last_user_message"}}
    first = gateway(config, workers=1)
    c = RawClient(first.port)
    body = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}'
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    assert c.read_response()[0] == 200
    c.close()
    shm = Path(node_path(first.proc.pid)).parent

    def left() -> list[Path]:
        return sorted(shm.glob(f"cache-{first.proc.pid}-*.sqlite*"))

    assert left()
    first.proc.send_signal(signal.SIGKILL)  # no chance to remove its files
    first.proc.wait(timeout=5)
    assert left()
    second = gateway(config, workers=1)
    assert left() == []
    assert "removed" in second.stderr_text() and "did not stop cleanly" in second.stderr_text()

"""Run wrk against one URL and turn its text report into numbers.

We parse wrk's own report rather than a Lua `done()` hook so the one request script stays short
and the raw text kept in the results is exactly what a human would read.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bodies import Request

SCRIPT = Path(__file__).resolve().parent / "scripts" / "chat.lua"
PACED = SCRIPT.with_name("paced.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_BYTES = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}  # wrk's units are binary
_DURATION = re.compile(r"^\s*([\d.]+)(us|ms|s|m|h)\s*$")


@dataclass
class WrkResult:
    """One wrk run; latencies in milliseconds, `errors` = socket errors + non-2xx/3xx responses."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non2xx: int
    socket_errors: dict[str, int]
    raw: str
    read_bytes: float | None = None  # what wrk read off the sockets, heads included: bytes on the wire

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "errors": self.errors}


def duration_ms(text: str) -> float:
    """A wrk duration (``1.20ms``, ``3.4s``) in milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def latency_percentiles(raw: str) -> dict[int, float]:
    """The ``--latency`` distribution of a wrk output: percentile -> milliseconds."""
    return {int(p): duration_ms(v) for p, v in re.findall(r"^\s*(\d+)%\s+(\S+)\s*$", raw, re.M)}


def parse(raw: str) -> WrkResult:
    """Parse `wrk --latency` output; raises ValueError if the summary lines are missing."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", raw, re.M)
    read = re.search(r"requests in [\d.]+\w+, ([\d.]+)(B|KB|MB|GB|TB) read", raw)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", raw, re.M)
    if not done or not rps:
        raise ValueError("wrk printed no summary:\n" + raw[-2000:])
    percentiles = latency_percentiles(raw)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", raw)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", raw)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=duration_ms(done.group(2) + done.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=percentiles.get(50),
        p99_ms=percentiles.get(99),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, socket.groups()), strict=True))
        if socket else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        raw=raw,
        read_bytes=float(read.group(1)) * _BYTES[read.group(2)] if read else None,
    )


def command(url: str, connections: int, threads: int, seconds: float, pin: list[str],
            script: Path = SCRIPT) -> list[str]:
    """The wrk argv (under `pin`, a taskset prefix); threads never exceed connections (wrk refuses that)."""
    return [
        *pin, "wrk", "--latency", "-t", str(min(threads, connections)), "-c", str(connections),
        "-d", f"{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(script), url,
    ]


def paced_env(rate: float, threads: int) -> dict[str, str]:
    """What scripts/paced.lua reads beside the request: the rate to offer, over all threads."""
    return {"BENCH_CHAT_LUA": str(SCRIPT), "BENCH_RATE": f"{rate:.0f}", "BENCH_THREADS": str(threads)}


def _script_failed(stderr: str) -> None:
    """wrk reports a Lua error on stderr and then runs on *without* the script's hooks (a paced
    flood silently becomes a closed loop): such a run measures something else, so it fails."""
    if ".lua:" in stderr:
        raise RuntimeError(f"wrk's Lua script failed: {stderr.strip().splitlines()[0]}")


def run(base_url: str, request: Request, connections: int, threads: int, seconds: float,
        pin: list[str]) -> WrkResult:
    """Run wrk to completion; the timeout bounds a wrk that hangs on a wedged target."""
    proc = subprocess.run(command(base_url + request.path, connections, threads, seconds, pin),
                          env=os.environ | request.env(), capture_output=True, text=True, timeout=seconds + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    _script_failed(proc.stderr)
    return parse(proc.stdout)


class Background:
    """wrk running while something else happens (the push scenario); stop() ends it early via SIGINT.

    wrk treats SIGINT as "stop now and print the report", so the errors of the whole load are kept.
    """

    def __init__(self, base_url: str, request: Request, connections: int, threads: int, max_seconds: float,
                 pin: list[str], rate: float | None = None) -> None:
        """``rate``: requests/s offered on a fixed timetable (scripts/paced.lua), else a closed loop."""
        self.max_seconds = max_seconds
        threads = min(threads, connections)
        script, extra = (SCRIPT, {}) if rate is None else (PACED, paced_env(rate, threads))
        self.popen = subprocess.Popen(command(base_url + request.path, connections, threads, max_seconds, pin, script),
                                      env=os.environ | request.env() | extra, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True)

    def stop(self) -> WrkResult:
        """Ask wrk for its report now; kill it if it does not give one."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            out, err = self.popen.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("wrk did not stop after SIGINT") from None
        if self.popen.returncode not in (0, -signal.SIGINT):
            raise RuntimeError(f"wrk exited {self.popen.returncode}: {err.strip() or out.strip()}")
        _script_failed(err)
        return parse(out)

    def kill(self) -> None:
        """Cleanup path: never leave a wrk running after the runner exits."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()

"""Start and stop the processes under test: the mock upstream, nginx and fastgw.

Every process is started in its own session (process group) so that stopping it also stops the
workers it forked, and so a Ctrl-C in the terminal reaches only the runner, which then stops them
in order instead of leaving half-killed groups behind.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"


class TargetError(RuntimeError):
    """A target could not be started; the message says why and what to do."""


def free_port() -> int:
    """Ask the kernel for an unused port (tiny race, acceptable on a bench machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def python_env() -> dict[str, str]:
    """Environment for child Pythons: the repo on sys.path, so an uninstalled checkout still runs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def fastgw_command_works(*args: str) -> tuple[bool, str]:
    """Whether `python -m fastgw ARGS --help` runs, with the tail of its output when it does not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fastgw", *args, "--help"],
            cwd=REPO_ROOT,
            env=python_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False, f"`python -m fastgw {' '.join(args)} --help` did not finish in 30 s"
    if proc.returncode == 0:
        return True, ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return False, f"`python -m fastgw {' '.join(args)} --help` exited {proc.returncode}: " + " | ".join(tail)


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET a URL; HTTP error statuses are returned, not raised, since any answer proves liveness."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Process:
    """One started target: its command, log file and process group."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    info: dict[str, object] = field(default_factory=dict)

    def start(self, cwd: Path, stack: ExitStack, env: dict[str, str] | None = None) -> None:
        """Start in a new session so stop() can signal the whole group; `stack` will stop it."""
        log = self.log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        stack.callback(self.stop)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of every process in this target's session (master and workers).

        On a shared 2-core machine requests/s moves with whatever else runs; CPU spent per
        request by the proxy itself is the steadier measure of its efficiency.
        """
        total_ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:  # exited meanwhile
                continue
            if int(fields[3]) == self.pid:  # field 6 of stat: session id
                total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return total_ticks / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group (graceful drain), then SIGKILL whatever is left after `grace` seconds."""
        if self.popen is None:
            return
        pgid = self.popen.pid  # leader of its own session: pgid == pid
        self._signal_group(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Forked workers may outlive their leader for a moment; the group id still reaches them.
        self._signal_group(pgid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def fail(self, what: str) -> TargetError:
        """An error carrying the process's last log lines, which usually say what went wrong."""
        status = "running" if self.alive() else f"exited with {self.popen.returncode if self.popen else '?'}"
        return TargetError(f"{self.name}: {what} ({status}); last log lines:\n{self.log_tail()}")


def wait_until(proc: Process, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready()` until true; fail early if the process died, late if it never got ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise proc.fail(f"died before {what}")
        try:
            if ready():
                return
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise proc.fail(f"not {what} after {timeout:.0f} s")


def start_mock(workdir: Path, workers: int, chunks: int, stack: ExitStack, flavor: str = "openai") -> Process:
    """The mock LLM upstream (`flavor` picks the provider wire format it speaks)."""
    port = free_port()
    cli_ok, cli_err = fastgw_command_works("mock-llm")
    if not cli_ok:
        raise TargetError(f"mock upstream: `fastgw mock-llm` does not run: {cli_err}")
    argv = [sys.executable, "-m", "fastgw", "mock-llm", "--port", str(port), "--workers", str(workers),
            "--chunks", str(chunks), "--chunk-delay-ms", "0", "--flavor", flavor]
    proc = Process(f"mock-{flavor}", argv, workdir / f"mock-{flavor}.log",
                   info={"port": port, "workers": workers, "flavor": flavor})
    proc.start(REPO_ROOT, stack, python_env())
    wait_until(proc, lambda: "listening on" in proc.log_tail() or http_get(f"http://{HOST}:{port}/")[0] > 0,
               30, "listening")
    return proc


def render_nginx_conf(prefix: Path, workers: int, port: int, upstream_port: int) -> str:
    """Fill bench/nginx.conf.tmpl; the `user` line matters only when we are root (else nginx drops to nobody)."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    template = Template((BENCH_DIR / "nginx.conf.tmpl").read_text())
    text = template.safe_substitute(
        user_line=f"user {user};" if os.geteuid() == 0 else "",
        workers=workers,
        prefix=str(prefix),
        host=HOST,
        port=port,
        upstream_port=upstream_port,
    )
    if "${" in text:
        raise TargetError("nginx.conf.tmpl has a placeholder that render_nginx_conf does not fill")
    return text


def start_nginx(workdir: Path, workers: int, upstream_port: int, stack: ExitStack) -> Process:
    """nginx as a keep-alive, unbuffered reverse proxy: the reference every figure is divided by."""
    nginx = shutil.which("nginx")
    if nginx is None:
        raise TargetError("nginx is not on PATH")
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(prefix, workers, port, upstream_port))
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise TargetError(f"nginx rejected the generated config:\n{check.stderr}")
    proc = Process("nginx", argv, workdir / "nginx.log", info={"port": port, "workers": workers})
    proc.start(workdir, stack)
    wait_until(proc, lambda: http_get(f"http://{HOST}:{port}/")[0] > 0, 30, "answering")
    return proc


def fastgw_config(port: int, admin_port: int, workers: int, upstream_port: int, extra_routes: int = 0) -> str:
    """The gateway config; `extra_routes` exact routes go before the catch-all so traffic still matches `/`."""
    lines = [f"listen: {HOST}:{port}", f"admin: {HOST}:{admin_port}", f"workers: {workers}", "routes:"]
    upstream = f"http://{HOST}:{upstream_port}"
    for i in range(extra_routes):
        lines += [f"  - name: r{i}", f"    match: {{path: /r/{i}}}", f"    upstream: {upstream}"]
    lines += ["  - name: mock", "    match: {path: /}", f"    upstream: {upstream}"]
    return "\n".join(lines) + "\n"


def admin_status(admin_port: int, timeout: float = 1.0) -> dict | None:
    """GET /status as JSON, or None when the admin API is not there (yet)."""
    try:
        code, body = http_get(f"http://{HOST}:{admin_port}/status", timeout)
    except OSError:
        return None
    if code != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def workers_ready(status: dict | None, workers: int) -> bool:
    """The contract: `workers` lists N entries, each with ready: true."""
    if status is None:
        return False
    entries = status.get("workers")
    return (isinstance(entries, list) and len(entries) == workers
            and all(isinstance(w, dict) and w.get("ready") is True for w in entries))


AI_KEY = "sk-bench-consumer"
AI_MODEL = "bench-claude"


def fastgw_ai_config(port: int, admin_port: int, workers: int, upstream_port: int, redis_url: str | None = None) -> str:
    """The AI scenario: consumer auth, a model table, and an Anthropic-format provider whose
    stream the gateway converts event by event to OpenAI's for the client. With ``redis_url``,
    also cluster-wide token and request limits (set far above the load: the cost of checking
    and settling is measured, not rejections)."""
    limits = [
        f"redis: '{redis_url}'",
        "limits:",
        "  - {name: bench-tpm, key: [consumer], tokens: {per_minute: 1000000000}, requests: {per_second: 1000000}}",
    ] if redis_url else []
    return "\n".join(limits + [
        f"listen: {HOST}:{port}", f"admin: {HOST}:{admin_port}", f"workers: {workers}",
        "providers:",
        f"  - {{name: claude, type: anthropic, base_url: 'http://{HOST}:{upstream_port}', api_keys: [sk-provider]}}",
        "models:",
        f"  - {{name: {AI_MODEL}, targets: [{{provider: claude, model: claude-3-5-haiku-latest}}]}}",
        "consumers:",
        f"  - {{name: bench, api_keys: [{AI_KEY}], models: ['*']}}",
    ]) + "\n"


GUARD_TERMS = 1000


def fastgw_stream_config(port: int, admin_port: int, workers: int, upstream_port: int, guard: bool) -> str:
    """The guard scenario: streamed chat through the AI front door to the OpenAI-format mock,
    with (or without) an answer-side content filter of GUARD_TERMS terms that never match the
    mock's words, so every delta is scanned and held back but nothing is masked."""
    lines = [
        f"listen: {HOST}:{port}", f"admin: {HOST}:{admin_port}", f"workers: {workers}",
        "providers:",
        f"  - {{name: mock, type: openai-compatible, base_url: 'http://{HOST}:{upstream_port}/v1'}}",
        "models:",
        "  - {name: mock-gpt, targets: [{provider: mock, model: mock-gpt}]}",
    ]
    if guard:
        terms = ", ".join(f"forbidden-term-{i}" for i in range(GUARD_TERMS))
        lines += ["guard:", "  rules:", f"    - {{name: bench, action: mask, apply_to: [response], terms: [{terms}]}}"]
    return "\n".join(lines) + "\n"


def start_redis(workdir: Path, stack: ExitStack) -> tuple[Process, str]:
    """A private redis-server (no persistence) for the limits scenario."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise TargetError("redis-server is not on PATH (apt-get install -y redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    proc = Process("redis", argv, workdir / "redis.log", info={"port": port})
    proc.start(workdir, stack)

    def answers() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(proc, answers, 15, "answering PING")
    return proc, f"redis://{HOST}:{port}/0"


def start_fastgw(workdir: Path, workers: int, upstream_port: int, stack: ExitStack) -> Process:
    """The plain proxy: one catch-all route to the mock, the same worker count as nginx."""
    return start_gateway(
        workdir, "fastgw", lambda port, admin: fastgw_config(port, admin, workers, upstream_port), workers, stack
    )


def start_gateway(
    workdir: Path, name: str, render: Callable[[int, int], str], workers: int, stack: ExitStack
) -> Process:
    """`fastgw run` on the config ``render(port, admin_port)`` writes; ready per /status, else
    when the port answers."""
    ok, err = fastgw_command_works("run")
    if not ok:
        raise TargetError(f"fastgw is not runnable yet: {err}")
    port, admin_port = free_port(), free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(render(port, admin_port))
    argv = [sys.executable, "-m", "fastgw", "run", "-c", str(config)]
    proc = Process(name, argv, workdir / f"{name}.log",
                   info={"port": port, "admin_port": admin_port, "workers": workers, "admin_api": False})

    started = time.monotonic()

    def ready() -> bool:
        status = admin_status(admin_port)
        if workers_ready(status, workers):
            proc.info["admin_api"] = True
            proc.info["status"] = status
            return True
        # Fallback for a gateway without /status: any answer on the listen port, once the admin
        # API had a fair chance to come up (so a slow admin does not make us skip the push scenario).
        if status is not None or time.monotonic() - started < 5:
            return False
        return http_get(f"http://{HOST}:{port}/json", 0.5)[0] > 0

    proc.start(REPO_ROOT, stack, python_env())
    wait_until(proc, ready, 60, "ready")
    return proc

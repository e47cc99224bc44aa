"""Start and stop the processes of a bench run: the pre-built upstream, nginx, fastgw and Redis.

Every process is started in its own session (process group) so that stopping it also stops the
workers it forked, and so a Ctrl-C in the terminal reaches only the runner, which then stops them
in order instead of leaving half-killed groups behind. Each is started under ``taskset`` on the
core its role was given (see `Pinning`): the proxy under test on one core, everything else on the
other.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import secrets
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

import bodies

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"
ADMIN_TOKEN = os.environ.get("FASTGW_ADMIN_TOKEN") or secrets.token_hex(16)
"""The bench gateways' admin token (``--token`` sets it): in their environment as
FASTGW_ADMIN_TOKEN, which their configs name, and sent on every admin call."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


class TargetError(RuntimeError):
    """A target could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class Pinning:
    """Which core each role runs on: `proxy` for the proxy under test, `load` for wrk, the
    upstream, Redis and the runner itself. ``None`` cores mean unpinned (fewer than 2 usable cores
    or no taskset): the run still works, but proxy and load then compete for the same CPU."""

    proxy: int | None
    load: int | None
    reason: str = ""

    @classmethod
    def detect(cls) -> Pinning:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return cls(None, None, f"only {len(allowed)} usable core(s) ({allowed})")
        if shutil.which("taskset") is None:
            return cls(None, None, "taskset is not installed (util-linux)")
        return cls(allowed[0], allowed[1])

    @property
    def pinned(self) -> bool:
        return self.proxy is not None

    def prefix(self, role: str) -> list[str]:
        """``taskset -c N`` for a role ("proxy" or "load"); nothing when unpinned."""
        cpu = self.proxy if role == "proxy" else self.load
        return [] if cpu is None else ["taskset", "-c", str(cpu)]


def free_port() -> int:
    """Ask the kernel for an unused port (tiny race, acceptable on a bench machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def python_env() -> dict[str, str]:
    """Environment for child Pythons: the repo on sys.path, so an uninstalled checkout still runs."""
    env = dict(os.environ)
    env["FASTGW_ADMIN_TOKEN"] = ADMIN_TOKEN
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def admin_headers(content_type: str | None = None) -> dict[str, str]:
    """What an admin call sends: the bearer token, and the body's type."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return headers | ({"Content-Type": content_type} if content_type else {})


def admin_line(admin_port: int) -> str:
    """The config's admin key: behind the token the gateway reads from its environment."""
    return f"admin: {{address: '{HOST}:{admin_port}', token: '${{FASTGW_ADMIN_TOKEN}}'}}"


def http_get(url: str, timeout: float = 1.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET a URL; HTTP error statuses are returned, not raised, since any answer proves liveness."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def read_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (so index 0 is field 3, `state`)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # exited meanwhile
        return None


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

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU seconds (user + system) of every live process in this target's session.

        The session is the one `start` created (taskset execs, so the leader's pid is ours), and
        nginx's and fastgw's workers stay in it. Each process counts its own utime + stime
        (fields 14, 15 of /proc/PID/stat, all its threads) plus cutime + cstime (16, 17), the CPU
        of children it has reaped: a worker that exited during the run still counts, in its
        parent. A process that exits unreaped inside the window is missed; none does here.
        """
        out: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = read_stat(int(entry.name))
            if fields is None or int(fields[3]) != self.pid:  # fields[3] = field 6, session id
                continue
            out[int(entry.name)] = sum(int(f) for f in fields[11:15]) / CLK_TCK
        return out

    def cpu_seconds(self) -> float:
        """CPU seconds of the whole session: master/supervisor and every worker."""
        return sum(self.cpu_by_pid().values())

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group (graceful drain), then SIGKILL whatever is left after `grace` seconds.

        Safe to call twice (the runner stops a proxy as soon as its scenarios are done, and the
        ExitStack calls it again at the end)."""
        if self.popen is None or self.info.get("stopped"):
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
        self.info["stopped"] = True

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


# ------------------------------------------------------------------------------------------------- nginx

def _nginx_quote(text: str) -> str:
    """A single-quoted nginx config string (nginx turns \\n back into a newline)."""
    if "$" in text:  # would be read as a variable
        raise TargetError("a pre-built body contains '$', which nginx would expand")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _pieces(quoted: str, size: int = 3000) -> list[str]:
    """Cut a quoted nginx string (without its quotes) into pieces under nginx's 4 KiB token limit,
    never between a backslash and the character it escapes."""
    out = []
    while quoted:
        cut = min(size, len(quoted))
        while cut < len(quoted) and (len(quoted[:cut]) - len(quoted[:cut].rstrip("\\"))) % 2:
            cut -= 1  # an odd run of trailing backslashes: the last one escapes the next character
        out.append(quoted[:cut])
        quoted = quoted[cut:]
    return out


def upstream_locations(chunks: int) -> str:
    """One exact `location` per pre-built answer: `return 200` of the body, a literal when it fits
    one config token, else set from constant variables (nginx's tokens stop at 4 KiB) that
    `return` concatenates."""
    blocks = []
    for path, (content_type, _) in bodies.UPSTREAM_PATHS.items():
        text = bodies.upstream_body(path, chunks).decode()
        pieces = _pieces(_nginx_quote(text)[1:-1])
        if len(pieces) == 1:
            sets, value = "", f"'{pieces[0]}'"
        else:
            sets = "".join(f"            set $b{i} '{piece}';\n" for i, piece in enumerate(pieces))
            value = '"' + "".join(f"$b{i}" for i in range(len(pieces))) + '"'
        blocks.append(f"        location = {path} {{\n            default_type '{content_type}';\n"
                      f"{sets}            return 200 {value};\n        }}\n")
    return "".join(blocks)


def render_nginx_conf(template_name: str, prefix: Path, workers: int, port: int, **extra: object) -> str:
    """Fill a bench/*.conf.tmpl; the `user` line matters only when we are root (else nginx drops to nobody)."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    template = Template((BENCH_DIR / template_name).read_text())
    text = template.safe_substitute(
        user_line=f"user {user};" if os.geteuid() == 0 else "",
        workers=workers,
        prefix=str(prefix),
        host=HOST,
        port=port,
        **{k: str(v) for k, v in extra.items()},
    )
    if "${" in text:
        raise TargetError(f"{template_name} has a placeholder that render_nginx_conf does not fill")
    return text


def _start_nginx(workdir: Path, name: str, conf_text: str, port: int, cpu: list[str], stack: ExitStack,
                 info: dict[str, object]) -> Process:
    nginx = shutil.which("nginx")
    if nginx is None:
        raise TargetError("nginx is not on PATH")
    prefix = workdir / name
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise TargetError(f"{name}: nginx rejected the generated config:\n{check.stderr}")
    proc = Process(name, [*cpu, *argv], workdir / f"{name}.log", info={"port": port, **info})
    proc.start(workdir, stack)
    wait_until(proc, lambda: http_get(f"http://{HOST}:{port}/")[0] > 0, 30, "answering")
    return proc


def start_upstream(workdir: Path, pins: Pinning, chunks: int, stack: ExitStack) -> Process:
    """The pre-built-response upstream: one nginx worker on the load core answering every
    UPSTREAM_PATHS path with its body from memory (`return 200`), whatever the request says."""
    port = free_port()
    text = render_nginx_conf("upstream.conf.tmpl", workdir / "upstream", 1, port,
                             locations=upstream_locations(chunks))
    return _start_nginx(workdir, "upstream", text, port, pins.prefix("load"), stack,
                        {"workers": 1, "cpu": pins.load, "paths": list(bodies.UPSTREAM_PATHS)})


COMPRESSED_TYPES = ("application/json", "text/event-stream")
"""What both proxies compress in the compression scenarios (nginx always adds text/html)."""
GZIP_LEVEL = 5
ZSTD_LEVEL = 3
COMPRESS_MIN_SIZE = 1024


def nginx_gzip(level: int = GZIP_LEVEL) -> str:
    """nginx's gzip filter set as fastgw's compression is: same types, level and size floor;
    `gzip_proxied any` (nginx skips proxied answers by default) and a Vary like fastgw's."""
    return (f"    gzip on;\n    gzip_comp_level {level};\n    gzip_types {' '.join(COMPRESSED_TYPES)};\n"
            f"    gzip_min_length {COMPRESS_MIN_SIZE};\n    gzip_proxied any;\n    gzip_vary on;\n")


def start_nginx(workdir: Path, workers: int, upstream_port: int, pins: Pinning, stack: ExitStack,
                gzip: bool = False) -> Process:
    """nginx as a keep-alive, unbuffered reverse proxy on the proxy core: the reference
    (with `gzip`: its gzip filter on, for the compression scenarios)."""
    port = free_port()
    name = "nginx-gzip" if gzip else "nginx"
    text = render_nginx_conf("nginx.conf.tmpl", workdir / name, workers, port, upstream_port=upstream_port,
                             gzip=nginx_gzip() if gzip else "")
    return _start_nginx(workdir, name, text, port, pins.prefix("proxy"), stack,
                        {"workers": workers, "cpu": pins.proxy, "gzip": gzip})


# ------------------------------------------------------------------------------------------------- Redis

def start_redis(workdir: Path, pins: Pinning, stack: ExitStack) -> tuple[Process, str]:
    """A private redis-server (no persistence) on the load core, for the limits of ai-full."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise TargetError("redis-server is not on PATH (apt-get install -y redis-server)")
    port = free_port()
    argv = [*pins.prefix("load"), binary, "--port", str(port), "--bind", HOST, "--save", "",
            "--appendonly", "no"]
    proc = Process("redis", argv, workdir / "redis.log", info={"port": port, "cpu": pins.load})
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


# ------------------------------------------------------------------------------------------------ fastgw

def compression_line() -> str:
    """fastgw's compression set as nginx_gzip() sets nginx's, zstd preferred, gzip too."""
    return (f"compression: {{algorithms: [zstd, gzip], min_size: {COMPRESS_MIN_SIZE}, "
            f"types: [{', '.join(COMPRESSED_TYPES)}], levels: {{zstd: {ZSTD_LEVEL}, gzip: {GZIP_LEVEL}}}}}")


def fastgw_plain_config(port: int, admin_port: int, workers: int, upstream_port: int, extra_routes: int = 0,
                        compress: bool = False) -> str:
    """Plain proxying: one catch-all route to the upstream, paths passed as they are, so
    /json/v1/... and /sse/v1/... reach the answers of the same name. `extra_routes` exact
    routes go before the catch-all (the push scenario), so traffic still matches `/`.
    `compress`: compression_line()."""
    lines = [f"listen: {HOST}:{port}", admin_line(admin_port), f"workers: {workers}"]
    if compress:
        lines.append(compression_line())
    lines.append("routes:")
    upstream = f"http://{HOST}:{upstream_port}"
    for i in range(extra_routes):
        lines += [f"  - name: r{i}", f"    match: {{path: /r/{i}}}", f"    upstream: {upstream}"]
    lines += ["  - name: upstream", "    match: {path: /}", f"    upstream: {upstream}"]
    return "\n".join(lines) + "\n"


AI_MODELS = {
    # public model: (provider type, base_url path on the upstream, provider's model)
    "bench-json": ("openai", "/json/v1", "gpt-4o-mini"),
    "bench-sse": ("openai", "/sse/v1", "gpt-4o-mini"),
    "bench-claude": ("anthropic", "/anthropic", "claude-3-5-haiku-latest"),
    "bench-claude-json": ("anthropic", "/anthropic-json", "claude-3-5-haiku-latest"),
}
"""The AI front door's models, one provider each: the upstream picks its answer by path, so the
provider's base_url decides which pre-built answer a model gets (openai: base_url +
/chat/completions; anthropic: base_url + /v1/messages)."""

GUARD_TERMS = 1000


@dataclass(frozen=True)
class FullFeatures:
    """What ai-full adds to the AI front door."""

    redis_url: str
    terms_file: Path
    access_log: Path


def fastgw_ai_config(port: int, admin_port: int, workers: int, upstream_port: int,
                     full: FullFeatures | None = None, compress: bool = False) -> str:
    """The AI front door: one provider per AI_MODELS entry, anonymous access. With `full`: a
    consumer whose API key clients send as `Authorization: Bearer`, two Redis-backed limits on it
    (tokens per minute and requests per minute, far above the load: the cost of checking and
    settling is measured, never a rejection), an answer-side guard of GUARD_TERMS word terms
    that never match, and the JSON access log to a file. `compress`: compression_line()."""
    lines = [f"listen: {HOST}:{port}", admin_line(admin_port), f"workers: {workers}", "providers:"]
    if compress:
        lines.insert(3, compression_line())
    for name, (kind, path, _) in AI_MODELS.items():
        lines.append(f"  - {{name: {name}, type: {kind}, base_url: 'http://{HOST}:{upstream_port}{path}', "
                     "api_keys: [sk-provider-key]}")
    lines.append("models:")
    for name, (_, _, model) in AI_MODELS.items():
        lines.append(f"  - {{name: {name}, targets: [{{provider: {name}, model: {model}}}]}}")
    if full is not None:
        lines += [
            f"redis: '{full.redis_url}'",
            "consumers:",
            f"  - {{name: bench, api_keys: [{bodies.CLIENT_KEY}], models: ['*']}}",
            "limits:",
            "  - {name: consumer-tpm, key: [consumer], tokens: {per_minute: 1000000000}}",
            "  - {name: consumer-rpm, key: [consumer], requests: {per_minute: 1000000000}}",
            "guard:",
            "  rules:",
            f"    - {{name: banned-words, terms_file: '{full.terms_file}', action: mask, apply_to: [response]}}",
            "log:",
            f"  access: '{full.access_log}'",
        ]
    return "\n".join(lines) + "\n"


def admin_status(admin_port: int, timeout: float = 1.0) -> dict | None:
    """GET /status as JSON, or None when the admin API is not there (yet)."""
    try:
        code, body = http_get(f"http://{HOST}:{admin_port}/status", timeout, admin_headers())
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


def check_config(path: Path) -> None:
    """`python -m fastgw check -c FILE`: a config the gateway would refuse fails here, with its errors."""
    try:
        proc = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)], cwd=REPO_ROOT,
                              env=python_env(), capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise TargetError(f"`fastgw check -c {path}` did not finish in 60 s") from None
    if proc.returncode != 0:
        raise TargetError(f"`fastgw check -c {path}` exited {proc.returncode}:\n"
                          f"{(proc.stdout + proc.stderr).strip()[-2000:]}")


def start_gateway(workdir: Path, name: str, render: Callable[[int, int], str], workers: int, pins: Pinning,
                  stack: ExitStack) -> Process:
    """`fastgw run` (supervisor and workers, all on the proxy core) on the config
    ``render(port, admin_port)`` writes, checked first; ready when /status lists every worker ready."""
    port, admin_port = free_port(), free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(render(port, admin_port))
    check_config(config)
    argv = [*pins.prefix("proxy"), sys.executable, "-m", "fastgw", "run", "-c", str(config)]
    proc = Process(name, argv, workdir / f"{name}.log",
                   info={"port": port, "admin_port": admin_port, "workers": workers, "cpu": pins.proxy,
                         "config": str(config)})

    def ready() -> bool:
        status = admin_status(admin_port)
        if workers_ready(status, workers):
            proc.info["status"] = status
            return True
        return False

    proc.start(REPO_ROOT, stack, python_env())
    wait_until(proc, ready, 60, "ready (all workers in /status)")
    return proc

"""Starting real gateway and mock-LLM processes for end-to-end tests, and talking raw HTTP.

Every process binds free loopback ports, is waited for until it is ready, and is killed
with its whole process group when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_json(handler: BaseHTTPRequestHandler, payload: dict, status: int = 200) -> None:
    """Answer from a test server's request handler with a JSON body (the small fake providers,
    embedders and moderators the tests start)."""
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def http_json(
    method: str, url: str, body: bytes | None = None, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Proc:
    """A child process in its own session, so stopping it stops its workers too."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        # stderr goes to a file: a pipe nobody reads would block a chatty process.
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            start_new_session=True,
        )

    def wait_line(self, needle: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if needle in line:
                return line
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.args} never printed {needle!r}; stderr: {self.stderr_tail()}")

    def stderr_text(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def stderr_tail(self) -> str:
        return self.stderr_text()[-3000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


class MockLLMProcess(Proc):
    def __init__(self, *extra: str, workers: int = 1) -> None:
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", "fastgw", "mock-llm", "--port", str(self.port), "--workers", str(workers), *extra]
        )
        try:
            self.wait_line("listening")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        self.url = f"http://127.0.0.1:{self.port}"


class Gateway(Proc):
    """``fastgw run`` on a generated config; ``pure`` selects the pure-Python twins.

    ``admin_token`` puts the admin API behind that bearer token (the helpers send it), and
    ``admin_options`` adds other keys of the ``admin`` mapping; ``env`` adds to the gateway process's environment.
    """

    def __init__(
        self,
        config: dict,
        tmp_path: Path,
        *,
        pure: bool = False,
        workers: int = 2,
        listen_options: dict | None = None,
        admin_token: str | None = None,
        admin_options: dict | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.admin_token = admin_token
        admin_address = f"127.0.0.1:{self.admin_port}"
        self.config = {
            "listen": {"address": f"127.0.0.1:{self.port}", **(listen_options or {})},
            "admin": {"address": admin_address, "token": admin_token, **(admin_options or {})}
            if admin_token or admin_options
            else admin_address,
            "workers": workers,
            **config,
        }
        self.tmp_path = tmp_path
        self.config_path = tmp_path / f"gateway-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        super().__init__(
            [sys.executable, "-m", "fastgw", "run", "-c", str(self.config_path)],
            env={"FASTGW_PURE": "1" if pure else "0", **(env or {})},
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        try:
            self.wait_ready(workers)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def admin_headers(self, content_type: str | None = None) -> dict[str, str]:
        """What an operator's client sends: the token, and the body's type."""
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        return headers | ({"Content-Type": content_type} if content_type else {})

    def admin_call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, dict]:
        """An admin API call as ``fastgw push`` makes it (token, JSON/YAML content type). A push
        answers once every worker has built the generation: big ones take seconds on a loaded machine."""
        if body is not None and content_type is None:
            content_type = "application/json"
        return http_json(method, self.admin + path, body, timeout=60, headers=self.admin_headers(content_type))

    def status(self) -> dict:
        return self.admin_call("GET", "/status")[1]

    def wait_ready(self, workers: int, generation: int | None = None, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.stderr_tail()}")
            try:
                last = self.status()
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            ready = [w for w in last.get("workers", []) if w.get("ready")]
            if len(ready) == workers and (generation is None or all(w["generation"] == generation for w in ready)):
                return last
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready: {last}")

    def push(self, config: dict) -> tuple[int, dict]:
        full = {k: self.config[k] for k in ("listen", "admin", "workers")} | config
        return self.admin_call("POST", "/config", yaml.safe_dump(full).encode(), "application/yaml")


class RawClient:
    """A raw keep-alive HTTP/1.1 connection, to see exactly what the gateway sends."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_response_head_only(self) -> tuple[int, dict[str, str], bytes]:
        """A response that has no body whatever its headers say (the answer to HEAD)."""
        return self.read_response(head_only=True)

    def read_response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: status, lower-cased headers, de-chunked body."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a full head; got {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                if not self._fill():
                    raise ConnectionError("closed inside the body")
            body, self.buf = self.buf[:length], self.buf[length:]
            return status, headers, body
        if headers.get("transfer-encoding") == "chunked":
            return status, headers, self._read_chunked()
        while self._fill():
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    raise ConnectionError("closed inside a chunked body")
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                if not self._fill():
                    raise ConnectionError("closed inside a chunk")
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return body

    def is_closed(self, wait: float = 2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

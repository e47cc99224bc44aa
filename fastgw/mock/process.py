"""Running the mock LLM as a process: `serve()` binds, then serves in this process or forks workers that
each have their own SO_REUSEPORT listener, forwards SIGTERM/SIGINT to them and stops them all when one
crashes (what `fastgw mock-llm` runs)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any

from fastgw.mock.core import MockLLM
from fastgw.mock.server import Connection
from fastgw.proc import die_with_parent

__all__ = ["serve"]


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _run_worker(sock: socket.socket, mock: MockLLM, ready_line: str | None) -> None:
    """Serve on an already listening socket until SIGTERM/SIGINT."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        server = await loop.create_server(lambda: Connection(mock), sock=sock, backlog=1024)
        if ready_line is not None:
            print(ready_line, flush=True)  # after the signal handlers: a SIGTERM from now on exits 0
        await stop
        server.close()

    _run(main())


def _supervise(socks: list[socket.socket], mock: MockLLM, ready_line: str) -> None:
    """Fork one worker per socket, forward SIGTERM/SIGINT to them, wait; a crashed worker stops all."""
    children: list[int] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    parent = os.getpid()
    try:
        for sock in socks:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for sig in previous:
                        signal.signal(sig, signal.SIG_DFL)  # the forwarding handler is the parent's job
                    try:
                        alive = die_with_parent(signal.SIGTERM, parent)
                    except OSError:
                        alive = True  # no parent-death signal here: serve all the same
                    if not alive:
                        os._exit(0)
                    for other in socks:
                        if other is not sock:
                            other.close()
                    _run_worker(sock, mock, None)
                    code = 0
                finally:
                    os._exit(code)  # never return into the parent's stack (pytest, the CLI...)
            children.append(pid)
        for sock in socks:
            sock.close()
        if stopping:
            forward(signal.SIGTERM, None)  # a signal that came while forking missed the later children
        print(ready_line, flush=True)
        failed: tuple[int, int] | None = None
        while children:
            pid, status = os.waitpid(-1, 0)
            if pid not in children:
                continue
            children.remove(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping and code != 0:
                failed = (pid, code)
                forward(signal.SIGTERM, None)
        if failed is not None:
            raise RuntimeError(f"mock-llm worker {failed[0]} exited with status {failed[1]}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(host: str = "127.0.0.1", port: int = 9000, workers: int = 1, **mock_options: Any) -> None:
    """Run the mock server until SIGTERM/SIGINT. `workers > 1` forks that many processes, each with its
    own SO_REUSEPORT listener (bound here first, so port 0 resolves to one port for all of them)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    mock = MockLLM(**mock_options)
    first = _listen_socket(host, port, reuse_port=workers > 1)
    address = first.getsockname()
    socks = [first] + [_listen_socket(host, address[1], reuse_port=True) for _ in range(workers - 1)]
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    ready_line = f"mock-llm listening on http://{shown}:{address[1]} (workers {workers})"
    if workers == 1:
        _run_worker(first, mock, ready_line)
    else:
        _supervise(socks, mock, ready_line)


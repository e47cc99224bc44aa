"""workers.listener.Acceptor: stop refuses new connections, start serves again, on real loopback sockets.

The drain race of 0.6.0 (a worker respawned while the node was drained closed the first
connections after ``/undrain`` unanswered) was a socket shut down twice: the second
``shutdown(SHUT_RD)``, on a socket no longer listening, left it read-shut, and every
connection accepted after the next ``listen()`` inherited that and read end-of-file.
"""

from __future__ import annotations

import asyncio
import socket

import uvloop

from workers.listener import Acceptor, listening


class Recorder(asyncio.Protocol):
    """Records what one accepted connection sees, and answers each chunk with ``ok``."""

    seen: list[Recorder] = []

    def __init__(self) -> None:
        self.data = b""
        self.eof = asyncio.Event()
        self.got_data = asyncio.Event()
        Recorder.seen.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got_data.set()
        self.transport.write(b"ok")

    def eof_received(self) -> bool:
        self.eof.set()
        return False


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def connect_and_talk(port: int) -> tuple[Recorder, bytes]:
    """Connect, wait until the server side has taken the connection and read once, then send."""
    Recorder.seen.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not Recorder.seen and loop.time() < deadline:
        await asyncio.sleep(0.01)
    server_side = Recorder.seen[0]
    await asyncio.sleep(0.2)  # the server side has had every chance to read before any data exists
    assert not server_side.eof.is_set(), "the accepted connection read end-of-file before the client sent anything"
    writer.write(b"ping")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(2), 5)
    writer.close()
    return server_side, answer


def run(coro):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_stopped_twice_then_started_serves_connections_that_send_late():
    async def scenario():
        sock = bound_socket()
        acceptor = Acceptor(asyncio.get_running_loop(), sock, Recorder, backlog=16)
        await acceptor.start()
        acceptor.stop()  # the node drains
        assert not listening(sock)
        acceptor.stop()  # a worker respawned while drained stops again, on a socket already shut
        assert not listening(sock)
        try:
            socket.create_connection(sock.getsockname(), timeout=2).close()
            raise AssertionError("a stopped acceptor must refuse new connections")
        except ConnectionRefusedError:
            pass
        await acceptor.start()  # /undrain
        assert listening(sock)
        for _ in range(3):
            server_side, answer = await connect_and_talk(sock.getsockname()[1])
            assert (server_side.data, answer) == (b"ping", b"ok")
        acceptor.close()

    run(scenario())


def test_stop_takes_connections_already_queued_and_refuses_later_ones():
    async def scenario():
        sock = bound_socket()
        acceptor = Acceptor(asyncio.get_running_loop(), sock, Recorder, backlog=16)
        Recorder.seen.clear()
        queued = socket.create_connection(sock.getsockname(), timeout=2)  # queued: nobody accepts yet
        assert acceptor.stop() == 1
        queued.sendall(b"ping")
        queued.settimeout(5)
        assert await asyncio.get_running_loop().run_in_executor(None, queued.recv, 2) == b"ok"
        try:
            socket.create_connection(sock.getsockname(), timeout=2).close()
            raise AssertionError("a stopped acceptor must refuse new connections")
        except ConnectionRefusedError:
            pass
        queued.close()
        acceptor.close()

    run(scenario())

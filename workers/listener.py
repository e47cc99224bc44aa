"""A worker's accepting side: serve its listening socket, and stop so new connections are refused.

A drain must *refuse* new connections (the client, or the load balancer, then goes to
another node) rather than leave them queued with nobody to accept them. The supervisor
holds the same socket as the worker (to keep a slot's queue across respawns), so closing
the worker's descriptor alone would leave the socket listening. Instead it is shut down:
on Linux ``shutdown(SHUT_RD)`` on a listening socket stops it listening for every process
that holds it, and new connections are refused; ``listen()`` later resumes it (HAProxy
pauses its listeners this way). The event loop serves a duplicate descriptor, so closing
its server leaves the socket itself open for the next resume.

Only a socket that is listening is shut down. ``shutdown(SHUT_RD)`` on one that is not
(already shut, e.g. by the worker this one replaced while the node was drained) fails
with ENOTCONN *but still marks it read-shut*; that mark survives the next ``listen()`` and
is copied into every connection accepted from it, which then reads end-of-file as soon as
its receive queue is empty: a client whose request had not arrived before the first read
was closed unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable


def listening(sock: socket.socket) -> bool:
    """Whether ``sock`` is in the listening state now (SO_ACCEPTCONN)."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:  # closed
        return False


class Acceptor:
    """Accepts on ``sock`` while started; :meth:`stop` refuses new connections until :meth:`start`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], asyncio.Protocol],
        backlog: int,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.backlog = backlog
        self._server: asyncio.AbstractServer | None = None
        self._handing_over: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    @property
    def accepting(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Accept (again): the event loop's server listens on a duplicate of the socket."""
        if self._server is None:
            # create_server listens with ``backlog`` (its default, 100, would override the config's)
            self._server = await self.loop.create_server(
                self.factory, sock=self.sock.dup(), backlog=self.backlog
            )

    def stop(self) -> int:
        """Stop accepting: connections the kernel already queued are taken (and served, as
        draining connections); later ones are refused. Returns how many were taken."""
        if self._server is not None:
            self._server.close()  # before the shutdown: a shut socket left in the loop would spin
            self._server = None
        taken = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # BlockingIOError: the queue is empty; EINVAL: already shut
                break
            conn.setblocking(False)
            task = self.loop.create_task(self.loop.connect_accepted_socket(self.factory, conn))
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)
            taken += 1
        if listening(self.sock):  # see the module docstring: never shut a socket that is not
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)
        return taken

    def close(self) -> None:
        self.stop()
        self.sock.close()

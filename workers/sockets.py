"""Listening sockets, bound by the supervisor before it forks.

With ``reuse_port`` each worker *slot* gets its own SO_REUSEPORT socket (the kernel
spreads connections over the slots evenly, with no thundering herd). The supervisor keeps
every slot's socket open across that slot's respawns: closing a REUSEPORT listener resets
the connections queued on it, while a socket that stays open simply holds them until the
replacement worker accepts. Without ``reuse_port`` all workers share one socket and its
single accept queue.

Sockets need no ``set_inheritable``: that flag only matters across ``exec``, and workers
are plain forks, which share every descriptor.
"""

from __future__ import annotations

import socket

MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


class Listeners:
    """The listening sockets of one gateway and which one each worker slot serves on."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks

    def for_slot(self, slot: int) -> socket.socket:
        """The socket worker ``slot`` serves on (the shared one without reuse_port)."""
        return self.socks[slot % len(self.socks)]

    def close_others(self, slot: int) -> None:
        """In a forked worker: drop the other slots' sockets so only their owners hold them."""
        mine = self.for_slot(slot)
        for sock in self.socks:
            if sock is not mine:
                sock.close()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound: port 0 in the config means "any free port"."""
        host, port = self.socks[0].getsockname()[:2]
        return host, port

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def _bind_one(host: str, port: int, reuse_port: bool, backlog: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(host: str, port: int, *, slots: int, reuse_port: bool, backlog: int) -> Listeners:
    """Bind one socket per slot (``reuse_port``) or one shared socket; raises OSError.

    With port 0 the first socket picks a free port and the other slots join it.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(slots if reuse_port else 1):
            socks.append(_bind_one(host, port, reuse_port, backlog))
            port = socks[0].getsockname()[1]
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return Listeners(socks)


def migrate_req_warning(reuse_port: bool) -> str | None:
    """Say why ``net.ipv4.tcp_migrate_req=0`` matters with reuse_port, or None if it does not."""
    if not reuse_port:
        return None
    try:
        with open(MIGRATE_REQ) as f:
            enabled = f.read().strip() != "0"
    except OSError:  # not Linux, or a kernel before 5.14: nothing to advise
        return None
    if enabled:
        return None
    return (
        f"{MIGRATE_REQ} is 0: connections queued on a reuse_port listener are reset when it closes "
        "instead of moving to a sibling (set net.ipv4.tcp_migrate_req=1)"
    )

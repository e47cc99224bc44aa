"""Connection caps of one worker: ``http.max_connections`` and ``http.max_connections_per_ip``.

A worker that accepts without a bound runs out of file descriptors and then fails every
client; with a cap the clients beyond it get a quick 503 and the others keep being served.
"""

from __future__ import annotations

from typing import Any


class Admission:
    __slots__ = ("open", "per_ip")

    def __init__(self) -> None:
        self.open = 0
        self.per_ip: dict[bytes, int] = {}

    def admit(self, peer: bytes, gen: Any) -> str | None:
        """Count a new connection, or return why it is refused (a metric label)."""
        if gen.max_connections and self.open >= gen.max_connections:
            return "refused_max"
        cap = gen.max_connections_per_ip
        if cap:
            held = self.per_ip.get(peer, 0)
            if held >= cap:
                return "refused_per_ip"
            self.per_ip[peer] = held + 1
        self.open += 1
        return None

    def release(self, peer: bytes) -> None:
        """An admitted connection closed (entries are dropped at zero: the map stays small)."""
        self.open -= 1
        held = self.per_ip.get(peer)
        if held is not None:
            if held <= 1:
                del self.per_ip[peer]
            else:
                self.per_ip[peer] = held - 1

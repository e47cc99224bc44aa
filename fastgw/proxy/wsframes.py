"""Where each direction of a WebSocket tunnel is in its framing (RFC 6455 5.2).

The tunnel relays bytes unparsed; at the drain deadline the gateway may put a close frame
(1001 going away) into a direction only between two frames, so it follows the frame headers
(skipping payloads by length, never reading them).
"""

from __future__ import annotations

import os

GOING_AWAY = (1001).to_bytes(2, "big")
# To the client a server's frames are unmasked; to the upstream we are the client and mask (5.3).
CLOSE_TO_CLIENT = b"\x88\x02" + GOING_AWAY


def close_to_upstream() -> bytes:
    """A masked close frame, 1001 going away, with a fresh masking key."""
    key = os.urandom(4)
    return b"\x88\x82" + key + bytes(b ^ key[i] for i, b in enumerate(GOING_AWAY))


class FrameBoundary:
    """One direction's position: payload bytes left in the current frame, or a partial header."""

    __slots__ = ("left", "head")

    def __init__(self) -> None:
        self.left = 0
        self.head = b""

    @property
    def at_boundary(self) -> bool:
        """The bytes seen so far end exactly where a frame ends."""
        return not self.left and not self.head

    def feed(self, data: bytes) -> None:
        """Follow ``data`` (the next bytes of this direction)."""
        if self.head:
            data = self.head + data
            self.head = b""
        size = len(data)
        pos = 0
        left = self.left
        while True:
            if left:
                step = min(left, size - pos)
                pos += step
                left -= step
                if left:
                    break
            if pos >= size:
                break
            if size - pos < 2:
                self.head = data[pos:]
                break
            second = data[pos + 1]
            length = second & 0x7F
            extra = 2 if length == 126 else 8 if length == 127 else 0
            header = 2 + extra + (4 if second & 0x80 else 0)
            if size - pos < header:
                self.head = data[pos:]
                break
            if extra:
                length = int.from_bytes(data[pos + 2 : pos + 2 + extra], "big")
            pos += header
            left = length
        self.left = left

"""The plain-HTTP listener beside a TLS one: every request is sent to its https:// twin.

It reads one request head (no body is ever wanted), answers a permanent redirect to the same
host and target on the TLS port, and closes. Nothing is proxied, so the head is checked only
as far as the ``Location`` it builds needs: a request line of visible ASCII and a Host (or an
absolute-form authority) that is ``host[:port]``; anything else gets a 400. A client that
sends nothing is closed after ``timeout``.
"""

from __future__ import annotations

import asyncio
import re

MAX_HEAD = 8192
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/1\.[01]\Z")
_ABSOLUTE = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)([\x21-\x7e]*)\Z")
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~]+)(?::[0-9]{1,5})?\Z")
_REASONS = {301: b"Moved Permanently", 302: b"Found", 307: b"Temporary Redirect", 308: b"Permanent Redirect"}
_BAD = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
        b"Connection: close\r\n\r\nbad request\n")


def location(head: bytes, https_port: int) -> bytes | None:
    """The https URL for a request head (without its final CRLF CRLF), or None if it is invalid."""
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        return None
    target = m.group(2)
    hosts = [line[5:].strip(b" \t") for line in lines[1:] if line[:5].lower() == b"host:"]
    if target[:1] == b"/":
        if len(hosts) != 1:
            return None
        authority = hosts[0]
    else:
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            return None
        authority, target = absolute.group(1), absolute.group(2) or b"/"
        if target[:1] != b"/":
            target = b"/" + target
    found = _HOST.fullmatch(authority)
    if found is None:
        return None
    port = b"" if https_port == 443 else b":%d" % https_port
    return b"https://" + found.group(1) + port + target


class RedirectToHttps(asyncio.Protocol):
    """One connection of the redirect listener."""

    def __init__(self, https_port: int, status: int, timeout: float) -> None:
        self.https_port, self.status, self.timeout = https_port, status, timeout
        self.buffer = b""
        self.answered = False
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self.timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.answered:  # the rest of a head or a body: nobody reads it
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._answer(_BAD)
            return
        url = location(self.buffer[:end], self.https_port) if end <= MAX_HEAD else None
        if url is None:
            self._answer(_BAD)
            return
        self._answer(b"HTTP/1.1 %d %s\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                     % (self.status, _REASONS[self.status], url))

    def _answer(self, response: bytes) -> None:
        assert self.transport is not None
        self.transport.write(response)
        self.transport.close()
        self.answered = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

"""Client for an external moderation hook shaped like OpenAI's ``POST /v1/moderations``.

Request ``{"input": text}``; answer ``{"results": [{"flagged": bool, ...}, ...]}``: the text is
flagged when any result is. One short-lived HTTP/1.1 connection per call, framed by our own
response parser, so the guard needs no HTTP client dependency. Anything but a well-formed
200 answer within ``timeout`` (refused connection, timeout, bad status, bad JSON) is an
error, and ``on_error`` decides: ``open`` lets the text through, ``closed`` treats it as
flagged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlsplit

from fastgw._speedups import ResponseParser
from fastgw.http.errors import END, ParseError

__all__ = ["moderate"]

log = logging.getLogger(__name__)
MAX_ANSWER = 1 << 20  # a moderation answer is small; a bigger one is an error, not a memory sink


class ModerationError(Exception):
    """The hook did not give a usable answer."""


async def moderate(url: str, text: str, timeout: float, on_error: str) -> bool:
    """Whether the hook at ``url`` flags ``text``; on error, ``on_error == "closed"``."""
    try:
        return await asyncio.wait_for(_ask(url, text), timeout)
    except (OSError, asyncio.TimeoutError, ParseError, ModerationError) as exc:
        log.warning("moderation hook %s failed (%s: %s); failing %s", url, type(exc).__name__, exc, on_error)
        return on_error == "closed"


async def _ask(url: str, text: str) -> bool:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    reader, writer = await asyncio.open_connection(host, parts.port or (443 if https else 80), ssl=https or None)
    try:
        body = json.dumps({"input": text}).encode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        status, answer = await _read(reader)
    finally:
        writer.close()
    if status != 200:
        raise ModerationError(f"status {status}")
    try:
        results = json.loads(answer)["results"]
        return any(bool(result["flagged"]) for result in results)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModerationError(f"unexpected answer: {exc!r}") from None


async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response."""
    parser = ResponseParser()
    parser.start(b"POST")
    status, body, eof = 0, bytearray(), False
    while True:
        event = parser.next_event()
        if event is END:
            return status, bytes(body)
        if event is None:
            if eof:
                raise ModerationError("connection closed mid-answer")
            data = await reader.read(65536)
            if data:
                parser.feed(data)
            else:
                eof = True
                parser.feed_eof()
        elif not status:
            status = event.status  # the head comes first
        else:
            body += event
            if len(body) > MAX_ANSWER:
                raise ModerationError("answer too large")

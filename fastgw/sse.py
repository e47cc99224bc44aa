"""Incremental Server-Sent-Events framer: the pure-Python reference twin.

``csrc/sse.pyx`` (built as ``fastgw._c.sse``) is the compiled twin with the same API and the
same behaviour, errors included; tests feed both the same streams. The gateway runs one
parser per streamed upstream answer: it needs every complete event (to convert it between
provider formats, spot ``[DONE]``, read usage) and, for pass-through relays, the exact bytes
of each event, whatever the split of the stream across reads.

Parsing follows the WHATWG EventSource rules: lines end with CRLF, LF or CR; a blank line
dispatches the event when the block had a ``data`` field; ``name: value`` loses one leading
space of the value; a line without a colon is a field with an empty value; ``:`` starts a
comment; unknown fields are ignored; a UTF-8 BOM at the very start is skipped; text is
decoded as UTF-8 with errors="replace". Where the spec leaves the event object to us:

- ``raw`` runs from the end of the previous dispatched event through this event's blank
  line, so the bytes of comments, data-less blocks and the BOM that came before it are
  included: concatenating every ``raw`` plus the unfinished tail gives back the stream.
- ``event`` is the block's last ``event`` value (``None`` without one; a data-less block's
  ``event`` is dropped, as the spec resets it at every blank line).
- ``id`` is the spec's *last event ID*: it persists across events until a new ``id``
  field (without NUL) replaces it, as a reconnecting client would send it.
- ``retry`` is the last valid ``retry`` value (1 to 18 ASCII digits, so it always fits a
  C long long) within ``raw``, else ``None``.

A line ending in CR at the very end of a feed is held back until the next byte shows
whether LF follows, so events and ``raw`` never depend on how the stream was split;
``finish()`` settles that last CR, which may dispatch one final event.
"""

from __future__ import annotations

__all__ = ["SSEError", "SSEEvent", "SSEParser", "ends_stream", "relay_bytes", "serialize_event"]

from fastgw.jsonscan import no_usage_object  # noqa: E402  (the quick proof, shared with the scanner)

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """An event larger than max_event_size, or a call on a finished or failed parser.

    ``events`` holds the events completed by the failing ``feed``/``finish`` call before
    the error, so a caller loses nothing that arrived intact.
    """

    def __init__(self, message: str, events: list[SSEEvent] | None = None) -> None:
        super().__init__(message)
        self.events = events if events is not None else []


class SSEEvent:
    """One dispatched event; see the module docstring for what each field holds."""

    __slots__ = ("event", "data", "id", "retry", "raw")

    def __init__(self, data: str, event: str | None = None, id: str | None = None,
                 retry: int | None = None, raw: bytes = b"") -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.raw = raw

    @property
    def is_done(self) -> bool:
        """OpenAI's end-of-stream marker."""
        return self.data == "[DONE]"

    def __repr__(self) -> str:
        return f"<SSEEvent event={self.event!r} data={self.data!r} id={self.id!r} retry={self.retry!r}>"


class SSEParser:
    """Feed bytes as they arrive; get back the events each feed completed."""

    __slots__ = ("_buf", "_pos", "_scan", "_block", "_data", "_event", "_id", "_retry", "_comments",
                 "_bom", "_max", "_error", "_finished")

    def __init__(self, max_event_size: int = 1 << 20) -> None:
        # _buf holds exactly the bytes not yet returned in a ``raw``; offsets index into it.
        self._buf = bytearray()
        self._pos = 0  # start of the next unparsed line
        self._scan = 0  # bytes before this hold no line ending after _pos
        self._block = 0  # start of the current (incomplete) block
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._comments = 0
        self._bom = True  # the start of the stream has still to be checked for a BOM
        self._max = max_event_size
        self._error: str | None = None
        self._finished = False

    @property
    def pending(self) -> int:
        """Bytes of the block still incomplete: non-zero after finish() means a truncated stream."""
        return len(self._buf) - self._block

    @property
    def comments(self) -> int:
        """Comment lines seen so far: keep-alives show the upstream is alive between events."""
        return self._comments

    def feed(self, data: bytes | bytearray | memoryview) -> list[SSEEvent]:
        """Parse received bytes; return the events they completed, in order."""
        self._check_alive()
        buf = self._buf
        if buf:
            buf += data
            return self._run(buf, False)
        # Nothing buffered: parse the caller's bytes in place, keep only the unfinished tail.
        return self._run(data if type(data) is bytes else bytes(data), False)

    def feed_relay(self, data: bytes | bytearray | memoryview) -> list[SSEEvent | bytes]:
        """feed() for a stream relayed as it is: runs of plain events come back as one ``bytes``
        item each (their raw bytes), and only the others as SSEEvent objects, in stream order.

        A plain event has one ``data`` line, no ``event`` name and no ``retry``, is not
        ``[DONE]``, and its data provably carries no "usage" object (the scanner's quick proof):
        an OpenAI stream's content chunks then cost the compiled twin no object at all."""
        out: list[SSEEvent | bytes] = []
        run: list[bytes] = []
        for event in self.feed(data):
            if (event.event is None and event.retry is None and "\n" not in event.data
                    and event.data != "[DONE]" and no_usage_object(event.data)):
                run.append(event.raw)
                continue
            if run:
                out.append(b"".join(run))
                run = []
            out.append(event)
        if run:
            out.append(b"".join(run))
        return out

    def finish(self) -> list[SSEEvent]:
        """End of stream: settle a trailing CR; an unterminated block is dropped (see ``pending``)."""
        if self._finished and self._error is None:
            return []
        self._check_alive()
        self._finished = True
        return self._run(self._buf, True) if self._buf else []

    def _check_alive(self) -> None:
        if self._error is not None:
            raise SSEError(self._error)
        if self._finished:
            raise SSEError("feed() after finish()")

    def _fail(self, events: list[SSEEvent]) -> None:
        self._error = f"SSE event exceeds max_event_size ({self._max} bytes)"
        self._buf = bytearray()
        self._pos = self._scan = self._block = 0
        raise SSEError(self._error, events)

    def _run(self, base: bytes | bytearray, eof: bool) -> list[SSEEvent]:
        """Parse every complete line of ``base`` (the buffer, or the fed bytes when it was empty)."""
        events: list[SSEEvent] = []
        end = len(base)
        if self._bom:
            if end < 3 and not eof and _BOM.startswith(base):
                self._keep(base, 0)
                return events
            self._bom = False
            if base.startswith(_BOM):
                self._pos = self._scan = 3
        pos = self._pos
        scan = self._scan
        block = self._block
        raw_start = 0
        nl = -2  # cached position of the next LF (-1: none before end)
        while True:
            if nl != -1 and nl < scan:
                nl = base.find(b"\n", scan)
            cr = base.find(b"\r", scan, end if nl < 0 else nl)
            if cr >= 0:
                line_end = cr
                if cr + 1 < end:
                    nxt = cr + 2 if base[cr + 1] == 10 else cr + 1
                elif eof:
                    nxt = cr + 1
                else:  # a CR at the end: wait to see whether LF follows
                    scan = cr
                    break
            elif nl >= 0:
                line_end = nl
                nxt = nl + 1
            else:
                scan = end
                break
            if line_end == pos:  # blank line: end of block
                if self._data:
                    if nxt - raw_start > self._max:
                        self._fail(events)
                    events.append(self._dispatch(bytes(base[raw_start:nxt])))
                    raw_start = nxt
                self._data = []
                self._event = None
                block = nxt
            elif base[pos] == 58:  # ":"
                self._comments += 1
            else:
                colon = base.find(b":", pos, line_end)
                if colon < 0:
                    name = base[pos:line_end]
                    value = b""
                else:
                    name = base[pos:colon]
                    colon += 1
                    if colon < line_end and base[colon] == 32:
                        colon += 1
                    value = base[colon:line_end]
                self._field(name, value)
            pos = scan = nxt
        if end - raw_start > self._max:
            self._fail(events)
        self._pos = pos - raw_start
        self._scan = scan - raw_start
        self._block = block - raw_start
        self._keep(base, raw_start)
        return events

    def _field(self, name: bytes | bytearray, value: bytes | bytearray) -> None:
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if 0 < len(value) <= 18 and value.isdigit():
                self._retry = int(value)

    def _dispatch(self, raw: bytes) -> SSEEvent:
        data = self._data
        ev = SSEEvent(
            (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace"),
            None if self._event is None else self._event.decode("utf-8", "replace"),
            self._id,
            self._retry,
            raw,
        )
        self._retry = None
        return ev

    def _keep(self, base: bytes | bytearray, raw_start: int) -> None:
        """Keep only the bytes not yet returned in a ``raw``."""
        if base is self._buf:
            del base[:raw_start]
        elif raw_start < len(base):
            self._buf = bytearray(base[raw_start:])


def serialize_event(data: str | bytes, event: str | None = None) -> bytes:
    """Frame one event: ``event:`` line if given, one ``data:`` line per line of data, blank line.

    CR and CRLF in ``data`` become line breaks, as SSE has no way to carry a CR in a value.
    """
    body = data.encode() if isinstance(data, str) else bytes(data)
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"\n" in body:
        body = body.replace(b"\n", b"\ndata: ")
    if event is None:
        return b"data: " + body + b"\n\n"
    name = event.encode()
    if b"\n" in name or b"\r" in name:
        raise ValueError("SSE event name must not contain a line break")
    return b"event: " + name + b"\ndata: " + body + b"\n\n"


def relay_bytes(items: list) -> bytes | None:
    """The bytes a relayed read sends: each event's ``raw``, ``bytes`` items as they are; None
    when an item is a chunk dict (the caller renders those)."""
    parts = []
    for item in items:
        if type(item) is bytes:
            parts.append(item)
        elif type(item) is dict:
            return None
        else:
            parts.append(item.raw)
    return b"".join(parts)


def ends_stream(events: list) -> bool:
    """Whether a read's events hold the provider's end marker: OpenAI's ``[DONE]`` or
    Anthropic's ``message_stop`` (``bytes`` items, runs of plain events, never do)."""
    return any(type(event) is not bytes and (event.data == "[DONE]" or event.event == "message_stop")
               for event in events)

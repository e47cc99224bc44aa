"""What every fuzz input must satisfy, shared by the bounded CI run and the long atheris run.

1. The twins agree: the pure parser (fastgw.http.parser) and the compiled one
   (fastgw._c.http_parser) give the same events, or the same error and reason, for the same
   bytes split the same way, as requests and as responses (to GET and to HEAD).
2. Nothing but ParseError escapes, whatever the bytes.
3. No desync with h11: when both h11 and our request parser accept a first complete message,
   they agree on its method, target, body and on where it ends (the bytes left over).
"""

from __future__ import annotations

import importlib

import h11

from fastgw.http import END, ParseError
from fastgw.http import parser as py_parser

compiled = importlib.import_module("fastgw._c.http_parser")  # the harness needs the build
TWINS = (py_parser, compiled)
HEAD_LIMIT = 512  # small limits, so the fuzzer reaches the size checks too
MAX_HEADERS = 16


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for p in points:
        chunks.append(data[start:p])
        start = p
    chunks.append(data[start:])
    return [c for c in chunks if c]


def events(parser, chunks: list[bytes], method: bytes | None = None) -> list:
    """Every event until the input runs out (plus EOF), bodies merged; heads as field dicts."""
    out: list = []
    if method is not None:
        parser.start(method)
    try:
        for chunk in [*chunks, None]:
            if chunk is None:
                parser.feed_eof()
            else:
                parser.feed(chunk)
            while (ev := parser.next_event()) is not None:
                if ev is END:
                    out.append("END")
                    if method is not None and parser.buffered and _final(out):
                        parser.start(method)
                elif isinstance(ev, (bytes, memoryview)):
                    assert len(ev), "empty body chunk"
                    if out and out[-1][0] == "body":
                        out[-1] = ("body", out[-1][1] + bytes(ev))
                    else:
                        out.append(("body", bytes(ev)))
                else:
                    out.append(("head", _head_fields(ev)))
    except ParseError as exc:
        out.append(("error", exc.status, exc.reason))
    return out


_FIELDS = ("method", "target", "path", "query", "version", "headers", "host", "content_length", "chunked",
           "keep_alive", "expect_continue", "upgrade", "connection_tokens", "status", "reason")


def _head_fields(head) -> dict:
    return {k: getattr(head, k) for k in _FIELDS if hasattr(head, k)}


def _final(out: list) -> bool:
    for ev in reversed(out):
        if ev[0] == "head":
            return ev[1].get("status", 200) >= 200
    return True


def check_twins(data: bytes, cuts: list[int]) -> None:
    chunks = split(data, cuts)
    got = [(events(m.RequestParser(HEAD_LIMIT, MAX_HEADERS), chunks)) for m in TWINS]
    assert got[0] == got[1], ("request", data, chunks, got)
    for method in (b"GET", b"HEAD"):
        got = [(events(m.ResponseParser(HEAD_LIMIT, MAX_HEADERS), chunks, method)) for m in TWINS]
        assert got[0] == got[1], ("response", method, data, chunks, got)


def first_message_h11(data: bytes) -> tuple[bytes, bytes, bytes, int] | None:
    """(method, target, body, bytes left) of h11's first request, or None if h11 refuses it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    conn.receive_data(data)
    conn.receive_data(b"")
    request, body = None, b""
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Request):
                request = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                rest, _ = conn.trailing_data
                return request.method, request.target, body, len(rest)
            else:
                return None
    except h11.RemoteProtocolError:
        return None


def first_message_ours(data: bytes) -> tuple[bytes, bytes, bytes, int] | None:
    parser = py_parser.RequestParser(HEAD_LIMIT, MAX_HEADERS)
    parser.feed(data)
    head, body = None, b""
    try:
        while (ev := parser.next_event()) is not None:
            if ev is END:
                return head.method, head.target, body, parser.buffered
            if isinstance(ev, (bytes, memoryview)):
                body += bytes(ev)
            else:
                head = ev
    except ParseError:
        return None
    return None


def check_h11(data: bytes) -> bool:
    """True when both accepted (and agreed); the caller may count how often that happens."""
    ours = first_message_ours(data)
    if ours is None:
        return False
    theirs = first_message_h11(data)
    if theirs is None:
        return False
    assert ours == theirs, ("desync with h11", data, ours, theirs)
    return True


def check(data: bytes, cuts: list[int]) -> None:
    check_twins(data, cuts)
    check_h11(data)

"""Tests for the HTTP/1.1 parser twins (fastgw.http.parser and fastgw._c.http_parser).

Every test runs against both twins. The compiled one is imported inside the fixture, so
a missing build fails those tests instead of skipping them. Property tests check that the
twins agree with each other, with what was generated, and with h11 (an independent
implementation), whatever the split of the stream across feed() calls.
"""

from __future__ import annotations

import importlib
import string

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.http import END, ParseError
from fastgw.http import parser as py_parser

TWINS = ["py", "c"]


def _module(name: str):
    if name == "py":
        return py_parser
    return importlib.import_module("fastgw._c.http_parser")  # ImportError fails the test: CI builds it


@pytest.fixture(params=TWINS)
def mod(request):
    return _module(request.param)


REQUEST_FIELDS = (
    "method", "target", "path", "query", "version", "headers", "host", "content_length", "chunked",
    "keep_alive", "expect_continue", "upgrade", "connection_tokens",
)
RESPONSE_FIELDS = ("version", "status", "reason", "headers", "content_length", "chunked", "keep_alive",
                   "connection_tokens")


def fields(head) -> dict:
    names = RESPONSE_FIELDS if hasattr(head, "status") else REQUEST_FIELDS
    return {name: getattr(head, name) for name in names}


def drain(parser, out: list, methods: list[bytes] | None = None) -> None:
    """Pull events into ``out`` (normalised: bodies merged), restarting a response parser as needed."""
    while True:
        try:
            ev = parser.next_event()
        except ParseError as e:
            out.append(("error", e.status, e.reason))
            return
        if ev is None:
            return
        if ev is END:
            out.append("END")
            if methods is not None and out_final(out) and methods:
                parser.start(methods.pop(0))
        elif isinstance(ev, (bytes, bytearray, memoryview)):
            assert len(ev) > 0, "empty body chunk"
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + bytes(ev))
            else:
                out.append(("body", bytes(ev)))
        else:
            out.append(("head", fields(ev)))


def out_final(out: list) -> bool:
    """True when the message just ended was a final (non-1xx) response."""
    for ev in reversed(out):
        if ev[0] == "head":
            return ev[1]["status"] >= 200
    return True


def run(parser, chunks, eof: bool = False, methods: list[bytes] | None = None) -> list:
    out: list = []
    if methods is not None:
        methods = list(methods)
        parser.start(methods.pop(0))
    for chunk in chunks:
        parser.feed(chunk)
        drain(parser, out, methods)
        if out and out[-1][0] == "error":
            return out
    if eof:
        try:
            parser.feed_eof()
        except ParseError as e:
            out.append(("error", e.status, e.reason))
            return out
        drain(parser, out, methods)
    return out


def req(mod, data: bytes, **kw) -> list:
    return run(mod.RequestParser(**kw), [data])


def heads(events: list) -> list[dict]:
    return [ev[1] for ev in events if ev[0] == "head"]


def error_of(events: list):
    return events[-1][1] if events and events[-1][0] == "error" else None


# -- requests: basics --------------------------------------------------------------------------


def test_simple_get(mod):
    events = req(mod, b"GET /index.html?a=1&b=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
    assert events == [
        ("head", {
            "method": b"GET", "target": b"/index.html?a=1&b=2", "path": b"/index.html", "query": b"a=1&b=2",
            "version": 11, "headers": [(b"Host", b"example.com"), (b"Accept", b"*/*")], "host": b"example.com",
            "content_length": -1, "chunked": False, "keep_alive": True, "expect_continue": False,
            "upgrade": False, "connection_tokens": (),
        }),
        "END",
    ]


def test_head_types_and_get(mod):
    p = mod.RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHOST:   a.b \t\r\nX-Dup: 1\r\nx-dup: 2\r\nX-Empty:\r\nX-Inner: a  b\r\n\r\n")
    head = p.next_event()
    assert head.headers == [(b"HOST", b"a.b"), (b"X-Dup", b"1"), (b"x-dup", b"2"), (b"X-Empty", b""),
                            (b"X-Inner", b"a  b")]
    assert head.host == b"a.b"
    assert head.get(b"host") == b"a.b"
    assert head.get(b"x-dup") == b"1"
    assert head.get(b"x-empty") == b""
    assert head.get(b"missing") is None
    assert head.get(b"missing", b"d") == b"d"
    assert head.get(b"HOST") is None  # the argument must already be lower-case
    assert all(type(n) is bytes and type(v) is bytes for n, v in head.headers)
    assert type(head.method) is bytes and type(head.path) is bytes and type(head.query) is bytes
    assert p.next_event() is END
    assert p.next_event() is None


def test_end_is_shared_sentinel():
    c = _module("c")
    assert c.END is py_parser.END is END
    assert c.ParseError is ParseError
    assert repr(END) == "END"


def test_leading_empty_lines_and_bare_lf(mod):
    events = req(mod, b"\r\n\n\r\nGET / HTTP/1.1\nHost: x\n\n")
    assert heads(events)[0]["host"] == b"x"
    assert events[-1] == "END"


def test_pipelined_requests_in_one_feed(mod):
    data = (
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        b"GET /4 HTTP/1.0\r\n\r\n"
    )
    events = req(mod, data)
    assert [h["target"] for h in heads(events)] == [b"/1", b"/2", b"/3", b"/4"]
    assert [ev if ev == "END" else ev[0] for ev in events] == [
        "head", "END", "head", "body", "END", "head", "body", "END", "head", "END"]
    assert [ev[1] for ev in events if ev[0] == "body"] == [b"hello", b"ab"]


SPLIT_STREAM = (
    b"\r\nGET /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n"
    b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\nhello world"
    b"PUT /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: Chunked\r\n\r\n"
    b"5;name=val\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer-One: 1\r\nT2: 2\r\n\r\n"
    b"GET /d HTTP/1.0\nConnection: keep-alive\n\n"
)


def test_every_split_point(mod):
    expected = req(mod, SPLIT_STREAM)
    assert [h["target"] for h in heads(expected)] == [b"/a?x=1", b"/b", b"/c", b"/d"]
    assert [ev[1] for ev in expected if ev[0] == "body"] == [
        b"hello world", b"hello" + string.ascii_lowercase.encode()]
    for i in range(len(SPLIT_STREAM) + 1):
        assert run(mod.RequestParser(), [SPLIT_STREAM[:i], SPLIT_STREAM[i:]]) == expected, i
    byte_by_byte = [SPLIT_STREAM[i:i + 1] for i in range(len(SPLIT_STREAM))]
    assert run(mod.RequestParser(), byte_by_byte) == expected
    assert run(mod.RequestParser(), [memoryview(c) for c in byte_by_byte]) == expected
    assert run(mod.RequestParser(), [bytearray(SPLIT_STREAM)]) == expected


def test_chunked_body_variants(mod):
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip-not, chunked\r\n\r\n")
    assert error_of(req(mod, data)) == 501
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"A ; ext=1;b\r\n0123456789\r\n"
            b"000f\n0123456789abcde\n"
            b"1;\tquoted=\"x y\"\r\nZ\r\n"
            b"0;last\r\nX-Checksum: abc\r\nX-Other:\r\n\r\n")
    events = req(mod, data)
    assert events[0][1]["chunked"] and events[0][1]["content_length"] == -1
    assert events[1:] == [("body", b"01234567890123456789abcdeZ"), "END"]


def test_chunk_size_of_16_hex_digits(mod):
    p = mod.RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000ff\r\n")
    assert p.next_event().chunked
    p.feed(b"x" * 255 + b"\r\n0\r\n\r\n")
    assert p.next_event() == b"x" * 255
    assert p.next_event() is END


def test_content_length_bodies(mod):
    events = req(mod, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert events[0][1]["content_length"] == 0 and events[1:] == ["END"]
    events = req(mod, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 003\r\n\r\nabc")
    assert events[0][1]["content_length"] == 3 and events[1:] == [("body", b"abc"), "END"]
    p = mod.RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123")
    assert p.next_event().content_length == 10
    assert p.next_event() == b"0123"
    assert p.next_event() is None
    assert p.buffered == 0
    p.feed(b"456789GET")
    assert p.next_event() == b"456789"
    assert p.next_event() is END
    assert p.buffered == 3


def test_zero_copy_body_chunks(mod):
    p = mod.RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
    p.next_event()
    assert p.next_event() is None
    data = b"01234"
    p.feed(data)
    assert p.buffered == 5
    assert p.next_event() is data  # the caller's object, no copy
    data = b"56789GET / HTTP/1.1\r\n"
    p.feed(data)
    chunk = p.next_event()
    assert isinstance(chunk, memoryview) and chunk.obj is data and bytes(chunk) == b"56789"
    assert p.next_event() is END
    assert p.take_rest() == b"GET / HTTP/1.1\r\n"
    # bytearray input is copied: the caller may reuse or resize it
    p = mod.RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n")
    p.next_event()
    assert p.next_event() is None
    ba = bytearray(b"abc")
    p.feed(ba)
    ba[:] = b"zzzz"
    assert p.next_event() == b"abc"


def test_expect_continue(mod):
    def expect(version: bytes, value: bytes) -> bool:
        data = b"POST / " + version + b"\r\nHost: h\r\nExpect: " + value + b"\r\nContent-Length: 1\r\n\r\n"
        return heads(req(mod, data))[0]["expect_continue"]

    assert expect(b"HTTP/1.1", b"100-continue")
    assert expect(b"HTTP/1.1", b"100-Continue")
    assert not expect(b"HTTP/1.1", b"200-ok")
    assert not expect(b"HTTP/1.0", b"100-continue")  # RFC 9110 10.1.1: ignored from HTTP/1.0 clients


@pytest.mark.parametrize(("version", "connection", "keep_alive", "tokens"), [
    (b"HTTP/1.1", None, True, ()),
    (b"HTTP/1.1", b"close", False, (b"close",)),
    (b"HTTP/1.1", b"Keep-Alive, X-Foo", True, (b"keep-alive", b"x-foo")),
    (b"HTTP/1.1", b" ,TE,  CLOSE ,", False, (b"te", b"close")),
    (b"HTTP/1.0", None, False, ()),
    (b"HTTP/1.0", b"keep-alive", True, (b"keep-alive",)),
    (b"HTTP/1.0", b"keep-alive, close", False, (b"keep-alive", b"close")),
])
def test_keep_alive_rules(mod, version, connection, keep_alive, tokens):
    data = b"GET / " + version + b"\r\nHost: h\r\n"
    if connection is not None:
        data += b"Connection: " + connection + b"\r\n"
    head = heads(req(mod, data + b"\r\n"))[0]
    assert head["keep_alive"] is keep_alive
    assert head["connection_tokens"] == tokens


def test_upgrade_and_take_rest(mod):
    p = mod.RequestParser()
    p.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
           b"\x81\x05hello")
    head = p.next_event()
    assert head.upgrade and head.connection_tokens == (b"keep-alive", b"upgrade")
    assert p.next_event() is END
    assert p.buffered == 7
    assert p.take_rest() == b"\x81\x05hello"
    assert p.buffered == 0 and p.take_rest() == b""
    assert not heads(req(mod, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"))[0]["upgrade"]
    assert not heads(req(mod, b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n"))[0]["upgrade"]


def test_connect(mod):
    p = mod.RequestParser()
    p.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01")
    head = p.next_event()
    assert head.method == b"CONNECT" and head.target == b"example.com:443" and head.path == b"example.com:443"
    assert p.next_event() is END
    assert p.take_rest() == b"\x16\x03\x01"


BAD_REQUESTS = [
    # request line
    (b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400),  # bare CR
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
    (b" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/11\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
    # header fields
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),  # whitespace before the colon
    (b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7f\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX[A]: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400),
    # Host
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
    # Content-Length
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1234567890123456789\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,\r\n\r\n", 400),
    # Transfer-Encoding
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    # chunked framing
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\rX", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n folded\r\n\r\n", 400),
]


@pytest.mark.parametrize(("data", "status"), BAD_REQUESTS)
def test_request_errors(mod, data, status):
    events = req(mod, data)
    assert error_of(events) == status, events
    # the outcome does not depend on how the bytes were split
    assert run(mod.RequestParser(), [data[i:i + 1] for i in range(len(data))]) == events


def test_error_kills_parser(mod):
    p = mod.RequestParser()
    p.feed(b"GET / HTTP/9.9\r\n\r\n")
    with pytest.raises(ParseError) as info:
        p.next_event()
    assert info.value.status == 505 and info.value.reason
    assert str(info.value).startswith("505 ")
    p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # ignored
    with pytest.raises(ParseError) as again:
        p.next_event()
    assert again.value.status == 505


def test_head_size_limit(mod):
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: "
    exact = head + b"a" * (1000 - len(head) - 4) + b"\r\n\r\n"
    assert len(exact) == 1000
    assert req(mod, exact, max_head_size=1000)[-1] == "END"
    too_big = head + b"a" * (1000 - len(head) - 3) + b"\r\n\r\n"
    assert error_of(req(mod, too_big, max_head_size=1000)) == 431
    # leading blank lines are not part of the head
    assert req(mod, b"\r\n" * 50 + exact, max_head_size=1000)[-1] == "END"


def test_head_size_limit_triggers_before_terminator(mod):
    p = mod.RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ")
    assert p.next_event() is None
    for _ in range(15):
        p.feed(b"a" * 1024)
        assert p.next_event() is None
    p.feed(b"a" * 1024)  # no line terminator anywhere, yet clearly over 16 KiB
    with pytest.raises(ParseError) as info:
        p.next_event()
    assert info.value.status == 431
    # a request line that never ends is caught too
    p = mod.RequestParser(max_head_size=100)
    p.feed(b"GET /" + b"a" * 200)
    with pytest.raises(ParseError) as info:
        p.next_event()
    assert info.value.status == 431


def test_too_many_headers(mod):
    def request(n: int) -> bytes:
        return b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(n - 1)) + b"\r\n"

    assert req(mod, request(10), max_headers=10)[-1] == "END"
    assert error_of(req(mod, request(11), max_headers=10)) == 431
    assert error_of(req(mod, request(101))) == 431


def test_trailers_count_against_head_size(mod):
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"X-T: " + b"t" * 300 + b"\r\n\r\n")
    assert error_of(req(mod, data, max_head_size=200)) == 431
    assert req(mod, data, max_head_size=400)[-1] == "END"


def test_feed_eof_requests(mod):
    p = mod.RequestParser()
    p.feed_eof()  # nothing received: fine
    assert p.next_event() is None
    for partial in (b"GET / HT", b"GET / HTTP/1.1\r\nHost: h\r\n",
                    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
                    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n"):
        events = run(mod.RequestParser(), [partial], eof=True)
        assert error_of(events) == 400, partial
    # EOF after complete messages is a clean close, even before they were pulled
    p = mod.RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n\r\n")
    p.feed_eof()
    assert p.next_event().method == b"GET"
    assert p.next_event() is END
    assert p.next_event() is None
    # and a message cut short is reported by next_event once the data runs out
    p = mod.RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2")
    p.feed_eof()
    assert p.next_event().method == b"GET"
    assert p.next_event() is END
    with pytest.raises(ParseError) as info:
        p.next_event()
    assert info.value.status == 400


# -- responses ---------------------------------------------------------------------------------


def resp(mod, data: bytes, method: bytes = b"GET", eof: bool = False) -> list:
    return run(mod.ResponseParser(), [data], eof=eof, methods=[method])


def test_response_content_length(mod):
    events = resp(mod, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert events == [
        ("head", {"version": 11, "status": 200, "reason": b"OK",
                  "headers": [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")],
                  "content_length": 5, "chunked": False, "keep_alive": True, "connection_tokens": ()}),
        ("body", b"hello"), "END",
    ]


def test_response_status_line_variants(mod):
    for line, status, reason in ((b"HTTP/1.1 404", 404, b""), (b"HTTP/1.1 404 ", 404, b""),
                                 (b"HTTP/1.0 599 Weird \t reason", 599, b"Weird \t reason")):
        head = heads(resp(mod, line + b"\r\nContent-Length: 0\r\n\r\n"))[0]
        assert (head["status"], head["reason"]) == (status, reason)


def test_response_chunked(mod):
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    events = resp(mod, data)
    assert events[0][1]["chunked"] and events[0][1]["content_length"] == -1
    assert events[1:] == [("body", b"abc"), "END"]


def test_response_with_both_framings_is_refused(mod):
    """CL + TE in a response is the desync pair: a proxy must not pick one (502), whatever the status."""
    for status, method in ((200, b"GET"), (204, b"GET"), (200, b"HEAD")):
        data = b"HTTP/1.1 %d OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % status
        assert resp(mod, data, method) == [("error", 502, "both Content-Length and Transfer-Encoding in a response")]


def test_response_with_differing_content_lengths_is_refused(mod):
    for fields in (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"Content-Length: 5, 6\r\n"):
        assert resp(mod, b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello!") == [
            ("error", 502, "conflicting Content-Length values")]


def test_response_no_body_cases(mod):
    for method, status in ((b"HEAD", 200), (b"GET", 204), (b"GET", 304), (b"CONNECT", 200)):
        data = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status
        p = mod.ResponseParser()
        p.start(method)
        p.feed(data)
        head = p.next_event()
        assert head.status == status and head.content_length == 10
        assert p.next_event() is END
        assert p.next_event() is None  # idle until the next start()


def test_response_interim_1xx(mod):
    data = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    events = resp(mod, data)
    assert [e if e == "END" else e[0] for e in events] == ["head", "END", "head", "END", "head", "body", "END"]
    assert [h["status"] for h in heads(events)] == [100, 103, 200]


def test_response_101_switching(mod):
    p = mod.ResponseParser()
    p.start(b"GET")
    p.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    head = p.next_event()
    assert head.status == 101 and head.connection_tokens == (b"upgrade",)
    assert p.next_event() is END
    assert p.take_rest() == b"\x81\x00"


def test_response_until_close(mod):
    events = resp(mod, b"HTTP/1.1 200 OK\r\nX: 1\r\n\r\nsome data", eof=True)
    assert events[0][1]["keep_alive"] is False and events[0][1]["content_length"] == -1
    assert events[1:] == [("body", b"some data"), "END"]
    events = resp(mod, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabcdef", eof=True)
    assert events[0][1]["chunked"] is False and events[0][1]["content_length"] == -1
    assert events[1:] == [("body", b"abcdef"), "END"]
    p = mod.ResponseParser()
    p.start(b"GET")
    p.feed(b"HTTP/1.0 200 OK\r\n\r\n")
    assert p.next_event().keep_alive is False
    assert p.next_event() is None
    data = b"streamed"
    p.feed(data)
    assert p.next_event() is data
    p.feed_eof()
    assert p.next_event() is END


def test_response_keep_alive(mod):
    assert heads(resp(mod, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))[0]["keep_alive"]
    assert not heads(resp(mod, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))[0]["keep_alive"]
    assert not heads(resp(mod, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"))[0]["keep_alive"]
    assert heads(resp(mod, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"))[0][
        "keep_alive"]


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    b"HTTP/1.1 200 OK\r\nContent-",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"",
    b"\r\n",
])
def test_response_eof_errors(mod, data):
    assert error_of(resp(mod, data, eof=True)) == 502


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200\tOK\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n", b"HTTP/1.1 099 x\r\n\r\n", b"http/1.1 200 OK\r\n\r\n", b"HTTP/1.1  200 OK\r\n\r\n",
    b"HTTP/1.1 200 O\x01K\r\n\r\n", b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
])
def test_response_errors_are_502(mod, data):
    assert error_of(resp(mod, data)) == 502


def test_response_limits(mod):
    p = mod.ResponseParser(max_head_size=100)
    p.start(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100)
    with pytest.raises(ParseError) as info:
        p.next_event()
    assert info.value.status == 502
    data = b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 3 + b"\r\n"
    assert error_of(run(mod.ResponseParser(max_headers=2), [data], methods=[b"GET"])) == 502


def test_response_keep_alive_sequence(mod):
    p = mod.ResponseParser()
    assert p.next_event() is None  # nothing expected before start()
    p.start(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
    assert p.next_event().status == 200
    assert p.next_event() == b"a"
    assert p.next_event() is END
    assert p.next_event() is None  # second response waits for start()
    p.start(b"GET")
    assert p.next_event().status == 200
    assert p.next_event() == b"b"
    assert p.next_event() is END
    p.start(b"POST")
    p.feed(b"HTTP/1.1 200 OK\r\n")
    assert p.next_event() is None
    with pytest.raises(RuntimeError):
        p.start(b"GET")


# -- serialize_head ----------------------------------------------------------------------------


def test_serialize_head(mod):
    headers = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Accept", b"*/*"),
               (b"KEEP-ALIVE", b"timeout=5")]
    drop = frozenset({b"connection", b"x-hop", b"keep-alive"})
    out = mod.serialize_head(b"GET / HTTP/1.1", headers, drop, b"X-Forwarded-For: 1.2.3.4\r\n")
    assert out == b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    assert mod.serialize_head(b"HTTP/1.1 204 No Content", [], frozenset(), b"") == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert mod.serialize_head(b"GET / HTTP/1.1", headers[:1], frozenset(), b"") == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    many = frozenset(b"x-%d" % i for i in range(100)) | {b"host"}
    assert mod.serialize_head(b"GET / HTTP/1.1", headers, many, b"") == mod.serialize_head(
        b"GET / HTTP/1.1", headers[1:], frozenset(), b"")
    assert mod.serialize_head(b"A", [(b"N", bytearray(b"v"))], frozenset(), b"") == b"A\r\nN: v\r\n\r\n"


def test_serialize_round_trip(mod):
    p = mod.RequestParser()
    p.feed(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-A:  1 \r\n\r\n")
    head = p.next_event()
    out = mod.serialize_head(head.method + b" " + head.target + b" HTTP/1.1", head.headers,
                             frozenset(head.connection_tokens) | {b"connection"}, b"")
    assert out == b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"


# -- property tests ----------------------------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer",
           "keep-alive"}

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
header_names = tokens.filter(lambda s: s.lower() not in SPECIAL)
header_values = st.builds(
    lambda core, inner, lead, trail: (core[:1] + inner + core[1:] if len(core) > 1 else core, lead, trail),
    st.text(VCHAR, max_size=12), st.sampled_from(["", " ", "\t ", "  "]),
    st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "\t"]),
)
targets = st.builds(lambda p, q: "/" + p + q, st.text(VCHAR.replace("?", ""), max_size=20),
                    st.one_of(st.just(""), st.text(VCHAR, max_size=10).map(lambda s: "?" + s)))


@st.composite
def requests(draw, h11_compatible: bool = False):
    """One valid request: (wire bytes, expected normalised events)."""
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), tokens))
    target = draw(targets)
    nl = "\r\n" if h11_compatible else draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    headers = []
    for name, (value, lead, trail) in draw(st.lists(st.tuples(header_names, header_values), max_size=6)):
        if h11_compatible:
            value = value.strip(" \t")
        headers.append((name, value, lead + value + trail))
    host = draw(st.text(string.ascii_lowercase + string.digits + ".-:", min_size=1, max_size=15))
    headers.insert(draw(st.integers(0, len(headers))), (draw(st.sampled_from(["Host", "host", "HOST"])), host, host))
    keep = draw(st.sampled_from([None, "close", "keep-alive"]))
    if keep:
        headers.append(("Connection", keep, keep))
    kind = draw(st.sampled_from(["none", "cl", "chunked"]))
    body_parts = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
    body = b"".join(body_parts)
    wire_body = b""
    if kind == "cl":
        headers.append(("Content-Length", str(len(body)), str(len(body))))
        wire_body = body
    elif kind == "chunked":
        headers.append(("Transfer-Encoding", "chunked", "chunked"))
        for part in body_parts:
            ext = draw(st.sampled_from(["", ";a=b", " ; x"])) if not h11_compatible else ""
            wire_body += b"%x%s\r\n%s\r\n" % (len(part), ext.encode(), part)
        wire_body += b"0\r\n"
        if not h11_compatible and draw(st.booleans()):
            wire_body += b"X-Trailer: t\r\n"
        wire_body += b"\r\n"
    else:
        body = b""
    wire = (f"{method} {target} HTTP/1.1{nl}" + "".join(f"{n}:{raw}{nl}" for n, _, raw in headers) + nl).encode()
    q = target.find("?")
    expected = {
        "method": method.encode(), "target": target.encode(),
        "path": target[:q].encode() if q >= 0 else target.encode(),
        "query": target[q + 1:].encode() if q >= 0 else b"",
        "version": 11, "headers": [(n.encode(), v.encode()) for n, v, _ in headers], "host": host.encode(),
        "content_length": len(body) if kind == "cl" else -1, "chunked": kind == "chunked",
        "keep_alive": keep != "close", "expect_continue": False, "upgrade": False,
        "connection_tokens": (keep.encode(),) if keep else (),
    }
    events = [("head", expected)] + ([("body", body)] if body else []) + ["END"]
    return wire + wire_body, events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 10_000), max_size=8),
       st.booleans())
def test_random_valid_requests_both_twins(reqs, cuts, as_memoryview):
    stream = b"".join(wire for wire, _ in reqs)
    expected = [ev for _, events in reqs for ev in events]
    chunks = split(stream, cuts)
    if as_memoryview:
        chunks = [memoryview(c) for c in chunks]
    for name in TWINS:
        assert run(_module(name).RequestParser(), chunks) == expected, name


@st.composite
def responses(draw, last: bool):
    """One valid response to GET or HEAD: (method, wire bytes, expected events); until-close only if last."""
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500, 503]))
    reason = draw(st.sampled_from(["", "OK", "Not Found", "Some reason"]))
    version = draw(st.sampled_from([10, 11]))
    headers = [(name, value) for name, (value, _, _) in
               draw(st.lists(st.tuples(header_names, header_values), max_size=4))]
    keep = draw(st.sampled_from([None, "close", "keep-alive"]))
    if keep:
        headers.append(("Connection", keep))
    body_parts = draw(st.lists(st.binary(min_size=1, max_size=30), max_size=3))
    body = b"".join(body_parts)
    kinds = ["cl", "chunked"] + (["close"] if last else [])
    kind = draw(st.sampled_from(kinds))
    no_body = method == b"HEAD" or status in (204, 304)
    wire_body = b""
    content_length = -1
    if kind == "cl":
        content_length = len(body)
        headers.append(("Content-Length", str(content_length)))
        wire_body = body
    elif kind == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        wire_body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in body_parts) + b"0\r\n\r\n"
    else:
        wire_body = body
    if no_body:
        wire_body = body = b""
    interim = draw(st.booleans())
    wire = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
    status_line = f"HTTP/1.{version % 10} {status}" + (f" {reason}" if reason else "")
    wire += (status_line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n").encode() + wire_body
    until_close = kind == "close" and not no_body
    keep_alive = (keep != "close" if version == 11 else keep == "keep-alive") and not until_close
    head = {
        "version": version, "status": status, "reason": reason.encode(),
        "headers": [(n.encode(), v.encode()) for n, v in headers],
        "content_length": content_length, "chunked": kind == "chunked",
        "keep_alive": keep_alive, "connection_tokens": (keep.encode(),) if keep else (),
    }
    events = []
    if interim:
        events += [("head", {"version": 11, "status": 100, "reason": b"Continue", "headers": [],
                             "content_length": -1, "chunked": False, "keep_alive": True,
                             "connection_tokens": ()}), "END"]
    events += [("head", head)] + ([("body", body)] if body else []) + ["END"]
    return method, wire, events


@PROPERTY
@given(st.lists(responses(last=False), max_size=2), responses(last=True), st.lists(st.integers(0, 10_000), max_size=8))
def test_random_valid_responses_both_twins(first, final, cuts):
    resps = [*first, final]
    stream = b"".join(wire for _, wire, _ in resps)
    expected = [ev for _, _, events in resps for ev in events]
    for name in TWINS:
        got = run(_module(name).ResponseParser(), split(stream, cuts), eof=True, methods=[m for m, _, _ in resps])
        assert got == expected, name


def h11_parse(data: bytes):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request, body = None, b""
    while True:
        ev = conn.next_event()
        if isinstance(ev, h11.Request):
            request = ev
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            return request, body
        else:
            raise AssertionError(f"h11 stopped at {ev!r}")


@PROPERTY
@given(requests(h11_compatible=True))
def test_agrees_with_h11(generated):
    wire, _ = generated
    request, body = h11_parse(wire)
    for name in TWINS:
        events = run(_module(name).RequestParser(), [wire])
        head = events[0][1]
        assert head["method"] == request.method
        assert head["target"] == request.target
        assert head["headers"] == [(n, v) for n, v in request.headers.raw_items()]
        ours = b"".join(ev[1] for ev in events if ev[0] == "body")
        assert ours == body
        assert events[-1] == "END"


FRAGMENTS = [
    b"GET ", b"POST ", b"/", b"/a?b", b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b"HTTP/1.1 ", b"200", b" OK",
    b"100", b"204", b"\r\n", b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b",", b";", b"Host: h", b"host:",
    b"Content-Length: ", b"Transfer-Encoding: ", b"chunked", b"gzip", b"Connection: ", b"close", b"keep-alive",
    b"upgrade", b"Upgrade: x", b"Expect: 100-continue", b"0", b"1", b"5", b"a", b"F", b"ffffffffffffffffff",
    b"\x00", b"\x7f", b"\xff", b"X-A: v",
]
garbage = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=4)), max_size=40).map(b"".join)


def outcome(factory, chunks: list[bytes], methods: list[bytes] | None) -> tuple[list, int]:
    parser = factory()
    events = run(parser, chunks, eof=True, methods=methods)
    return events, parser.buffered


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage, st.lists(st.integers(0, 10_000), max_size=6), st.booleans(), st.sampled_from([b"GET", b"HEAD"]))
def test_garbage_same_behaviour(data, cuts, response, method):
    """Both twins give the same events or the same error (status and reason), however split."""
    methods = [method] * 20 if response else None
    events = []
    for chunks in ([data], split(data, cuts)):
        results = []
        for name in TWINS:
            cls = _module(name).ResponseParser if response else _module(name).RequestParser
            results.append(outcome(lambda cls=cls: cls(max_head_size=120, max_headers=4), chunks, methods))
        assert results[0] == results[1]  # events and what is left buffered
        events.append(results[0][0])
    assert events[0] == events[1]


@settings(max_examples=100, deadline=None)
@given(requests(), st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_corrupted_requests_same_behaviour(generated, at, junk):
    """Valid requests with a few bytes replaced: the twins fail (or not) identically."""
    wire, _ = generated
    at %= len(wire)
    data = wire[:at] + junk + wire[at + len(junk):]
    results = [outcome(_module(name).RequestParser, [data], None) for name in TWINS]
    assert results[0] == results[1]

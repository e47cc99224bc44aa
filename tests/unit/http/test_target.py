"""Request-target and Host rules (fastgw.http.target) on heads from both parser twins."""

from __future__ import annotations

import pytest

from fastgw.http import ParseError
from fastgw.http.target import normalise_target
from tests.unit.http.test_parser import _module


@pytest.fixture(params=["py", "c"])
def parse(request):
    mod = _module(request.param)

    def head_of(data: bytes):
        p = mod.RequestParser()
        p.feed(data)
        return p.next_event()

    return head_of


def test_absolute_form_becomes_origin_form_with_the_authority_as_host(parse):
    head = parse(b"GET http://api.example.org:8080/v1/x?a=b HTTP/1.1\r\nHost: other\r\nX: y\r\n\r\n")
    assert normalise_target(head) is None
    assert (head.target, head.path, head.query, head.host) == (b"/v1/x?a=b", b"/v1/x", b"a=b", b"api.example.org:8080")
    assert head.headers == [(b"Host", b"api.example.org:8080"), (b"X", b"y")]


def test_absolute_form_without_a_path_is_the_root(parse):
    head = parse(b"GET https://h HTTP/1.1\r\nHost: h\r\n\r\n")
    assert normalise_target(head) is None and head.target == b"/" and head.query == b""


@pytest.mark.parametrize("target, why", [
    (b"ftp://h/x", "unsupported scheme in the request target"),
    (b"http://u@h/x", "invalid authority in the request target"),
    (b"http:///x", "invalid authority in the request target"),
    (b"http://h h/x", None),  # a space ends the target: the parser refuses the request line
    (b"x/y", "invalid request target"),
    (b"*", "invalid request target"),  # only OPTIONS may use the asterisk form
])
def test_bad_targets(parse, target, why):
    data = b"GET %b HTTP/1.1\r\nHost: h\r\n\r\n" % target
    if why is None:
        with pytest.raises(ParseError):
            parse(data)
        return
    assert normalise_target(parse(data)) == why


@pytest.mark.parametrize("host, ok", [
    (b"example.org", True), (b"example.org:80", True), (b"[::1]:8080", True), (b"127.0.0.1", True),
    (b"xn--bcher-kva.example", True), (b"a%20b", True), (b"", True),
    (b"ex ample.org", False), (b"a/b", False), (b"user@h", False), (b"h:port", False), (b"[::1", False),
    (b"h:123456", False), (b'h"', False),
])
def test_host_values(parse, host, ok):
    head = parse(b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
    assert (normalise_target(head) is None) is ok


def test_options_asterisk_is_accepted(parse):
    assert normalise_target(parse(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")) is None

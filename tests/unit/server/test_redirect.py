"""The redirect listener's Location: the same host and target on https, and never a header
that an attacker's bytes could break out of."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fastgw.server.redirect import location


def test_origin_and_absolute_forms_keep_host_and_target():
    assert location(b"GET /a?b=1 HTTP/1.1\r\nHost: x.test:80", 443) == b"https://x.test/a?b=1"
    assert location(b"GET / HTTP/1.0\r\nhost:  x.test ", 8443) == b"https://x.test:8443/"
    assert location(b"GET http://y.test:80/p HTTP/1.1\r\nHost: x.test", 443) == b"https://y.test/p"
    assert location(b"GET http://y.test HTTP/1.1", 443) == b"https://y.test/"
    assert location(b"GET / HTTP/1.1\r\nHost: [::1]:80", 443) == b"https://[::1]/"


def test_invalid_heads_get_no_location():
    for head in (b"GET / HTTP/1.1", b"GET / HTTP/2\r\nHost: a", b"GET  / HTTP/1.1\r\nHost: a",
                 b"GET / HTTP/1.1\r\nHost: a@b", b"GET ftp://a/ HTTP/1.1", b"GET * HTTP/1.1\r\nHost: a",
                 b"GET / HTTP/1.1\r\nHost: a:99999999"):
        assert location(head, 443) is None, head


@given(st.binary(max_size=200))
def test_no_bytes_give_a_location_with_controls_or_spaces(noise):
    for head in (noise, b"GET /" + noise + b" HTTP/1.1\r\nHost: a", b"GET / HTTP/1.1\r\nHost: " + noise):
        url = location(head, 443)
        if url is not None:
            assert url.startswith(b"https://")
            assert all(0x21 <= byte <= 0x7E for byte in url), url

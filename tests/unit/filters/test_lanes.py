"""The lane tagger's pieces: the sticky draw and the Cookie header reader."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fastgw.filters.lanes import BUCKETS, bucket, cookie_value
from fastgw.http.parser import RequestHead


def head(*cookies: bytes) -> RequestHead:
    h = RequestHead()
    h.headers = [(b"Host", b"x"), *((b"Cookie", c) for c in cookies)]
    return h


@given(st.text(min_size=1, max_size=20), st.text(max_size=40))
def test_bucket_is_stable_and_in_range(lane: str, key: str) -> None:
    assert 0 <= bucket(lane, key) < BUCKETS
    assert bucket(lane, key) == bucket(lane, key)


def test_buckets_spread_evenly_and_lanes_draw_independently() -> None:
    keys = [f"consumer-{i}" for i in range(4000)]
    canary = [bucket("canary", k) < BUCKETS // 10 for k in keys]
    beta = [bucket("beta", k) < BUCKETS // 10 for k in keys]
    assert 300 < sum(canary) < 500  # 10% of 4000, within about 5 standard deviations
    both = sum(a and b for a, b in zip(canary, beta, strict=True))
    assert both < 80  # independent draws: about 1% of keys are in both, not 10%


def test_cookie_value_reads_every_cookie_header() -> None:
    assert cookie_value(head(b"a=1; release=beta; b=2"), b"release") == b"beta"
    assert cookie_value(head(b"a=1", b"release=\"beta\""), b"release") == b"beta"  # quoted (RFC 6265 cookie-value)
    assert cookie_value(head(b"xrelease=beta;release"), b"release") is None  # a name must match whole, with '='
    assert cookie_value(head(b"release=;a=1"), b"release") == b""
    assert cookie_value(head(), b"release") is None

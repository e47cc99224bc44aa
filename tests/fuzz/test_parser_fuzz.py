"""The bounded fuzz run CI does (well under 30 s): hypothesis byte strategies, seeded with the
raw corpus (tests/corpus/http) and mutated, through tests/fuzz/oracle.py (twins agree,
nothing but ParseError escapes, no desync with h11). The long run is tests/fuzz/README.md."""

from __future__ import annotations

import codecs
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import oracle

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "http"
SEEDS = [codecs.escape_decode(p.read_text().rstrip("\n").encode())[0] for p in sorted(CORPUS.glob("*/*.http"))]
# The response scripts of the misbehaving upstream are seeds for the response parser too.
SEEDS += [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
]
CUTS = st.lists(st.integers(0, 4096), max_size=6)
FAST = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw) -> bytes:
    """A corpus seed with a few byte-level edits: flips, inserts, deletes, splices of another seed."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[at:at + draw(st.integers(1, 16))]
        else:
            other = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(other)))
            data[at:at] = other[start:start + draw(st.integers(1, 64))]
    return bytes(data)


@FAST
@given(mutated(), CUTS)
def test_mutated_corpus(data, cuts):
    oracle.check(data, cuts)


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=600), CUTS)
def test_arbitrary_bytes(data, cuts):
    oracle.check(data, cuts)


def test_the_seeds_themselves():
    accepted = 0
    for seed in SEEDS:
        oracle.check(seed, [])
        accepted += oracle.check_h11(seed)
    assert accepted >= 10  # the differential check does compare real requests

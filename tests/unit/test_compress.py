"""Tests for the streaming compressor twins (fastgw.compress and fastgw._c.compress).

Every test runs against both twins; the compiled one is imported inside the fixture, so a
missing build fails those tests instead of skipping them. Property tests: decoding either
twin's output at every flush point gives back exactly the input so far, and both twins
choose the same coding for any Accept-Encoding.
"""

from __future__ import annotations

import importlib
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import compress as py_compress

TWINS = ["py", "c"]
CODINGS = ("zstd", "br", "gzip")


def _module(name: str):
    if name == "py":
        return py_compress
    return importlib.import_module("fastgw._c.compress")  # ImportError fails the test: CI builds it


@pytest.fixture(params=TWINS)
def mod(request):
    return _module(request.param)


def decoder(coding: str):
    if coding == "gzip":
        return zlib.decompressobj(31).decompress
    if coding == "br":
        return brotli.Decompressor().process
    return zstandard.ZstdDecompressor().decompressobj().decompress


def level_of(coding: str, draw_level: int) -> int:
    low, high = py_compress.LEVELS[coding]
    return low + draw_level % (high - low + 1)


STEPS = st.lists(st.tuples(st.sampled_from(["compress", "flush"]),
                           st.one_of(st.binary(max_size=3000),
                                     st.text(max_size=400).map(lambda t: f"data: {t}\n\n".encode()))),
                 min_size=1, max_size=12)


@settings(max_examples=80, deadline=None)
@given(coding=st.sampled_from(CODINGS), level=st.integers(0, 30), twin=st.sampled_from(TWINS), steps=STEPS,
       size_hint=st.one_of(st.just(0), st.integers(1, 100_000)))
def test_every_flush_point_decodes_to_the_input_so_far(coding, level, twin, steps, size_hint):
    compressor = _module(twin).Compressor(coding, level_of(coding, level), size_hint)  # a wrong hint is only a hint
    decode = decoder(coding)
    given_so_far, decoded = b"", b""
    for op, data in steps:
        given_so_far += data
        if op == "compress":
            decoded += decode(compressor.compress(data))
        else:
            decoded += decode(compressor.flush(data))
            assert decoded == given_so_far
    decoded += decode(compressor.finish(b"tail"))
    assert decoded == given_so_far + b"tail"


@settings(max_examples=30, deadline=None)
@given(coding=st.sampled_from(CODINGS), data=st.binary(max_size=200_000))
def test_both_twins_round_trip_one_shot_and_the_stream_ends(coding, data):
    for twin in TWINS:
        out = _module(twin).Compressor(coding, py_compress.LEVELS[coding][0] + 2).finish(data)
        if coding == "gzip":
            assert zlib.decompress(out, 31) == data  # raises on a truncated stream
        elif coding == "br":
            assert brotli.decompress(out) == data
        else:
            assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data
            assert zstandard.frame_header_size(out) > 0


def test_large_input_goes_past_the_scratch_buffer(mod):
    data = bytes(range(256)) * 2048  # 512 KiB, incompressible-ish runs
    for coding in CODINGS:
        compressor = mod.Compressor(coding, 1 if coding != "br" else 0)
        out = compressor.compress(data) + compressor.flush(data) + compressor.finish()
        assert decoder(coding)(out) == data + data


def test_a_finished_compressor_refuses_more_and_unknown_codings_are_refused(mod):
    compressor = mod.Compressor("gzip", 5)
    compressor.finish(b"x")
    with pytest.raises(ValueError):
        compressor.compress(b"more")
    with pytest.raises(ValueError, match="unknown coding"):
        mod.Compressor("lzma", 5)
    with pytest.raises(ValueError, match="outside 1..9"):
        mod.Compressor("gzip", 10)


def test_gzip_sizes_its_window_by_the_hint_as_nginx_does():
    assert py_compress.gzip_window(0) == (15, 8)
    assert py_compress.gzip_window(1064) == (11, 4)
    assert py_compress.gzip_window(1) == (9, 2)
    assert py_compress.gzip_window(16529) == (15, 8)
    for twin in TWINS:  # the same window in both: the same bytes out
        outs = [_module(twin).Compressor("gzip", 5, 1064).finish(b'{"k": "value"}' * 70) for _ in range(2)]
        assert outs[0] == outs[1] and zlib.decompress(outs[0], 31) == b'{"k": "value"}' * 70
    assert (_module("py").Compressor("gzip", 5, 1064).finish(b"x" * 1000)
            == _module("c").Compressor("gzip", 5, 1064).finish(b"x" * 1000))


def test_flush_with_nothing_new_still_decodes(mod):
    for coding in CODINGS:
        compressor = mod.Compressor(coding, 3)
        decode = decoder(coding)
        assert decode(compressor.flush(b"data: one\n\n")) == b"data: one\n\n"
        assert decode(compressor.flush()) == b""


OFFERED = ("zstd", "br", "gzip")


@pytest.mark.parametrize(("accept", "offered", "expected"), [
    (None, OFFERED, None),
    (b"", OFFERED, None),
    (b"gzip, deflate, br", OFFERED, "br"),
    (b"gzip, deflate, br, zstd", OFFERED, "zstd"),
    (b"gzip;q=1.0, br;q=0.9, zstd;q=0.5", OFFERED, "gzip"),
    (b"zstd;q=0, *", OFFERED, "br"),
    (b"*;q=0, gzip", OFFERED, "gzip"),
    (b"identity;q=0, *", OFFERED, "zstd"),
    (b"identity;q=0", OFFERED, None),
    (b"X-GZIP", OFFERED, "gzip"),
    (b"GZip ; Q=0.5 , br;q=0.4", OFFERED, "gzip"),
    (b"gzip;q=1.5, br;q=0.0001, zstd;q=abc", OFFERED, None),  # malformed elements are ignored
    (b"gzip;level=1;q=0.3, br;q=0.2", OFFERED, "gzip"),
    (b"gzip;q=0.5, gzip;q=0", OFFERED, "gzip"),  # the first mention counts
    (b"br", ("gzip",), None),
    (b" , ;q=1, gzip", ("gzip",), "gzip"),
])
def test_negotiation_examples(mod, accept, offered, expected):
    assert mod.negotiate(accept, offered) == expected


TOKENS = st.sampled_from(["gzip", "br", "zstd", "x-gzip", "deflate", "identity", "*", "GZIP", "Br", "compress", ""])
QS = st.sampled_from(["", ";q=1", ";q=0", ";q=0.5", ";q=0.500", ";q=1.000", ";q=1.001", ";q=0.1234", ";q=.5",
                      ";Q=0.7", "; q = 0.2 ", ";q=", ";level=3", ";a=b;q=0.3", ";q=0.3;q=0.9", ";q=0."])
ELEMENT = st.tuples(st.sampled_from(["", " ", "\t"]), TOKENS, QS).map(lambda t: t[0] + t[1] + t[2])
HEADERS = st.one_of(
    st.lists(ELEMENT, max_size=6).map(lambda items: ",".join(items).encode()),
    st.binary(max_size=60),
)


@settings(max_examples=500, deadline=None)
@given(accept=HEADERS, offered=st.permutations(list(OFFERED)), size=st.integers(1, 3))
def test_both_twins_agree_on_negotiation(accept, offered, size):
    offer = tuple(offered[:size])
    assert _module("py").negotiate(accept, offer) == _module("c").negotiate(accept, offer)

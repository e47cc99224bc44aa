"""How a plain route's upstream answer is coded for the client (fastgw.http.encoding.plan_relay),
on heads parsed by the real response parser, and the decoder of upstream codings."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from fastgw.http.encoding import Compression, Decoder, plan_relay
from fastgw.http.errors import ParseError
from fastgw.http.parser import ResponseParser

POLICY = Compression({"algorithms": ["zstd", "br", "gzip"], "min_size": 1024,
                      "types": ["application/json", "text/event-stream", "text/*"],
                      "levels": {"zstd": 3, "br": 4, "gzip": 5}})


def head(*lines: str, status: int = 200):
    parser = ResponseParser()
    parser.start(b"GET")
    parser.feed((f"HTTP/1.1 {status} OK\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode())
    return parser.next_event()


def plan(accept: bytes | None, *lines: str, status: int = 200):
    return plan_relay(POLICY, accept, head(*lines, status=status))


def test_a_large_json_answer_is_encoded_in_the_clients_best_coding():
    coder, extra, drop = plan(b"gzip, br", "Content-Type: application/json", "Content-Length: 5000", 'ETag: "x"')
    assert coder is not None and coder.decoder is None and coder.encoder.coding == "br"
    assert extra == b'Content-Encoding: br\r\nETag: W/"x"\r\nVary: Accept-Encoding\r\n'
    assert {b"content-length", b"etag", b"content-encoding"} <= drop
    data = coder.feed(b"{}" * 3000) + coder.flush() + coder.finish()
    assert brotli.decompress(data) == b"{}" * 3000


@pytest.mark.parametrize(("accept", "lines", "vary"), [
    (b"gzip", ("Content-Type: application/json", "Content-Length: 100"), True),  # below min_size
    (b"gzip", ("Content-Type: image/png", "Content-Length: 5000"), False),  # not a listed type
    (b"gzip", ("Content-Type: text/html", "Cache-Control: public, no-transform"), True),
    (None, ("Content-Type: text/plain",), True),  # no Accept-Encoding: identity
    (b"gzip", ("Content-Type: text/plain", "Content-Length: 10", "Vary: Origin, accept-encoding"), False),  # Vary says it
    (b"gzip, zstd", ("Content-Type: application/json", "Content-Encoding: zstd"), True),  # taken as it is
    (b"gzip", ("Content-Type: application/json", "Content-Encoding: compress"), True),  # can't undo it
])
def test_answers_relayed_as_they_are(accept, lines, vary):
    coder, extra, drop = plan(accept, *lines)
    assert coder is None and drop == frozenset()
    assert extra == (b"Vary: Accept-Encoding\r\n" if vary else b"")


def test_an_empty_body_is_never_coded_even_without_a_size_floor():
    policy = Compression({"algorithms": ["gzip"], "min_size": 0, "types": ["*/*"], "levels": {"gzip": 5}})
    coder, _, _ = plan_relay(policy, b"gzip", head("Content-Type: text/plain", "Content-Length: 0"))
    assert coder is None
    coder, _, _ = plan_relay(policy, b"gzip", head("Content-Type: text/plain", "Content-Length: 1"))
    assert coder is not None


def test_ranges_and_bodiless_statuses_are_never_coded():
    for status in (204, 206, 304):
        assert plan(b"gzip", "Content-Type: application/json", status=status) == (None, b"", frozenset())


def test_an_encoded_answer_the_client_refuses_is_decoded_and_re_encoded():
    body = b'{"k": "' + b"v" * 4000 + b'"}'
    coder, extra, drop = plan(b"zstd", "Content-Type: application/json", "Content-Encoding: gzip")
    assert coder.decoder.coding == "gzip" and coder.encoder.coding == "zstd"
    assert extra.startswith(b"Content-Encoding: zstd\r\n")
    packed = gzip.compress(body)
    out = coder.feed(packed[:10]) + coder.feed(packed[10:]) + coder.flush() + coder.finish()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == body

    coder, extra, _ = plan(b"identity", "Content-Type: application/json", "Content-Encoding: x-gzip")
    assert coder.encoder is None and extra == b"Vary: Accept-Encoding\r\n"
    assert coder.feed(packed) + coder.finish() == body


@pytest.mark.parametrize(("coding", "pack"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress),
    ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
])
def test_the_decoder_undoes_each_coding_and_refuses_garbage(coding, pack):
    decoder = Decoder(coding)
    packed = pack(b"hello " * 500)
    assert decoder.decode(packed[:7]) + decoder.decode(packed[7:]) + decoder.finish() == b"hello " * 500
    with pytest.raises(ParseError, match=f"does not decode as {coding}"):
        Decoder(coding).decode(b"\xff\x00 definitely not " + coding.encode() + b" \x01" * 30)

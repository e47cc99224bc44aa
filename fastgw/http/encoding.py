"""Content codings on the response path: which answers are compressed, and how.

:class:`Compression` is one route's or model's ``compression:`` settings, compiled once per
generation; the response writer (answers the gateway writes: AI JSON and SSE) and the
plain proxy's relay ask it, at the response head, whether and how to encode. The bytes go
through a :class:`~fastgw._speedups.Compressor` (Cython, or its pure twin) at the writer,
after every filter has rendered: the filter hooks see heads, dicts and events, never the
bytes on the wire, and compression must be the last thing before the socket.

An upstream body that is already encoded is never compressed twice: it is passed through
when the client accepts its coding, else (a plain route with compression on) decoded by a
:class:`Decoder` and re-encoded in a coding the client takes, or sent as identity.
"""

from __future__ import annotations

import zlib
from typing import Any

import brotli
import zstandard

from fastgw._speedups import Compressor, negotiate
from fastgw.http.errors import ParseError

VARY = b"Vary: Accept-Encoding\r\n"
SSE_TYPE = b"text/event-stream"
DECODABLE = ("gzip", "x-gzip", "deflate", "br", "zstd")
"""Upstream content codings the gateway can undo (one coding, not a list of them)."""
_NEVER_CODED = frozenset({204, 206, 304})  # no body, or a byte range of the encoded form


class Compression:
    """A compiled ``compression`` section: server preference, size floor, media types."""

    __slots__ = ("algorithms", "min_size", "exact", "families", "any_type", "levels")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.algorithms: tuple[str, ...] = tuple(spec["algorithms"])
        self.min_size: int = spec["min_size"]
        types = [t.encode() for t in spec["types"]]
        self.any_type = b"*/*" in types
        self.exact = frozenset(t for t in types if not t.endswith(b"/*"))
        self.families = tuple(t[:-1] for t in types if t.endswith(b"/*"))  # b"text/"
        self.levels: dict[str, int] = dict(spec["levels"])

    @classmethod
    def of(cls, spec: dict[str, Any] | None) -> Compression | None:
        return cls(spec) if spec else None

    def matches(self, content_type: bytes | None) -> bool:
        """Whether answers of this ``Content-Type`` are compressed (parameters ignored)."""
        if not content_type:
            return False
        media = content_type.split(b";", 1)[0].strip().lower()
        return self.any_type or media in self.exact or media.startswith(self.families)

    def choose(self, accept: bytes | None) -> str | None:
        """The coding for a client's ``Accept-Encoding``, or None (identity)."""
        return negotiate(accept, self.algorithms)

    def compressor(self, coding: str, size_hint: int = 0) -> Any:
        return Compressor(coding, self.levels[coding], size_hint)

    def whole(self, accept: bytes | None, content_type: bytes, body: bytes) -> tuple[bytes, bytes]:
        """A whole answer the gateway writes: ``(body, extra header lines)``, encoded when it
        should be (its Content-Length is then the encoded one)."""
        if not self.matches(content_type):
            return body, b""
        if len(body) < self.min_size:
            return body, VARY
        coding = self.choose(accept)
        if coding is None:
            return body, VARY
        return (self.compressor(coding, len(body)).finish(body),
                b"Content-Encoding: %b\r\n%b" % (coding.encode(), VARY))


class Decoder:
    """Undoes one upstream content coding, incrementally (the Python modules: a rare path)."""

    __slots__ = ("coding", "_obj")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding in ("gzip", "x-gzip"):
            self._obj = zlib.decompressobj(31)
        elif coding == "deflate":
            self._obj = zlib.decompressobj(15)
        elif coding == "br":
            self._obj = brotli.Decompressor()
        elif coding == "zstd":
            self._obj = zstandard.ZstdDecompressor().decompressobj()
        else:
            raise ValueError(f"cannot decode content coding {coding!r}")

    def decode(self, data: bytes) -> bytes:
        try:
            if self.coding == "br":
                return self._obj.process(bytes(data))
            return self._obj.decompress(data)
        except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
            raise ParseError(502, f"the upstream body does not decode as {self.coding}: {exc}") from exc

    def finish(self) -> bytes:
        if self.coding in ("gzip", "x-gzip", "deflate"):
            return self._obj.flush()
        return b""


class BodyCoder:
    """A relayed body's transformation: decode what the upstream encoded, encode for the
    client; either side may be absent. ``flush`` ends each upstream read, so a stream
    relayed through it stays live."""

    __slots__ = ("decoder", "encoder")

    def __init__(self, decoder: Decoder | None, encoder: Any) -> None:
        self.decoder = decoder
        self.encoder = encoder

    def feed(self, data: bytes) -> bytes:
        if self.decoder is not None:
            data = self.decoder.decode(data)
        return self.encoder.compress(data) if self.encoder is not None and data else data

    def flush(self) -> bytes:
        return self.encoder.flush() if self.encoder is not None else b""

    def finish(self) -> bytes:
        tail = self.decoder.finish() if self.decoder is not None else b""
        return self.encoder.finish(tail) if self.encoder is not None else tail


def _varies_on_encoding(rhead: Any) -> bool:
    for name, value in rhead.headers:
        if name.lower() == b"vary":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"accept-encoding" in tokens or b"*" in tokens:
                return True
    return False


def plan_relay(policy: Compression, accept: bytes | None, rhead: Any) -> tuple[BodyCoder | None, bytes, frozenset]:
    """For a plain route's upstream answer: ``(coder or None, extra head lines, header
    names to drop)``. With a coder the body's length changes: the caller drops
    Content-Length and re-chunks."""
    if rhead.status in _NEVER_CODED or not policy.matches(rhead.get(b"content-type")):
        return None, b"", frozenset()
    vary = b"" if _varies_on_encoding(rhead) else VARY
    upstream = (rhead.get(b"content-encoding") or b"").strip().lower().decode("latin-1")
    if upstream and upstream != "identity":
        canonical = "gzip" if upstream == "x-gzip" else upstream
        if negotiate(accept, (canonical,)) == canonical or upstream not in DECODABLE:
            return None, vary, frozenset()  # the client takes it as it is (or we can't undo it)
        coding = policy.choose(accept)
        encoder = policy.compressor(coding) if coding is not None else None
        return BodyCoder(Decoder(upstream), encoder), _coded_lines(coding, rhead) + vary, _RECODED_DROP
    if 0 <= rhead.content_length < max(policy.min_size, 1):  # an empty body stays empty
        return None, vary, frozenset()
    cache_control = rhead.get(b"cache-control")
    if cache_control is not None and b"no-transform" in cache_control.lower():
        return None, vary, frozenset()
    coding = policy.choose(accept)
    if coding is None:
        return None, vary, frozenset()
    encoder = policy.compressor(coding, max(rhead.content_length, 0))
    return BodyCoder(None, encoder), _coded_lines(coding, rhead) + vary, _RECODED_DROP


_RECODED_DROP = frozenset({b"content-length", b"content-encoding", b"etag"})


def _coded_lines(coding: str | None, rhead: Any) -> bytes:
    """Content-Encoding for the new coding, and the ETag made weak: the bytes differ from
    the upstream's, so a strong validator would lie (nginx does the same)."""
    lines = b"Content-Encoding: %b\r\n" % coding.encode() if coding is not None else b""
    etag = rhead.get(b"etag")
    if etag:
        lines += b"ETag: %b\r\n" % (etag if etag.startswith(b"W/") else b"W/" + etag)
    return lines

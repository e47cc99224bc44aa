"""Streaming response compression and ``Accept-Encoding`` negotiation (the pure twin of
``csrc/compress.pyx``, which calls libzstd, libbrotlienc and zlib directly).

A :class:`Compressor` keeps one coding's state for one response. ``flush`` makes every
byte given so far decodable by the client at once (zstd ``FLUSH_BLOCK``, brotli
``flush``, zlib ``Z_SYNC_FLUSH``): that is what keeps a compressed SSE stream live.
Windows and zstd's tables are bounded (``ZSTD_*_LOG``, ``BROTLI_LGWIN``) so an open stream
holds under a megabyte of encoder state (zstd ~0.7 MB, gzip ~0.26 MB), not the libraries'
multi-megabyte defaults; on the bench's streams the sizes are the same to the byte.
"""

from __future__ import annotations

import re
import zlib

import brotli
import zstandard

CODINGS = ("zstd", "br", "gzip")
"""The codings the gateway can produce, as the ``Content-Encoding`` token says them."""
LEVELS = {"zstd": (1, 19), "br": (0, 11), "gzip": (1, 9)}
"""Valid levels per coding, inclusive."""
ZSTD_WINDOW_LOG = 17
ZSTD_HASH_LOG = 15
ZSTD_CHAIN_LOG = 14
BROTLI_LGWIN = 18
GZIP_WBITS = 15  # a 32 KiB deflate window (16 is added for the gzip wrapper)
GZIP_MEM_LEVEL = 8
ZSTD_POOL = 16
_zstd_idle: dict[int, list[zstandard.ZstdCompressor]] = {}
"""Idle zstd compressors per level: a fresh one clears ~0.7 MB of tables on first use (~40 us);
a reused one keeps them. One compressor serves one stream at a time."""


def gzip_window(size_hint: int) -> tuple[int, int]:
    """deflate's window bits and memory level for a body of about ``size_hint`` bytes (0:
    unknown): nginx's rule, halving both while the body fits in half the window, so a 1 KB
    answer does not set up (and clear) 256 KB of state. Any hint stays correct: a body
    larger than its hint only compresses a little less."""
    wbits, mem_level = GZIP_WBITS, GZIP_MEM_LEVEL
    if size_hint > 0:
        while size_hint < (1 << (wbits - 1)) - 262:
            wbits -= 1
            mem_level -= 1
    return wbits, max(mem_level, 1)


class Compressor:
    """One response's encoder. ``compress`` may hold data back; ``flush`` and ``finish``
    return everything so far (``finish`` also ends the coded stream). ``size_hint``: the
    body's length when known (gzip sizes its window by it)."""

    __slots__ = ("coding", "level", "_obj", "_done", "_zstd")

    def __init__(self, coding: str, level: int, size_hint: int = 0) -> None:
        if coding in LEVELS and not LEVELS[coding][0] <= level <= LEVELS[coding][1]:
            raise ValueError(f"{coding} level {level} is outside {LEVELS[coding][0]}..{LEVELS[coding][1]}")
        if coding == "gzip":
            wbits, mem_level = gzip_window(size_hint)
            self._obj = zlib.compressobj(level, zlib.DEFLATED, 16 + wbits, mem_level)
        elif coding == "br":
            self._obj = brotli.Compressor(quality=level, lgwin=BROTLI_LGWIN)
        elif coding == "zstd":
            idle = _zstd_idle.setdefault(level, [])
            if idle:
                self._zstd = idle.pop()
            else:
                params = zstandard.ZstdCompressionParameters.from_level(
                    level, window_log=ZSTD_WINDOW_LOG, hash_log=ZSTD_HASH_LOG, chain_log=ZSTD_CHAIN_LOG)
                self._zstd = zstandard.ZstdCompressor(compression_params=params)
            self._obj = self._zstd.compressobj()
        else:
            raise ValueError(f"unknown coding {coding!r}; expected one of {', '.join(CODINGS)}")
        self.coding = coding
        self.level = level
        self._done = False

    def compress(self, data: bytes) -> bytes:
        self._check()
        if self.coding == "br":
            return self._obj.process(data)
        return self._obj.compress(data)

    def flush(self, data: bytes = b"") -> bytes:
        """``data`` compressed, then a flush: the client can decode all of it now."""
        out = self.compress(data) if data else b""
        coding = self.coding
        if coding == "gzip":
            return out + self._obj.flush(zlib.Z_SYNC_FLUSH)
        if coding == "br":
            return out + self._obj.flush()
        return out + self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self, data: bytes = b"") -> bytes:
        """``data`` compressed, then the end of the coded stream; the compressor is spent."""
        out = self.compress(data) if data else b""
        self._done = True
        if self.coding == "br":
            return out + self._obj.finish()
        out += self._obj.flush()
        if self.coding == "zstd":
            idle = _zstd_idle[self.level]
            if len(idle) < ZSTD_POOL:
                idle.append(self._zstd)
        return out

    def _check(self) -> None:
        if self._done:
            raise ValueError("the compressor has finished")


_Q_VALUE = re.compile(rb"[ \t]*(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*\Z")


def _quality(text: bytes) -> float:
    """A q-value (RFC 9110 12.4.2: 0 or 1, up to three decimals); -1 when malformed."""
    m = _Q_VALUE.match(text)
    return float(m.group(1)) if m else -1.0


def negotiate(accept: bytes | None, offered: tuple[str, ...]) -> str | None:
    """The coding of ``offered`` (server preference order) to answer with, or None for identity.

    No header means identity (as nginx and every CDN do, though RFC 9110 would allow any
    coding). Each listed coding takes its own q, else the q of ``*``; the highest q wins
    and ties go to the server's order. ``x-gzip`` counts as ``gzip``; a malformed element
    is ignored. When nothing offered is acceptable the answer is identity even if the
    client refused that too (``identity;q=0``): an unencoded answer beats none.
    """
    if not accept or not offered:
        return None
    weights: dict[bytes, float] = {}
    for element in accept.split(b","):
        name, _, params = element.partition(b";")
        name = name.strip(b" \t").lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(b";"):
            key, eq, value = param.partition(b"=")
            if eq and key.strip(b" \t").lower() == b"q":
                q = _quality(value)
                break
        if q < 0:
            continue
        if name == b"x-gzip":
            name = b"gzip"
        weights.setdefault(name, q)
    star = weights.get(b"*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = weights.get(coding.encode(), star)
        if q > best_q:
            best, best_q = coding, q
    return best

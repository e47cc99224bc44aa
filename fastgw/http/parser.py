"""Incremental, pull-style HTTP/1.1 parser: the pure-Python reference twin.

``csrc/http_parser.pyx`` (built as ``fastgw._c.http_parser``) is the compiled twin with the
same API and the same behaviour down to error reasons; tests feed both the same streams.
Pull-style (``feed`` then ``next_event`` until ``None``) instead of callbacks, so the proxy
decides when to consume and applies back-pressure by simply not pulling.

Framing follows RFC 9112 and is strict wherever request smuggling is at stake (CL+TE,
conflicting Content-Length, bare CR, obs-fold, whitespace before the colon).

Heads are parsed line by line as lines complete and the size limit is checked before
each line is parsed, so the outcome (events, or the error and its status) does not depend
on how the stream was split across ``feed`` calls.

Zero-copy: when the internal buffer is empty and the parser is inside a Content-Length
body or a chunk's data, ``feed`` keeps a reference to the caller's ``bytes`` or
``memoryview`` (or a memoryview slice of it) and ``next_event`` returns it as the body
chunk. Callers must therefore consume each body chunk before the next ``feed`` if they
reuse the memory behind a memoryview. ``bytearray`` input is always copied, because
exporting a view of it would stop the caller from resizing it.
"""

from __future__ import annotations

import re
from typing import NoReturn

from fastgw.http.errors import END, ParseError

__all__ = ["END", "ParseError", "RequestHead", "ResponseHead", "RequestParser", "ResponseParser", "serialize_head"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):(.*)", re.S)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs except HTAB, and DEL
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: (.*))?", re.S)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")  # 18 digits cannot overflow a signed 64-bit integer

# Parser states.
_HEAD = 0  # start line + header fields (also the blank lines skipped before a start line)
_BODY = 1  # Content-Length body
_CHUNK_SIZE_LINE = 2
_CHUNK_DATA = 3
_CHUNK_CRLF = 4
_TRAILERS = 5
_BODY_EOF = 6  # response body delimited by the connection closing
_END = 7  # message complete, END not yet returned
_IDLE = 8  # response parser waiting for start()
_DEAD = 9  # a ParseError was raised

# Header fields the parser interprets, by lower-cased name.
_CL, _TE, _CONN, _HOST, _EXPECT, _UPGRADE = range(6)
_SPECIAL = {
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"host": _HOST,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
}


def _get(headers: list[tuple[bytes, bytes]], name_lower: bytes, default: bytes | None) -> bytes | None:
    for name, value in headers:
        if name.lower() == name_lower:
            return value
    return default


class RequestHead:
    """A parsed request line and header block; names keep their received case, values are OWS-stripped."""

    __slots__ = (
        "method", "target", "path", "query", "version", "headers", "host", "content_length",
        "chunked", "keep_alive", "expect_continue", "upgrade", "connection_tokens",
    )

    def __init__(self) -> None:
        self.method = self.target = self.path = self.query = self.host = b""
        self.version = 11
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length = -1
        self.chunked = self.keep_alive = self.expect_continue = self.upgrade = False
        self.connection_tokens: tuple[bytes, ...] = ()

    def get(self, name_lower: bytes, default: bytes | None = None) -> bytes | None:
        """First value of a header, by lower-case name; a scan beats a dict for ~10 headers."""
        return _get(self.headers, name_lower, default)

    def __repr__(self) -> str:
        return f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version // 10}.{self.version % 10} headers={len(self.headers)}>"


class ResponseHead:
    """A parsed status line and header block."""

    __slots__ = ("version", "status", "reason", "headers", "content_length", "chunked", "keep_alive",
                 "connection_tokens")

    def __init__(self) -> None:
        self.version = 11
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length = -1
        self.chunked = self.keep_alive = False
        self.connection_tokens: tuple[bytes, ...] = ()

    def get(self, name_lower: bytes, default: bytes | None = None) -> bytes | None:
        """First value of a header, by lower-case name."""
        return _get(self.headers, name_lower, default)

    def __repr__(self) -> str:
        return f"<ResponseHead HTTP/{self.version // 10}.{self.version % 10} {self.status} headers={len(self.headers)}>"


class _Parser:
    """State machine shared by both directions; ``_response`` switches the few rules that differ."""

    __slots__ = (
        "_buf", "_pos", "_scanned", "_pending", "_state", "_remaining", "_head_len", "_max_head_size",
        "_max_headers", "_response", "_eof", "_starved", "_error", "_method", "_head", "_nheaders",
        "_hosts", "_te_count", "_te_chunked", "_te_last_chunked", "_te_other", "_conn", "_expect",
        "_upgrade_hdr",
    )

    def __init__(self, max_head_size: int, max_headers: int, response: bool) -> None:
        self._buf = bytearray()
        self._pos = 0  # consumed prefix of _buf; compacted lazily in feed()
        self._scanned = 0  # bytes after _pos already known to hold no LF
        self._pending = None  # zero-copy body chunk taken straight from feed()
        self._state = _IDLE if response else _HEAD
        self._remaining = 0
        self._max_head_size = max_head_size
        self._max_headers = max_headers
        self._response = response
        self._eof = False
        self._starved = False  # last next_event() returned None for lack of data
        self._error: ParseError | None = None
        self._method = b""
        self._reset_message()

    def _reset_message(self) -> None:
        self._head: RequestHead | ResponseHead | None = None
        self._head_len = 0
        self._nheaders = 0
        self._hosts = 0
        self._te_count = 0
        self._te_chunked = 0
        self._te_last_chunked = False
        self._te_other = False
        self._conn: list[bytes] = []
        self._expect = False
        self._upgrade_hdr = False

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; parsing happens in next_event(). Never raises ParseError."""
        if self._state == _DEAD:
            return
        n = len(data)
        if not n:
            return
        self._starved = False
        state = self._state
        if (
            self._pending is None
            and self._pos == len(self._buf)
            and (type(data) is bytes or type(data) is memoryview)
        ):
            if state == _BODY_EOF:
                self._pending = data
                return
            if self._remaining and (state == _BODY or state == _CHUNK_DATA):
                take = min(n, self._remaining)
                self._remaining -= take
                if take == n:
                    self._pending = data
                    return
                view = memoryview(data)
                self._pending = view[:take]
                data = view[take:]
        buf = self._buf
        pos = self._pos
        if pos and pos >= len(buf) - pos:  # compact once the consumed prefix outweighs the live bytes
            del buf[:pos]
            self._pos = 0
        buf += data

    def feed_eof(self) -> None:
        """The peer closed. Raises ParseError if that cuts a message short (checked now if the
        parser already ran out of data, else when next_event() does)."""
        if self._state == _DEAD:
            return
        self._eof = True
        if self._starved and self._state != _BODY_EOF:
            self._check_eof()

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet consumed: lets the server bound pipelined input."""
        n = len(self._buf) - self._pos
        if self._pending is not None:
            n += len(self._pending)
        return n

    def take_rest(self) -> bytes:
        """Return and drop every unconsumed byte (after Upgrade/CONNECT the stream is a tunnel)."""
        rest = bytes(self._buf[self._pos:])
        if self._pending is not None:
            rest = bytes(self._pending) + rest
            self._pending = None
        self._buf.clear()
        self._pos = 0
        self._scanned = 0
        return rest

    # -- events ----------------------------------------------------------------------------

    def next_event(self) -> object:
        """Return None (need more data), a head, a non-empty body chunk (bytes or memoryview), or END."""
        if self._pending is not None:
            chunk = self._pending
            self._pending = None
            return chunk
        while True:
            state = self._state
            if state == _HEAD or state == _TRAILERS:
                return self._lines()
            if state == _BODY or state == _CHUNK_DATA:
                if not self._remaining:
                    if state == _BODY:
                        return self._end_message()
                    self._state = _CHUNK_CRLF
                    continue
                avail = len(self._buf) - self._pos
                if not avail:
                    return self._starve()
                take = min(avail, self._remaining)
                self._remaining -= take
                return self._take(take)
            if state == _CHUNK_SIZE_LINE:
                if not self._chunk_size():
                    return self._starve()
            elif state == _CHUNK_CRLF:
                buf = self._buf
                pos = self._pos
                avail = len(buf) - pos
                if not avail or (avail == 1 and buf[pos] == 13):
                    return self._starve()
                if buf[pos] == 10:
                    self._pos = pos + 1
                elif buf[pos] == 13 and buf[pos + 1] == 10:
                    self._pos = pos + 2
                else:
                    self._fail(400, "missing CRLF after chunk data")
                self._state = _CHUNK_SIZE_LINE
            elif state == _BODY_EOF:
                avail = len(self._buf) - self._pos
                if avail:
                    return self._take(avail)
                return self._starve()
            elif state == _END:
                return self._end_message()
            elif state == _IDLE:
                return self._starve()
            else:
                assert self._error is not None
                raise ParseError(self._error.status, self._error.reason)

    def _take(self, n: int) -> bytes:
        buf = self._buf
        pos = self._pos
        end = pos + n
        if pos == 0 and end == len(buf):
            chunk = bytes(buf)
            buf.clear()
            return chunk
        self._pos = end
        with memoryview(buf) as view:  # released at once, so the bytearray stays resizable
            return view[pos:end].tobytes()

    def _starve(self) -> object:
        self._starved = True
        if self._eof:
            if self._state == _BODY_EOF:
                return self._end_message()
            self._check_eof()
        return None

    def _check_eof(self) -> None:
        state = self._state
        if state == _IDLE:
            return
        if state == _HEAD and self._head is None and self._pos == len(self._buf):
            if self._response:
                self._fail(502, "connection closed before a response")
            return
        self._fail(400, "connection closed in the middle of a message")

    def _fail(self, status: int, reason: str) -> NoReturn:
        if self._response:
            status = 502
        self._state = _DEAD
        self._error = ParseError(status, reason)
        raise ParseError(status, reason)

    def _end_message(self) -> object:
        head = self._head
        if self._response and head is not None and head.status >= 200:
            self._state = _IDLE
        else:  # next request, or the final response after a 1xx
            self._state = _HEAD
        self._remaining = 0
        self._reset_message()
        return END

    # -- heads and trailers ----------------------------------------------------------------

    def _lines(self) -> object:
        """Consume complete lines of a head (or of a trailer section) until it ends or data runs out."""
        buf = self._buf
        limit = self._max_head_size
        state = self._state
        pos = self._pos
        if state == _HEAD and self._head is None and not self._scanned:
            # Fast path for a whole head already buffered, CRLF only, within the limits: the same
            # per-line checks in the same order, minus the per-line scanning and size bookkeeping.
            # Anything unusual (bare LF, leading blank line, limits) takes the general loop below.
            t = buf.find(b"\r\n\r\n", pos, pos + limit)
            if t > pos:
                block = bytes(buf[pos:t])
                lines = block.split(b"\r\n")
                if lines[0] and block.count(b"\n") == len(lines) - 1:
                    self._head_len = t + 4 - pos
                    self._pos = pos = pos + len(lines[0]) + 2
                    self._start_line(lines[0])
                    for i in range(1, len(lines)):
                        self._pos = pos = pos + len(lines[i]) + 2
                        self._header(lines[i])
                    self._pos = t + 4
                    return self._finish_head()
        while True:
            lf = buf.find(b"\n", pos + self._scanned)
            if lf < 0:
                if self._head_len + len(buf) - pos > limit:
                    self._too_large()
                self._scanned = len(buf) - pos
                return self._starve()
            self._scanned = 0
            self._pos = lf + 1
            end = lf - 1 if lf > pos and buf[lf - 1] == 13 else lf
            if end == pos and self._head is None and state == _HEAD:
                pos = lf + 1
                continue  # blank lines before a start line are ignored (RFC 9112 2.2)
            self._head_len += lf + 1 - pos
            if self._head_len > limit:
                self._too_large()
            if end == pos:
                return self._finish_head() if state == _HEAD else self._end_message()
            line = bytes(buf[pos:end])
            pos = lf + 1
            if state == _TRAILERS:
                self._field(line)
            elif self._head is None:
                self._start_line(line)
            else:
                self._header(line)

    def _too_large(self) -> NoReturn:
        if self._state == _TRAILERS:
            self._fail(431, "trailer section too large")
        self._fail(431, "request head too large")

    def _start_line(self, line: bytes) -> None:
        if self._response:
            self._status_line(line)
            return
        sp1 = line.find(b" ")
        if sp1 <= 0 or not _TOKEN.fullmatch(line, 0, sp1):
            self._fail(400, "invalid method")
        sp2 = line.find(b" ", sp1 + 1)
        if sp2 <= sp1 + 1 or _BAD_TARGET.search(line, sp1 + 1, sp2):
            self._fail(400, "invalid request target")
        version = line[sp2 + 1:]
        if version == b"HTTP/1.1":
            v = 11
        elif version == b"HTTP/1.0":
            v = 10
        elif _VERSION.fullmatch(version):
            self._fail(505, "HTTP version not supported")
        else:
            self._fail(400, "invalid HTTP version")
        head = RequestHead()
        head.method = line[:sp1]
        head.target = target = line[sp1 + 1:sp2]
        head.version = v
        q = target.find(b"?")
        if q < 0:
            head.path = target
        else:
            head.path = target[:q]
            head.query = target[q + 1:]
        self._head = head

    def _status_line(self, line: bytes) -> None:
        m = _STATUS_LINE.fullmatch(line)
        if m is None:
            self._fail(502, "invalid status line")
        reason = m.group(3) or b""
        if _BAD_VALUE.search(reason):
            self._fail(502, "invalid character in reason phrase")
        head = ResponseHead()
        head.version = 10 if m.group(1) == b"0" else 11
        head.status = int(m.group(2))
        head.reason = reason
        self._head = head

    def _field(self, line: bytes) -> tuple[bytes, bytes]:
        """Validate one ``name: value`` line and split it (shared by headers and trailers)."""
        if line[0] == 32 or line[0] == 9:
            self._fail(400, "obsolete line folding is not allowed")
        colon = line.find(b":")
        if colon < 0:
            self._fail(400, "header line without a colon")
        if colon == 0:
            self._fail(400, "empty header name")
        if not _TOKEN.fullmatch(line, 0, colon):
            self._fail(400, "invalid character in header name")
        value = line[colon + 1:].strip(b" \t")
        if _BAD_VALUE.search(value):
            self._fail(400, "invalid character in header value")
        return line[:colon], value

    def _header(self, line: bytes) -> None:
        if self._nheaders >= self._max_headers:
            self._fail(431, "too many header fields")
        self._nheaders += 1
        m = _FIELD.fullmatch(line)  # fast path; _field() re-checks a bad line to name its fault
        value = m.group(2).strip(b" \t") if m is not None else None
        if value is None or _BAD_VALUE.search(value):
            self._field(line)
        name = m.group(1)
        head = self._head
        head.headers.append((name, value))
        kind = _SPECIAL.get(name.lower())
        if kind is None:
            return
        if kind == _CL:
            self._content_length(value)
        elif kind == _TE:
            self._transfer_encoding(value)
        elif kind == _CONN:
            for token in value.split(b","):
                token = token.strip(b" \t")
                if token:
                    self._conn.append(token.lower())
        elif self._response:  # Host, Expect and Upgrade only matter in requests
            return
        elif kind == _HOST:
            self._hosts += 1
            if self._hosts > 1:
                self._fail(400, "duplicate Host header")
            head.host = value
        elif kind == _EXPECT:
            self._expect = value.lower() == b"100-continue"
        else:
            self._upgrade_hdr = True

    def _content_length(self, value: bytes) -> None:
        # Repeated or comma-listed values are allowed only when all equal (RFC 9110 8.6).
        cl = self._head.content_length
        for part in value.split(b","):
            part = part.strip(b" \t")
            if not _DIGITS.fullmatch(part):
                self._fail(400, "invalid Content-Length")
            n = int(part)
            if cl >= 0 and n != cl:
                self._fail(400, "conflicting Content-Length values")
            cl = n
        self._head.content_length = cl

    def _transfer_encoding(self, value: bytes) -> None:
        for part in value.split(b","):
            part = part.strip(b" \t")
            if not _TOKEN.fullmatch(part):
                self._fail(400, "invalid Transfer-Encoding")
            self._te_count += 1
            if part.lower() == b"chunked":
                self._te_chunked += 1
                self._te_last_chunked = True
            else:
                self._te_other = True
                self._te_last_chunked = False

    def _finish_head(self) -> RequestHead | ResponseHead:
        head = self._head
        tokens = tuple(self._conn)
        head.connection_tokens = tokens
        if head.version == 11:
            keep_alive = b"close" not in tokens
        else:
            keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        if self._response:
            self._frame_response(head)
            head.keep_alive = keep_alive and self._state != _BODY_EOF
            return head
        if head.version == 11 and not self._hosts:
            self._fail(400, "missing Host header")
        if self._te_count:
            if head.version == 10:
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            if head.content_length >= 0:
                self._fail(400, "both Content-Length and Transfer-Encoding")
            if self._te_chunked > 1 or not self._te_last_chunked and self._te_chunked:
                self._fail(400, "chunked must be the final transfer coding, once")
            if self._te_other:
                self._fail(501, "unsupported transfer coding")
            head.chunked = True
        head.keep_alive = keep_alive
        head.upgrade = self._upgrade_hdr and b"upgrade" in tokens
        head.expect_continue = self._expect and head.version == 11
        if head.chunked:
            self._state = _CHUNK_SIZE_LINE
        elif head.content_length > 0:
            self._state = _BODY
            self._remaining = head.content_length
        else:
            self._state = _END
        return head

    def _frame_response(self, head: ResponseHead) -> None:
        """RFC 9112 6.3: pick the body framing of a response."""
        status = head.status
        if self._te_count and head.content_length >= 0:
            # RFC 9112 6.3 lets a recipient pick Transfer-Encoding, but the pair is the classic
            # desync: a proxy must not guess which framing the upstream meant.
            self._fail(502, "both Content-Length and Transfer-Encoding in a response")
        if self._te_count:
            head.content_length = -1
            head.chunked = self._te_last_chunked
        method = self._method
        if (status < 200 or status == 204 or status == 304 or method == b"HEAD"
                or (method == b"CONNECT" and status < 300)):
            self._state = _END
        elif head.chunked:
            self._state = _CHUNK_SIZE_LINE
        elif self._te_count or head.content_length < 0:
            self._state = _BODY_EOF
        elif head.content_length:
            self._state = _BODY
            self._remaining = head.content_length
        else:
            self._state = _END

    def _chunk_size(self) -> bool:
        """Parse one chunk-size line; False when it is not complete yet."""
        buf = self._buf
        pos = self._pos
        lf = buf.find(b"\n", pos + self._scanned)
        if lf < 0:
            if len(buf) - pos > self._max_head_size:
                self._fail(400, "chunk size line too long")
            self._scanned = len(buf) - pos
            return False
        self._scanned = 0
        if lf + 1 - pos > self._max_head_size:
            self._fail(400, "chunk size line too long")
        end = lf - 1 if lf > pos and buf[lf - 1] == 13 else lf
        m = _CHUNK_SIZE.fullmatch(buf, pos, end)
        if m is None or m.end(1) - pos > 16:
            self._fail(400, "invalid chunk size")
        size = int(buf[pos:m.end(1)], 16)
        self._pos = lf + 1
        if size:
            self._state = _CHUNK_DATA
            self._remaining = size
        else:
            self._state = _TRAILERS
            self._head_len = 0
        return True


class RequestParser(_Parser):
    """Server side: parses requests, raising ParseError with 400, 431, 501 or 505."""

    __slots__ = ()

    def __init__(self, max_head_size: int = 16384, max_headers: int = 100) -> None:
        super().__init__(max_head_size, max_headers, False)


class ResponseParser(_Parser):
    """Upstream side: parses responses, raising ParseError(502); call start() before each one."""

    __slots__ = ()

    def __init__(self, max_head_size: int = 65536, max_headers: int = 200) -> None:
        super().__init__(max_head_size, max_headers, True)

    def start(self, request_method: bytes) -> None:
        """Expect the response to a request with this method (HEAD and CONNECT change the framing)."""
        state = self._state
        if state == _DEAD:
            assert self._error is not None
            raise ParseError(self._error.status, self._error.reason)
        if state != _IDLE and not (state == _HEAD and self._head is None):
            raise RuntimeError("start() called while a response is being parsed")
        self._method = bytes(request_method)
        self._state = _HEAD
        self._starved = False


def serialize_head(
    first_line: bytes, headers: list[tuple[bytes, bytes]], drop: frozenset[bytes], extra: bytes
) -> bytes:
    """Build a head from a start line and headers, skipping names in ``drop`` (lower-case)
    and appending ``extra`` (pre-formatted lines): how the proxy rewrites hop-by-hop headers."""
    parts = [first_line, b"\r\n"]
    for name, value in headers:
        if not drop or name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)

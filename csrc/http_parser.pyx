# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of fastgw/http/parser.py: same API, same events, same errors and reasons.

The Python module is the reference and carries the design notes; this file mirrors its
structure method for method so the two can be read side by side. What differs is only how:
a malloc'd byte buffer scanned through ``const unsigned char*`` with memchr and lookup
tables, no per-byte Python objects, and one bytes object per field.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

from fastgw.http.errors import END, ParseError

__all__ = ["END", "ParseError", "RequestHead", "ResponseHead", "RequestParser", "ResponseParser", "serialize_head"]

cdef object _END = END
cdef object _ParseError = ParseError
cdef bytes _EMPTY = b""
cdef tuple _NO_TOKENS = ()

# A buffer left this large after a big body is released once empty, so an idle
# keep-alive connection does not pin it.
cdef Py_ssize_t _SHRINK_ABOVE = 256 * 1024

cdef enum:
    S_HEAD = 0
    S_BODY = 1
    S_CHUNK_SIZE = 2
    S_CHUNK_DATA = 3
    S_CHUNK_CRLF = 4
    S_TRAILERS = 5
    S_BODY_EOF = 6
    S_END = 7
    S_IDLE = 8
    S_DEAD = 9

cdef unsigned char _TOKEN[256]
cdef unsigned char _LOWER[256]


cdef void _init_tables():
    cdef int c
    cdef bytes specials = b"!#$%&'*+-.^_`|~"
    for c in range(256):
        _LOWER[c] = c + 32 if 65 <= c <= 90 else c
        _TOKEN[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
    for c in specials:
        _TOKEN[c] = 1


_init_tables()


cdef inline bint _bad_value_char(unsigned char c) noexcept:
    return (c < 32 and c != 9) or c == 127


cdef inline bint _ows(unsigned char c) noexcept:
    return c == 32 or c == 9


cdef inline bint _ieq(const unsigned char* p, const char* lower, Py_ssize_t n) noexcept:
    """Case-insensitive compare of p[:n] with a lower-case literal."""
    cdef Py_ssize_t i
    for i in range(n):
        if _LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef object _get(list headers, bytes name_lower, object default):
    cdef Py_ssize_t k, n = PyBytes_GET_SIZE(name_lower)
    cdef const unsigned char* want = <const unsigned char*>PyBytes_AS_STRING(name_lower)
    cdef const unsigned char* have
    for name, value in headers:
        if type(name) is not bytes or PyBytes_GET_SIZE(name) != n:
            continue
        have = <const unsigned char*>PyBytes_AS_STRING(name)
        for k in range(n):
            if _LOWER[have[k]] != want[k]:
                break
        else:
            return value
    return default


@cython.freelist(64)
cdef class RequestHead:
    """A parsed request line and header block; names keep their received case, values are OWS-stripped."""

    cdef public bytes method, target, path, query, host
    cdef public int version
    cdef public list headers
    cdef public long long content_length
    cdef public bint chunked, keep_alive, expect_continue, upgrade
    cdef public tuple connection_tokens

    def __init__(self):
        self.method = self.target = self.path = self.query = self.host = _EMPTY
        self.version = 11
        self.headers = []
        self.content_length = -1
        self.connection_tokens = _NO_TOKENS

    def get(self, bytes name_lower, default=None):
        """First value of a header, by lower-case name."""
        return _get(self.headers, name_lower, default)

    def __repr__(self):
        return f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version // 10}.{self.version % 10} headers={len(self.headers)}>"


@cython.freelist(64)
cdef class ResponseHead:
    """A parsed status line and header block."""

    cdef public int version, status
    cdef public bytes reason
    cdef public list headers
    cdef public long long content_length
    cdef public bint chunked, keep_alive
    cdef public tuple connection_tokens

    def __init__(self):
        self.version = 11
        self.reason = _EMPTY
        self.headers = []
        self.content_length = -1
        self.connection_tokens = _NO_TOKENS

    def get(self, bytes name_lower, default=None):
        """First value of a header, by lower-case name."""
        return _get(self.headers, name_lower, default)

    def __repr__(self):
        return f"<ResponseHead HTTP/{self.version // 10}.{self.version % 10} {self.status} headers={len(self.headers)}>"


cdef class _Parser:
    """State machine shared by both directions; ``_response`` switches the few rules that differ."""

    cdef char* _buf  # PyMem buffer; live bytes are [_start, _end), compacted lazily in _append
    cdef Py_ssize_t _start, _end, _cap, _scanned
    cdef object _pending
    cdef int _state
    cdef uint64_t _remaining
    cdef Py_ssize_t _head_len, _max_head_size, _max_headers, _nheaders
    cdef bint _response, _eof, _starved
    cdef int _err_status
    cdef str _err_reason
    cdef bytes _method
    # per message
    cdef RequestHead _req
    cdef ResponseHead _resp
    cdef list _headers
    cdef bint _have_head
    cdef int64_t _cl
    cdef int _version, _hosts, _te_count, _te_chunked
    cdef bint _te_last_chunked, _te_other, _expect, _upgrade_hdr
    cdef bint _conn_close, _conn_keep_alive, _conn_upgrade
    cdef list _conn

    def __dealloc__(self):
        PyMem_Free(self._buf)

    cdef void _setup(self, Py_ssize_t max_head_size, Py_ssize_t max_headers, bint response):
        self._max_head_size = max_head_size
        self._max_headers = max_headers
        self._response = response
        self._state = S_IDLE if response else S_HEAD
        self._method = _EMPTY
        self._reset_message()

    cdef void _reset_message(self):
        self._req = None
        self._resp = None
        self._headers = None
        self._have_head = False
        self._head_len = 0
        self._nheaders = 0
        self._cl = -1
        self._hosts = 0
        self._te_count = 0
        self._te_chunked = 0
        self._te_last_chunked = False
        self._te_other = False
        self._expect = False
        self._upgrade_hdr = False
        self._conn_close = self._conn_keep_alive = self._conn_upgrade = False
        self._conn = None

    # -- input -----------------------------------------------------------------------------

    cdef int _append(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t newcap
        cdef char* nb
        if live == 0:
            self._start = self._end = 0
            if self._cap > _SHRINK_ABOVE and n < self._cap // 4:
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = 0
        if self._end + n > self._cap:
            if self._start >= live and live + n <= self._cap:
                # compact once the consumed prefix outweighs the live bytes (amortised O(1))
                memmove(self._buf, self._buf + self._start, live)
            else:
                newcap = max(self._cap * 2, live + n, 2048)
                nb = <char*>PyMem_Malloc(newcap)
                if nb == NULL:
                    raise MemoryError()
                if live:
                    memcpy(nb, self._buf + self._start, live)
                PyMem_Free(self._buf)
                self._buf = nb
                self._cap = newcap
            self._start = 0
            self._end = live
        memcpy(self._buf + self._end, data, n)
        self._end += n
        return 0

    def feed(self, data):
        """Append received bytes; parsing happens in next_event(). Never raises ParseError."""
        cdef Py_buffer view
        cdef Py_ssize_t n, take
        if self._state == S_DEAD:
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = view.len
            if n == 0:
                return
            self._starved = False
            if (self._pending is None and self._start == self._end
                    and (type(data) is bytes or type(data) is memoryview)):
                if self._state == S_BODY_EOF:
                    self._pending = data
                    return
                if self._remaining and (self._state == S_BODY or self._state == S_CHUNK_DATA):
                    take = n if <uint64_t>n <= self._remaining else <Py_ssize_t>self._remaining
                    self._remaining -= take
                    if take == n:
                        self._pending = data
                        return
                    self._pending = memoryview(data)[:take]
                    self._append(<const char*>view.buf + take, n - take)
                    return
            self._append(<const char*>view.buf, n)
        finally:
            PyBuffer_Release(&view)

    def feed_eof(self):
        """The peer closed. Raises ParseError if that cuts a message short (checked now if the
        parser already ran out of data, else when next_event() does)."""
        if self._state == S_DEAD:
            return
        self._eof = True
        if self._starved and self._state != S_BODY_EOF:
            self._check_eof()

    @property
    def buffered(self):
        """Bytes fed but not yet consumed: lets the server bound pipelined input."""
        cdef Py_ssize_t n = self._end - self._start
        if self._pending is not None:
            n += len(self._pending)
        return n

    def take_rest(self):
        """Return and drop every unconsumed byte (after Upgrade/CONNECT the stream is a tunnel)."""
        rest = PyBytes_FromStringAndSize(self._buf + self._start, self._end - self._start)
        if self._pending is not None:
            rest = bytes(self._pending) + rest
            self._pending = None
        self._start = self._end = 0
        self._scanned = 0
        return rest

    # -- events ----------------------------------------------------------------------------

    def next_event(self):
        """Return None (need more data), a head, a non-empty body chunk (bytes or memoryview), or END."""
        cdef Py_ssize_t avail, take
        cdef int state
        cdef unsigned char c
        if self._pending is not None:
            chunk = self._pending
            self._pending = None
            return chunk
        while True:
            state = self._state
            if state == S_HEAD or state == S_TRAILERS:
                return self._lines()
            if state == S_BODY or state == S_CHUNK_DATA:
                if self._remaining == 0:
                    if state == S_BODY:
                        return self._end_message()
                    self._state = S_CHUNK_CRLF
                    continue
                avail = self._end - self._start
                if avail == 0:
                    return self._starve()
                take = avail if <uint64_t>avail <= self._remaining else <Py_ssize_t>self._remaining
                self._remaining -= take
                return self._take(take)
            if state == S_CHUNK_SIZE:
                if not self._chunk_size():
                    return self._starve()
            elif state == S_CHUNK_CRLF:
                avail = self._end - self._start
                c = <unsigned char>self._buf[self._start] if avail else 0
                if avail == 0 or (avail == 1 and c == 13):
                    return self._starve()
                if c == 10:
                    self._start += 1
                elif c == 13 and self._buf[self._start + 1] == 10:
                    self._start += 2
                else:
                    self._fail(400, "missing CRLF after chunk data")
                self._state = S_CHUNK_SIZE
            elif state == S_BODY_EOF:
                avail = self._end - self._start
                if avail:
                    return self._take(avail)
                return self._starve()
            elif state == S_END:
                return self._end_message()
            elif state == S_IDLE:
                return self._starve()
            else:
                raise _ParseError(self._err_status, self._err_reason)

    cdef inline bytes _take(self, Py_ssize_t n):
        chunk = PyBytes_FromStringAndSize(self._buf + self._start, n)
        self._start += n
        return chunk

    cdef object _starve(self):
        self._starved = True
        if self._eof:
            if self._state == S_BODY_EOF:
                return self._end_message()
            self._check_eof()
        return None

    cdef int _check_eof(self) except -1:
        cdef int state = self._state
        if state == S_IDLE:
            return 0
        if state == S_HEAD and not self._have_head and self._start == self._end:
            if self._response:
                self._fail(502, "connection closed before a response")
            return 0
        self._fail(400, "connection closed in the middle of a message")
        return 0

    cdef object _fail(self, int status, str reason):
        if self._response:
            status = 502
        self._state = S_DEAD
        self._err_status = status
        self._err_reason = reason
        raise _ParseError(status, reason)

    cdef object _end_message(self):
        if self._response and self._resp is not None and self._resp.status >= 200:
            self._state = S_IDLE
        else:  # next request, or the final response after a 1xx
            self._state = S_HEAD
        self._remaining = 0
        self._reset_message()
        return _END

    # -- heads and trailers ----------------------------------------------------------------

    cdef object _lines(self):
        """Consume complete lines of a head (or of a trailer section) until it ends or data runs out."""
        cdef const unsigned char* base
        cdef const unsigned char* lf
        cdef Py_ssize_t pos, lfi, end, avail, a, b
        cdef Py_ssize_t limit = self._max_head_size
        while True:
            base = <const unsigned char*>self._buf
            pos = self._start
            avail = self._end - pos - self._scanned
            lf = <const unsigned char*>memchr(base + pos + self._scanned, 10, avail) if avail > 0 else NULL
            if lf == NULL:
                if self._head_len + self._end - pos > limit:
                    self._too_large()
                self._scanned = self._end - pos
                return self._starve()
            self._scanned = 0
            lfi = lf - base
            self._start = lfi + 1
            end = lfi - 1 if lfi > pos and base[lfi - 1] == 13 else lfi
            if end == pos and not self._have_head and self._state == S_HEAD:
                continue  # blank lines before a start line are ignored (RFC 9112 2.2)
            self._head_len += lfi + 1 - pos
            if self._head_len > limit:
                self._too_large()
            if end == pos:
                return self._finish_head() if self._state == S_HEAD else self._end_message()
            if self._state == S_TRAILERS:
                self._field(base + pos, end - pos, &a, &b)
            elif not self._have_head:
                if self._response:
                    self._status_line(base + pos, end - pos)
                else:
                    self._request_line(base + pos, end - pos)
                self._have_head = True
            else:
                self._header(base + pos, end - pos)

    cdef int _too_large(self) except -1:
        if self._state == S_TRAILERS:
            self._fail(431, "trailer section too large")
        self._fail(431, "request head too large")
        return 0

    cdef int _request_line(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, j, q
        cdef const unsigned char* v
        cdef RequestHead head
        while i < n and _TOKEN[p[i]]:
            i += 1
        if i == 0 or i == n or p[i] != 32:
            self._fail(400, "invalid method")
        j = i + 1
        while j < n and p[j] > 32 and p[j] != 127:
            j += 1
        if j == i + 1 or j == n or p[j] != 32:
            self._fail(400, "invalid request target")
        v = p + j + 1
        if n - j - 1 == 8 and memcmp(v, b"HTTP/", 5) == 0 and v[6] == 46 and 48 <= v[5] <= 57 and 48 <= v[7] <= 57:
            if v[5] == 49 and v[7] == 49:
                self._version = 11
            elif v[5] == 49 and v[7] == 48:
                self._version = 10
            else:
                self._fail(505, "HTTP version not supported")
        else:
            self._fail(400, "invalid HTTP version")
        head = RequestHead.__new__(RequestHead)
        head.method = _method_bytes(p, i)
        head.target = PyBytes_FromStringAndSize(<const char*>p + i + 1, j - i - 1)
        q = i + 1
        while q < j and p[q] != 63:  # '?'
            q += 1
        if q == j:
            head.path = head.target
            head.query = _EMPTY
        else:
            head.path = PyBytes_FromStringAndSize(<const char*>p + i + 1, q - i - 1)
            head.query = PyBytes_FromStringAndSize(<const char*>p + q + 1, j - q - 1)
        head.version = self._version
        head.host = _EMPTY
        self._headers = head.headers = []
        self._req = head
        return 0

    cdef int _status_line(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        cdef ResponseHead head
        if (n < 12 or memcmp(p, b"HTTP/1.", 7) != 0 or (p[7] != 48 and p[7] != 49) or p[8] != 32
                or not (49 <= p[9] <= 57) or not (48 <= p[10] <= 57) or not (48 <= p[11] <= 57)
                or (n > 12 and p[12] != 32)):
            self._fail(502, "invalid status line")
        for i in range(13, n):
            if _bad_value_char(p[i]):
                self._fail(502, "invalid character in reason phrase")
        head = ResponseHead.__new__(ResponseHead)
        head.version = 10 if p[7] == 48 else 11
        self._version = head.version
        head.status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
        head.reason = PyBytes_FromStringAndSize(<const char*>p + 13, n - 13) if n > 13 else _EMPTY
        self._headers = head.headers = []
        self._resp = head
        return 0

    cdef Py_ssize_t _field(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* vstart,
                           Py_ssize_t* vend) except -1:
        """Validate one ``name: value`` line (headers and trailers); return the colon index
        and the OWS-stripped value bounds through the pointers."""
        cdef Py_ssize_t i = 0, a, b, k
        if p[0] == 32 or p[0] == 9:
            self._fail(400, "obsolete line folding is not allowed")
        while i < n and _TOKEN[p[i]]:
            i += 1
        if i == n or p[i] != 58:
            if memchr(p + i, 58, n - i) == NULL:
                self._fail(400, "header line without a colon")
            self._fail(400, "invalid character in header name")
        if i == 0:
            self._fail(400, "empty header name")
        a = i + 1
        b = n
        while a < b and _ows(p[a]):
            a += 1
        while b > a and _ows(p[b - 1]):
            b -= 1
        for k in range(a, b):
            if _bad_value_char(p[k]):
                self._fail(400, "invalid character in header value")
        vstart[0] = a
        vend[0] = b
        return i

    cdef int _header(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t colon, a, b
        if self._nheaders >= self._max_headers:
            self._fail(431, "too many header fields")
        self._nheaders += 1
        colon = self._field(p, n, &a, &b)
        value = PyBytes_FromStringAndSize(<const char*>p + a, b - a)
        self._headers.append((PyBytes_FromStringAndSize(<const char*>p, colon), value))
        if colon == 14:
            if _ieq(p, b"content-length", 14):
                self._content_length(p + a, b - a)
        elif colon == 17:
            if _ieq(p, b"transfer-encoding", 17):
                self._transfer_encoding(p + a, b - a)
        elif colon == 10:
            if _ieq(p, b"connection", 10):
                self._connection(p + a, b - a)
        elif self._response:  # Host, Expect and Upgrade only matter in requests
            return 0
        elif colon == 4:
            if _ieq(p, b"host", 4):
                self._hosts += 1
                if self._hosts > 1:
                    self._fail(400, "duplicate Host header")
                self._req.host = value
        elif colon == 6:
            if _ieq(p, b"expect", 6):
                self._expect = b - a == 12 and _ieq(p + a, b"100-continue", 12)
        elif colon == 7:
            if _ieq(p, b"upgrade", 7):
                self._upgrade_hdr = True
        return 0

    cdef int _content_length(self, const unsigned char* p, Py_ssize_t n) except -1:
        # Repeated or comma-listed values are allowed only when all equal (RFC 9110 8.6).
        cdef Py_ssize_t i = 0, a, b, k
        cdef int64_t v, cl = self._cl
        while True:
            a = i
            b = i
            while b < n and p[b] != 44:
                b += 1
            i = b + 1
            while a < b and _ows(p[a]):
                a += 1
            while b > a and _ows(p[b - 1]):
                b -= 1
            if b == a or b - a > 18:
                self._fail(400, "invalid Content-Length")
            v = 0
            for k in range(a, b):
                if not (48 <= p[k] <= 57):
                    self._fail(400, "invalid Content-Length")
                v = v * 10 + (p[k] - 48)
            if cl >= 0 and v != cl:
                self._fail(400, "conflicting Content-Length values")
            cl = v
            if i > n:
                break
        self._cl = cl
        return 0

    cdef int _transfer_encoding(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, a, b, k
        while True:
            a = i
            b = i
            while b < n and p[b] != 44:
                b += 1
            i = b + 1
            while a < b and _ows(p[a]):
                a += 1
            while b > a and _ows(p[b - 1]):
                b -= 1
            if b == a:
                self._fail(400, "invalid Transfer-Encoding")
            for k in range(a, b):
                if not _TOKEN[p[k]]:
                    self._fail(400, "invalid Transfer-Encoding")
            self._te_count += 1
            if b - a == 7 and _ieq(p + a, b"chunked", 7):
                self._te_chunked += 1
                self._te_last_chunked = True
            else:
                self._te_other = True
                self._te_last_chunked = False
            if i > n:
                break
        return 0

    cdef int _connection(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, a, b, k
        cdef char* out
        if self._conn is None:
            self._conn = []
        while i <= n:
            a = i
            b = i
            while b < n and p[b] != 44:
                b += 1
            i = b + 1
            while a < b and _ows(p[a]):
                a += 1
            while b > a and _ows(p[b - 1]):
                b -= 1
            if b == a:
                continue
            token = PyBytes_FromStringAndSize(NULL, b - a)
            out = PyBytes_AS_STRING(token)
            for k in range(b - a):
                out[k] = <char>_LOWER[p[a + k]]
            self._conn.append(token)
            if b - a == 5 and memcmp(out, b"close", 5) == 0:
                self._conn_close = True
            elif b - a == 10 and memcmp(out, b"keep-alive", 10) == 0:
                self._conn_keep_alive = True
            elif b - a == 7 and memcmp(out, b"upgrade", 7) == 0:
                self._conn_upgrade = True
        return 0

    cdef object _finish_head(self):
        cdef bint keep_alive
        cdef tuple tokens = tuple(self._conn) if self._conn else _NO_TOKENS
        cdef RequestHead head
        if self._version == 11:
            keep_alive = not self._conn_close
        else:
            keep_alive = self._conn_keep_alive and not self._conn_close
        if self._response:
            return self._finish_response(tokens, keep_alive)
        head = self._req
        head.connection_tokens = tokens
        head.content_length = self._cl
        if self._version == 11 and not self._hosts:
            self._fail(400, "missing Host header")
        if self._te_count:
            if self._version == 10:
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            if self._cl >= 0:
                self._fail(400, "both Content-Length and Transfer-Encoding")
            if self._te_chunked > 1 or (not self._te_last_chunked and self._te_chunked):
                self._fail(400, "chunked must be the final transfer coding, once")
            if self._te_other:
                self._fail(501, "unsupported transfer coding")
            head.chunked = True
        head.keep_alive = keep_alive
        head.upgrade = self._upgrade_hdr and self._conn_upgrade
        head.expect_continue = self._expect and self._version == 11
        if head.chunked:
            self._state = S_CHUNK_SIZE
        elif self._cl > 0:
            self._state = S_BODY
            self._remaining = <uint64_t>self._cl
        else:
            self._state = S_END
        return head

    cdef object _finish_response(self, tuple tokens, bint keep_alive):
        """RFC 9112 6.3: pick the body framing of a response."""
        cdef ResponseHead head = self._resp
        cdef int status = head.status
        head.connection_tokens = tokens
        head.content_length = self._cl
        if self._te_count and self._cl >= 0:  # the classic desync: never guess the framing
            self._fail(502, "both Content-Length and Transfer-Encoding in a response")
        if self._te_count:
            head.content_length = -1
            head.chunked = self._te_last_chunked
        if (status < 200 or status == 204 or status == 304 or self._method == b"HEAD"
                or (self._method == b"CONNECT" and status < 300)):
            self._state = S_END
        elif head.chunked:
            self._state = S_CHUNK_SIZE
        elif self._te_count or head.content_length < 0:
            self._state = S_BODY_EOF
        elif head.content_length:
            self._state = S_BODY
            self._remaining = <uint64_t>head.content_length
        else:
            self._state = S_END
        head.keep_alive = keep_alive and self._state != S_BODY_EOF
        return head

    cdef bint _chunk_size(self) except -1:
        """Parse one chunk-size line; False when it is not complete yet."""
        cdef const unsigned char* base = <const unsigned char*>self._buf
        cdef const unsigned char* lf
        cdef Py_ssize_t pos = self._start, lfi, end, i, avail
        cdef uint64_t size = 0
        cdef unsigned char c
        avail = self._end - pos - self._scanned
        lf = <const unsigned char*>memchr(base + pos + self._scanned, 10, avail) if avail > 0 else NULL
        if lf == NULL:
            if self._end - pos > self._max_head_size:
                self._fail(400, "chunk size line too long")
            self._scanned = self._end - pos
            return False
        self._scanned = 0
        lfi = lf - base
        if lfi + 1 - pos > self._max_head_size:
            self._fail(400, "chunk size line too long")
        end = lfi - 1 if lfi > pos and base[lfi - 1] == 13 else lfi
        i = pos
        while i < end:
            c = base[i]
            if 48 <= c <= 57:
                c -= 48
            elif 97 <= c <= 102:
                c -= 87
            elif 65 <= c <= 70:
                c -= 55
            else:
                break
            size = (size << 4) | c
            i += 1
        if i == pos or i - pos > 16:
            self._fail(400, "invalid chunk size")
        if i < end:  # chunk-ext: BWS ";" then anything but CTLs; its content is ignored
            while i < end and _ows(base[i]):
                i += 1
            if i == end or base[i] != 59:
                self._fail(400, "invalid chunk size")
            i += 1
            while i < end:
                if _bad_value_char(base[i]):
                    self._fail(400, "invalid chunk size")
                i += 1
        self._start = lfi + 1
        if size:
            self._state = S_CHUNK_DATA
            self._remaining = size
        else:
            self._state = S_TRAILERS
            self._head_len = 0
        return True


cdef bytes _M_GET = b"GET"
cdef bytes _M_PUT = b"PUT"
cdef bytes _M_POST = b"POST"
cdef bytes _M_HEAD = b"HEAD"
cdef bytes _M_PATCH = b"PATCH"
cdef bytes _M_DELETE = b"DELETE"
cdef bytes _M_OPTIONS = b"OPTIONS"


cdef bytes _method_bytes(const unsigned char* p, Py_ssize_t n):
    """Share one bytes object per common method instead of allocating one per request."""
    if n == 3:
        if memcmp(p, b"GET", 3) == 0:
            return _M_GET
        if memcmp(p, b"PUT", 3) == 0:
            return _M_PUT
    elif n == 4:
        if memcmp(p, b"POST", 4) == 0:
            return _M_POST
        if memcmp(p, b"HEAD", 4) == 0:
            return _M_HEAD
    elif n == 5 and memcmp(p, b"PATCH", 5) == 0:
        return _M_PATCH
    elif n == 6 and memcmp(p, b"DELETE", 6) == 0:
        return _M_DELETE
    elif n == 7 and memcmp(p, b"OPTIONS", 7) == 0:
        return _M_OPTIONS
    return PyBytes_FromStringAndSize(<const char*>p, n)


cdef class RequestParser(_Parser):
    """Server side: parses requests, raising ParseError with 400, 431, 501 or 505."""

    def __init__(self, Py_ssize_t max_head_size=16384, Py_ssize_t max_headers=100):
        self._setup(max_head_size, max_headers, False)


cdef class ResponseParser(_Parser):
    """Upstream side: parses responses, raising ParseError(502); call start() before each one."""

    def __init__(self, Py_ssize_t max_head_size=65536, Py_ssize_t max_headers=200):
        self._setup(max_head_size, max_headers, True)

    def start(self, request_method):
        """Expect the response to a request with this method (HEAD and CONNECT change the framing)."""
        cdef int state = self._state
        if state == S_DEAD:
            raise _ParseError(self._err_status, self._err_reason)
        if state != S_IDLE and not (state == S_HEAD and not self._have_head):
            raise RuntimeError("start() called while a response is being parsed")
        self._method = bytes(request_method)
        self._state = S_HEAD
        self._starved = False


cdef enum:
    MAX_DROP = 64  # longer drop sets take the normalising path


cdef inline bint _dropped(bytes name, const char** dptr, Py_ssize_t* dlen, Py_ssize_t ndrop) noexcept:
    cdef Py_ssize_t k, n = PyBytes_GET_SIZE(name)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(name)
    for k in range(ndrop):
        if dlen[k] == n and _ieq(p, dptr[k], n):
            return True
    return False


def serialize_head(first_line, headers, drop, extra):
    """Build a head from a start line and headers, skipping names in ``drop`` (lower-case)
    and appending ``extra`` (pre-formatted lines), with a single output allocation."""
    cdef const char* dptr[MAX_DROP]
    cdef Py_ssize_t dlen[MAX_DROP]
    cdef Py_ssize_t ndrop = 0, total, i, ln, lv
    cdef char* out
    cdef bytes fl = first_line if type(first_line) is bytes else bytes(first_line)
    cdef bytes ex = extra if type(extra) is bytes else bytes(extra)
    cdef bytes name, value
    cdef list hl = headers if type(headers) is list else list(headers)
    cdef bint simple = len(drop) <= MAX_DROP if drop else True
    if simple and drop:
        for d in drop:
            if type(d) is not bytes:
                simple = False
                break
            dptr[ndrop] = PyBytes_AS_STRING(d)
            dlen[ndrop] = PyBytes_GET_SIZE(d)
            ndrop += 1
    for item in hl:
        if type(item) is not tuple or len(<tuple>item) != 2 or type(item[0]) is not bytes or type(item[1]) is not bytes:
            simple = False
            break
    if not simple:  # unusual inputs: normalise them, then take the fast path below
        hl = [(bytes(n), bytes(v)) for n, v in hl if not drop or n.lower() not in drop]
        ndrop = 0
    total = PyBytes_GET_SIZE(fl) + PyBytes_GET_SIZE(ex) + 4
    for i in range(PyList_GET_SIZE(hl)):
        item = <object>PyList_GET_ITEM(hl, i)
        name = <bytes>PyTuple_GET_ITEM(item, 0)
        if not _dropped(name, dptr, dlen, ndrop):
            total += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(<bytes>PyTuple_GET_ITEM(item, 1)) + 4
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    ln = PyBytes_GET_SIZE(fl)
    memcpy(out, PyBytes_AS_STRING(fl), ln)
    out[ln] = 13
    out[ln + 1] = 10
    out += ln + 2
    for i in range(PyList_GET_SIZE(hl)):
        item = <object>PyList_GET_ITEM(hl, i)
        name = <bytes>PyTuple_GET_ITEM(item, 0)
        if _dropped(name, dptr, dlen, ndrop):
            continue
        value = <bytes>PyTuple_GET_ITEM(item, 1)
        ln = PyBytes_GET_SIZE(name)
        lv = PyBytes_GET_SIZE(value)
        memcpy(out, PyBytes_AS_STRING(name), ln)
        out[ln] = 58
        out[ln + 1] = 32
        out += ln + 2
        memcpy(out, PyBytes_AS_STRING(value), lv)
        out[lv] = 13
        out[lv + 1] = 10
        out += lv + 2
    ln = PyBytes_GET_SIZE(ex)
    memcpy(out, PyBytes_AS_STRING(ex), ln)
    out[ln] = 13
    out[ln + 1] = 10
    return result

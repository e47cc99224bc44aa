# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of fastgw/sse.py: same API, same events, same errors.

The Python module is the reference and carries the design notes; this file mirrors its
structure so the two can be read side by side. What differs is only how: lines are found
with memchr over a C pointer (the caller's buffer when nothing is pending, else our own
malloc'd buffer), field values are kept as offsets until an event is dispatched, and the
common one-event feed builds exactly one str (the data) and reuses the fed bytes as ``raw``.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memchr, memcmp, memcpy, memmove

from fastgw.sse import SSEError
from usage_proof cimport no_usage_object


cdef extern from "Python.h":
    # Cython declares these arguments as non-const char*.
    str PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)

__all__ = ["SSEError", "SSEEvent", "SSEParser", "serialize_event"]

cdef object _SSEError = SSEError
cdef const char* _BOM = b"\xef\xbb\xbf"
cdef const char* _REPLACE = "replace"

# A buffer left this large after a big event is released once empty, so an idle
# stream does not pin it.
cdef Py_ssize_t _SHRINK_ABOVE = 256 * 1024


@cython.freelist(64)
cdef class SSEEvent:
    """One dispatched event; see fastgw/sse.py for what each field holds."""

    cdef public object event
    cdef public str data
    cdef public object id
    cdef public object retry
    cdef public bytes raw

    def __init__(self, str data, event=None, id=None, retry=None, bytes raw=b""):
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.raw = raw

    @property
    def is_done(self):
        """OpenAI's end-of-stream marker."""
        return self.data == "[DONE]"

    def __repr__(self):
        return f"<SSEEvent event={self.event!r} data={self.data!r} id={self.id!r} retry={self.retry!r}>"


cdef int _grow(char** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
    """Make room for ``need`` bytes in a PyMem buffer, at least doubling it."""
    cdef Py_ssize_t new_cap
    cdef char* p
    if need <= cap[0]:
        return 0
    new_cap = cap[0] * 2
    if new_cap < need:
        new_cap = need
    if new_cap < 256:
        new_cap = 256
    p = <char*>PyMem_Realloc(buf[0], new_cap)
    if p == NULL:
        raise MemoryError()
    buf[0] = p
    cap[0] = new_cap
    return 0


cdef class SSEParser:
    """Feed bytes as they arrive; get back the events each feed completed."""

    # _buf[:_len] holds exactly the bytes not yet returned in a ``raw``; offsets index into it
    # between calls, and into the parsed base (buffer or fed bytes) during _run.
    cdef char* _buf
    cdef Py_ssize_t _cap, _len
    cdef Py_ssize_t _pos, _scan, _block
    cdef Py_ssize_t _max
    # The current block: the first data value as an offset range; from the second one on,
    # all values joined by LF in _dbuf.
    cdef int _ndata
    cdef Py_ssize_t _data_off, _data_len
    cdef char* _dbuf
    cdef Py_ssize_t _dcap, _dlen
    cdef Py_ssize_t _ev_off, _ev_len  # _ev_len < 0: no event field
    cdef long long _retry  # < 0: none
    cdef object _id
    cdef Py_ssize_t _comments
    cdef bint _bom, _finished
    cdef object _error

    def __cinit__(self):
        self._buf = NULL
        self._dbuf = NULL

    def __init__(self, Py_ssize_t max_event_size=1 << 20):
        self._max = max_event_size
        self._ev_len = -1
        self._retry = -1
        self._bom = True

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._dbuf)

    @property
    def pending(self):
        """Bytes of the block still incomplete: non-zero after finish() means a truncated stream."""
        return self._len - self._block

    @property
    def comments(self):
        """Comment lines seen so far: keep-alives show the upstream is alive between events."""
        return self._comments

    def feed(self, data):
        """Parse received bytes; return the events they completed, in order."""
        cdef Py_buffer view
        self._check_alive()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._len == 0:
                # Nothing buffered: parse the caller's bytes in place, keep only the unfinished tail.
                return self._run(<const char*>view.buf, view.len, data if type(data) is bytes else None, False, False)
            _grow(&self._buf, &self._cap, self._len + view.len)
            memcpy(self._buf + self._len, view.buf, view.len)
            self._len += view.len
        finally:
            PyBuffer_Release(&view)
        return self._run(self._buf, self._len, None, False, False)

    def feed_relay(self, data):
        """feed() for a stream relayed as it is: runs of plain events come back as one ``bytes``
        item each (their raw bytes), and only the others as SSEEvent objects, in stream order.

        A plain event has one ``data`` line, no ``event`` name and no ``retry``, is not
        ``[DONE]``, and its data provably carries no "usage" object (usage_proof.pxd). So an
        OpenAI stream's content chunks cost no object at all (fastgw/sse.py has the twin)."""
        cdef Py_buffer view
        self._check_alive()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._len == 0:
                return self._run(<const char*>view.buf, view.len, data if type(data) is bytes else None, False, True)
            _grow(&self._buf, &self._cap, self._len + view.len)
            memcpy(self._buf + self._len, view.buf, view.len)
            self._len += view.len
        finally:
            PyBuffer_Release(&view)
        return self._run(self._buf, self._len, None, False, True)

    def finish(self):
        """End of stream: settle a trailing CR; an unterminated block is dropped (see ``pending``)."""
        if self._finished and self._error is None:
            return []
        self._check_alive()
        self._finished = True
        return self._run(self._buf, self._len, None, True, False) if self._len else []

    cdef int _check_alive(self) except -1:
        if self._error is not None:
            raise _SSEError(self._error)
        if self._finished:
            raise _SSEError("feed() after finish()")
        return 0

    cdef int _fail(self, list events) except -1:
        self._error = f"SSE event exceeds max_event_size ({self._max} bytes)"
        PyMem_Free(self._buf)
        self._buf = NULL
        self._cap = self._len = self._pos = self._scan = self._block = 0
        raise _SSEError(self._error, events)

    cdef list _run(self, const char* base, Py_ssize_t end, object src, bint eof, bint relay):
        """Parse every complete line of ``base``; ``src`` is the fed bytes object when base is it.
        With ``relay``, plain events are not dispatched but kept as runs of raw bytes."""
        cdef list events = []
        cdef Py_ssize_t pos, scan, block, raw_start = 0, nl = -2, line_end, nxt, colon, run_start = 0
        cdef const char* q
        if self._bom:
            if end < 3 and not eof and memcmp(base, _BOM, end) == 0:
                self._keep(base, 0, end)
                return events
            self._bom = False
            if end >= 3 and memcmp(base, _BOM, 3) == 0:
                self._pos = self._scan = 3
        pos = self._pos
        scan = self._scan
        block = self._block
        while True:
            if nl != -1 and nl < scan:
                q = <const char*>memchr(base + scan, 10, end - scan)
                nl = q - base if q != NULL else -1
            q = <const char*>memchr(base + scan, 13, (end if nl < 0 else nl) - scan)
            if q != NULL:
                line_end = q - base
                if line_end + 1 < end:
                    nxt = line_end + 2 if base[line_end + 1] == 10 else line_end + 1
                elif eof:
                    nxt = line_end + 1
                else:  # a CR at the end: wait to see whether LF follows
                    scan = line_end
                    break
            elif nl >= 0:
                line_end = nl
                nxt = nl + 1
            else:
                scan = end
                break
            if line_end == pos:  # blank line: end of block
                if self._ndata:
                    if nxt - raw_start > self._max:
                        self._fail(events)
                    if not (relay and self._plain(base)):
                        if run_start < raw_start:
                            events.append(PyBytes_FromStringAndSize(base + run_start, raw_start - run_start))
                        events.append(self._dispatch(base, raw_start, nxt, end, src))
                        run_start = nxt
                    raw_start = nxt
                    self._ndata = 0
                self._ev_len = -1
                block = nxt
            elif base[pos] == 58:  # ":"
                self._comments += 1
            else:
                q = <const char*>memchr(base + pos, 58, line_end - pos)
                if q == NULL:
                    self._field(base, pos, line_end - pos, line_end, 0)
                else:
                    colon = q - base + 1
                    if colon < line_end and base[colon] == 32:
                        colon += 1
                    self._field(base, pos, q - base - pos, colon, line_end - colon)
            pos = scan = nxt
        if run_start < raw_start:
            if src is not None and run_start == 0 and raw_start == end:
                events.append(src)
            else:
                events.append(PyBytes_FromStringAndSize(base + run_start, raw_start - run_start))
        if end - raw_start > self._max:
            self._fail(events)
        self._pos = pos - raw_start
        self._scan = scan - raw_start
        self._block = block - raw_start
        self._data_off -= raw_start
        self._ev_off -= raw_start
        self._keep(base, raw_start, end)
        return events

    cdef int _field(self, const char* base, Py_ssize_t name, Py_ssize_t name_len,
                    Py_ssize_t value, Py_ssize_t value_len) except -1:
        cdef const char* n = base + name
        cdef long long retry = 0
        cdef Py_ssize_t i
        cdef char c
        if name_len == 4 and memcmp(n, b"data", 4) == 0:
            if self._ndata == 0:
                self._data_off = value
                self._data_len = value_len
            else:
                if self._ndata == 1:
                    self._dlen = 0
                    self._dappend(base + self._data_off, self._data_len)
                self._dappend(b"\n", 1)
                self._dappend(base + value, value_len)
            self._ndata = 2 if self._ndata else 1
        elif name_len == 5 and memcmp(n, b"event", 5) == 0:
            self._ev_off = value
            self._ev_len = value_len
        elif name_len == 2 and memcmp(n, b"id", 2) == 0:
            if memchr(base + value, 0, value_len) == NULL:
                self._id = PyUnicode_DecodeUTF8(base + value, value_len, _REPLACE)
        elif name_len == 5 and memcmp(n, b"retry", 5) == 0:
            if 0 < value_len <= 18:
                for i in range(value_len):
                    c = base[value + i]
                    if c < 48 or c > 57:
                        return 0
                    retry = retry * 10 + (c - 48)
                self._retry = retry
        return 0

    cdef bint _plain(self, const char* base):
        """The block just ended is a plain event (see feed_relay)."""
        cdef const unsigned char* d = <const unsigned char*>base + self._data_off
        if self._ndata != 1 or self._ev_len >= 0 or self._retry >= 0:
            return False
        if self._data_len == 6 and memcmp(d, b"[DONE]", 6) == 0:
            return False
        return no_usage_object(d, self._data_len)

    cdef int _dappend(self, const char* p, Py_ssize_t n) except -1:
        _grow(&self._dbuf, &self._dcap, self._dlen + n)
        memcpy(self._dbuf + self._dlen, p, n)
        self._dlen += n
        return 0

    cdef SSEEvent _dispatch(self, const char* base, Py_ssize_t raw_start, Py_ssize_t raw_end,
                            Py_ssize_t end, object src):
        cdef SSEEvent ev = SSEEvent.__new__(SSEEvent)
        if self._ndata == 1:
            ev.data = PyUnicode_DecodeUTF8(base + self._data_off, self._data_len, _REPLACE)
        else:
            ev.data = PyUnicode_DecodeUTF8(self._dbuf, self._dlen, _REPLACE)
        if self._ev_len >= 0:
            ev.event = PyUnicode_DecodeUTF8(base + self._ev_off, self._ev_len, _REPLACE)
        ev.id = self._id
        if self._retry >= 0:
            ev.retry = self._retry
            self._retry = -1
        if src is not None and raw_start == 0 and raw_end == end:
            ev.raw = <bytes>src
        else:
            ev.raw = PyBytes_FromStringAndSize(base + raw_start, raw_end - raw_start)
        return ev

    cdef int _keep(self, const char* base, Py_ssize_t raw_start, Py_ssize_t end) except -1:
        """Keep only the bytes not yet returned in a ``raw``."""
        cdef Py_ssize_t n = end - raw_start
        if base == self._buf:
            if raw_start:
                memmove(self._buf, self._buf + raw_start, n)
        elif n:
            _grow(&self._buf, &self._cap, n)
            memcpy(self._buf, base + raw_start, n)
        self._len = n
        if n == 0 and self._cap > _SHRINK_ABOVE:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        return 0


def serialize_event(data, event=None):
    """Frame one event: ``event:`` line if given, one ``data:`` line per line of data, blank line.

    CR and CRLF in ``data`` become line breaks, as SSE has no way to carry a CR in a value.
    """
    cdef const char* p
    cdef const char* name = NULL
    cdef Py_ssize_t n, name_len = 0, i, breaks = 0, crlfs = 0, size
    cdef char* out
    cdef char c
    cdef bytes result
    if isinstance(data, str):
        p = PyUnicode_AsUTF8AndSize(data, &n)  # cached on the str: no copy for ASCII
    else:
        if type(data) is not bytes:
            data = bytes(data)
        p = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    if event is not None:
        name = PyUnicode_AsUTF8AndSize(event, &name_len)
        if memchr(name, 10, name_len) != NULL or memchr(name, 13, name_len) != NULL:
            raise ValueError("SSE event name must not contain a line break")
    if memchr(p, 10, n) != NULL or memchr(p, 13, n) != NULL:
        for i in range(n):
            c = p[i]
            if c == 10:
                if i and p[i - 1] == 13:
                    crlfs += 1
                else:
                    breaks += 1
            elif c == 13:
                breaks += 1
    # "data: " + data + "\n\n", each line break becoming "\ndata: " (a CRLF as one)
    size = 6 + n + 6 * breaks - crlfs + 2
    if name != NULL:
        size += 8 + name_len  # "event: " + name + "\n"
    result = PyBytes_FromStringAndSize(NULL, size)
    out = PyBytes_AS_STRING(result)
    if name != NULL:
        memcpy(out, b"event: ", 7)
        memcpy(out + 7, name, name_len)
        out[7 + name_len] = 10
        out += 8 + name_len
    memcpy(out, b"data: ", 6)
    out += 6
    if breaks == 0:
        memcpy(out, p, n)
        out += n
    else:
        for i in range(n):
            c = p[i]
            if c == 10 or c == 13:
                if c == 10 and i and p[i - 1] == 13:
                    continue
                memcpy(out, b"\ndata: ", 7)
                out += 7
            else:
                out[0] = c
                out += 1
    out[0] = 10
    out[1] = 10
    return result


def relay_bytes(list items):
    """The bytes a relayed read sends: each event's ``raw``, ``bytes`` items as they are; None
    when an item is a chunk dict (the caller renders those). One C loop instead of one
    Python iteration per event (fastgw/sse.py has the twin)."""
    cdef list parts = []
    cdef object item
    for item in items:
        if type(item) is SSEEvent:
            parts.append((<SSEEvent>item).raw)
        elif type(item) is bytes:
            parts.append(item)
        else:
            return None
    return b"".join(parts)


def ends_stream(list events):
    """Whether a read's events hold the provider's end marker: OpenAI's ``[DONE]`` or
    Anthropic's ``message_stop`` (``bytes`` items, runs of plain events, never do)."""
    cdef SSEEvent event
    for item in events:
        if type(item) is SSEEvent:
            event = <SSEEvent>item
            if event.data == "[DONE]" or event.event == "message_stop":
                return True
    return False

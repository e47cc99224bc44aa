# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of fastgw/jsonscan.py: same API, same answer for every input.

The Python module is the reference and carries the contract and design notes. This file
walks the grammar of the pure twin's ``_walk`` byte by byte over a C pointer: the bytes
object's own storage, a str's UTF-8 (cached on the str, no copy for ASCII), or a buffer held
for the call. One linear pass without the GIL's help or any allocation: a 256-entry byte-class
table, the kinds of the open containers in a fixed array on the C stack (hence MAX_DEPTH),
every index checked against the length before it is read. ``_walk``'s states are places in
the code here (see ``_scan``) rather than a variable, which keeps branches predictable.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcmp
from usage_proof cimport no_usage_object

from fastgw import jsonscan as _py

__all__ = ["CHOICES_EMPTY", "MAX_DEPTH", "SCAN_UNKNOWN", "USAGE_NONE", "USAGE_OBJECT", "USAGE_UNKNOWN",
           "scan_chunk", "usage_state"]

USAGE_NONE = _py.USAGE_NONE
USAGE_OBJECT = _py.USAGE_OBJECT
USAGE_UNKNOWN = _py.USAGE_UNKNOWN
SCAN_UNKNOWN = _py.SCAN_UNKNOWN
CHOICES_EMPTY = _py.CHOICES_EMPTY
MAX_DEPTH = _py.MAX_DEPTH

cdef enum:
    F_USAGE = 1
    F_UNKNOWN = 2
    F_CHOICES = 4
    DEPTH_MAX = 512

if (F_USAGE, F_UNKNOWN, F_CHOICES, DEPTH_MAX) != (USAGE_OBJECT, SCAN_UNKNOWN, CHOICES_EMPTY, MAX_DEPTH):
    raise ImportError("fastgw._c.jsonscan is out of step with fastgw/jsonscan.py: rebuild it")

cdef enum:
    # Byte classes, as bits of _cls.
    C_WS = 1  # JSON whitespace
    C_STOP = 2  # ends a run of plain string bytes: '"', '\\' and control characters
    C_DIGIT = 4
    C_HEX = 8

cdef enum:
    K_OTHER
    K_USAGE
    K_CHOICES
    K_MODEL

cdef unsigned char _cls[256]


cdef void _fill_classes() noexcept:
    cdef int c
    for c in range(256):
        _cls[c] = 0
    for c in range(32):
        _cls[c] = C_STOP
    _cls[34] = C_STOP  # "
    _cls[92] = C_STOP  # \
    _cls[9] |= C_WS
    _cls[10] |= C_WS
    _cls[13] |= C_WS
    _cls[32] = C_WS
    for c in range(48, 58):
        _cls[c] = C_DIGIT | C_HEX
    for c in range(65, 71):
        _cls[c] = C_HEX
    for c in range(97, 103):
        _cls[c] = C_HEX


_fill_classes()


cdef inline Py_ssize_t _skip_ws(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    while i < n and _cls[p[i]] & C_WS:
        i += 1
    return i


cdef inline Py_ssize_t _skip_string(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """``i`` is just past an opening quote: the index past the closing one, or -1 if invalid."""
    cdef unsigned char c
    while True:
        while i < n and not (_cls[p[i]] & C_STOP):
            i += 1
        if i >= n:
            return -1
        c = p[i]
        if c == 34:  # "
            return i + 1
        if c != 92 or i + 1 >= n:  # a control character, or the text ends in the escape
            return -1
        c = p[i + 1]
        if c == 117:  # \uXXXX
            if i + 5 >= n or not (_cls[p[i + 2]] & _cls[p[i + 3]] & _cls[p[i + 4]] & _cls[p[i + 5]] & C_HEX):
                return -1
            i += 6
        elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
            i += 2  # \" \\ \/ \b \f \n \r \t
        else:
            return -1


cdef inline Py_ssize_t _skip_digits(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """At least one digit from ``i``: the index past the run, or -1."""
    if i >= n or not (_cls[p[i]] & C_DIGIT):
        return -1
    i += 1
    while i < n and _cls[p[i]] & C_DIGIT:
        i += 1
    return i


cdef inline Py_ssize_t _skip_number(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)? from ``i``: the index past it, or -1."""
    if p[i] == 45:  # -
        i += 1
    if i < n and p[i] == 48:  # a leading 0 stands alone
        i += 1
    else:
        i = _skip_digits(p, n, i)
        if i < 0:
            return -1
    if i < n and p[i] == 46:  # .
        i = _skip_digits(p, n, i + 1)
        if i < 0:
            return -1
    if i < n and (p[i] == 101 or p[i] == 69):  # e E
        i += 1
        if i < n and (p[i] == 43 or p[i] == 45):  # + -
            i += 1
        i = _skip_digits(p, n, i)
    return i


cdef inline Py_ssize_t _skip_word(const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
                                  const char* word, Py_ssize_t size) noexcept nogil:
    if n - i >= size and memcmp(p + i, word, size) == 0:
        return i + size
    return -1


cdef inline Py_ssize_t _key(const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int depth,
                            int* key) noexcept nogil:
    """A member's key and colon from ``i`` (whitespace skipped): the index past the colon, or -1.

    A top-level key sets ``key``, and is refused if written with an escape.
    """
    cdef Py_ssize_t j
    i = _skip_ws(p, n, i)
    if i >= n or p[i] != 34:
        return -1
    if depth == 1:
        j = i + 1
        while j < n and not (_cls[p[j]] & C_STOP):
            j += 1
        if j >= n or p[j] != 34:  # an escape may spell "usage": only a decoder can tell
            return -1
        if j - i == 6 and memcmp(p + i + 1, b"usage", 5) == 0:
            key[0] = K_USAGE
        elif j - i == 8 and memcmp(p + i + 1, b"choices", 7) == 0:
            key[0] = K_CHOICES
        elif j - i == 6 and memcmp(p + i + 1, b"model", 5) == 0:
            key[0] = K_MODEL
        else:
            key[0] = K_OTHER
        i = j + 1
    else:
        i = _skip_string(p, n, i + 1)
        if i < 0:
            return -1
    i = _skip_ws(p, n, i)
    if i >= n or p[i] != 58:  # :
        return -1
    return i + 1


cdef int _scan(const unsigned char* p, Py_ssize_t n, Py_ssize_t* model) noexcept nogil:
    """The flags for the ``n`` bytes at ``p``: see fastgw/jsonscan.py.

    The pure twin's states are places in the code here: the outer loop starts at a value
    (_VALUE; a key and its colon are read wherever one is due), the inner one runs after a
    value (_NEXT), so each kind of step has its own branches to predict. ``model[0:2]`` gets
    the span of the last top-level "model" value when it is a string (quotes included;
    ``model[0]`` is -2 when that value is not a string, and stays -1 without the key).
    """
    cdef unsigned char in_array[DEPTH_MAX + 1]  # per open container, by depth: is it an array?
    cdef Py_ssize_t i, j
    cdef int depth = 1, key = K_OTHER, flags = 0
    cdef unsigned char c
    i = _skip_ws(p, n, 0)
    if i >= n or p[i] != 123:  # the top level must be an object
        return F_UNKNOWN
    in_array[1] = 0
    i = _skip_ws(p, n, i + 1)
    if i < n and p[i] == 125:  # {}
        return 0 if _skip_ws(p, n, i + 1) == n else F_UNKNOWN
    i = _key(p, n, i, 1, &key)
    if i < 0:
        return F_UNKNOWN
    while True:
        # A value is due.
        i = _skip_ws(p, n, i)
        if i >= n:
            return F_UNKNOWN
        c = p[i]
        if depth == 1:  # the value of the top-level key just read
            if key == K_USAGE:
                flags = flags | F_USAGE if c == 123 else flags & ~F_USAGE
            elif key == K_CHOICES:
                j = _skip_ws(p, n, i + 1)
                flags = flags | F_CHOICES if c == 91 and j < n and p[j] == 93 else flags & ~F_CHOICES
            elif key == K_MODEL:
                model[0] = i if c == 34 else -2
        if c == 123 or c == 91:  # { [
            if depth == DEPTH_MAX:
                return F_UNKNOWN
            depth += 1
            in_array[depth] = c == 91
            i = _skip_ws(p, n, i + 1)
            if i >= n:
                return F_UNKNOWN
            if p[i] != (93 if c == 91 else 125):
                if c == 123:
                    i = _key(p, n, i, depth, &key)
                    if i < 0:
                        return F_UNKNOWN
                continue  # the container's first value
            depth -= 1  # an empty container, a value itself
            i += 1
        elif c == 34:
            i = _skip_string(p, n, i + 1)
            if depth == 1 and key == K_MODEL:
                model[1] = i
        elif c == 45 or _cls[c] & C_DIGIT:
            i = _skip_number(p, n, i)
        elif c == 116:
            i = _skip_word(p, n, i, b"true", 4)
        elif c == 102:
            i = _skip_word(p, n, i, b"false", 5)
        elif c == 110:
            i = _skip_word(p, n, i, b"null", 4)
        else:
            return F_UNKNOWN
        if i < 0:
            return F_UNKNOWN
        # After a value: a comma (then a value is due) or the closer of the innermost container.
        while True:
            i = _skip_ws(p, n, i)
            if i >= n:
                return F_UNKNOWN
            c = p[i]
            i += 1
            if c == 44:  # ,
                if not in_array[depth]:
                    i = _key(p, n, i, depth, &key)
                    if i < 0:
                        return F_UNKNOWN
                break
            if c != (93 if in_array[depth] else 125):  # ] }
                return F_UNKNOWN
            depth -= 1
            if depth == 0:
                return flags if _skip_ws(p, n, i) == n else F_UNKNOWN


cdef int _flags(object data) except -1:
    """scan_chunk's body: the bytes are taken as the pure twin's _as_bytes takes them."""
    cdef Py_buffer view
    cdef const char* s
    cdef Py_ssize_t n
    cdef int flags
    cdef Py_ssize_t model[2]
    if type(data) is bytes:
        return _scan(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), model)
    if isinstance(data, str):
        try:
            s = PyUnicode_AsUTF8AndSize(data, &n)  # cached on the str: no copy for ASCII
        except UnicodeEncodeError:  # lone surrogates
            data = (<str>data).encode("utf-8", "surrogatepass")
            return _scan(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), model)
        return _scan(<const unsigned char*>s, n, model)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    flags = _scan(<const unsigned char*>view.buf, view.len, model)
    PyBuffer_Release(&view)
    return flags


def scan_chunk(data):
    """Flags proven about the JSON text ``data``: see fastgw/jsonscan.py for the contract.

    ``SCAN_UNKNOWN`` alone, or a combination of ``USAGE_OBJECT`` and ``CHOICES_EMPTY`` (0:
    a valid JSON object whose "usage" is not an object and whose "choices" is not ``[]``).
    """
    return _flags(data)


def usage_state(data):
    """``USAGE_NONE``, ``USAGE_OBJECT`` or ``USAGE_UNKNOWN`` for ``data``: the usage half of scan_chunk."""
    return _flags(data) & (F_USAGE | F_UNKNOWN)


def usage_events(list events):
    """Indexes of the SSE events (``.data``) whose data may carry a top-level usage object
    (``scan_chunk`` says USAGE_OBJECT or UNKNOWN); ``[DONE]`` is skipped. One C loop per
    upstream read: the caller decodes only these (fastgw/jsonscan.py has the twin)."""
    cdef list found = []
    cdef Py_ssize_t i, n
    cdef const char* text
    cdef object data
    for i in range(len(events)):
        if type(events[i]) is bytes:  # a run of plain events (SSEParser.feed_relay)
            continue
        data = events[i].data
        if data == "[DONE]":
            continue
        if type(data) is str:
            text = PyUnicode_AsUTF8AndSize(data, &n)  # cached on the str: no copy for ASCII
            if no_usage_object(<const unsigned char*>text, n):
                continue
        if _flags(data) & (F_USAGE | F_UNKNOWN):
            found.append(i)
    return found


def model_span(bytes data):
    """``(start, end)`` of the top-level "model" string literal in the JSON object ``data``
    (quotes included; the last one when the key is given twice), or None unless ``data`` is
    proven valid JSON whose top-level "model" is a string: the AI front door rewrites the
    model name in the client's bytes instead of re-encoding the whole body."""
    cdef Py_ssize_t model[2]
    model[0] = -1
    model[1] = -1
    if _scan(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), model) & F_UNKNOWN:
        return None
    if model[0] < 0:
        return None
    return model[0], model[1]

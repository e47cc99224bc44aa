# The quick proof that a JSON text carries no "usage" object, shared (inline) by the SSE
# framer's relay mode and the JSON scanner. Pure twin: fastgw/jsonscan.py _no_usage_object.

from libc.string cimport memchr, memcmp


cdef extern from "string.h" nogil:
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)


cdef inline Py_ssize_t _proof_ws(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    while i < n and (p[i] == 32 or p[i] == 9 or p[i] == 10 or p[i] == 13):
        i += 1
    return i


cdef inline bint no_usage_object(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """True when two SIMD searches prove ``p`` carries no "usage" object, for most chunks.

    Without a backslash anywhere, a key "usage" can only be the bytes ``"usage"``; if every
    ``usage`` in the text is followed by ``"``, optional whitespace, ``:``, optional
    whitespace and ``null`` (OpenAI's ``"usage":null`` in every chunk of an include_usage
    stream), no key named usage holds an object at any depth. False means "not proven".
    """
    cdef const unsigned char* at = p
    cdef const unsigned char* end = p + n
    cdef Py_ssize_t i
    if memchr(p, 92, n) != NULL:  # a backslash: escapes could spell the key
        return False
    while True:
        at = <const unsigned char*>memmem(at, end - at, b"usage", 5)
        if at == NULL:
            return True
        if not (at + 5 < end and at[5] == 34):
            return False
        i = _proof_ws(p, n, (at - p) + 6)
        if i >= n or p[i] != 58:  # :
            return False
        i = _proof_ws(p, n, i + 1)
        if n - i < 4 or memcmp(p + i, b"null", 4) != 0:
            return False
        at = p + i + 4

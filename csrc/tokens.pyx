# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of fastgw/tokens.py's TokenCounter and count_tokens: same pieces, same counts.

The Python module is the reference and carries the design notes. What differs is only how:

- Classes: a byte per code point in a process-wide table, filled 256 code points at a time
  from ``fastgw.tokens.char_class`` the first time a block is met; each count first writes
  one class byte per character of the text (high nibble: which contraction letter it is).
- Pre-tokenizer: a hand-written scanner per encoding over those bytes, each alternative of
  the regex as a branch in the regex's order (see ``_next_cl100k`` / ``_next_o200k``).
- Ranks: an open-addressing hash table over one blob of all token bytes.
- BPE: the same heap-ordered merges as the pure twin, on C arrays.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc
from libc.string cimport memcmp, memcpy

from fastgw.tokens import CACHE_MAX, CACHE_PIECE_CHARS, ENCODINGS, MAX_TOKEN_BYTES, char_class, fix_surrogates, token_bytes

cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t i) nogil
    bint PyUnicode_IS_ASCII(object o)
    object PyUnicode_Substring(object s, Py_ssize_t start, Py_ssize_t end)
    bytes PyUnicode_AsUTF8String(object s)
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)

__all__ = ["TokenCounter", "count_tokens"]

cdef enum:
    # Class numbers: fastgw.tokens' OTHER ... APOS.
    C_OTHER, C_UPPER, C_LOWER, C_BOTH, C_MARK, C_NUM, C_SPACE, C_WS, C_NL, C_APOS

cdef enum:
    # Contraction letters and "/", kept in a class byte's high nibble (0: none).
    K_S = 1
    K_T, K_D, K_M, K_L, K_V, K_R, K_E, K_SLASH

cdef enum:
    # Sets of classes as bit masks.
    M_LETTER = (1 << C_UPPER) | (1 << C_LOWER) | (1 << C_BOTH)  # \p{L}
    M_SPACE = (1 << C_SPACE) | (1 << C_WS) | (1 << C_NL)  # \s
    M_PREFIX = (1 << C_OTHER) | (1 << C_MARK) | (1 << C_SPACE) | (1 << C_WS) | (1 << C_APOS)  # [^\r\n\p{L}\p{N}]
    M_PUNCT = (1 << C_OTHER) | (1 << C_MARK) | (1 << C_APOS)  # [^\s\p{L}\p{N}]
    M_UP = (1 << C_UPPER) | (1 << C_BOTH) | (1 << C_MARK)  # [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
    M_LO = (1 << C_LOWER) | (1 << C_BOTH) | (1 << C_MARK)  # [\p{Ll}\p{Lm}\p{Lo}\p{M}]
    NBLOCKS = 0x1100  # 256-code-point blocks in Unicode

cdef Py_ssize_t _MAX_TOKEN_BYTES = MAX_TOKEN_BYTES
cdef Py_ssize_t _CACHE_MAX = CACHE_MAX
cdef Py_ssize_t _CACHE_PIECE_CHARS = CACHE_PIECE_CHARS

cdef uint8_t* _classes = NULL  # class of every code point, valid in blocks marked in _ready
cdef uint8_t _ready[NBLOCKS]
cdef uint8_t _contraction[128]  # ASCII char -> K_* (0: none)


cdef int _init_tables() except -1:
    global _classes
    cdef int i
    if _classes != NULL:
        return 0
    _classes = <uint8_t*>calloc(NBLOCKS * 256, 1)  # untouched pages cost nothing
    if _classes == NULL:
        raise MemoryError()
    for i, ch in enumerate("stdmlvre"):
        _contraction[ord(ch)] = _contraction[ord(ch) - 32] = i + 1
    _contraction[ord("/")] = K_SLASH
    return 0


cdef int _fill_block(Py_ssize_t block) except -1:
    cdef Py_ssize_t cp
    for cp in range(block * 256, block * 256 + 256):
        _classes[cp] = char_class(cp)
    _ready[block] = 1
    return 0


cdef inline bint _is(uint8_t c, unsigned int mask) noexcept nogil:
    return (mask >> (c & 15)) & 1


cdef Py_ssize_t _classify(str text, uint8_t* out) except -2:
    """Write the class byte of each character to ``out``; -1 if the text holds a surrogate."""
    cdef Py_ssize_t i, n = len(text)
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef uint32_t cp
    cdef uint8_t c
    for i in range(n):
        cp = PyUnicode_READ(kind, data, i)
        if not _ready[cp >> 8]:
            if 0xD800 <= cp < 0xE000:
                return -1
            _fill_block(cp >> 8)
        c = _classes[cp]
        if cp < 128:
            c |= _contraction[cp] << 4
        elif cp == 0x17F:  # long s: an "s" to the case-insensitive contractions
            c |= K_S << 4
        out[i] = c
    return 0


cdef inline Py_ssize_t _run(const uint8_t* c, Py_ssize_t n, Py_ssize_t i, unsigned int mask) noexcept nogil:
    while i < n and _is(c[i], mask):
        i += 1
    return i


cdef inline Py_ssize_t _punct_or_space(const uint8_t* c, Py_ssize_t n, Py_ssize_t i, bint o200k) noexcept nogil:
    """The regexes' last alternatives, for a character no letter/number alternative took."""
    cdef Py_ssize_t j = i, last_nl = -1
    # " ?[^\s\p{L}\p{N}]+[\r\n]*" (o200k: "[\r\n/]*")
    if (c[i] & 15) == C_SPACE and i + 1 < n and _is(c[i + 1], M_PUNCT):
        j = i + 1
    if _is(c[j], M_PUNCT):
        j = _run(c, n, _run(c, n, j, M_PUNCT), 1 << C_NL)
        if o200k:
            while j < n and ((c[j] & 15) == C_NL or (c[j] >> 4) == K_SLASH):
                j += 1
        return j
    # Whitespace: the run, and its last line break.
    while j < n and _is(c[j], M_SPACE):
        if (c[j] & 15) == C_NL:
            last_nl = j
        j += 1
    if o200k:
        if last_nl >= 0:  # \s*[\r\n]+
            return last_nl + 1
        if j == n:  # \s+(?!\S) at the end
            return n
    else:
        if j == n:  # \s++$
            return n
        if last_nl >= 0:  # \s*[\r\n]
            return last_nl + 1
    if j - i >= 2:  # \s+(?!\S): all but the last, which goes with what follows
        return j - 1
    return i + 1  # \s (o200k: \s+ of one)


cdef Py_ssize_t _next_cl100k(const uint8_t* c, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """End of the cl100k_base piece that starts at ``i``."""
    cdef uint8_t k = c[i] & 15, a, b
    cdef Py_ssize_t j
    if k == C_APOS and i + 1 < n:  # '(?i:[sdmt]|ll|ve|re)
        a = c[i + 1] >> 4
        if a == K_S or a == K_D or a == K_M or a == K_T:
            return i + 2
        if i + 2 < n:
            b = c[i + 2] >> 4
            if (a == K_L and b == K_L) or (a == K_V and b == K_E) or (a == K_R and b == K_E):
                return i + 3
    if _is(k, M_LETTER):  # [^\r\n\p{L}\p{N}]?+\p{L}++
        return _run(c, n, i + 1, M_LETTER)
    if _is(k, M_PREFIX) and i + 1 < n and _is(c[i + 1], M_LETTER):
        return _run(c, n, i + 2, M_LETTER)
    if k == C_NUM:  # \p{N}{1,3}+
        j = i + 1
        while j < n and j < i + 3 and (c[j] & 15) == C_NUM:
            j += 1
        return j
    return _punct_or_space(c, n, i, False)


cdef inline Py_ssize_t _o200k_suffix(const uint8_t* c, Py_ssize_t n, Py_ssize_t e) noexcept nogil:
    """(?i:'s|'t|'re|'ve|'m|'ll|'d)? at ``e``."""
    cdef uint8_t a, b
    if e + 1 < n and (c[e] & 15) == C_APOS:
        a = c[e + 1] >> 4
        if a == K_S or a == K_T or a == K_M or a == K_D:
            return e + 2
        if e + 2 < n:
            b = c[e + 2] >> 4
            if (a == K_R and b == K_E) or (a == K_V and b == K_E) or (a == K_L and b == K_L):
                return e + 3
    return e


cdef inline Py_ssize_t _o200k_word1(const uint8_t* c, Py_ssize_t n, Py_ssize_t s) noexcept nogil:
    """[UP]*[LO]+suffix? from ``s`` as a backtracking engine matches it, or -1."""
    cdef Py_ssize_t t = _run(c, n, s, M_UP)
    # [UP]* gives back characters until [LO]+ can start (UP chars may be LO too).
    while t == n or not _is(c[t], M_LO):
        if t == s:
            return -1
        t -= 1
    return _o200k_suffix(c, n, _run(c, n, t + 1, M_LO))


cdef inline Py_ssize_t _o200k_word2(const uint8_t* c, Py_ssize_t n, Py_ssize_t s) noexcept nogil:
    """[UP]+[LO]*suffix? from ``s``, or -1."""
    if s >= n or not _is(c[s], M_UP):
        return -1
    return _o200k_suffix(c, n, _run(c, n, _run(c, n, s + 1, M_UP), M_LO))


cdef Py_ssize_t _next_o200k(const uint8_t* c, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """End of the o200k_base piece that starts at ``i``."""
    cdef uint8_t k = c[i] & 15
    cdef bint prefix = _is(k, M_PREFIX)  # [^\r\n\p{L}\p{N}]? tried with, then without
    cdef Py_ssize_t e
    if prefix:
        e = _o200k_word1(c, n, i + 1)
        if e >= 0:
            return e
    e = _o200k_word1(c, n, i)
    if e >= 0:
        return e
    if prefix:
        e = _o200k_word2(c, n, i + 1)
        if e >= 0:
            return e
    e = _o200k_word2(c, n, i)
    if e >= 0:
        return e
    if k == C_NUM:  # \p{N}{1,3}
        e = i + 1
        while e < n and e < i + 3 and (c[e] & 15) == C_NUM:
            e += 1
        return e
    return _punct_or_space(c, n, i, True)


# -- ranks ---------------------------------------------------------------------------------------


cdef inline uint64_t _hash(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """FNV-1a."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h


cdef class _Ranks:
    """Token bytes -> rank: open addressing over one blob holding every token."""

    cdef bytes _blob
    cdef const uint8_t* _data  # _blob's bytes
    cdef uint32_t* _offsets  # token r is _blob[_offsets[r]:_offsets[r + 1]]
    cdef uint32_t* _slots  # rank + 1 per slot, 0 = empty
    cdef uint64_t _mask

    def __cinit__(self):
        self._offsets = NULL
        self._slots = NULL

    def __init__(self, str encoding):
        tokens = token_bytes(encoding)
        cdef Py_ssize_t n = len(tokens), r, size = 1
        cdef uint64_t h
        self._blob = b"".join(tokens)
        self._offsets = <uint32_t*>PyMem_Malloc((n + 1) * sizeof(uint32_t))
        while size < 2 * n:
            size *= 2
        self._slots = <uint32_t*>PyMem_Malloc(size * sizeof(uint32_t))
        if self._offsets == NULL or self._slots == NULL:
            raise MemoryError()
        self._mask = size - 1
        for r in range(size):
            self._slots[r] = 0
        self._offsets[0] = 0
        self._data = <const uint8_t*>PyBytes_AS_STRING(self._blob)
        for r in range(n):
            self._offsets[r + 1] = self._offsets[r] + len(tokens[r])
            h = _hash(self._data + self._offsets[r], self._offsets[r + 1] - self._offsets[r]) & self._mask
            while self._slots[h]:
                h = (h + 1) & self._mask
            self._slots[h] = r + 1

    def __dealloc__(self):
        PyMem_Free(self._offsets)
        PyMem_Free(self._slots)

    cdef inline long rank(self, const uint8_t* p, Py_ssize_t n) noexcept nogil:
        """Rank of the token with bytes p[:n], or -1."""
        cdef uint64_t h
        cdef uint32_t s, start
        if n > _MAX_TOKEN_BYTES:
            return -1
        h = _hash(p, n) & self._mask
        while True:
            s = self._slots[h]
            if s == 0:
                return -1
            start = self._offsets[s - 1]
            if self._offsets[s] - start == <uint32_t>n and memcmp(self._data + start, p, n) == 0:
                return s - 1
            h = (h + 1) & self._mask


cdef struct _Pair:
    uint64_t key  # rank << 32 | start: the heap's order, lowest rank then leftmost
    Py_ssize_t end


cdef inline void _push(_Pair* heap, Py_ssize_t* size, uint64_t key, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t i = size[0], parent
    size[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent].key <= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i].key = key
    heap[i].end = end


cdef inline _Pair _pop(_Pair* heap, Py_ssize_t* size) noexcept nogil:
    cdef _Pair top = heap[0], last
    cdef Py_ssize_t i = 0, child, n
    size[0] -= 1
    n = size[0]
    last = heap[n]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and heap[child + 1].key < heap[child].key:
            child += 1
        if heap[child].key >= last.key:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last
    return top


cdef Py_ssize_t _bpe_count(_Ranks ranks, const uint8_t* p, Py_ssize_t n) except -1:
    """Tokens in p[:n] after tiktoken's merges: fastgw.tokens._bpe_count on C arrays."""
    cdef Py_ssize_t i, j, end, after, prev, count = n, size = 0
    cdef long r
    cdef _Pair top
    if n < 2 or ranks.rank(p, n) >= 0:
        return 1 if n else 0
    # nxt[i]: end of the part starting at i (-1 once merged away); prv[i]: the part before it.
    # Each merge pushes at most two pairs, so the heap never holds more than 3n.
    cdef Py_ssize_t* nxt = <Py_ssize_t*>PyMem_Malloc(2 * n * sizeof(Py_ssize_t))
    cdef _Pair* heap = <_Pair*>PyMem_Malloc(3 * n * sizeof(_Pair))
    if nxt == NULL or heap == NULL:
        PyMem_Free(nxt)
        PyMem_Free(heap)
        raise MemoryError()
    cdef Py_ssize_t* prv = nxt + n
    for i in range(n):
        nxt[i] = i + 1
        prv[i] = i - 1
        if i + 1 < n:
            r = ranks.rank(p + i, 2)
            if r >= 0:
                _push(heap, &size, (<uint64_t>r << 32) | i, i + 2)
    while size:
        top = _pop(heap, &size)
        i = top.key & 0xFFFFFFFF
        end = top.end
        j = nxt[i]
        if j == -1 or j == n or nxt[j] != end:
            continue  # stale
        nxt[i] = end
        nxt[j] = -1
        if end < n:
            prv[end] = i
            after = nxt[end]
            r = ranks.rank(p + i, after - i)
            if r >= 0:
                _push(heap, &size, (<uint64_t>r << 32) | i, after)
        prev = prv[i]
        if prev >= 0:
            r = ranks.rank(p + prev, end - prev)
            if r >= 0:
                _push(heap, &size, (<uint64_t>r << 32) | prev, end)
        count -= 1
    PyMem_Free(nxt)
    PyMem_Free(heap)
    return count


cdef dict _RANKS = {}  # encoding -> _Ranks, built on first use


cdef class TokenCounter:
    """Counts tokens of one encoding; keeps a per-piece cache, so reuse one per encoding."""

    cdef readonly str encoding
    cdef bint _o200k
    cdef _Ranks _ranks
    cdef dict _cache

    def __init__(self, str encoding):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        _init_tables()
        self.encoding = encoding
        self._o200k = encoding == "o200k_base"
        ranks = _RANKS.get(encoding)
        if ranks is None:
            ranks = _RANKS[encoding] = _Ranks(encoding)
        self._ranks = ranks
        self._cache = {}

    cdef Py_ssize_t _count(self, str text, list pieces) except -1:
        """Count ``text``'s tokens, or, given ``pieces``, collect its pieces instead."""
        cdef Py_ssize_t n = len(text), i = 0, j, total = 0
        cdef uint8_t stack_buf[1024]
        cdef uint8_t* c = stack_buf
        cdef bytes utf8
        if n == 0:
            return 0
        if n > 1024:
            c = <uint8_t*>PyMem_Malloc(n)
            if c == NULL:
                raise MemoryError()
        try:
            if _classify(text, c) < 0:
                text = fix_surrogates(text)  # never longer, so ``c`` still fits
                n = len(text)
                _classify(text, c)
            cache = self._cache
            while i < n:
                j = _next_o200k(c, n, i) if self._o200k else _next_cl100k(c, n, i)
                piece = PyUnicode_Substring(text, i, j)
                if pieces is not None:
                    pieces.append(piece)
                else:
                    hit = cache.get(piece)
                    if hit is None:
                        utf8 = PyUnicode_AsUTF8String(piece)
                        hit = _bpe_count(self._ranks, <const uint8_t*>PyBytes_AS_STRING(utf8),
                                         PyBytes_GET_SIZE(utf8))
                        if j - i <= _CACHE_PIECE_CHARS:
                            if len(cache) >= _CACHE_MAX:
                                cache.clear()
                            cache[piece] = hit
                    total += <Py_ssize_t>hit
                i = j
        finally:
            if c != stack_buf:
                PyMem_Free(c)
        return total

    def pieces(self, str text):
        """The pre-tokenizer's pieces of ``text`` (for tests and debugging)."""
        out = []
        self._count(text, out)
        return out

    def count(self, str text):
        """Number of tokens OpenAI's tokenizer makes of ``text`` (special tokens as plain text)."""
        return self._count(text, None)


cdef dict _COUNTERS = {}


def count_tokens(str encoding, str text):
    """Tokens of ``text`` in ``encoding``, with this process's shared counter for it."""
    counter = _COUNTERS.get(encoding)
    if counter is None:
        counter = _COUNTERS[encoding] = TokenCounter(encoding)
    return (<TokenCounter>counter)._count(text, None)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of fastgw/matcher.py's Matcher: same automaton, same matches.

The Python module is the reference and carries the design notes. What differs is only how:

- Alphabet: every folded character of the terms gets a symbol 1..n in code point order (0:
  in no term). Text is never folded into a copy: a per-matcher table, filled 256 code points
  at a time the first time a block is met, maps a raw code point straight to the symbol of
  its fold (through a process-wide fold table filled the same way from ``fold_char``).
- Trie: built from the terms in sorted order, so each term only adds states after its
  common prefix with the previous one (no child look-ups) and every state's children come
  out in symbol order; they are kept as flat CSR arrays searched by bisection, with a
  dense table for the root.
- Outputs: each state's own terms (CSR), plus a link to the nearest state on its fail
  chain that has some, so a state never stores the terms of its suffixes.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

from fastgw.matcher import fold, fold_char

cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t i) nogil

__all__ = ["Matcher"]

DEF NBLOCKS = 0x1100  # 256-code-point blocks in Unicode

cdef uint32_t* _fold = NULL  # fold of every code point, valid in blocks marked in _fold_ready
cdef uint8_t _fold_ready[NBLOCKS]
cdef int32_t _NO_SYMBOLS[256]  # shared page for blocks holding no term character


cdef int _fold_block(Py_ssize_t block) except -1:
    global _fold
    cdef Py_ssize_t cp
    if _fold == NULL:
        _fold = <uint32_t*>calloc(NBLOCKS * 256, sizeof(uint32_t))  # untouched pages cost nothing
        if _fold == NULL:
            raise MemoryError()
    for cp in range(block * 256, block * 256 + 256):
        _fold[cp] = fold_char(cp)
    _fold_ready[block] = 1
    return 0


cdef void* _alloc(Py_ssize_t count, Py_ssize_t size) except NULL:
    cdef void* p = PyMem_Malloc(count * size if count else size)
    if p == NULL:
        raise MemoryError()
    return p


cdef class Matcher:
    """Aho-Corasick automaton over folded terms in flat arrays; states are ints, 0 is the root."""

    cdef readonly int max_len
    cdef int32_t nstates
    cdef dict alphabet  # folded code point -> symbol
    cdef int32_t** pages  # raw code point block -> symbol of each code point's fold
    cdef int32_t* root_next  # symbol -> child of the root (0: none)
    cdef int32_t* edge_start  # state -> first edge; edges of s are edge_start[s]..edge_start[s+1]
    cdef int32_t* edge_sym
    cdef int32_t* edge_next
    cdef int32_t* fail
    cdef int32_t* depth_of
    cdef int32_t* own_start  # state -> its own terms, own_terms[own_start[s]:own_start[s+1]]
    cdef int32_t* own_terms
    cdef int32_t* out_first  # first state with terms on s's fail chain, s included (-1: none)
    cdef int32_t* out_link  # the next one after s (-1: none)
    cdef int32_t* term_len

    def __cinit__(self):
        self.pages = <int32_t**>calloc(NBLOCKS, sizeof(int32_t*))
        if self.pages == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef Py_ssize_t b
        for b in range(NBLOCKS):
            if self.pages[b] != NULL and self.pages[b] != _NO_SYMBOLS:
                PyMem_Free(self.pages[b])
        free(self.pages)
        PyMem_Free(self.root_next)
        PyMem_Free(self.edge_start)
        PyMem_Free(self.edge_sym)
        PyMem_Free(self.edge_next)
        PyMem_Free(self.fail)
        PyMem_Free(self.depth_of)
        PyMem_Free(self.own_start)
        PyMem_Free(self.own_terms)
        PyMem_Free(self.out_first)
        PyMem_Free(self.out_link)
        PyMem_Free(self.term_len)

    def __init__(self, list terms):
        cdef Py_ssize_t n = len(terms), k, i, l, length, total = 0, nsym
        cdef int32_t s, t, c, f, nxt, head, tail
        cdef int32_t* parent
        cdef int32_t* sym_of
        cdef int32_t* end_state
        cdef int32_t* path
        cdef int32_t* queue
        cdef str cur, prev = ""
        cdef int kc, kp
        cdef void* dc
        cdef void* dp
        folded = []
        for k in range(n):
            if not terms[k]:
                raise ValueError(f"term {k} is empty (it would match everywhere)")
            folded.append(fold(terms[k]))
            total += len(terms[k])
            self.max_len = max(self.max_len, len(terms[k]))
        self.alphabet = {cp: i + 1 for i, cp in enumerate(sorted({ord(ch) for ch in "".join(folded)}))}
        nsym = len(self.alphabet)
        self.term_len = <int32_t*>_alloc(n, sizeof(int32_t))
        self.root_next = <int32_t*>_alloc(nsym + 1, sizeof(int32_t))
        memset(self.root_next, 0, (nsym + 1) * sizeof(int32_t))
        parent = <int32_t*>_alloc(total + 1, sizeof(int32_t))
        sym_of = <int32_t*>_alloc(total + 1, sizeof(int32_t))
        end_state = <int32_t*>_alloc(n, sizeof(int32_t))
        path = <int32_t*>_alloc(self.max_len + 1, sizeof(int32_t))
        queue = NULL
        try:
            self.depth_of = <int32_t*>_alloc(total + 1, sizeof(int32_t))
            # Trie: in sorted order each term shares a prefix with the previous one only.
            path[0] = 0
            self.depth_of[0] = 0
            self.nstates = 1
            kp = PyUnicode_KIND(prev)
            dp = PyUnicode_DATA(prev)
            for k in sorted(range(n), key=folded.__getitem__):
                cur = folded[k]
                length = len(cur)
                kc = PyUnicode_KIND(cur)
                dc = PyUnicode_DATA(cur)
                l = 0
                while l < length and l < len(prev) and PyUnicode_READ(kc, dc, l) == PyUnicode_READ(kp, dp, l):
                    l += 1
                for i in range(l, length):
                    s = self.nstates
                    self.nstates += 1
                    parent[s] = path[i]
                    sym_of[s] = self.alphabet[<long>PyUnicode_READ(kc, dc, i)]
                    self.depth_of[s] = i + 1
                    path[i + 1] = s
                end_state[k] = path[length]
                self.term_len[k] = length
                prev, kp, dp = cur, kc, dc
            self._edges(parent, sym_of)
            self._outputs(end_state, n)
            # Fail links, breadth first: a fail target is shallower, so already complete.
            self.fail = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
            self.out_link = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
            self.out_first = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
            queue = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
            self.fail[0] = 0
            self.out_link[0] = self.out_first[0] = -1
            queue[0] = 0
            head, tail = 0, 1
            while head < tail:
                s = queue[head]
                head += 1
                for i in range(self.edge_start[s], self.edge_start[s + 1]):
                    t, c = self.edge_next[i], self.edge_sym[i]
                    queue[tail] = t
                    tail += 1
                    nxt = 0
                    if s:
                        f = self.fail[s]
                        while True:
                            nxt = self._goto(f, c)
                            if nxt or not f:
                                break
                            f = self.fail[f]
                    self.fail[t] = nxt
                    self.out_link[t] = self.out_first[nxt]
                    self.out_first[t] = t if self.own_start[t + 1] > self.own_start[t] else self.out_link[t]
        finally:
            PyMem_Free(parent)
            PyMem_Free(sym_of)
            PyMem_Free(end_state)
            PyMem_Free(path)
            PyMem_Free(queue)

    cdef int _edges(self, int32_t* parent, int32_t* sym_of) except -1:
        """CSR of the trie's edges; a state's children were created in symbol order."""
        cdef int32_t s, p, e
        cdef int32_t* cursor
        self.edge_start = <int32_t*>_alloc(self.nstates + 1, sizeof(int32_t))
        self.edge_sym = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
        self.edge_next = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
        memset(self.edge_start, 0, (self.nstates + 1) * sizeof(int32_t))
        for s in range(1, self.nstates):
            self.edge_start[parent[s] + 1] += 1
        for s in range(self.nstates):
            self.edge_start[s + 1] += self.edge_start[s]
        cursor = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
        for s in range(self.nstates):
            cursor[s] = self.edge_start[s]
        for s in range(1, self.nstates):
            p = parent[s]
            e = cursor[p]
            cursor[p] += 1
            self.edge_sym[e] = sym_of[s]
            self.edge_next[e] = s
            if p == 0:
                self.root_next[sym_of[s]] = s
        PyMem_Free(cursor)
        return 0

    cdef int _outputs(self, int32_t* end_state, Py_ssize_t n) except -1:
        """CSR of each state's own terms, in term order."""
        cdef Py_ssize_t k
        cdef int32_t s
        cdef int32_t* cursor
        self.own_start = <int32_t*>_alloc(self.nstates + 1, sizeof(int32_t))
        self.own_terms = <int32_t*>_alloc(n, sizeof(int32_t))
        memset(self.own_start, 0, (self.nstates + 1) * sizeof(int32_t))
        for k in range(n):
            self.own_start[end_state[k] + 1] += 1
        for s in range(self.nstates):
            self.own_start[s + 1] += self.own_start[s]
        cursor = <int32_t*>_alloc(self.nstates, sizeof(int32_t))
        for s in range(self.nstates):
            cursor[s] = self.own_start[s]
        for k in range(n):
            s = end_state[k]
            self.own_terms[cursor[s]] = <int32_t>k
            cursor[s] += 1
        PyMem_Free(cursor)
        return 0

    cdef inline int32_t _goto(self, int32_t s, int32_t c) noexcept nogil:
        """Child of ``s`` by symbol ``c``, 0 if none."""
        cdef int32_t lo, hi, mid
        if s == 0:
            return self.root_next[c]
        lo, hi = self.edge_start[s], self.edge_start[s + 1]
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.edge_sym[mid] < c:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.edge_start[s + 1] and self.edge_sym[lo] == c:
            return self.edge_next[lo]
        return 0

    cdef int32_t* _page(self, Py_ssize_t block) except NULL:
        """Fill the symbol table of one block of raw code points."""
        cdef Py_ssize_t i
        cdef int32_t* page = <int32_t*>_alloc(256, sizeof(int32_t))
        cdef bint any_symbol = False
        if not _fold_ready[block]:
            _fold_block(block)
        alphabet = self.alphabet
        for i in range(256):
            page[i] = alphabet.get(_fold[block * 256 + i], 0)
            any_symbol |= page[i] != 0
        if not any_symbol:
            PyMem_Free(page)
            page = _NO_SYMBOLS
        self.pages[block] = page
        return page

    def find(self, str text) -> list:
        """Every match in ``text``."""
        return self.feed(0, text, 0)[1]

    def start(self) -> int:
        """The state to feed a stream's first piece from."""
        return 0

    def depth(self, int state) -> int:
        """Length of the text's tail that ``state`` has matched so far."""
        if state < 0 or state >= self.nstates:
            raise ValueError(f"invalid state {state}")
        return self.depth_of[state]

    def feed(self, int state, str text, Py_ssize_t offset) -> tuple:
        """Continue from ``state`` over ``text`` starting at stream position ``offset``."""
        cdef Py_ssize_t i, n = len(text), end
        cdef int kind = PyUnicode_KIND(text)
        cdef void* data = PyUnicode_DATA(text)
        cdef uint32_t cp
        cdef int32_t s = state, t, c, j
        cdef int32_t* page
        cdef list found = []
        if state < 0 or state >= self.nstates:
            raise ValueError(f"invalid state {state}")
        for i in range(n):
            cp = PyUnicode_READ(kind, data, i)
            page = self.pages[cp >> 8]
            if page == NULL:
                page = self._page(cp >> 8)
            c = page[cp & 255]
            if c == 0:
                s = 0
                continue
            while True:
                t = self._goto(s, c)
                if t or not s:
                    break
                s = self.fail[s]
            s = t
            t = self.out_first[s]
            if t >= 0:
                end = offset + i + 1
                while t >= 0:
                    for j in range(self.own_start[t], self.own_start[t + 1]):
                        found.append((end - self.term_len[self.own_terms[j]], end, self.own_terms[j]))
                    t = self.out_link[t]
        found.sort()
        return s, found

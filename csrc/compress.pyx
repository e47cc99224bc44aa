# cython: freethreading_compatible = False
"""Streaming response compression on libzstd, libbrotlienc and zlib, called directly.

Compiled twin of fastgw/compress.py (same parameters, same flush points, same
negotiation); see that module for the contract. Output goes through one module-level
scratch buffer, so no per-stream output buffer is kept: the calls keep the GIL (they take
microseconds), so no two of them ever share it.
"""

from libc.stdint cimport uint8_t
from libc.string cimport memset

from compress_libs cimport *

CODINGS = ("zstd", "br", "gzip")
LEVELS = {"zstd": (1, 19), "br": (0, 11), "gzip": (1, 9)}
DEF SCRATCH = 65536
DEF ZSTD_WINDOW_LOG = 17
DEF ZSTD_HASH_LOG = 15
DEF ZSTD_CHAIN_LOG = 14
DEF BROTLI_LGWIN = 18
DEF GZIP_WBITS = 15
DEF GZIP_MEM_LEVEL = 8
DEF ZSTD_POOL = 16

cdef unsigned char _scratch[SCRATCH]
# Idle zstd contexts: a fresh one allocates and clears ~0.7 MB of tables on its first call (~40 us,
# more than compressing a whole answer); a reused one keeps them (the libzstd manual's advice).
cdef ZSTD_CCtx* _zstd_idle[ZSTD_POOL]
cdef int _zstd_idle_count = 0


cdef ZSTD_CCtx* _zstd_take() noexcept:
    global _zstd_idle_count
    if _zstd_idle_count:
        _zstd_idle_count -= 1
        return _zstd_idle[_zstd_idle_count]
    return ZSTD_createCCtx()


cdef void _zstd_give_back(ZSTD_CCtx* cctx) noexcept:
    global _zstd_idle_count
    if _zstd_idle_count < ZSTD_POOL:
        ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)
        _zstd_idle[_zstd_idle_count] = cctx
        _zstd_idle_count += 1
    else:
        ZSTD_freeCCtx(cctx)
cdef enum:
    K_ZSTD, K_BR, K_GZIP
cdef enum:
    OP_CONTINUE, OP_FLUSH, OP_END


cdef class Compressor:
    """One response's encoder; ``flush`` and ``finish`` return everything given so far."""

    cdef readonly str coding
    cdef int kind
    cdef bint done
    cdef ZSTD_CCtx* zc
    cdef BrotliEncoderState* br
    cdef z_stream zs
    cdef bint zs_ready

    def __cinit__(self, str coding, int level, Py_ssize_t size_hint=0):
        cdef int wbits = GZIP_WBITS, mem_level = GZIP_MEM_LEVEL
        self.coding = coding
        if coding in LEVELS and not LEVELS[coding][0] <= level <= LEVELS[coding][1]:
            raise ValueError(f"{coding} level {level} is outside {LEVELS[coding][0]}..{LEVELS[coding][1]}")
        if coding == "zstd":
            self.kind = K_ZSTD
            self.zc = _zstd_take()
            if self.zc == NULL:
                raise MemoryError()
            ZSTD_CCtx_setParameter(self.zc, ZSTD_c_compressionLevel, level)
            ZSTD_CCtx_setParameter(self.zc, ZSTD_c_windowLog, ZSTD_WINDOW_LOG)
            ZSTD_CCtx_setParameter(self.zc, ZSTD_c_hashLog, ZSTD_HASH_LOG)
            ZSTD_CCtx_setParameter(self.zc, ZSTD_c_chainLog, ZSTD_CHAIN_LOG)
        elif coding == "br":
            self.kind = K_BR
            self.br = BrotliEncoderCreateInstance(NULL, NULL, NULL)
            if self.br == NULL:
                raise MemoryError()
            BrotliEncoderSetParameter(self.br, BROTLI_PARAM_QUALITY, level)
            BrotliEncoderSetParameter(self.br, BROTLI_PARAM_LGWIN, BROTLI_LGWIN)
        elif coding == "gzip":
            self.kind = K_GZIP
            memset(&self.zs, 0, sizeof(z_stream))
            if size_hint > 0:  # nginx's rule: halve window and hash while the body fits in half
                while size_hint < (1 << (wbits - 1)) - 262:
                    wbits -= 1
                    mem_level -= 1
            if mem_level < 1:
                mem_level = 1
            if deflateInit2(&self.zs, level, Z_DEFLATED, 16 + wbits, mem_level, Z_DEFAULT_STRATEGY) != Z_OK:
                raise ValueError(f"zlib refused level {level}")
            self.zs_ready = True
        else:
            raise ValueError(f"unknown coding {coding!r}; expected one of {', '.join(CODINGS)}")

    def __dealloc__(self):
        if self.zc != NULL:
            _zstd_give_back(self.zc)
        if self.br != NULL:
            BrotliEncoderDestroyInstance(self.br)
        if self.zs_ready:
            deflateEnd(&self.zs)

    def compress(self, data) -> bytes:
        return self._run(data, OP_CONTINUE)

    def flush(self, data=b"") -> bytes:
        """``data`` compressed, then a flush: the client can decode all of it now."""
        return self._run(data, OP_FLUSH)

    def finish(self, data=b"") -> bytes:
        """``data`` compressed, then the end of the coded stream; the compressor is spent."""
        out = self._run(data, OP_END)
        self.done = True
        if self.zc != NULL:  # back to the pool now, not when the object goes
            _zstd_give_back(self.zc)
            self.zc = NULL
        return out

    cdef bytes _run(self, data, int op):
        if self.done:
            raise ValueError("the compressor has finished")
        cdef const unsigned char[::1] view = data
        cdef size_t n = view.shape[0]
        cdef const unsigned char* src = &view[0] if n else <const unsigned char*>b""
        cdef list pieces = []
        if self.kind == K_ZSTD:
            self._zstd(src, n, op, pieces)
        elif self.kind == K_BR:
            self._brotli(src, n, op, pieces)
        else:
            self._zlib(src, n, op, pieces)
        if not pieces:
            return b""
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    cdef int _zstd(self, const unsigned char* src, size_t n, int op, list pieces) except -1:
        cdef ZSTD_inBuffer inb
        cdef ZSTD_outBuffer outb
        cdef size_t left
        cdef ZSTD_EndDirective directive = ZSTD_e_continue if op == OP_CONTINUE else (
            ZSTD_e_flush if op == OP_FLUSH else ZSTD_e_end)
        inb.src = src
        inb.size = n
        inb.pos = 0
        while True:
            outb.dst = _scratch
            outb.size = SCRATCH
            outb.pos = 0
            left = ZSTD_compressStream2(self.zc, &outb, &inb, directive)
            if ZSTD_isError(left):
                raise ValueError("zstd: " + ZSTD_getErrorName(left).decode())
            if outb.pos:
                pieces.append(_scratch[:outb.pos])
            if directive == ZSTD_e_continue:
                if inb.pos == inb.size:
                    return 0
            elif left == 0:
                return 0

    cdef int _brotli(self, const unsigned char* src, size_t n, int op, list pieces) except -1:
        cdef size_t avail_in = n
        cdef const uint8_t* next_in = src
        cdef size_t avail_out
        cdef uint8_t* next_out
        cdef int ok
        cdef BrotliEncoderOperation operation = BROTLI_OPERATION_PROCESS if op == OP_CONTINUE else (
            BROTLI_OPERATION_FLUSH if op == OP_FLUSH else BROTLI_OPERATION_FINISH)
        while True:
            avail_out = SCRATCH
            next_out = _scratch
            ok = BrotliEncoderCompressStream(self.br, operation, &avail_in, &next_in, &avail_out, &next_out, NULL)
            if not ok:
                raise ValueError("brotli: the encoder failed")
            if avail_out != SCRATCH:
                pieces.append(_scratch[:SCRATCH - avail_out])
            if operation == BROTLI_OPERATION_FINISH:
                if BrotliEncoderIsFinished(self.br):
                    return 0
            elif avail_in == 0 and not BrotliEncoderHasMoreOutput(self.br):
                return 0

    cdef int _zlib(self, const unsigned char* src, size_t n, int op, list pieces) except -1:
        cdef int rc
        cdef int mode = Z_NO_FLUSH if op == OP_CONTINUE else (Z_SYNC_FLUSH if op == OP_FLUSH else Z_FINISH)
        self.zs.next_in = <unsigned char*>src  # zlib only reads it
        self.zs.avail_in = <unsigned int>n
        while True:
            self.zs.next_out = _scratch
            self.zs.avail_out = SCRATCH
            rc = deflate(&self.zs, mode)
            if rc == Z_STREAM_ERROR:
                raise ValueError("zlib: the deflate stream is broken")
            if self.zs.avail_out != SCRATCH:
                pieces.append(_scratch[:SCRATCH - self.zs.avail_out])
            if mode == Z_FINISH:
                if rc == Z_STREAM_END:
                    return 0
            elif self.zs.avail_out != 0:
                return 0


cdef inline bint _ows(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef int _quality(const unsigned char* p, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """A q-value in thousandths (0..1000), or -1 when malformed (RFC 9110 12.4.2)."""
    cdef int q, digits = 0
    cdef unsigned char lead
    while start < end and _ows(p[start]):
        start += 1
    while end > start and _ows(p[end - 1]):
        end -= 1
    if start >= end or (p[start] != 48 and p[start] != 49):  # '0' or '1'
        return -1
    lead = p[start]
    q = 1000 if lead == 49 else 0
    start += 1
    if start == end:
        return q
    if p[start] != 46:  # '.'
        return -1
    start += 1
    cdef int scale = 100
    while start < end:
        if p[start] < 48 or p[start] > 57 or digits == 3:
            return -1
        if lead == 49 and p[start] != 48:
            return -1
        q += (p[start] - 48) * scale
        scale //= 10
        digits += 1
        start += 1
    return q


def negotiate(accept, tuple offered):
    """The coding of ``offered`` to answer with, or None for identity (see fastgw/compress.py)."""
    if not accept or not offered:
        return None
    cdef const unsigned char[::1] view = accept
    cdef const unsigned char* p = &view[0]
    cdef Py_ssize_t n = view.shape[0], i = 0, start, end, name_end, ps, pe, eq, ks, ke
    cdef int q
    cdef dict weights = {}
    while i <= n:
        start = i
        while i < n and p[i] != 44:  # ','
            i += 1
        end = i
        i += 1
        name_end = start
        while name_end < end and p[name_end] != 59:  # ';'
            name_end += 1
        q = 1000
        ps = name_end + 1
        while ps < end:  # parameters: the first "q=" one counts
            pe = ps
            while pe < end and p[pe] != 59:
                pe += 1
            eq = ps
            while eq < pe and p[eq] != 61:  # '='
                eq += 1
            if eq < pe:
                ks, ke = ps, eq
                while ks < ke and _ows(p[ks]):
                    ks += 1
                while ke > ks and _ows(p[ke - 1]):
                    ke -= 1
                if ke - ks == 1 and (p[ks] == 113 or p[ks] == 81):  # 'q' / 'Q'
                    q = _quality(p, eq + 1, pe)
                    break
            ps = pe + 1
        if q < 0:
            continue
        while start < name_end and _ows(p[start]):
            start += 1
        while name_end > start and _ows(p[name_end - 1]):
            name_end -= 1
        if start == name_end:
            continue
        name = bytes(view[start:name_end]).lower()
        if name == b"x-gzip":
            name = b"gzip"
        if name not in weights:
            weights[name] = q
    cdef int star = weights.get(b"*", 0), best_q = 0, coding_q
    best = None
    for coding in offered:
        coding_q = weights.get((<str>coding).encode(), star)
        if coding_q > best_q:
            best, best_q = coding, coding_q
    return best

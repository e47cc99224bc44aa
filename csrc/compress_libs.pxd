# The three compression libraries as csrc/compress.pyx calls them (only what it uses).
# Headers: libzstd-dev, libbrotli-dev, zlib1g-dev (Makefile APT_PACKAGES).

from libc.stdint cimport uint8_t, uint32_t


cdef extern from "zstd.h" nogil:
    ctypedef struct ZSTD_CCtx:
        pass
    ctypedef struct ZSTD_inBuffer:
        const void* src
        size_t size
        size_t pos
    ctypedef struct ZSTD_outBuffer:
        void* dst
        size_t size
        size_t pos
    ctypedef enum ZSTD_EndDirective:
        ZSTD_e_continue
        ZSTD_e_flush
        ZSTD_e_end
    ctypedef enum ZSTD_ResetDirective:
        ZSTD_reset_session_only
        ZSTD_reset_session_and_parameters
    ctypedef enum ZSTD_cParameter:
        ZSTD_c_compressionLevel
        ZSTD_c_windowLog
        ZSTD_c_hashLog
        ZSTD_c_chainLog
        ZSTD_c_checksumFlag
    ZSTD_CCtx* ZSTD_createCCtx()
    size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx)
    size_t ZSTD_CCtx_reset(ZSTD_CCtx* cctx, ZSTD_ResetDirective reset)
    size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, ZSTD_cParameter param, int value)
    size_t ZSTD_compressStream2(ZSTD_CCtx* cctx, ZSTD_outBuffer* output, ZSTD_inBuffer* input, ZSTD_EndDirective end_op)
    unsigned ZSTD_isError(size_t code)
    const char* ZSTD_getErrorName(size_t code)


cdef extern from "brotli/encode.h" nogil:
    ctypedef struct BrotliEncoderState:
        pass
    ctypedef enum BrotliEncoderOperation:
        BROTLI_OPERATION_PROCESS
        BROTLI_OPERATION_FLUSH
        BROTLI_OPERATION_FINISH
    ctypedef enum BrotliEncoderParameter:
        BROTLI_PARAM_QUALITY
        BROTLI_PARAM_LGWIN
    BrotliEncoderState* BrotliEncoderCreateInstance(void* alloc_func, void* free_func, void* opaque)
    void BrotliEncoderDestroyInstance(BrotliEncoderState* state)
    int BrotliEncoderSetParameter(BrotliEncoderState* state, BrotliEncoderParameter param, uint32_t value)
    int BrotliEncoderCompressStream(BrotliEncoderState* state, BrotliEncoderOperation op, size_t* available_in,
                                    const uint8_t** next_in, size_t* available_out, uint8_t** next_out,
                                    size_t* total_out)
    int BrotliEncoderHasMoreOutput(BrotliEncoderState* state)
    int BrotliEncoderIsFinished(BrotliEncoderState* state)


cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        unsigned char* next_in  # z_const is empty unless ZLIB_CONST
        unsigned int avail_in
        unsigned char* next_out
        unsigned int avail_out
    int deflateInit2(z_stream* strm, int level, int method, int windowBits, int memLevel, int strategy)
    int deflate(z_stream* strm, int flush)
    int deflateEnd(z_stream* strm)
    int Z_OK
    int Z_STREAM_END
    int Z_STREAM_ERROR
    int Z_NO_FLUSH
    int Z_SYNC_FLUSH
    int Z_FINISH
    int Z_DEFLATED
    int Z_DEFAULT_STRATEGY

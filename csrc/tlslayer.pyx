# cython: language_level=3
"""Compiled twin of fastgw/server/tlslayer.py: the same protocol, with the record layer run in C.

The handshake, close_notify and every callback (SNI, ALPN, session tickets) go through the ssl
module's SSLObject, as in the twin. Once the handshake is done, reads and writes call OpenSSL's
``SSL_read_ex`` / ``SSL_write_ex`` and ``BIO_read`` / ``BIO_write`` directly on that SSLObject's
own SSL and memory BIOs: no Python-level wrapper, no GIL release and re-take per call, no
exception for "no more data", no intermediate Python objects for the ciphertext that came in.

The SSL and BIO pointers are read from CPython's ``_ssl`` objects (the field right after the
object header, as every CPython 3 lays them out) and checked against each other before they are
used (the SSL's read and write BIOs must be exactly those two BIOs); the module refuses to import
(and the pure twin serves) when that check fails, when this Python is not CPython, or when the
OpenSSL this extension links is not the one the ssl module runs on.
"""

import asyncio
import ssl
import sys

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject

from fastgw.obs.metrics import GATEWAY
from fastgw.server.tlslayer import TLSTransport


cdef extern from "openssl/ssl.h" nogil:
    ctypedef struct SSL:
        pass
    ctypedef struct BIO:
        pass
    int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
    int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
    int SSL_get_error(const SSL *s, int ret)
    int SSL_pending(const SSL *s)
    BIO *SSL_get_rbio(const SSL *s)
    BIO *SSL_get_wbio(const SSL *s)
    unsigned long OpenSSL_version_num()
    int SSL_ERROR_WANT_READ
    int SSL_ERROR_ZERO_RETURN

cdef extern from "openssl/bio.h" nogil:
    int BIO_write(BIO *bio, const void *data, int length)
    int BIO_read(BIO *bio, void *data, int length)
    size_t BIO_ctrl_pending(BIO *bio)

cdef extern from "openssl/err.h" nogil:
    void ERR_clear_error()


cdef enum:
    READ_SIZE = 65536
    HANDSHAKE = 0
    OPEN = 1
    CLOSED = 2

cdef char _plain[READ_SIZE]  # decrypted bytes of one SSL_read_ex: one event loop, one user at a time
cdef bytearray _buffer = bytearray(READ_SIZE)  # what the event loop reads the socket into (get_buffer)
cdef char *_buffer_at = PyByteArray_AS_STRING(_buffer)


cdef inline void *_field(object obj, Py_ssize_t index):
    """The ``index``-th pointer after the object header (``_ssl._SSLSocket``: 0 is its socket's
    weak reference, 1 its SSL; ``_ssl.MemoryBIO``: 0 is its BIO)."""
    return (<void **>(<char *><PyObject *>obj + sizeof(PyObject)))[index]


cdef bint _wired(object sslobj, object incoming, object outgoing):
    """Whether the pointers read from these objects are the SSL and BIOs they are (see above)."""
    cdef SSL *s = <SSL *>_field(sslobj._sslobj, 1)
    cdef BIO *rbio = <BIO *>_field(incoming, 0)
    cdef BIO *wbio = <BIO *>_field(outgoing, 0)
    return s != NULL and rbio != NULL and wbio != NULL and SSL_get_rbio(s) == rbio and SSL_get_wbio(s) == wbio


def _check_runtime():
    if sys.implementation.name != "cpython":
        raise ImportError("the compiled TLS layer reads CPython's _ssl objects")
    if OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        raise ImportError(f"the compiled TLS layer links OpenSSL {OpenSSL_version_num():#x}, the ssl module "
                          f"runs {ssl.OPENSSL_VERSION_NUMBER:#x}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    if not _wired(context.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing):
        raise ImportError("this Python's _ssl objects are laid out differently")


_check_runtime()


cdef class TLSRecords:
    """One server-side TLS connection (see the twin): a protocol to the event loop, and the
    transport of ``app`` once the handshake is done, but for the pass-through calls (TLSLayer)."""

    cdef readonly object app
    cdef readonly object context
    cdef object loop
    cdef double handshake_timeout
    cdef readonly object transport
    cdef readonly int state
    cdef readonly bint closing
    cdef readonly object sslobj
    cdef object incoming, outgoing
    cdef object _timer
    cdef SSL *tls
    cdef BIO *rbio
    cdef BIO *wbio

    def __init__(self, app, context, loop, double handshake_timeout):
        self.app = app
        self.context = context
        self.loop = loop
        self.handshake_timeout = handshake_timeout
        self.state = HANDSHAKE
        self.closing = False

    # -- the event loop's side -------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        if not _wired(self.sslobj, self.incoming, self.outgoing):  # checked at import: never expected
            raise RuntimeError("the SSL object is not wired to its memory BIOs")
        self.tls = <SSL *>_field(self.sslobj._sslobj, 1)
        self.rbio = <BIO *>_field(self.incoming, 0)
        self.wbio = <BIO *>_field(self.outgoing, 0)
        self._timer = self.loop.call_later(self.handshake_timeout, self._handshake_expired)

    def get_buffer(self, Py_ssize_t sizehint):
        return _buffer

    def buffer_updated(self, Py_ssize_t nbytes):
        if self.state == CLOSED:
            return
        BIO_write(self.rbio, _buffer_at, <int>nbytes)  # a memory BIO takes all of it
        if self.state == OPEN:
            self._read()
        else:
            self._handshake()

    def eof_received(self):
        if self.state != OPEN:
            return False
        return bool(self.app.eof_received())

    def connection_lost(self, exc):
        self._cancel_timer()
        opened = self.state == OPEN
        self.state = CLOSED
        self.closing = True
        if opened:
            self.app.connection_lost(exc)

    def pause_writing(self):
        if self.state == OPEN:
            self.app.pause_writing()

    def resume_writing(self):
        if self.state == OPEN:
            self.app.resume_writing()

    # -- handshake and records -----------------------------------------------------------

    cdef _handshake(self):
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError):
            self._handshake_failed()
            return
        self._flush()
        self._cancel_timer()
        self.state = OPEN
        self.app.connection_made(self)
        if self.state == OPEN and not self.closing and (BIO_ctrl_pending(self.rbio) or SSL_pending(self.tls)):
            self._read()

    cdef _handshake_failed(self):
        self._flush()
        self._cancel_timer()
        self.state = CLOSED
        self.closing = True
        GATEWAY.connection_events.inc(("tls_handshake_failed",))
        self.transport.close()

    def _handshake_expired(self):
        self._timer = None
        if self.state == HANDSHAKE:
            self.state = CLOSED
            self.closing = True
            GATEWAY.connection_events.inc(("tls_handshake_timeout",))
            self.transport.abort()

    cdef _read(self):
        """Decrypt every whole record that arrived and hand the bytes up in one call."""
        cdef size_t got = 0
        cdef int ret, err
        cdef bint ended = False
        cdef object data = None
        cdef bytes chunk
        ERR_clear_error()
        while True:
            ret = SSL_read_ex(self.tls, _plain, READ_SIZE, &got)
            if ret == 1:
                chunk = PyBytes_FromStringAndSize(_plain, <Py_ssize_t>got)
                data = chunk if data is None else data + chunk
                if not BIO_ctrl_pending(self.rbio) and not SSL_pending(self.tls):
                    break  # nothing left to decrypt: spare the call that would only say so
                continue
            err = SSL_get_error(self.tls, ret)
            if err == SSL_ERROR_WANT_READ:  # no whole record left: the rest comes with the next read
                break
            ERR_clear_error()
            if err == SSL_ERROR_ZERO_RETURN:  # close_notify
                ended = True
                break
            self._flush()  # a bad record MAC, an unexpected message: the connection is unusable
            self.abort()
            return
        if BIO_ctrl_pending(self.wbio):
            self._flush()
        if data is not None:
            self.app.data_received(data)
        if ended and self.state == OPEN and not self.closing and not self.app.eof_received():
            self.close()

    cdef _flush(self):
        cdef size_t pending = BIO_ctrl_pending(self.wbio)
        if not pending:
            return
        cdef bytes data = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>pending)
        BIO_read(self.wbio, PyBytes_AS_STRING(data), <int>pending)
        if not self.transport.is_closing():
            self.transport.write(data)

    cdef _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the transport the HTTP connection writes to ---------------------------------------

    def write(self, data):
        cdef Py_buffer view
        cdef size_t written = 0
        cdef int ret
        if self.closing or not data:
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            ERR_clear_error()
            ret = SSL_write_ex(self.tls, view.buf, <size_t>view.len, &written)
        finally:
            PyBuffer_Release(&view)
        if ret != 1:
            ERR_clear_error()
            self.abort()
            return
        self._flush()

    def close(self):
        if self.closing:
            return
        self.closing = True
        if self.state == OPEN:
            try:
                self.sslobj.unwrap()
            except (ssl.SSLError, ValueError):
                pass
            self._flush()
        self.transport.close()

    def abort(self):
        self.closing = True
        self.transport.abort()

    def get_write_buffer_size(self):
        return self.transport.get_write_buffer_size() + BIO_ctrl_pending(self.wbio)


class TLSLayer(TLSRecords, TLSTransport):
    """The compiled layer: records and the handshake are TLSRecords' (first in the MRO, before the
    protocol base's no-op callbacks); the transport calls that only pass through are the twin's
    (TLSTransport)."""

    __slots__ = ()

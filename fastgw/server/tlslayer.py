"""TLS for the listener: a protocol to the event loop below, a transport to the HTTP connection above.

The event loop's own TLS layer (uvloop's ``SSLProtocol``, asyncio's in pure mode) is general: it
handles both sides, start_tls, renegotiation-era flow control and a shutdown that waits for the
peer. A server connection needs less, and each keep-alive request paid for the rest (bench/edge.py,
``https`` row). This layer does what a server needs and no more:

- the handshake through the ssl module (SNI, ALPN, session tickets all stay its callbacks), with a
  deadline (``handshake_timeout``); a failed one sends its alert and closes;
- after it, every read decrypts what arrived in one pass and hands it up in one ``data_received``,
  every write is one encrypt and one ``transport.write``: the HTTP connection's own write batching
  makes that one TLS record per answer;
- ``close()`` sends close_notify and closes at once, without waiting for the peer's (as nginx does);
  a TCP FIN or a close_notify from the client reaches the connection as ``eof_received``;
- back-pressure is the TCP transport's: ``pause_writing``/``resume_writing`` pass up, pausing reads
  passes down.

This is the pure twin; ``csrc/tlslayer.pyx`` runs the same protocol with OpenSSL's record calls made
directly on this connection's SSL object and memory BIOs once the handshake is done.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from fastgw.obs.metrics import GATEWAY

READ_SIZE = 65536
"""Bytes the event loop reads from the socket at a time (into one buffer shared by every connection:
it is consumed before the loop reads for any other)."""

_buffer = bytearray(READ_SIZE)
_view = memoryview(_buffer)

HANDSHAKE, OPEN, CLOSED = 0, 1, 2


class TLSTransport(asyncio.BufferedProtocol):
    """What both twins of the layer give the HTTP connection besides reads, writes and closing:
    the transport calls that only pass through (the compiled twin's ``TLSLayer`` is this class over
    its compiled record layer). Subclasses have ``app``, ``transport``, ``sslobj``, ``state`` and
    ``closing``."""

    __slots__ = ()
    app: asyncio.Protocol
    transport: Any
    sslobj: Any
    state: int
    closing: bool

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closing or self.transport.is_closing()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close of its own: close() sends close_notify

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close; close() instead")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.sslobj
        if name == "sslcontext":
            return self.sslobj.context if self.sslobj is not None else None
        if name == "peercert":
            return self.sslobj.getpeercert() if self.state == OPEN else default
        if name == "cipher":
            return self.sslobj.cipher() if self.state == OPEN else default
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.app


class TLSLayer(TLSTransport):
    """One server-side TLS connection: ``app`` (an ``asyncio.Protocol``) sees this object as its
    transport once the handshake is done; until then it sees nothing."""

    __slots__ = ("app", "context", "loop", "handshake_timeout", "transport", "state", "closing",
                 "sslobj", "incoming", "outgoing", "_timer")

    def __init__(self, app: asyncio.Protocol, context: ssl.SSLContext, loop: asyncio.AbstractEventLoop,
                 handshake_timeout: float) -> None:
        self.app = app
        self.context = context
        self.loop = loop
        self.handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self.state = HANDSHAKE
        self.closing = False
        self.sslobj: ssl.SSLObject | None = None
        self.incoming = self.outgoing = None
        self._timer: asyncio.TimerHandle | None = None

    # -- the event loop's side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self._timer = self.loop.call_later(self.handshake_timeout, self._handshake_expired)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _view

    def buffer_updated(self, nbytes: int) -> None:
        self.incoming.write(_view[:nbytes])
        if self.state == OPEN:
            self._read()
        elif self.state == HANDSHAKE:
            self._handshake()

    def eof_received(self) -> bool:
        if self.state != OPEN:
            return False
        return bool(self.app.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        opened = self.state == OPEN
        self.state = CLOSED
        self.closing = True
        if opened:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.state == OPEN:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.state == OPEN:
            self.app.resume_writing()

    # -- handshake and records -----------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError):  # a protocol error, a refused version or cipher...
            self._handshake_failed()
            return
        self._flush()  # the server's Finished (and TLS 1.3's session tickets)
        self._cancel_timer()
        self.state = OPEN
        self.app.connection_made(self)
        if self.state == OPEN and not self.closing and (self.incoming.pending or self.sslobj.pending()):
            self._read()  # the request came in the same segment as the client's Finished

    def _handshake_failed(self) -> None:
        self._flush()  # the alert, so the client learns why
        self._cancel_timer()
        self.state = CLOSED
        self.closing = True
        GATEWAY.connection_events.inc(("tls_handshake_failed",))
        self.transport.close()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.state == HANDSHAKE:
            self.state = CLOSED
            self.closing = True
            GATEWAY.connection_events.inc(("tls_handshake_timeout",))
            self.transport.abort()

    def _read(self) -> None:
        """Decrypt every whole record that arrived and hand the bytes up in one call."""
        sslobj, incoming = self.sslobj, self.incoming
        data = b""
        ended = False
        try:
            while incoming.pending or sslobj.pending():
                chunk = sslobj.read(READ_SIZE)
                if not chunk:  # close_notify
                    ended = True
                    break
                data = chunk if not data else data + chunk
        except ssl.SSLWantReadError:  # a partial record: the rest comes with the next read
            pass
        except ssl.SSLError:  # a bad record MAC, an unexpected message: the connection is unusable
            self._flush()
            self.abort()
            return
        if self.outgoing.pending:  # what reading produced (a TLS 1.3 key update answer...)
            self._flush()
        if data:
            self.app.data_received(data)
        if ended and self.state == OPEN and not self.closing and not self.app.eof_received():
            self.close()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the transport the HTTP connection writes to ---------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        try:
            self.sslobj.write(data)
        except ssl.SSLError:
            self.abort()
            return
        self._flush()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.state == OPEN:
            try:
                self.sslobj.unwrap()  # close_notify; the peer's is not waited for
            except (ssl.SSLError, ValueError):
                pass
            self._flush()
        self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self.outgoing.pending

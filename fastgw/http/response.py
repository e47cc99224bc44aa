"""The one response writer: every byte of HTTP/1.1 framing the gateway writes itself.

Handlers and filters hand it whole answers or stream data; it chooses Content-Length,
chunked (HTTP/1.1, also when the connection closes after the answer) or close-delimited
framing (HTTP/1.0) and writes each call as one buffer. The plain proxy's relay re-chunks an
upstream body of unknown length with :func:`chunk`.

It is also where the answers the gateway writes are compressed (fastgw.http.encoding):
a whole answer in one call, with the encoded length; a stream with a flush per write, so
each event batch reaches the client decodable at once.
"""

from __future__ import annotations

from typing import Any

from fastgw.http.encoding import SSE_TYPE, VARY
from fastgw.proxy import replies

SSE_HEADERS = b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes | memoryview) -> bytes:
    """One chunk of a chunked body (empty data would end the body: callers skip it)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def chunk_into(out: list, data: bytes | memoryview) -> None:
    """One chunk appended to a write batch as three pieces: the relayed data is not copied."""
    out.append(b"%x\r\n" % len(data))
    out.append(data)
    out.append(b"\r\n")


def is_http10(conn: Any) -> bool:
    head = conn.head
    return head is not None and head.version == 10


def keep_alive_header(conn: Any) -> bytes:
    """RFC 9112 9.3: an HTTP/1.0 connection kept open must say so, or the client waits for a close."""
    return b"Connection: keep-alive\r\n" if conn.keep_alive and is_http10(conn) else b""


class ResponseWriter:
    """Writes the answer of the connection's current exchange (one writer per connection)."""

    __slots__ = ("conn", "chunked", "encoder")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.chunked = False  # set by start_stream for the stream it starts
        self.encoder: Any = None  # the started stream's Compressor, when it is compressed

    def complete(self, status: int, body: bytes, *, extra: bytes = b"",
                 content_type: bytes = b"application/json") -> None:
        """A whole answer with its Content-Length (the encoded one when compressed)."""
        conn = self.conn
        if conn.reading_body:
            conn.keep_alive = False  # answered before the body was read: it can't be skipped
        stream = conn.stream
        if stream is not None and stream.compression is not None and body and status not in (204, 304):
            body, coded = stream.compression.whole(stream.head.get(b"accept-encoding"), content_type, body)
            extra += coded
        extra += keep_alive_header(conn)
        conn.write(replies.simple_response(status, body, content_type=content_type, keep_alive=conn.keep_alive,
                                           extra=extra, head_only=conn.head_only))

    def start_stream(self, status: int = 200, *, extra: bytes = b"", sse: bool = True, data: bytes = b"") -> None:
        """The head of a streamed answer, and its first data if any, in one write."""
        conn = self.conn
        if conn.reading_body:
            conn.keep_alive = False
        # HTTP/1.1 streams are chunked even when the connection closes after them: the
        # last chunk tells the client the answer is whole (a close alone could be a cut).
        self.chunked = conn.head.version == 11
        if not self.chunked:
            conn.keep_alive = False  # HTTP/1.0: the body ends when we close
        head = [replies.status_line(status), b"\r\n", replies.SERVER_HEADER, replies.DATE.header()]
        if sse:
            head.append(SSE_HEADERS)
        head.append(extra)
        self.encoder = None
        policy = conn.stream.compression if conn.stream is not None else None
        if sse and policy is not None and policy.matches(SSE_TYPE):
            coding = policy.choose(conn.stream.head.get(b"accept-encoding"))
            if coding is not None:
                self.encoder = policy.compressor(coding)
                head.append(b"Content-Encoding: %b\r\n" % coding.encode())
                data = self.encoder.flush(data)
            head.append(VARY)
        if self.chunked:
            head.append(b"Transfer-Encoding: chunked\r\n\r\n" if conn.keep_alive
                        else b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        else:
            head.append(b"Connection: close\r\n\r\n")
        if data:
            head.append(chunk(data) if self.chunked else data)
        conn.write(b"".join(head))

    def data(self, data: bytes) -> None:
        if self.encoder is not None:
            data = self.encoder.flush(data)
        if data:
            self.conn.write(chunk(data) if self.chunked else data)

    def end(self, data: bytes = b"") -> None:
        """The last data of a stream and the end of its body."""
        if self.encoder is not None:
            data = self.encoder.finish(data)
            self.encoder = None
        if self.chunked:
            self.conn.write(chunk(data) + LAST_CHUNK if data else LAST_CHUNK)
        elif data:
            self.conn.write(data)

    def stream_whole(self, events: bytes, *, extra: bytes = b"") -> None:
        """A stream known in full (a cached answer replayed): head, body and end at once."""
        conn = self.conn
        stream = conn.stream
        if stream is not None and stream.compression is not None:
            events, coded = stream.compression.whole(stream.head.get(b"accept-encoding"), SSE_TYPE, events)
            extra += coded
        head = [replies.status_line(200), b"\r\n", replies.SERVER_HEADER, replies.DATE.header(), SSE_HEADERS, extra]
        if conn.reading_body or conn.head.version != 11:
            conn.keep_alive = False
        if conn.head.version == 11:
            close = b"" if conn.keep_alive else b"Connection: close\r\n"
            head.append(b"Transfer-Encoding: chunked\r\n%b\r\n%b%b" % (close, chunk(events), LAST_CHUNK))
        else:
            head.append(b"Connection: close\r\n\r\n" + events)
        conn.write(b"".join(head))

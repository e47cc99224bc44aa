"""The listener's TLS layer, both twins (csrc/tlslayer.pyx and fastgw/server/tlslayer.py), driven by a
real ssl client over memory BIOs: whatever the ciphertext's chunking, the connection above sees the
client's bytes in order and the client decrypts the connection's bytes in order; the twins agree."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw import _speedups
from fastgw.obs.metrics import GATEWAY
from tests.e2e.test_tls import make_certificate


@pytest.fixture(params=["compiled", "pure"])
def layer_class(request: pytest.FixtureRequest) -> type:
    if request.param == "pure":
        return _speedups.TLSLayerPy
    if _speedups.TLSLayerC is None:
        pytest.fail("csrc/tlslayer.pyx is not built: run `python setup.py build_ext --inplace`")
    return _speedups.TLSLayerC


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key, _ = make_certificate(tmp_path_factory.mktemp("tlslayer"), "t", ["t.test"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class Wire:
    """The TCP transport under the layer: what the layer sends, and what was asked of it."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.sent += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default

    def take(self) -> bytes:
        data, self.sent = bytes(self.sent), bytearray()
        return data


class App(asyncio.Protocol):
    """The connection above: records what it is given."""

    def __init__(self, answer_eof: bool = False) -> None:
        self.transport = None
        self.received = bytearray()
        self.eofs = 0
        self.lost = False
        self.answer_eof = answer_eof

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        self.eofs += 1
        return self.answer_eof

    def connection_lost(self, exc) -> None:
        self.lost = True


class Client:
    """A real ssl client over memory BIOs."""

    def __init__(self, maximum: ssl.TLSVersion | None = None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if maximum is not None:
            context.maximum_version = maximum
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_hostname="t.test")
        self.plain = bytearray()

    def handshake_step(self) -> bool:
        try:
            self.sslobj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def send(self, data: bytes) -> bytes:
        self.sslobj.write(data)
        return self.outgoing.read()

    def receive(self, ciphertext: bytes) -> None:
        self.incoming.write(ciphertext)
        try:
            while True:
                chunk = self.sslobj.read(65536)
                if not chunk:
                    break
                self.plain += chunk
        except ssl.SSLWantReadError:
            pass


def feed(layer, data: bytes, sizes: list[int] | None = None) -> None:
    """Hand ``data`` to the layer as the event loop would: copied into its buffer, in pieces."""
    at = 0
    sizes = sizes or [len(data)]
    index = 0
    while at < len(data):
        size = max(1, min(sizes[index % len(sizes)], len(data) - at))
        index += 1
        buffer = memoryview(layer.get_buffer(size))
        size = min(size, len(buffer))
        buffer[:size] = data[at : at + size]
        layer.buffer_updated(size)
        at += size


def connect(layer_class: type, context: ssl.SSLContext, app: App | None = None, sizes: list[int] | None = None):
    """A layer over a Wire with a handshake done; (layer, app, wire, client)."""
    loop = asyncio.new_event_loop()
    app = app or App()
    wire = Wire()
    layer = layer_class(app, context, loop, 5.0)
    layer.connection_made(wire)
    client = Client()
    for _ in range(10):
        done = client.handshake_step()
        feed(layer, client.outgoing.read(), sizes)
        client.incoming.write(wire.take())
        if done and app.transport is not None:
            break
    assert client.handshake_step()
    assert app.transport is layer
    loop.close()
    return layer, app, wire, client


def test_requests_and_answers_cross_in_order(layer_class, server_context):
    layer, app, wire, client = connect(layer_class, server_context)
    assert layer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    assert layer.get_extra_info("peername") == ("127.0.0.1", 5555)
    feed(layer, client.send(b"GET / HTTP/1.1\r\n\r\n") + client.send(b"GET /b HTTP/1.1\r\n\r\n"))
    assert bytes(app.received) == b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
    big = bytes(range(256)) * 1000  # several records
    layer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    layer.write(memoryview(big))
    client.receive(wire.take())
    assert bytes(client.plain) == b"HTTP/1.1 200 OK\r\n\r\n" + big


def test_close_sends_close_notify_and_closes_at_once(layer_class, server_context):
    layer, app, wire, client = connect(layer_class, server_context)
    layer.write(b"bye")
    layer.close()
    assert wire.closed and not wire.aborted
    client.receive(wire.take())
    assert bytes(client.plain) == b"bye"
    assert client.sslobj.read(10) == b""  # the client saw close_notify
    layer.write(b"after close")  # ignored, as a closed transport does
    assert wire.take() == b""


def test_the_clients_close_notify_is_an_eof_for_the_connection(layer_class, server_context):
    app = App(answer_eof=False)
    layer, app, wire, client = connect(layer_class, server_context, app)
    client.sslobj.write(b"last")
    try:
        client.sslobj.unwrap()
    except ssl.SSLWantReadError:
        pass
    feed(layer, client.outgoing.read())
    assert bytes(app.received) == b"last" and app.eofs == 1
    assert wire.closed  # the connection did not keep it open: closed


def test_a_corrupt_record_aborts_the_connection(layer_class, server_context):
    layer, app, wire, client = connect(layer_class, server_context)
    record = bytearray(client.send(b"GET / HTTP/1.1\r\n\r\n"))
    record[-1] ^= 0xFF  # the authentication tag no longer matches
    feed(layer, bytes(record))
    assert app.received == b"" and wire.aborted
    layer.connection_lost(None)
    assert app.lost


def test_a_refused_handshake_sends_its_alert_and_is_counted(layer_class, server_context):
    before = GATEWAY.connection_events.values.get(("tls_handshake_failed",), 0)
    loop = asyncio.new_event_loop()
    app, wire = App(), Wire()
    layer = layer_class(app, server_context, loop, 5.0)
    layer.connection_made(wire)
    garbage = b"\x16\x03\x01\x00\x05hello"  # a handshake record holding no ClientHello
    feed(layer, garbage)
    assert wire.closed and app.transport is None
    assert wire.take()[:1] == b"\x15"  # an alert record
    assert GATEWAY.connection_events.values.get(("tls_handshake_failed",), 0) == before + 1
    loop.close()


def test_a_silent_client_is_cut_at_the_handshake_deadline(layer_class, server_context):
    before = GATEWAY.connection_events.values.get(("tls_handshake_timeout",), 0)
    loop = asyncio.new_event_loop()
    app, wire = App(), Wire()
    layer = layer_class(app, server_context, loop, 0.05)
    loop.call_soon(layer.connection_made, wire)
    loop.run_until_complete(asyncio.sleep(0.2))
    assert wire.aborted and app.transport is None
    assert GATEWAY.connection_events.values.get(("tls_handshake_timeout",), 0) == before + 1
    loop.close()


def test_flow_control_passes_through(layer_class, server_context):
    layer, app, wire, client = connect(layer_class, server_context)
    paused = []
    app.pause_writing = lambda: paused.append("pause")  # type: ignore[method-assign]
    app.resume_writing = lambda: paused.append("resume")  # type: ignore[method-assign]
    layer.pause_writing()
    layer.resume_writing()
    assert paused == ["pause", "resume"]
    layer.pause_reading()
    assert not wire.reading
    layer.resume_reading()
    assert wire.reading
    assert not layer.can_write_eof()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.binary(min_size=1, max_size=40000), min_size=1, max_size=6),
       sizes=st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=8))
def test_twins_agree_at_every_chunking(server_context, messages, sizes):
    """Ciphertext cut anywhere (inside a record header, a record, across records) gives the same
    plaintext, in both twins, as the client sent; and both answer it decryptably."""
    if _speedups.TLSLayerC is None:
        pytest.fail("csrc/tlslayer.pyx is not built")
    seen = []
    for twin in (_speedups.TLSLayerC, _speedups.TLSLayerPy):
        layer, app, wire, client = connect(twin, server_context, sizes=sizes)
        feed(layer, b"".join(client.send(m) for m in messages), sizes)
        for m in messages:
            layer.write(m)
        client.receive(wire.take())
        seen.append((bytes(app.received), bytes(client.plain)))
    expected = b"".join(messages)
    assert seen[0] == seen[1] == (expected, expected)

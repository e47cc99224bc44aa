"""Ticket keys on real OpenSSL handshakes over loopback, with the keys' clock in the test's hand:
which epochs open a ticket, which renew it, and that another seed never does."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from fastgw.server.tickets import TicketKeys
from fastgw.server.tls import server_context
from tests.e2e.test_tls import make_certificate


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A TLS server on a thread whose context uses ``keys``."""

    def __init__(self, cert: tuple[str, str], keys: TicketKeys | None) -> None:
        self.context = server_context("1.2", ["http/1.1"])
        self.context.load_cert_chain(*cert)
        if keys is not None:
            keys.install(self.context)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
                    tls.sendall(b"!")
            except (OSError, ssl.SSLError):
                pass


def client(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


CLIENTS = {version: client(version) for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)}


def resume(port: int, version: ssl.TLSVersion, session=None) -> tuple[bool, ssl.SSLSession]:
    """A session's client context must be the one it came from: one per version."""
    with CLIENTS[version].wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), session=session) as tls:
        tls.sendall(b"?")
        assert tls.recv(1) == b"!"
        return tls.session_reused, tls.session


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tickets"), "t", ["t.test"])[:2]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_ticket_opens_in_its_epoch_the_next_and_the_one_before_only(cert, version):
    clock = Clock()
    issuer = TicketKeys(b"k" * 32, rotate=60, clock=clock)
    reader = TicketKeys(b"k" * 32, rotate=60, clock=clock)
    a, b = Server(cert, issuer), Server(cert, reader)
    _, ticket = resume(a.port, version)
    assert resume(b.port, version, ticket)[0]  # same seed, another process's keys: opens
    clock.now += 60  # next epoch: the previous key still opens
    assert resume(b.port, version, ticket)[0]
    clock.now += 60  # two epochs on: refused, a full handshake instead
    assert not resume(b.port, version, ticket)[0]
    clock.now -= 180  # a node whose clock is one epoch behind the issuer's opens it too
    assert resume(b.port, version, ticket)[0]


def test_another_seed_or_default_keys_never_open_a_ticket(cert):
    version = ssl.TLSVersion.TLSv1_3
    ours = Server(cert, TicketKeys(b"a" * 32, rotate=3600))
    theirs = Server(cert, TicketKeys(b"b" * 32, rotate=3600))
    default = Server(cert, None)
    _, ticket = resume(ours.port, version)
    assert not resume(theirs.port, version, ticket)[0]
    assert not resume(default.port, version, ticket)[0]
    assert resume(ours.port, version, ticket)[0]


def test_a_short_seed_is_refused():
    with pytest.raises(ValueError):
        TicketKeys(b"short", rotate=60)


def test_the_context_keeps_its_keys_alive_when_everyone_else_drops_them(cert):
    """OpenSSL holds only a pointer to the callback: freeing it under a live context crashed a
    test run. Nothing but the context refers to these keys here."""
    import gc

    server = Server(cert, TicketKeys(b"g" * 32, rotate=3600))
    gc.collect()
    litter = [bytearray(256) for _ in range(20000)]  # reuse the freed memory, if it was freed
    version = ssl.TLSVersion.TLSv1_3
    for _ in range(5):
        _, ticket = resume(server.port, version)
        assert resume(server.port, version, ticket)[0]
    del litter

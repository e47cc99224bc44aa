"""TLS termination: the certificate is picked by SNI from the *current* generation.

The listener's one SSLContext never serves a certificate itself: its SNI callback moves each
new handshake onto the context of the certificate whose hosts match, taken from the
generation the worker serves at that moment. A push that brings new certificates (or the
same paths with new files: each generation loads them afresh) therefore applies to the next
handshake, while open connections keep the context they shook hands with. No restart, no
reload of the listener.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(min_version: str, alpn: list[str]) -> ssl.SSLContext:
    """A server context with modern defaults: TLS 1.2+ (or 1.3 only), the ssl module's secure
    cipher list (ECDHE + AEAD), no compression, no renegotiation."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2 suites; 1.3's are all AEAD already
    ctx.set_alpn_protocols(alpn)
    return ctx


class Certificates:
    """One generation's certificates: an SSLContext each, found by exact host or ``*.`` wildcard
    (one label, as RFC 6125 allows); the first certificate answers clients without SNI or
    with a name no certificate lists."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        self.default: ssl.SSLContext | None = None
        self.default_files = (spec["certificates"][0]["cert"], spec["certificates"][0]["key"])
        for entry in spec["certificates"]:
            ctx = server_context(spec["min_version"], spec["alpn"])
            ctx.load_cert_chain(entry["cert"], entry["key"])
            self.default = self.default or ctx
            for host in entry["hosts"]:
                table = self.wildcard if host.startswith("*.") else self.exact
                table.setdefault(host.removeprefix("*.").lower(), ctx)

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        if server_name:
            name = server_name.lower().rstrip(".")
            found = self.exact.get(name)
            if found is None and "." in name:
                found = self.wildcard.get(name.split(".", 1)[1])
            if found is not None:
                return found
        return self.default


class TLSListener:
    """The listener's context. A handshake with SNI is handed to the current generation's
    certificate by the callback; one without SNI (the callback is not called then) gets the
    listener's own certificate, which :meth:`use` replaces with each generation's default.
    OpenSSL copies a context's certificate into each connection when it is accepted, so
    replacing it never touches an open connection."""

    def __init__(self, spec: dict[str, Any], current: Callable[[], Certificates | None]) -> None:
        self.context = server_context(spec["min_version"], spec["alpn"])
        self.loaded: Certificates | None = None

        def pick(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            certificates = current()
            found = certificates.context_for(server_name) if certificates is not None else None
            if found is not None:
                sock.context = found

        self.context.sni_callback = pick

    def use(self, certificates: Certificates) -> None:
        if certificates is not self.loaded:  # files are read afresh: the same path may hold a new certificate
            self.context.load_cert_chain(*certificates.default_files)
            self.loaded = certificates

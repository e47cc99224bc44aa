"""TLS session tickets that every worker of a node can open, with keys that rotate.

OpenSSL gives each process its own random ticket key, so a client that resumes on another
worker (SO_REUSEPORT spreads its connections) pays a full handshake. Python's ``ssl`` module
has no call to set the keys, so this module installs OpenSSL's own ticket-key callback
(``SSL_CTX_set_tlsext_ticket_key_evp_cb``) through ctypes on the listener's context.

The keys are derived, never stored: key *e* is HMAC-SHA256 of the node's seed over a label
and the epoch ``e = floor(unix time / rotate)``. Every worker derives the same key for the
same epoch with no coordination; the supervisor makes the seed before it forks (or reads it
from ``key_file``, so that nodes behind one load balancer resume each other's sessions, as
nginx's ``ssl_session_ticket_key``). New tickets use the current epoch's key; tickets of the
previous epoch still open (and are renewed), so a ticket lives between ``rotate`` and twice
that; the next epoch's key also opens, for clocks a little apart across nodes.

The handshake calls back into Python once per ticket issued or presented (a few µs beside
the ~500 µs of a handshake): not a hot path, so there is no Cython twin.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import os
import ssl
import time

_NAME, _HMAC, _AES = b"fastgw ticket name", b"fastgw ticket hmac", b"fastgw ticket aes"
_DECRYPT_NOT_FOUND, _OK, _OK_RENEW = 0, 1, 2


class TicketsUnavailable(RuntimeError):
    """This Python's ssl module or OpenSSL cannot take a ticket-key callback."""


class _Param(ctypes.Structure):  # OSSL_PARAM
    _fields_ = [("key", ctypes.c_char_p), ("data_type", ctypes.c_uint), ("data", ctypes.c_void_p),
                ("data_size", ctypes.c_size_t), ("return_size", ctypes.c_size_t)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte),
                             ctypes.POINTER(ctypes.c_ubyte), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


def _loaded_library(stem: str) -> ctypes.CDLL:
    """The copy of ``stem`` the ``_ssl`` module runs on: an SSL_CTX of one copy must never
    meet the functions of another."""
    import _ssl  # noqa: F401  - maps its OpenSSL into the process

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if f"/{stem}.so" in line}
    except OSError:
        paths = set()
    if len(paths) > 1:
        raise TicketsUnavailable(f"more than one {stem} is loaded: {sorted(paths)}")
    found = paths.pop() if paths else ctypes.util.find_library(stem.removeprefix("lib"))
    if not found:
        raise TicketsUnavailable(f"{stem} not found")
    return ctypes.CDLL(found)


class _OpenSSL:
    """The few OpenSSL 3 functions the callback needs, typed once."""

    def __init__(self) -> None:
        try:
            libssl, libcrypto = _loaded_library("libssl"), _loaded_library("libcrypto")
            self.set_callback = libssl.SSL_CTX_set_tlsext_ticket_key_evp_cb
            self.get_options = libssl.SSL_CTX_get_options
            self.get_verify_mode = libssl.SSL_CTX_get_verify_mode
            self.set_timeout = libssl.SSL_CTX_set_timeout
            self.aes_256_cbc = libcrypto.EVP_aes_256_cbc
            self.encrypt_init = libcrypto.EVP_EncryptInit_ex
            self.decrypt_init = libcrypto.EVP_DecryptInit_ex
            self.mac_set_params = libcrypto.EVP_MAC_CTX_set_params
            self.rand_bytes = libcrypto.RAND_bytes
            octet, utf8 = libcrypto.OSSL_PARAM_construct_octet_string, libcrypto.OSSL_PARAM_construct_utf8_string
            end = libcrypto.OSSL_PARAM_construct_end
        except AttributeError as exc:  # OpenSSL 1.1 has no evp callback
            raise TicketsUnavailable(f"OpenSSL lacks {exc.name if hasattr(exc, 'name') else exc}") from None
        self.set_callback.argtypes = [ctypes.c_void_p, _CALLBACK]
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64
        self.get_verify_mode.argtypes = [ctypes.c_void_p]
        self.set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        self.aes_256_cbc.restype = ctypes.c_void_p
        for init in (self.encrypt_init, self.decrypt_init):
            init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                             ctypes.POINTER(ctypes.c_ubyte)]
        self.mac_set_params.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Param)]
        self.rand_bytes.argtypes = [ctypes.POINTER(ctypes.c_ubyte), ctypes.c_int]
        octet.argtypes = utf8.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        octet.restype = utf8.restype = end.restype = _Param
        self.octet, self.utf8, self.end = octet, utf8, end
        self.cipher = self.aes_256_cbc()

    def ctx_of(self, context: ssl.SSLContext) -> int:
        """The ``SSL_CTX *`` behind ``context``: CPython's context object holds it right after
        the object header. Checked against two values the ssl module reads from it, so a
        different layout is refused instead of written through."""
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not pointer or self.get_options(pointer) != context.options \
                or self.get_verify_mode(pointer) != int(context.verify_mode):
            raise TicketsUnavailable("cannot find the SSL_CTX of this Python's SSLContext")
        return pointer


class _Key:
    """One epoch's ticket key, with the OpenSSL parameters that carry its HMAC half."""

    __slots__ = ("name", "aes", "hmac", "_digest", "params")

    def __init__(self, seed: bytes, epoch: int, openssl: _OpenSSL) -> None:
        label = epoch.to_bytes(8, "big", signed=True)
        self.name = hmac.digest(seed, _NAME + label, hashlib.sha256)[:16]
        self.aes = hmac.digest(seed, _AES + label, hashlib.sha256)
        self.hmac = ctypes.create_string_buffer(hmac.digest(seed, _HMAC + label, hashlib.sha256), 32)
        self._digest = ctypes.create_string_buffer(b"SHA256")
        self.params = (_Param * 3)(openssl.octet(b"key", self.hmac, 32),
                                   openssl.utf8(b"digest", self._digest, 0), openssl.end())


class TicketKeys:
    """The keys of a node: derived from ``seed`` per ``rotate``-second epoch."""

    def __init__(self, seed: bytes, rotate: float, clock=time.time) -> None:
        if len(seed) < 32:
            raise ValueError("a ticket seed needs at least 32 bytes")
        self.seed, self.rotate, self._clock = seed, rotate, clock
        self._keys: dict[int, _Key] = {}
        self._openssl: _OpenSSL | None = None
        self._callback = _CALLBACK(self._on_ticket)  # kept alive as long as the context uses it

    def install(self, context: ssl.SSLContext) -> None:
        """Make ``context`` (the listener's: OpenSSL keys tickets on the context a handshake
        began on, whatever the SNI callback switches to) issue and open tickets with these keys."""
        openssl = self._openssl = self._openssl or _OpenSSL()
        pointer = openssl.ctx_of(context)
        openssl.set_timeout(pointer, int(self.rotate))  # the lifetime hint clients are given
        if openssl.set_callback(pointer, self._callback) != 1:
            raise TicketsUnavailable("OpenSSL refused the ticket-key callback")
        # OpenSSL holds a bare pointer to the callback's thunk: the context keeps these keys
        # (and so the thunk) alive for as long as it can call them, whoever else drops them.
        context.fastgw_ticket_keys = self

    def epoch(self) -> int:
        return int(self._clock() // self.rotate)

    def _key(self, epoch: int) -> _Key:
        key = self._keys.get(epoch)
        if key is None:
            assert self._openssl is not None
            if len(self._keys) > 8:  # old epochs are never asked for again
                self._keys = {e: k for e, k in self._keys.items() if e >= epoch - 1}
            key = self._keys[epoch] = _Key(self.seed, epoch, self._openssl)
        return key

    def _on_ticket(self, _ssl, key_name, iv, cipher_ctx, mac_ctx, encrypt) -> int:
        """OpenSSL's callback: fill in the key for a new ticket, or find the one a ticket names."""
        try:
            openssl = self._openssl
            now = self.epoch()
            if encrypt:
                key = self._key(now)
                ctypes.memmove(key_name, key.name, 16)
                if openssl.rand_bytes(iv, 16) != 1 \
                        or openssl.encrypt_init(cipher_ctx, openssl.cipher, None, key.aes, iv) != 1:
                    return -1
                return _OK if openssl.mac_set_params(mac_ctx, key.params) == 1 else -1
            name = ctypes.string_at(key_name, 16)
            for epoch in (now, now - 1, now + 1):
                key = self._key(epoch)
                if hmac.compare_digest(key.name, name):
                    if openssl.decrypt_init(cipher_ctx, openssl.cipher, None, key.aes, iv) != 1 \
                            or openssl.mac_set_params(mac_ctx, key.params) != 1:
                        return -1
                    return _OK if epoch == now else _OK_RENEW
            return _DECRYPT_NOT_FOUND  # an older key, or another node's: a full handshake
        except Exception:  # never let an exception unwind through OpenSSL
            return _DECRYPT_NOT_FOUND if not encrypt else -1


def read_seed(path: str) -> bytes:
    """The seed in ``key_file``: its raw bytes (e.g. ``openssl rand 80 > FILE``), at least 32."""
    with open(path, "rb") as handle:
        seed = handle.read(4096)
    if len(seed) < 32:
        raise ValueError(f"{path} holds {len(seed)} bytes; a ticket key file needs at least 32 random bytes")
    return seed


def node_seed() -> bytes:
    """A fresh random seed: one per supervisor, inherited by every worker it forks."""
    return os.urandom(32)

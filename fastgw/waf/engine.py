"""libmodsecurity through ctypes: the pure twin of csrc/modsec.pyx (the same library, the
same calls), used when the Cython binding is not built or FASTGW_PURE=1.

``WafRules(text)`` compiles SecLang (Includes resolved by the engine); ``rules.transaction()``
gives one request's :class:`Transaction`, whose ``process_*`` calls return the intervention
status (403...) or 0, and whose ``matches`` collects the engine's message for every rule
that matched (the log callback, plus the disruptive rule's intervention log).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


class _Intervention(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("pause", ctypes.c_int), ("url", ctypes.c_void_p),
                ("log", ctypes.c_void_p), ("disruptive", ctypes.c_int)]


_LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_lib: Any = None
_libc: Any = None
_engine: Any = None
_callback: Any = None
_live: dict[int, list[str]] = {}
"""Transaction key -> its matches list: the log callback's data pointer is this key."""


def _library() -> Any:
    global _lib, _libc, _engine, _callback
    if _lib is None:
        name = ctypes.util.find_library("modsecurity")
        if name is None:
            raise OSError("libmodsecurity is not installed (Debian: libmodsecurity3)")
        lib = ctypes.CDLL(name)
        lib.msc_init.restype = ctypes.c_void_p
        lib.msc_set_connector_info.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.msc_set_log_cb.argtypes = [ctypes.c_void_p, _LOG_CB]
        lib.msc_create_rules_set.restype = ctypes.c_void_p
        lib.msc_rules_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.msc_rules_cleanup.argtypes = [ctypes.c_void_p]
        lib.msc_new_transaction.restype = ctypes.c_void_p
        lib.msc_new_transaction.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.msc_process_connection.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                               ctypes.c_int]
        lib.msc_process_uri.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.msc_add_n_request_header.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                                 ctypes.c_char_p, ctypes.c_size_t]
        lib.msc_process_request_headers.argtypes = [ctypes.c_void_p]
        lib.msc_append_request_body.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.msc_process_request_body.argtypes = [ctypes.c_void_p]
        lib.msc_intervention.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Intervention)]
        lib.msc_process_logging.argtypes = [ctypes.c_void_p]
        lib.msc_transaction_cleanup.argtypes = [ctypes.c_void_p]
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.free.argtypes = [ctypes.c_void_p]

        def on_log(data: int | None, message: int | None) -> None:
            matches = _live.get(data or 0)
            if matches is not None and message:
                matches.append(ctypes.string_at(message).decode("utf-8", "replace"))

        _callback = _LOG_CB(on_log)  # kept alive for as long as the engine
        _engine = lib.msc_init()
        lib.msc_set_connector_info(_engine, b"fastgw")
        lib.msc_set_log_cb(_engine, _callback)
        _lib, _libc = lib, libc
    return _lib


class WafRules:
    def __init__(self, text: str) -> None:
        lib = _library()
        self._rules = lib.msc_create_rules_set()
        error = ctypes.c_void_p()
        if lib.msc_rules_add(self._rules, text.encode(), ctypes.byref(error)) < 0:
            message = ctypes.string_at(error.value).decode("utf-8", "replace") if error.value else "the rules do not load"
            if error.value:
                _libc.free(error)
            raise ValueError(message.strip())

    def __del__(self) -> None:
        if _lib is not None and getattr(self, "_rules", None):
            _lib.msc_rules_cleanup(self._rules)

    def transaction(self) -> Transaction:
        return Transaction(self)


class Transaction:
    def __init__(self, rules: WafRules) -> None:
        self._rules = rules  # the rule set outlives its transactions
        self.matches: list[str] = []
        self._key = id(self.matches)
        _live[self._key] = self.matches
        self._t = _lib.msc_new_transaction(_engine, rules._rules, ctypes.c_void_p(self._key))

    def __del__(self) -> None:
        if getattr(self, "_t", None):
            _lib.msc_transaction_cleanup(self._t)
            _live.pop(self._key, None)

    def _intervention(self) -> int:
        it = _Intervention(200, 0, None, None, 0)
        _lib.msc_intervention(self._t, ctypes.byref(it))
        if it.url:
            _libc.free(it.url)
        if it.log:
            self.matches.append(ctypes.string_at(it.log).decode("utf-8", "replace"))
            _libc.free(it.log)
        return it.status if it.disruptive else 0

    def process_connection(self, client: bytes, client_port: int, server: bytes, server_port: int) -> int:
        _lib.msc_process_connection(self._t, client, client_port, server, server_port)
        return self._intervention()

    def process_uri(self, uri: bytes, method: bytes, version: bytes) -> int:
        _lib.msc_process_uri(self._t, uri, method, version)
        return self._intervention()

    def process_request_headers(self, headers: list[tuple[bytes, bytes]]) -> int:
        for name, value in headers:
            _lib.msc_add_n_request_header(self._t, name, len(name), value, len(value))
        _lib.msc_process_request_headers(self._t)
        return self._intervention()

    def process_request_body(self, body: bytes) -> int:
        if body:
            _lib.msc_append_request_body(self._t, bytes(body), len(body))
        _lib.msc_process_request_body(self._t)
        return self._intervention()

    def finish(self) -> None:
        _lib.msc_process_logging(self._t)

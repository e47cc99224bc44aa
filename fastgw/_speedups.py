"""The one place that chooses between the Cython hot paths and their pure-Python twins.

Set FASTGW_PURE=1 to force the pure-Python versions (tests run both). Each name is
exported three ways: ``X`` (the one in use), ``XPy`` and, when built, ``XC``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from fastgw import compress, jsonscan, matcher, sse, tokens
from fastgw.http import parser
from fastgw.limits import slots
from fastgw.server import tlslayer
from fastgw.waf import engine as waf_engine

PURE = os.environ.get("FASTGW_PURE", "") == "1"
__all__ = ["COMPILED", "PURE"]  # and X, XPy, XC for every name _twins exports


def _twins(pure: ModuleType, compiled: str, *names: str) -> bool:
    """Export ``names`` of ``pure`` and of ``fastgw._c.<compiled>`` (when built) as described
    above; whether the compiled twin is built."""
    try:
        built: ModuleType | None = importlib.import_module(f"fastgw._c.{compiled}")
    except ImportError:  # not built: the pure twin serves
        built = None
    exported = globals()
    for name in names:
        __all__.extend((name, name + "Py", name + "C"))
        exported[name + "Py"] = getattr(pure, name)
        exported[name + "C"] = getattr(built, name) if built is not None else None
        exported[name] = exported[name + "C"] if built is not None and not PURE else exported[name + "Py"]
    return built is not None


COMPILED = _twins(parser, "http_parser", "RequestParser", "ResponseParser", "serialize_head") and not PURE
"""The HTTP parser runs compiled (the bench reports it with its figures)."""
_twins(sse, "sse", "SSEParser", "serialize_event", "relay_bytes", "ends_stream")
_twins(tokens, "tokens", "TokenCounter", "count_tokens")
_twins(matcher, "matcher", "Matcher")
_twins(jsonscan, "jsonscan", "scan_chunk", "usage_state", "usage_events", "model_span")
_twins(compress, "compress", "Compressor", "negotiate")
_twins(waf_engine, "modsec", "WafRules")
_twins(slots, "slots", "SlotTable")
_twins(tlslayer, "tlslayer", "TLSLayer")

"""The top-level ``log`` key: where the access log goes, and the optional usage stream.

``log``
    ``{access: off, usage_stream: null, usage_maxlen: 100000}`` (the defaults):

    - ``access``: ``stdout``, ``stderr``, ``off`` (or ``false``/``null``) or a file path
      (opened ``O_APPEND`` by each worker; relative paths are resolved against the
      current directory at load, and the directory must exist). Off by default: a
      blocked stdout pipe would stall the workers' event loops.
    - ``usage_stream``: a Redis stream key (e.g. ``fastgw:usage``) that receives one
      record per AI request for billing; needs the top-level ``redis``.
    - ``usage_maxlen``: approximate cap (``XADD MAXLEN ~``) on that stream's length.
    - ``spool``: ``{dir: fastgw-spool, max_bytes: 256MiB}``: where each worker keeps the
      usage records Redis could not take (one append-only file per worker slot, replayed
      into the stream when Redis answers again, also by the next start). ``dir`` is
      resolved against the current directory at load; its parent must exist. Records
      past ``max_bytes`` per worker are dropped, counted and logged.

Normalised: ``{access: "stdout" | "stderr" | None | absolute path, usage_stream: str | None,
usage_maxlen: int, spool: {dir: absolute path, max_bytes: int}}``.
"""

from __future__ import annotations

import os
from typing import Any

from fastgw.config.fields import Issues, integer, mapping, size, text

LOG_KEYS = ("access", "usage_stream", "usage_maxlen", "spool")
SPOOL_KEYS = ("dir", "max_bytes")
DEFAULT_USAGE_MAXLEN = 100_000
DEFAULT_SPOOL_DIR = "fastgw-spool"
DEFAULT_SPOOL_BYTES = 256 * 1024 * 1024


def log_section(value: Any, redis: str | None, issues: Issues) -> dict:
    """Check the ``log`` mapping; ``redis`` is the normalised top-level Redis URL."""
    out: dict[str, Any] = {"access": None, "usage_stream": None, "usage_maxlen": DEFAULT_USAGE_MAXLEN,
                           "spool": {"dir": os.path.abspath(DEFAULT_SPOOL_DIR), "max_bytes": DEFAULT_SPOOL_BYTES}}
    if value is None:
        return out
    given = mapping(value, "log", issues, LOG_KEYS) or {}
    if "access" in given:
        out["access"] = _access(given["access"], issues)
    if given.get("usage_stream") is not None:
        out["usage_stream"] = text(given["usage_stream"], "log.usage_stream", issues)
        if redis is None:
            issues.add("log.usage_stream", "needs the top-level 'redis' URL")
    if "usage_maxlen" in given:
        out["usage_maxlen"] = integer(1)(given["usage_maxlen"], "log.usage_maxlen", issues)
    if given.get("spool") is not None:
        out["spool"] = _spool(given["spool"], out["spool"], issues)
    return out


def _spool(value: Any, default: dict, issues: Issues) -> dict:
    given = mapping(value, "log.spool", issues, SPOOL_KEYS) or {}
    out = dict(default)
    if "dir" in given:
        path = text(given["dir"], "log.spool.dir", issues)
        if path is not None:
            out["dir"] = os.path.abspath(path)
            if not os.path.isdir(os.path.dirname(out["dir"])):
                issues.add("log.spool.dir", f"directory {os.path.dirname(out['dir'])!r} does not exist")
    if "max_bytes" in given:
        max_bytes = size(given["max_bytes"], "log.spool.max_bytes", issues)
        if max_bytes is not None:
            out["max_bytes"] = max_bytes
    return out


def _access(value: Any, issues: Issues) -> str | None:
    if value in (None, False, "off"):
        return None
    if value in ("stdout", "stderr"):
        return value
    path = text(value, "log.access", issues)
    if path is None:
        return None
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        issues.add("log.access", f"directory {os.path.dirname(path)!r} does not exist")
        return None
    return path

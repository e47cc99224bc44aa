"""The ``compression`` section: top level, and overridable per route and per model.

Accepted input, and the normalised form the response writer and proxy read::

    compression:                     # off when absent (or false / null)
      algorithms: [zstd, br, gzip]   # the server's preference order (zstd, br, gzip)
      min_size: 1k                   # answers of known length below this go as they are (0: all)
      types: [application/json, text/event-stream, text/*]   # media types; "type/*" for a family
      levels: {zstd: 3, br: 4, gzip: 5}

A route's or model's ``compression:`` may be ``false`` (off there), ``true`` (the top-level
settings, or the defaults) or a mapping whose keys replace those of the top level one by
one. Normalised: ``None`` (off) or ``{algorithms, min_size, types, levels}`` complete.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.compress import CODINGS, LEVELS
from fastgw.config.fields import Issues, join, mapping, sequence, size

KEYS = ("algorithms", "min_size", "types", "levels")
DEFAULTS: dict[str, Any] = {
    "algorithms": ["zstd", "br", "gzip"],
    "min_size": 1024,
    "types": ["application/json", "text/event-stream", "text/*"],
    "levels": {"zstd": 3, "br": 4, "gzip": 5},
}
_TOKEN = r"[!#$%&'+.^_`|~0-9a-z-]+"
_MEDIA_TYPE = re.compile(rf"(\*/\*|{_TOKEN}/(\*|{_TOKEN}))\Z")  # type/subtype, type/* or */*


def compression(value: Any, path: str, issues: Issues, base: dict | None = None) -> dict | None:
    """Check and normalise one ``compression`` value; ``base`` is what a mapping overrides
    (the top-level settings for a route or model; the defaults when that is off)."""
    if value is None or value is False or value == "false":
        return None
    parent = base or DEFAULTS
    if value is True or value == "true":
        return _copy(parent)
    given = mapping(value, path, issues, KEYS)
    if given is None:
        return None
    out = _copy(parent)
    if "algorithms" in given:
        out["algorithms"] = _algorithms(given["algorithms"], join(path, "algorithms"), issues)
    if "min_size" in given:
        out["min_size"] = _min_size(given["min_size"], join(path, "min_size"), issues)
    if "types" in given:
        out["types"] = _types(given["types"], join(path, "types"), issues)
    if "levels" in given:
        out["levels"].update(_levels(given["levels"], join(path, "levels"), issues))
    return out


def _copy(spec: dict) -> dict:
    return {"algorithms": list(spec["algorithms"]), "min_size": spec["min_size"], "types": list(spec["types"]),
            "levels": dict(spec["levels"])}


def _algorithms(value: Any, path: str, issues: Issues) -> list[str]:
    items = sequence(value, path, issues)
    if items is None:
        return []
    if not items:
        issues.add(path, "at least one algorithm is required (or set compression: false)")
    out: list[str] = []
    for i, item in enumerate(items):
        if item not in CODINGS:
            issues.add(f"{path}[{i}]", f"expected one of {', '.join(CODINGS)}; found {issues.describe(item)}")
        elif item in out:
            issues.add(f"{path}[{i}]", f"{item} is listed twice")
        else:
            out.append(item)
    return out


def _min_size(value: Any, path: str, issues: Issues) -> int:
    if value == 0 or value == "0":
        return 0
    found = size(value, path, issues)
    return found if found is not None else 0


def _types(value: Any, path: str, issues: Issues) -> list[str]:
    items = sequence(value, path, issues)
    if items is None:
        return []
    if not items:
        issues.add(path, "at least one media type is required (or set compression: false)")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not _MEDIA_TYPE.match(item.strip().lower()):
            issues.add(f"{path}[{i}]", f"expected a media type such as application/json or text/*; "
                                       f"found {issues.describe(item)}")
        else:
            out.append(item.strip().lower())
    return out


def _levels(value: Any, path: str, issues: Issues) -> dict[str, int]:
    given = mapping(value, path, issues, CODINGS)
    if given is None:
        return {}
    out = {}
    for coding, level in given.items():
        if coding not in LEVELS:
            continue  # reported by mapping()
        low, high = LEVELS[coding]
        if isinstance(level, str) and level.isascii() and level.isdigit():
            level = int(level)
        if type(level) is not int or not low <= level <= high:
            issues.add(f"{path}.{coding}", f"expected an integer between {low} and {high}; found {issues.describe(level)}")
        else:
            out[coding] = level
    return out

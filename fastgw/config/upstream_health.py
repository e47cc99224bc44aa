"""Health, outlier ejection, slow start and zones of a plain route's upstream, and the node's zone.

Accepted input (defaults shown; each section is off when left out)::

    zone: eu-west-1a                  # top level: this node's zone, or {name: ..., min_healthy: 0.5}
    routes:
      - upstream:
          endpoints:
            - {url: "http://10.0.0.1:8080", weight: 2, zone: eu-west-1a}
          health:                     # active checks, run once per node (by the supervisor)
            path: /healthz
            expect: 200-399           # a status, a range "200-299", or a list of either
            interval: 5s
            timeout: 1s
            healthy_threshold: 2      # passes in a row that bring an unhealthy endpoint back
            unhealthy_threshold: 3    # failures in a row that take it out
          outlier:                    # passive ejection, from the answers requests get
            consecutive_5xx: 5        # 0: not counted
            consecutive_connect_failures: 3
            base_ejection: 30s        # doubled for each ejection in a row
            max_ejection: 5m
          slow_start: 30s             # an endpoint that comes back ramps from 10 % of its weight
          zones: {min_healthy: 0.5}   # spill over when the local zone's healthy share of weight falls below
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.config.fields import Issues, duration, fields, integer, mapping, text

_HEALTH = {
    "path": (lambda value, path, issues: _check_path(value, path, issues), "/"),
    "expect": (lambda value, path, issues: _expect(value, path, issues), [[200, 399]]),
    "interval": (duration(), 5.0),
    "timeout": (duration(), 1.0),
    "healthy_threshold": (integer(1, 100), 2),
    "unhealthy_threshold": (integer(1, 100), 3),
}
_OUTLIER = {
    "consecutive_5xx": (integer(0), 5),
    "consecutive_connect_failures": (integer(0), 3),
    "base_ejection": (duration(), 30.0),
    "max_ejection": (duration(), 300.0),
}
DEFAULT_MIN_HEALTHY = 0.5
_RANGE = re.compile(r"\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?\Z")
_PATH = re.compile(r"/[!-~]*\Z")  # visible ASCII: it goes into a request line


def health(value: Any, path: str, issues: Issues) -> dict | None:
    """``upstream.health``; its ``timeout`` must be shorter than its ``interval``."""
    if value is None:
        return None
    checked = fields(value, path, issues, _HEALTH)
    if checked["interval"] and checked["timeout"] and checked["timeout"] >= checked["interval"]:
        issues.add(f"{path}.timeout", f"must be shorter than the interval ({checked['interval']:g}s)")
    return checked


def outlier(value: Any, path: str, issues: Issues) -> dict | None:
    """``upstream.outlier``; ``max_ejection`` at least ``base_ejection``."""
    if value is None:
        return None
    checked = fields(value, path, issues, _OUTLIER)
    base, top = checked["base_ejection"], checked["max_ejection"]
    if base and top and top < base:
        issues.add(f"{path}.max_ejection", f"must be at least base_ejection ({base:g}s)")
    return checked


def slow_start(value: Any, path: str, issues: Issues) -> float:
    """``upstream.slow_start``: seconds, 0 (or false) for none."""
    if value is False or value == 0:
        return 0.0
    return duration()(value, path, issues) or 0.0


def zones(value: Any, path: str, issues: Issues) -> dict:
    """``upstream.zones``: ``min_healthy`` None means the node's default (top-level ``zone``)."""
    given = mapping(value, path, issues, ("min_healthy",)) or {}
    share = _share(given["min_healthy"], f"{path}.min_healthy", issues) if "min_healthy" in given else None
    return {"min_healthy": share}


def node_zone(value: Any, issues: Issues) -> dict | None:
    """Top-level ``zone``: a name, or ``{name, min_healthy}``; None when the node has no zone."""
    if value is None:
        return None
    if isinstance(value, str):
        name = text(value, "zone", issues)
        return {"name": name, "min_healthy": DEFAULT_MIN_HEALTHY} if name else None
    given = mapping(value, "zone", issues, ("name", "min_healthy"))
    if given is None:
        return None
    if "name" not in given:
        issues.add("zone.name", "required")
        return None
    name = text(given["name"], "zone.name", issues)
    share = _share(given["min_healthy"], "zone.min_healthy", issues) if "min_healthy" in given else None
    return {"name": name, "min_healthy": DEFAULT_MIN_HEALTHY if share is None else share}


def zone_name(value: Any, path: str, issues: Issues) -> str | None:
    """An endpoint's or a model target's ``zone``."""
    return text(value, path, issues)


def _share(value: Any, path: str, issues: Issues) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    issues.add(path, f"expected a share between 0 and 1 (e.g. 0.5), found {issues.describe(value)}")
    return None


def _check_path(value: Any, path: str, issues: Issues) -> str | None:
    if isinstance(value, str) and _PATH.match(value):
        return value
    issues.add(path, f"expected a path starting with '/' (visible ASCII, no spaces), found {issues.describe(value)}")
    return None


def _expect(value: Any, path: str, issues: Issues) -> list[list[int]] | None:
    """Status codes as ``[[low, high], ...]`` from ``200``, ``"200-299"`` or a list of those."""
    items = value if isinstance(value, list) else [value]
    if not items:
        issues.add(path, "list at least one status or range")
        return None
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        low = high = None
        if type(item) is int and 100 <= item <= 599:
            low = high = item
        elif isinstance(item, str) and (m := _RANGE.match(item)):
            low, high = int(m[1]), int(m[2] or m[1])
        if low is None or high < low:
            issues.add(where, f"expected a status (200) or a range ('200-399'), found {issues.describe(item)}")
            continue
        out.append([low, high])
    return out or None

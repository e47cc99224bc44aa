"""The ``routes`` section: plain HTTP routes, each ``match`` -> ``upstream``.

Accepted input, and the normalised form the router and proxy read::

    routes:
      - name: api                    # default "route-<index>"
        match:                       # every listed condition must hold; default: everything
          host: "*.example.com"      # exact or "*."-wildcard (subdomains, not the apex); any case
          path: /api                 # a string is a prefix; or {exact: ...} | {prefix: ...} | {regex: ...}
          methods: [GET, POST]
          headers: {x-canary: "1"}   # exact value match; names are case-insensitive
        upstream:                    # or just "http://10.0.0.1:8080"
          endpoints: ["http://10.0.0.1:8080", {url: "http://10.0.0.2:8080", weight: 2, lane: canary}]
          balance: round_robin       # or least_request
          host_header: preserve      # or upstream (the endpoint's host:port), or a literal Host value
          strip_prefix: /api         # removed from the start of the path before forwarding
          timeouts: {connect: 2s, first_byte: 30s, idle: 60s, tunnel_idle: 5m}
          pool: {max_idle: 1024, idle_timeout: 60s}
          health: {path: /healthz}   # active checks; also outlier, slow_start, zones and
                                     # endpoints' zone (fastgw.config.upstream_health)
        compression: {min_size: 4k}  # or false; overrides the top-level section (fastgw.config.compression)
        websocket: true              # tunnel "Upgrade: websocket" after a 101 (other upgrades never are)

``match.path`` becomes ``{"type": "exact"|"prefix"|"regex", "value": str}``; regexes are
checked to compile as the router compiles them (on bytes, ``search`` anchored as written).
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.config.compression import compression
from fastgw.config.fields import (
    Issues,
    boolean,
    duration,
    fields,
    integer,
    mapping,
    one_of,
    sequence,
    text,
    unique_names,
)
from fastgw.config.filters import filters
from fastgw.config.lanes import lane_tag
from fastgw.config.net import endpoint, valid_host
from fastgw.config.overload import priority
from fastgw.config.prompts import transform
from fastgw.config.upstream_health import health, outlier, slow_start, zone_name, zones
from fastgw.config.waf import waf

_ROUTE_KEYS = ("name", "match", "upstream", "transform", "waf", "filters", "compression", "websocket", "priority")
_MATCH_KEYS = ("host", "path", "methods", "headers")
_PATH_TYPES = ("exact", "prefix", "regex")
_UPSTREAM_KEYS = ("endpoints", "balance", "host_header", "strip_prefix", "timeouts", "pool", "health", "outlier",
                  "slow_start", "zones")
_TIMEOUTS = {
    "connect": (duration(), 2.0),
    "first_byte": (duration(), 30.0),
    "idle": (duration(), 60.0),
    "tunnel_idle": (duration(), 300.0),  # a websocket with no traffic either way is closed
}
# An idle upstream connection costs one fd; a cap below the client concurrency makes every
# request beyond it open a new connection (measured: 256 clients through one worker ran at
# half the rate with 64 than with 1024).
_POOL = {"max_idle": (integer(0), 1024), "idle_timeout": (duration(), 60.0)}
_BALANCE = one_of("round_robin", "least_request")
_WEIGHT = integer(1)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token: method and header names
_HOST_VALUE = re.compile(r"[!-~]+\Z")  # visible ASCII: a literal Host header can't smuggle CR/LF


def routes(value: Any, issues: Issues, compressing: dict | None = None,
           lane_names: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """Check and normalise the ``routes`` list; names default to ``route-<index>``.
    ``compressing``: the top-level compression settings, which a route's own override;
    ``lane_names``: the configured lanes an endpoint's ``lane`` may name."""
    out, names = [], []
    for i, item in enumerate(sequence(value, "routes", issues) or []):
        path = f"routes[{i}]"
        given = mapping(item, path, issues, _ROUTE_KEYS)
        if given is None:
            continue
        name = text(given["name"], f"{path}.name", issues) if "name" in given else f"route-{i}"
        match = _match(given.get("match", {}), f"{path}.match", issues)
        if "upstream" in given:
            upstream = _upstream(given["upstream"], f"{path}.upstream", issues, lane_names)
        else:
            issues.add(f"{path}.upstream", "required")
            upstream = None
        out.append({"name": name, "match": match, "upstream": upstream,
                    "transform": transform(given["transform"], f"{path}.transform", issues) if "transform" in given else None,
                    "waf": waf(given["waf"], f"{path}.waf", issues) if given.get("waf") is not None else None,
                    "filters": filters(given.get("filters", []), f"{path}.filters", issues),
                    "compression": compression(given["compression"], f"{path}.compression", issues, compressing)
                    if "compression" in given else compressing,
                    "websocket": boolean(given["websocket"], f"{path}.websocket", issues)
                    if "websocket" in given else True,
                    "priority": priority(given["priority"], f"{path}.priority", issues) if "priority" in given else None})
        names.append((i, name))
    unique_names("routes", names, issues)
    _one_check_per_address(out, issues)
    return out


def _one_check_per_address(out: list[dict], issues: Issues) -> None:
    """The node checks an endpoint address once (its health is the host's, for every route):
    two routes may not ask for different checks of one address."""
    checks: dict[str, tuple[int, dict]] = {}
    for i, route in enumerate(out):
        upstream = route["upstream"]
        if not upstream or upstream["health"] is None:
            continue
        for given in upstream["endpoints"]:
            if given is None:
                continue
            first = checks.setdefault(given["url"], (i, upstream["health"]))
            if first[1] != upstream["health"]:
                issues.add(f"routes[{i}].upstream.health",
                           f"{given['url']} is already checked differently by routes[{first[0]}] "
                           "(one active check per endpoint address)")


def _match(value: Any, path: str, issues: Issues) -> dict:
    given = mapping(value, path, issues, _MATCH_KEYS) or {}
    return {
        "host": _host(given.get("host"), f"{path}.host", issues),
        "path": _path(given["path"], f"{path}.path", issues)
        if "path" in given
        else {"type": "prefix", "value": "/"},
        "methods": _methods(given.get("methods"), f"{path}.methods", issues),
        "headers": _headers(given.get("headers"), f"{path}.headers", issues),
    }


def _host(value: Any, path: str, issues: Issues) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        host = value.strip().lower().rstrip(".")
        if host == "*":
            return None
        if valid_host(host[2:] if host.startswith("*.") else host):
            return host
    issues.add(
        path,
        f"expected a host like 'api.example.com' or '*.example.com' (no port), found {issues.describe(value)}",
    )
    return None


def _path(value: Any, path: str, issues: Issues) -> dict | None:
    if isinstance(value, str):
        kind, pattern, where = "prefix", value, path
    else:
        given = mapping(value, path, issues, _PATH_TYPES)
        if given is None:
            return None
        if len(given) != 1:
            issues.add(path, "expected exactly one of exact, prefix, regex")
            return None
        ((kind, pattern),) = given.items()
        where = f"{path}.{kind}"
        if kind not in _PATH_TYPES:  # already reported as an unknown key
            return None
    if not isinstance(pattern, str):
        issues.add(where, f"expected a string, found {issues.describe(pattern)}")
        return None
    if kind == "regex":
        try:
            re.compile(pattern.encode())
        except re.error as exc:
            issues.add(where, f"invalid regex: {exc}")
            return None
    elif not pattern.startswith("/"):
        issues.add(where, f"must start with '/', found {issues.describe(pattern)}")
        return None
    return {"type": kind, "value": pattern}


def _methods(value: Any, path: str, issues: Issues) -> list[str] | None:
    if value is None:
        return None
    items = sequence(value, path, issues)
    if items == []:
        issues.add(path, "list at least one method, or leave methods out to allow any")
    out = []
    for i, method in enumerate(items or []):
        if isinstance(method, str) and _TOKEN.match(method):
            if method.upper() not in out:
                out.append(method.upper())
        else:
            issues.add(f"{path}[{i}]", f"expected an HTTP method like GET, found {issues.describe(method)}")
    return out


def _headers(value: Any, path: str, issues: Issues) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping of header name to value, found {issues.describe(value)}")
        return {}
    out: dict[str, str] = {}
    for name, wanted in value.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not _TOKEN.match(name):
            issues.add(where, "invalid header name")
        elif name.lower() in out:
            issues.add(where, "header listed twice (names are case-insensitive)")
        elif isinstance(wanted, (str, int)) and not isinstance(wanted, bool):
            out[name.lower()] = str(wanted)
        else:
            issues.add(where, f"expected a string value, found {issues.describe(wanted)}")
    return out


def _upstream(value: Any, path: str, issues: Issues, lane_names: frozenset[str] | set[str]) -> dict | None:
    if isinstance(value, str):
        given: dict = {}
        endpoints = [_endpoint(value, path, issues, lane_names)]  # errors of a bare URL belong to the upstream itself
    else:
        given = mapping(value, path, issues, _UPSTREAM_KEYS)
        if given is None:
            return None
        endpoints = _endpoints(given, f"{path}.endpoints", issues, lane_names)
    strip = given.get("strip_prefix")
    if strip is not None and not (isinstance(strip, str) and strip.startswith("/")):
        issues.add(
            f"{path}.strip_prefix", f"expected a path starting with '/', found {issues.describe(strip)}"
        )
    return {
        "endpoints": endpoints,
        "balance": _BALANCE(given["balance"], f"{path}.balance", issues)
        if "balance" in given
        else "round_robin",
        "host_header": _host_header(given.get("host_header", "preserve"), f"{path}.host_header", issues),
        "strip_prefix": strip,
        "timeouts": fields(given.get("timeouts", {}), f"{path}.timeouts", issues, _TIMEOUTS),
        "pool": fields(given.get("pool", {}), f"{path}.pool", issues, _POOL),
        "health": health(given.get("health"), f"{path}.health", issues),
        "outlier": outlier(given.get("outlier"), f"{path}.outlier", issues),
        "slow_start": slow_start(given["slow_start"], f"{path}.slow_start", issues) if "slow_start" in given else 0.0,
        "zones": zones(given.get("zones", {}), f"{path}.zones", issues),
    }


def _endpoints(given: dict, path: str, issues: Issues, lane_names: frozenset[str] | set[str]) -> list[dict | None]:
    if "endpoints" not in given:
        issues.add(path, "required")
        return []
    items = sequence(given["endpoints"], path, issues)
    if items == []:
        issues.add(path, "at least one endpoint is required")
    return [_endpoint(item, f"{path}[{i}]", issues, lane_names) for i, item in enumerate(items or [])]


def _endpoint(value: Any, path: str, issues: Issues, lane_names: frozenset[str] | set[str]) -> dict | None:
    if isinstance(value, dict):
        given = mapping(value, path, issues, ("url", "weight", "lane", "zone"))
        if "url" not in given:
            issues.add(f"{path}.url", "required")
            return None
        found = endpoint(given["url"], f"{path}.url", issues)
        weight = _WEIGHT(given["weight"], f"{path}.weight", issues) if "weight" in given else 1
        lane = lane_tag(given, f"{path}.lane", lane_names, issues)
        zone = zone_name(given["zone"], f"{path}.zone", issues) if "zone" in given else None
    else:
        found = endpoint(value, path, issues)
        weight, lane, zone = 1, None, None
    if found is not None:
        found["weight"] = weight
        found["zone"] = zone
        if lane is not None:  # untagged: the base lane's
            found["lane"] = lane
    return found


def _host_header(value: Any, path: str, issues: Issues) -> str | None:
    value = text(value, path, issues)
    if value is not None and not _HOST_VALUE.match(value):
        issues.add(path, "a literal Host value must be visible ASCII without spaces")
        return None
    return value

"""The ``limits`` section: rate limits (tokens and requests) and per-consumer quotas.

Every rule whose ``match`` fits a request applies, not only the first; a request is refused
if any of them is exhausted. A rule is either a rate limit or a quota, never both, because
they count different things (a moving rate per key, a running total per consumer) and fail
differently when Redis is down.

Rate limit::

    {name, match: {consumers, models, routes, headers, cidrs}, key: [consumer, model, ip, header:<n>, query:<n>],
     tokens: {per_second|per_minute|per_hour|per_day: N}, requests: {...},
     on_redis_down: local | open | closed, nodes: 1}

Concurrency limit (at most N requests in flight per key; a stream counts until it ends)::

    {name, match: {...}, key: [...], concurrency: N, lease: seconds (10),
     queue: {size: N, timeout: duration (2s)}, on_redis_down: local | open | closed, nodes: 1}

Without ``queue`` a request over the limit is refused at once (429 ``concurrency_limited``);
with it, up to ``size`` requests per key wait, first come first served, up to ``timeout``
for a slot (then 429 with Retry-After); one more than ``size`` is refused at once.

Quota::

    {name, match: {...}, quota: {tokens: N} | {cost: USD, prices: {"gpt-4o*": {input, output}}},
     on_redis_down: open | closed}

Prices are USD per million tokens; a model is priced by the first pattern (``*`` wildcards)
that matches it, in the order written. ``nodes`` is how many gateway nodes share a limit: a
node that counts on its own (no ``redis``, or Redis down with ``local``) enforces
``limit / nodes``. A quota has no local fallback: its ledger is the one in Redis, so
``on_redis_down`` is ``open`` or ``closed`` (the default). ``match.routes`` names plain
routes (``*`` wildcards): such a rule limits those routes (the route needs no
``filters: [ratelimit]``) and no AI request. ``lease`` is how long a cluster slot outlives
a holder that stopped renewing it (a node that died); holders renew it while the request
lives.

Normalised rule: ``{name, match: {consumers, models, routes, headers, cidrs} (each null
when not given; header names lower-case; CIDRs canonical), key, tokens: {window: N},
requests: {...}, concurrency: null | N, lease: seconds, quota: null | {tokens} | {cost,
prices}, queue: null | {size, timeout}, on_redis_down, nodes}``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

from fastgw.config.fields import (
    Issues,
    duration,
    integer,
    join,
    mapping,
    one_of,
    required,
    sequence,
    text,
    text_list,
    unique_names,
)

WINDOWS = {"per_second": 1, "per_minute": 60, "per_hour": 3600, "per_day": 86400}
"""Window name -> its period in seconds."""

KEY_PARTS = ("consumer", "model", "ip")
KEY_PREFIXES = ("header:", "query:")
_RULE_KEYS = (
    "name", "match", "key", "tokens", "requests", "concurrency", "lease", "queue", "quota", "on_redis_down",
    "nodes",
)
_MATCH_KEYS = ("consumers", "models", "routes", "headers", "cidrs")
DEFAULT_LEASE = 10.0
"""Seconds a cluster concurrency slot outlives its holder's last renewal."""
DEFAULT_QUEUE_TIMEOUT = 2.0
"""Seconds a queued request waits for a concurrency slot before it is refused."""
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_POSITIVE = integer(1)


def limits(value: Any, issues: Issues) -> list[dict]:
    """Check the ``limits`` list and return its normalised rules."""
    out, names = [], []
    for i, item in enumerate(sequence(value, "limits", issues) or []):
        path = f"limits[{i}]"
        if not isinstance(item, dict):
            issues.add(path, f"expected a mapping, found {issues.describe(item)}")
            continue
        rule = _rule(item, path, issues)
        names.append((i, rule["name"]))
        out.append(rule)
    unique_names("limits", names, issues)
    return out


def _rule(given: dict, path: str, issues: Issues) -> dict:
    mapping(given, path, issues, _RULE_KEYS)
    name = required(given, "name", path, issues, text)
    if name is not None and not _NAME.match(name):
        issues.add(
            f"{path}.name", "may hold only letters, digits, '_', '.' and '-' (it is part of Redis keys)"
        )
    is_quota = "quota" in given
    rule = {
        "name": name,
        "match": _match(given.get("match", {}), f"{path}.match", issues),
        "key": _key(given["key"], f"{path}.key", issues) if "key" in given else ["consumer"],
        "tokens": _windows(given["tokens"], f"{path}.tokens", issues) if "tokens" in given else {},
        "requests": _windows(given["requests"], f"{path}.requests", issues) if "requests" in given else {},
        "concurrency": _POSITIVE(given["concurrency"], f"{path}.concurrency", issues)
        if "concurrency" in given
        else None,
        "lease": _lease(given, path, issues),
        "queue": _queue(given, path, issues),
        "quota": _quota(given["quota"], f"{path}.quota", issues) if is_quota else None,
        "on_redis_down": "closed" if is_quota else "local",
        "nodes": _POSITIVE(given["nodes"], f"{path}.nodes", issues) if "nodes" in given else 1,
    }
    if "concurrency" in given:
        for key in ("tokens", "requests", "quota"):
            if key in given:
                issues.add(
                    join(path, key),
                    "not allowed in a concurrency rule (it counts requests in flight; use a separate rule)",
                )
    elif is_quota:
        for key in ("tokens", "requests", "key", "nodes"):
            if key in given:
                issues.add(
                    join(path, key),
                    "not allowed in a quota rule (quotas count per consumer; use a separate rule)",
                )
    elif "tokens" not in given and "requests" not in given:
        issues.add(path, "a rule needs tokens, requests, concurrency or quota")
    if rule["match"]["routes"] is not None and "tokens" in given:
        issues.add(
            join(path, "tokens"),
            "a plain route has no token count (its bodies are not AI requests); limit it by requests or concurrency",
        )
    if "on_redis_down" in given:
        choices = ("open", "closed") if is_quota else ("local", "open", "closed")
        rule["on_redis_down"] = one_of(*choices)(given["on_redis_down"], f"{path}.on_redis_down", issues)
    return rule


def _match(value: Any, path: str, issues: Issues) -> dict:
    given = mapping(value, path, issues, _MATCH_KEYS) or {}
    out: dict[str, Any] = dict.fromkeys(_MATCH_KEYS)
    for key in ("consumers", "models", "routes"):
        if key in given:
            out[key] = text_list(given[key], f"{path}.{key}", issues)
    if "headers" in given:
        headers = given["headers"]
        if not isinstance(headers, dict):
            issues.add(f"{path}.headers", f"expected a mapping, found {issues.describe(headers)}")
            headers = {}
        out["headers"] = {}
        for name, expected in headers.items():
            if not _HEADER_NAME.match(str(name)):
                issues.add(f"{path}.headers.{name}", "invalid header name")
            if not isinstance(expected, str):
                issues.add(f"{path}.headers.{name}", f"expected a string, found {issues.describe(expected)}")
            out["headers"][str(name).lower()] = expected
    if "cidrs" in given:
        cidrs = sequence(given["cidrs"], f"{path}.cidrs", issues) or []
        out["cidrs"] = [_cidr(c, f"{path}.cidrs[{j}]", issues) for j, c in enumerate(cidrs)]
    return out


def _lease(given: dict, path: str, issues: Issues) -> float:
    if "lease" not in given:
        return DEFAULT_LEASE
    if "concurrency" not in given:
        issues.add(f"{path}.lease", "only a concurrency rule has a lease")
    lease = _number(given["lease"], f"{path}.lease", issues, positive=True)
    return lease if lease is not None else DEFAULT_LEASE


def _queue(given: dict, path: str, issues: Issues) -> dict | None:
    if "queue" not in given:
        return None
    if "concurrency" not in given:
        issues.add(f"{path}.queue", "only a concurrency rule has a queue")
        return None
    at = f"{path}.queue"
    options = mapping(given["queue"], at, issues, ("size", "timeout")) or {}
    size = required(options, "size", at, issues, _POSITIVE)
    timeout = duration()(options["timeout"], f"{at}.timeout", issues) if "timeout" in options else None
    return {"size": size, "timeout": DEFAULT_QUEUE_TIMEOUT if timeout is None else timeout}


def _cidr(value: Any, path: str, issues: Issues) -> str | None:
    try:
        if isinstance(value, str):  # ip_network() would also take an int
            return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    issues.add(path, f"expected a CIDR such as '10.0.0.0/8' or '::1/128', found {issues.describe(value)}")
    return None


def _key(value: Any, path: str, issues: Issues) -> list[str]:
    parts = text_list(value, path, issues)
    if value == []:
        issues.add(path, "at least one key part is required")
    seen: set[str] = set()
    for j, part in enumerate(parts):
        if part is None:
            continue
        prefixed = part.startswith(KEY_PREFIXES) and len(part.partition(":")[2]) > 0
        if part not in KEY_PARTS and not prefixed:
            issues.add(
                f"{path}[{j}]",
                f"expected one of consumer, model, ip, header:<name>, query:<name>; found {part!r}",
            )
        if part in seen:
            issues.add(f"{path}[{j}]", f"duplicate key part {part!r}")
        seen.add(part)
    return [p.lower() if p and p.startswith("header:") else p for p in parts]


def _windows(value: Any, path: str, issues: Issues) -> dict[str, int]:
    given = mapping(value, path, issues, WINDOWS) or {}
    if isinstance(value, dict) and not value:
        issues.add(path, f"expected at least one of {', '.join(WINDOWS)}")
    return {w: _POSITIVE(given[w], f"{path}.{w}", issues) for w in WINDOWS if w in given}


def _quota(value: Any, path: str, issues: Issues) -> dict | None:
    given = mapping(value, path, issues, ("tokens", "cost", "prices"))
    if given is None:
        return None
    if ("tokens" in given) == ("cost" in given):
        issues.add(path, "expected exactly one of tokens, cost")
        return None
    if "tokens" in given:
        if "prices" in given:
            issues.add(f"{path}.prices", "only a cost quota has prices")
        return {"tokens": _POSITIVE(given["tokens"], f"{path}.tokens", issues)}
    return {
        "cost": _number(given["cost"], f"{path}.cost", issues, positive=True),
        "prices": required(given, "prices", path, issues, _prices),
    }


def _prices(value: Any, path: str, issues: Issues) -> dict[str, dict[str, float]] | None:
    if not isinstance(value, dict) or not value:
        issues.add(
            path,
            f"expected a non-empty mapping of model pattern -> {{input, output}}, found {issues.describe(value)}",
        )
        return None
    out = {}
    for pattern, price in value.items():
        at = f"{path}.{pattern}"
        given = mapping(price, at, issues, ("input", "output", "cached_input", "cache_write")) or {}
        entry = {part: required(given, part, at, issues, _number) for part in ("input", "output")}
        for part in ("cached_input", "cache_write"):  # prompt-cache reads and writes; default: input
            if part in given:
                entry[part] = _number(given[part], f"{at}.{part}", issues)
        out[str(pattern)] = entry
    return out


def _number(value: Any, path: str, issues: Issues, positive: bool = False) -> float | None:
    """A finite number, >= 0 (or > 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        issues.add(path, f"expected a number, found {issues.describe(value)}")
        return None
    if value < 0 or (positive and value == 0):
        issues.add(path, f"must be {'> 0' if positive else '>= 0'}, found {value}")
        return None
    return float(value)

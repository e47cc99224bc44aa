"""The ``lanes`` section: gray-release lanes, and the ``lanes_header`` they are propagated in.

Accepted input, and the normalised form workers read::

    lanes_header: x-fastgw-lane      # the default; the header each lane is propagated upstream in
    lanes:
      - name: canary                 # letters, digits, '.', '_', '-'; "base" is the untagged lane
        match:                       # every listed condition must hold (at least one is required)
          headers: {x-env: canary}   # exact value, or a list of accepted values; names any case
          cookies: {release: [beta, canary]}
          consumers: [team-a, team-b]   # configured consumer names
          weight: 10                 # percent (0 < w <= 100, up to two decimals) of sticky keys
        sticky: consumer             # weight's key: the consumer's name, or a cookie (below)
        sticky_cookie: fastgw-sticky # sticky: cookie: its name; set by the gateway when missing
        fallback: base               # the lane has no endpoint/target (or none answers): base | none
        header: x-canary-lane        # this lane's propagation header (default: lanes_header)

Lanes are tried in order and the first whose conditions all hold tags the request; none
holding means the base lane. Endpoints (``routes[].upstream.endpoints[].lane``) and model
targets (``models[].targets[].lane``) name a lane; untagged ones are the base lane's.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.config.fields import Issues, mapping, one_of, sequence, text, unique_names, unknown_name

BASE = "base"
"""The lane of every request no lane matched, served by untagged endpoints and targets."""
DEFAULT_HEADER = "x-fastgw-lane"
DEFAULT_STICKY_COOKIE = "fastgw-sticky"

_LANE_KEYS = ("name", "match", "sticky", "sticky_cookie", "fallback", "header")
_MATCH_KEYS = ("headers", "cookies", "consumers", "weight")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # a header value and a metric label as is
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token: header names
_COOKIE_NAME = _TOKEN  # RFC 6265 cookie-name is a token
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*\Z")  # RFC 6265 cookie-octet
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?\Z")  # what a parsed header value can be
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
                       "trailer", "proxy-connection", "expect", "via", "x-forwarded-for", "x-forwarded-proto",
                       "traceparent", "authorization", "cookie"})
"""Headers the gateway frames, routes or authenticates by: a lane header may not replace them."""
_STICKY = one_of("consumer", "cookie")
_FALLBACK = one_of("base", "none")


def lanes_header(value: Any, issues: Issues) -> str:
    """The top-level ``lanes_header`` (lower-cased): where a request's lane goes upstream."""
    if value is None:
        return DEFAULT_HEADER
    return _propagation_header(value, "lanes_header", issues) or DEFAULT_HEADER


def lanes(value: Any, header: str, issues: Issues) -> list[dict]:
    """Check and normalise the ``lanes`` list; consumer names are checked by :func:`check_consumers`."""
    out, names = [], []
    for i, item in enumerate(sequence(value, "lanes", issues) or []):
        path = f"lanes[{i}]"
        given = mapping(item, path, issues, _LANE_KEYS)
        if given is None:
            continue
        name = _lane_name(given.get("name"), f"{path}.name", issues) if "name" in given else None
        if "name" not in given:
            issues.add(f"{path}.name", "required")
        names.append((i, name))
        match = _match(given.get("match"), f"{path}.match", issues)
        weighted = match.get("weight") is not None
        sticky = _STICKY(given["sticky"], f"{path}.sticky", issues) if "sticky" in given else "consumer"
        if "sticky" in given and not weighted:
            issues.add(f"{path}.sticky", "sticky applies to match.weight only (which this lane does not have)")
        cookie = DEFAULT_STICKY_COOKIE
        if "sticky_cookie" in given:
            cookie = _cookie_name(given["sticky_cookie"], f"{path}.sticky_cookie", issues) or cookie
            if sticky != "cookie":
                issues.add(f"{path}.sticky_cookie", "only used with sticky: cookie")
        out.append({
            "name": name,
            "match": match,
            "sticky": sticky,
            "sticky_cookie": cookie,
            "fallback": _FALLBACK(given["fallback"], f"{path}.fallback", issues) if "fallback" in given else "base",
            "header": _propagation_header(given["header"], f"{path}.header", issues) or header
            if "header" in given else header,
        })
    unique_names("lanes", names, issues)
    return out


def check_consumers(configured: list[dict], consumers: list[str], issues: Issues) -> None:
    """``match.consumers`` must name configured consumers (a typo would silently match nobody)."""
    known = set(consumers)
    for i, lane in enumerate(configured):
        for j, name in enumerate(lane["match"].get("consumers") or ()):
            if name is not None and name not in known:
                issues.add(f"lanes[{i}].match.consumers[{j}]", unknown_name("consumer", name, known))


def lane_tag(given: dict, path: str, names: set[str], issues: Issues) -> str | None:
    """An endpoint's or target's ``lane:``, which must name a configured lane (None: base)."""
    if "lane" not in given or given["lane"] is None:
        return None
    name = text(given["lane"], path, issues)
    if name is None:
        return None
    if name == BASE:
        return None  # spelled out: the same as no tag
    if name not in names:
        issues.add(path, unknown_name("lane", name, names))
        return None
    return name


def _lane_name(value: Any, path: str, issues: Issues) -> str | None:
    name = text(value, path, issues)
    if name is None:
        return None
    if name == BASE:
        issues.add(path, "'base' is the lane of untagged endpoints and targets; choose another name")
        return None
    if not _NAME.match(name):
        issues.add(path, f"a lane name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                         f"digit; found {issues.describe(name)}")
        return None
    return name


def _match(value: Any, path: str, issues: Issues) -> dict:
    if value is None:
        issues.add(path, "required: at least one of headers, cookies, consumers, weight")
        return {"headers": {}, "cookies": {}, "consumers": None, "weight": None}
    given = mapping(value, path, issues, _MATCH_KEYS) or {}
    if isinstance(value, dict) and not any(key in given for key in _MATCH_KEYS):
        issues.add(path, "list at least one of headers, cookies, consumers, weight")
    consumers = None
    if "consumers" in given:
        items = sequence(given["consumers"], f"{path}.consumers", issues)
        if items == []:
            issues.add(f"{path}.consumers", "list at least one consumer, or leave consumers out")
        consumers = [text(c, f"{path}.consumers[{j}]", issues) for j, c in enumerate(items or [])]
    return {
        "headers": _values(given.get("headers"), f"{path}.headers", issues, _header_name, _HEADER_VALUE),
        "cookies": _values(given.get("cookies"), f"{path}.cookies", issues, _cookie_name, _COOKIE_VALUE),
        "consumers": consumers,
        "weight": _weight(given["weight"], f"{path}.weight", issues) if "weight" in given else None,
    }


def _values(value: Any, path: str, issues: Issues, check_name: Any, allowed: re.Pattern) -> dict[str, list[str]]:
    """``{name: value | [values]}`` -> ``{name: [values]}``."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        issues.add(path, f"expected a mapping of name to value (or list of values), found {issues.describe(value)}")
        return {}
    out: dict[str, list[str]] = {}
    for name, wanted in value.items():
        where = f"{path}.{name}"
        key = check_name(name, where, issues)
        if key is None:
            continue
        if key in out:
            issues.add(where, "listed twice")
            continue
        items = wanted if isinstance(wanted, list) else [wanted]
        accepted = []
        for j, item in enumerate(items):
            spot = f"{where}[{j}]" if isinstance(wanted, list) else where
            if isinstance(item, bool) or not isinstance(item, (str, int)) or not allowed.match(str(item)):
                issues.add(spot, f"expected a value that can appear in a request, found {issues.describe(item)}")
            else:
                accepted.append(str(item))
        if not items:
            issues.add(where, "list at least one value")
        out[key] = accepted
    return out


def _weight(value: Any, path: str, issues: Issues) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        issues.add(path, f"expected a percentage (a number above 0, at most 100), found {issues.describe(value)}")
        return None
    if not 0 < value <= 100:
        issues.add(path, f"must be above 0 and at most 100 (percent), found {value}")
        return None
    if round(value * 100) != value * 100:
        issues.add(path, f"at most two decimals (the draw is in hundredths of a percent), found {value}")
        return None
    return float(value)


def _header_name(value: Any, path: str, issues: Issues) -> str | None:
    if not isinstance(value, str) or not _TOKEN.match(value):
        issues.add(path, f"expected a header name, found {issues.describe(value)}")
        return None
    return value.lower()


def _propagation_header(value: Any, path: str, issues: Issues) -> str | None:
    name = _header_name(value, path, issues)
    if name in _RESERVED:
        issues.add(path, f"{name!r} is a header the gateway sets or reads itself; choose another name")
        return None
    return name


def _cookie_name(value: Any, path: str, issues: Issues) -> str | None:
    if not isinstance(value, str) or not _COOKIE_NAME.match(value):
        issues.add(path, f"expected a cookie name (an RFC 6265 token), found {issues.describe(value)}")
        return None
    return value

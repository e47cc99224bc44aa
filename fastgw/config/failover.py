"""How a model's failover rescues a request: ``models[].failover``, and the header allow-list of
``providers[].pass_headers``.

``failover`` (defaults shown)::

    failover:
      wait_retry_after: 2s   # a 429 whose Retry-After is at most this is waited out on the same
                             # target when no other key or target is left (0: never wait)
      retry_5xx: 1           # retries of a 5xx on the same target before the next one (0: none)
      retry_delay: 250ms     # the pause before such a retry, jittered to 50-150 %
      deadline: 30s          # after this long since the request arrived the gateway no longer
                             # waits (Retry-After or retry_delay): it answers with the last error

``pass_headers`` lists the client request headers forwarded to the provider as sent; the
default depends on the provider type (``DEFAULT_PASS_HEADERS``). Credentials and hop-by-hop
headers can never be listed: the gateway's own key and framing must win.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.config.fields import Issues, duration, fields, integer, sequence

FAILOVER = {
    "wait_retry_after": (duration(allow_zero=True), 2.0),
    "retry_5xx": (integer(0, 5), 1),
    "retry_delay": (duration(allow_zero=True), 0.25),
    "deadline": (duration(), 30.0),
}

_ANTHROPIC = ["anthropic-beta", "anthropic-version"]
_OPENAI = ["openai-beta"]
DEFAULT_PASS_HEADERS = {
    "anthropic": _ANTHROPIC,
    "openai": _OPENAI,
    "azure": _OPENAI,
    "openai-compatible": _OPENAI,
    "deepseek": _OPENAI,
    "qwen": _OPENAI,
    "ollama": _OPENAI,
    "gemini": [],
    "mock": _OPENAI + _ANTHROPIC,
}
"""Per provider type: the headers its SDK clients send to opt into API features."""

NEVER_PASSED = frozenset({
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie",
    "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "expect",
})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def failover(value: Any, path: str, issues: Issues) -> dict:
    """``models[].failover`` with its defaults."""
    return fields(value, path, issues, FAILOVER)


def pass_headers(value: Any, provider_type: str | None, path: str, issues: Issues) -> list[str]:
    """``providers[].pass_headers``: lower-case header names; absent means the type's default."""
    if value is None:
        return list(DEFAULT_PASS_HEADERS.get(provider_type or "", []))
    out: list[str] = []
    for i, name in enumerate(sequence(value, path, issues) or []):
        where = f"{path}[{i}]"
        if not isinstance(name, str) or not _TOKEN.match(name):
            issues.add(where, f"expected a header name, found {issues.describe(name)}")
        elif name.lower() in NEVER_PASSED:
            issues.add(where, f"{name.lower()!r} is set by the gateway (credentials and framing are never passed)")
        elif name.lower() not in out:
            out.append(name.lower())
    return out

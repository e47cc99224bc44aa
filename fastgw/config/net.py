"""Checks for network addresses and URLs written in a config.

Values are split into host and port here, once, so workers connect and bind without
parsing strings again.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from fastgw.config.fields import Issues

_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_ENDPOINT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(\[[^\]/]*\]|[^/:?#@\[\]]+)(?::(\d{1,5}))?/?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def valid_host(host: str) -> bool:
    """A DNS name, an IPv4 address, or an IPv6 address in brackets."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _HOSTNAME.match(host) is not None


def loopback(host: str) -> bool:
    """Whether ``host`` (as :func:`address` returns it) only ever reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name may resolve anywhere


def address(value: Any, path: str, issues: Issues) -> tuple[str, int] | None:
    """``host:port``, ``[v6]:port`` or ``:port`` (all IPv4 interfaces) -> ``(host, port)``."""
    if not isinstance(value, str):
        issues.add(path, f"expected 'host:port' (e.g. '127.0.0.1:8080'), found {issues.describe(value)}")
        return None
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        issues.add(path, f"missing ':port' in {issues.describe(value)}")
        return None
    if ":" in host and not host.startswith("["):
        issues.add(path, "an IPv6 address needs brackets, e.g. '[::1]:8080'")
        return None
    if host and not valid_host(host):
        issues.add(path, f"invalid host in {issues.describe(value)}")
        return None
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        issues.add(path, f"port must be an integer between 0 and 65535, found {port!r}")
        return None
    return (host.strip("[]") or "0.0.0.0", int(port))


def endpoint(value: Any, path: str, issues: Issues) -> dict | None:
    """``http(s)://host[:port]`` without a path -> ``{url, scheme, host, port}``.

    ``url`` is rewritten canonically (lower-case, explicit port) so equal endpoints
    compare equal and share one connection pool.
    """
    m = _ENDPOINT.match(value) if isinstance(value, str) else None
    if m is None:
        found = issues.describe(value)
        issues.add(
            path, f"expected 'http://host[:port]' or 'https://host[:port]' without a path, found {found}"
        )
        return None
    scheme, host, port = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if scheme not in _DEFAULT_PORTS:
        issues.add(path, f"scheme must be http or https, found {scheme!r}")
        return None
    if not valid_host(host):
        issues.add(path, f"invalid host in {issues.describe(value)}")
        return None
    number = int(port) if port else _DEFAULT_PORTS[scheme]
    if not 1 <= number <= 65535:
        issues.add(path, f"port must be between 1 and 65535, found {number}")
        return None
    return {"url": f"{scheme}://{host}:{number}", "scheme": scheme, "host": host.strip("[]"), "port": number}


def base_url(value: Any, path: str, issues: Issues) -> str | None:
    """An ``http(s)://`` URL that may carry a path (``.../v1``); trailing ``/`` dropped."""
    problem = None
    if not isinstance(value, str):
        problem = f"expected an http:// or https:// URL, found {issues.describe(value)}"
    else:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            problem = "expected an http:// or https:// URL with a host"
    if problem:
        issues.add(path, problem)
        return None
    return value.rstrip("/")


def redis_url(value: Any, path: str, issues: Issues) -> str | None:
    """A Redis URL (never echoed back: it may hold a password)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        issues.add(path, "expected a URL starting with redis://, rediss:// or unix://, or null")
        return None
    return value

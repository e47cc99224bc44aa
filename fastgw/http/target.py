"""Request-target and Host rules (RFC 9112 3.2, RFC 9110 7.2) applied to a parsed head.

Shared by both parser twins: the parsers only check that the target has no CTLs or spaces;
here the absolute form (``GET http://host/path``, which a server MUST accept) becomes the
origin form with its authority as the Host, and a Host that is not ``host[:port]`` is refused
before anything routes or forwards it.
"""

from __future__ import annotations

import re
from typing import Any

# uri-host [ ":" port ]: IP-literal, or reg-name / IPv4 (unreserved, pct-encoded, sub-delims).
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]{0,5})?")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?#]*)(.*)", re.S)
_valid_hosts: set[bytes] = set()
"""Host values already found valid: a client's every request names the same one (bounded below)."""
VALID_HOSTS_KEPT = 4096


def normalise_target(head: Any) -> str | None:
    """Rewrite an absolute-form target in place; return why the head is invalid, or None."""
    target = head.target
    if target[:1] != b"/":
        m = _ABSOLUTE.fullmatch(target)
        if m is not None:
            scheme, authority, rest = m.groups()
            if scheme.lower() not in (b"http", b"https"):
                return "unsupported scheme in the request target"
            if b"@" in authority or not authority or not _HOST.fullmatch(authority):
                return "invalid authority in the request target"
            if rest[:1] != b"/":
                rest = b"/" + rest
            _set_target(head, rest)
            _set_host(head, authority)  # RFC 9112 3.2.2: the authority replaces any Host
            return None
        if target != b"*" or head.method != b"OPTIONS":
            return "invalid request target"
    host = head.host
    if host in _valid_hosts:
        return None
    if not _HOST.fullmatch(host):
        return "invalid Host header"
    if len(_valid_hosts) < VALID_HOSTS_KEPT:
        _valid_hosts.add(host)
    return None


def _set_target(head: Any, target: bytes) -> None:
    head.target = target
    path, sep, query = target.partition(b"?")
    head.path = path
    head.query = query if sep else b""


def _set_host(head: Any, host: bytes) -> None:
    head.host = host
    headers = head.headers
    for i, (name, _) in enumerate(headers):
        if name.lower() == b"host":
            headers[i] = (name, host)
            return
    headers.append((b"Host", host))

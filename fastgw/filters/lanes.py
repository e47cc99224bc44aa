"""Gray-release lanes: tag each request with the first lane whose conditions hold.

Runs right after authentication (so ``consumers`` and consumer-sticky weights see who is
calling), from the request head alone. The tag (``s.lane``, a :class:`Lane`; None for the
base lane) is what the plain proxy and the AI handler route by, what is propagated upstream,
and the ``lane`` label of the request metrics.

A weighted lane takes ``weight`` percent of *sticky keys*, not of requests: the key is the
consumer's name (``sticky: consumer``) or the value of a cookie (``sticky: cookie``), hashed
with the lane's name, so one consumer or browser always lands in the same lane and raising
the weight only adds keys (nobody who was in leaves). A cookie-sticky lane gives a client
without the cookie a random one (``Set-Cookie``) and draws with it. A request without a
sticky key (anonymous, under ``sticky: consumer``) is never drawn: it stays in the base lane,
since a draw per request would move a user between versions from one request to the next.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from fastgw.filters.api import Filter, Phase, Status
from fastgw.server.stream import Stream

BUCKETS = 10_000
"""Draws are in hundredths of a percent (a weight may have two decimals)."""
STICKY_MAX_AGE = 365 * 24 * 3600
"""Seconds the gateway's sticky cookie lives: a browser keeps its lane for a year."""


def bucket(lane: str, key: str) -> int:
    """Where ``key`` falls in ``[0, BUCKETS)`` for ``lane``: stable across workers, nodes and restarts.

    Salted with the lane's name, so two weighted lanes draw independently (the second takes
    its share of what the first left)."""
    digest = hashlib.blake2b(f"{lane}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def cookie_value(head: Any, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's ``Cookie`` headers (RFC 6265 5.4: pairs
    separated by ``;``, one header or several), or None."""
    for header, value in head.headers:
        if header.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            key, eq, found = pair.partition(b"=")
            if eq and key.strip(b" \t") == name:
                found = found.strip(b" \t")
                return found[1:-1] if len(found) >= 2 and found[:1] == found[-1:] == b'"' else found
    return None


class Lane:
    """One configured lane: its conditions, how it draws, and how it is propagated."""

    __slots__ = ("name", "label", "header", "value", "fallback", "headers", "cookies", "consumers", "weight",
                 "sticky_cookie")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.label = self.name  # in metrics (the base lane's is "base")
        self.header = spec["header"].encode()
        self.value = self.name.encode()
        self.fallback = spec["fallback"] == "base"
        match = spec["match"]
        self.headers = tuple((n.encode(), frozenset(v.encode() for v in values)) for n, values in match["headers"].items())
        self.cookies = tuple((n.encode(), frozenset(v.encode() for v in values)) for n, values in match["cookies"].items())
        self.consumers = frozenset(match["consumers"]) if match["consumers"] is not None else None
        weight = match["weight"]
        self.weight = None if weight is None else round(weight * BUCKETS / 100)
        self.sticky_cookie = spec["sticky_cookie"].encode() if spec["sticky"] == "cookie" else None

    def matches(self, s: Stream) -> bool:
        head = s.head
        for name, accepted in self.headers:
            if head.get(name) not in accepted:
                return False
        for name, accepted in self.cookies:
            if cookie_value(head, name) not in accepted:
                return False
        if self.consumers is not None and (s.consumer is None or s.consumer.name not in self.consumers):
            return False
        if self.weight is None:
            return True
        key = self._sticky_key(s)
        return key is not None and bucket(self.name, key) < self.weight

    def _sticky_key(self, s: Stream) -> str | None:
        name = self.sticky_cookie
        if name is None:
            return s.consumer.name if s.consumer is not None else None
        value = cookie_value(s.head, name)
        if value:
            return value.decode("latin-1")
        issued = s.sticky_issued
        if issued is None:
            issued = s.sticky_issued = {}
        fresh = issued.get(name)
        if fresh is None:  # once per cookie name and request, however many lanes draw with it
            fresh = issued[name] = secrets.token_hex(16).encode()
            s.add_response_header(
                b"set-cookie", b"%b=%b; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax" % (name, fresh, STICKY_MAX_AGE))
        return fresh.decode()


class Lanes(Filter):
    stateless = True
    name = "lanes"
    phase = Phase.AUTHN
    priority = 50  # after the authenticating filters of the phase (consumers), before overload shedding

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.lanes = tuple(Lane(spec) for spec in specs)
        self.headers = frozenset(lane.header for lane in self.lanes)
        """Every propagation header: a client's value of any of them never reaches an upstream."""

    def on_request_headers(self, s: Stream) -> Status:
        for lane in self.lanes:
            if lane.matches(s):
                s.lane = lane
                break
        return Status.CONTINUE

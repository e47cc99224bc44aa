"""Compiled limit rules: which requests a rule applies to, and which counter a request uses.

Built once per config generation from the normalised ``limits`` section, so per request
matching is set lookups, one precompiled regex per wildcard list and, only for rules that
name CIDRs, one address parse.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from fastgw.config.limits import WINDOWS
from fastgw.names import ANONYMOUS, wildcard


def _no_header(name: bytes) -> bytes | None:
    return None


@dataclass(slots=True)
class RequestContext:
    """What the limiter needs to know about one request.

    ``header`` takes a lower-case name and returns the raw value (the HTTP head's ``get``
    fits as is); ``query`` is the raw query string without ``?``.
    """

    consumer: str | None
    model: str
    ip: str | None = None
    header: Callable[[bytes], bytes | None] = _no_header
    query: bytes = b""
    route: str | None = None
    """The plain route's name; None for an AI request."""
    matched: list[Rule] | None = field(default=None, repr=False)
    """Rules that apply, filled in by the limiter's first look at the request."""

    def query_value(self, name: str) -> str:
        for key, value in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True):
            if key == name:
                return value
        return ""


@dataclass(frozen=True, slots=True)
class Window:
    """One GCRA counter of a rule: ``limit`` units of ``kind`` per ``period`` seconds."""

    kind: str  # "tokens" or "requests"
    name: str  # "per_minute"...
    period: float
    limit: int


class Rule:
    """One normalised ``limits`` entry, ready to match requests."""

    __slots__ = (
        "name", "windows", "concurrency", "lease", "queue_size", "queue_timeout", "quota", "on_redis_down", "nodes",
        "routes", "node_limit", "by_route_only", "_tests", "_key",
    )

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.windows = [
            Window(kind, window, float(WINDOWS[window]), amount)
            for kind in ("requests", "tokens")
            for window, amount in spec[kind].items()
        ]
        self.concurrency: int | None = spec.get("concurrency")
        self.lease: float = spec.get("lease", 10.0)
        queue = spec.get("queue") or {}
        self.queue_size: int = queue.get("size") or 0  # 0: over the limit is refused at once
        self.queue_timeout: float = queue.get("timeout") or 0.0
        self.quota: dict[str, Any] | None = spec["quota"]
        self.on_redis_down: str = spec["on_redis_down"]
        self.nodes: int = spec["nodes"]
        self.node_limit: int = max(1, (self.concurrency or 0) // self.nodes)
        """A concurrency rule's share for one node when the node's table counts it."""
        self._key: list[tuple[str, str]] = [part.partition(":")[::2] for part in spec["key"]]
        self._tests: list[Callable[[RequestContext], bool]] = []
        match = spec["match"]
        self.routes: Callable[[str], bool] | None = None
        if match.get("routes") is not None:
            routes = self.routes = wildcard(match["routes"])
            self._tests.append(lambda ctx: ctx.route is not None and routes(ctx.route))
        if match["consumers"] is not None:
            consumers = wildcard(match["consumers"])
            self._tests.append(lambda ctx: consumers(ctx.consumer or ANONYMOUS))
        if match["models"] is not None:
            models = wildcard(match["models"])
            self._tests.append(lambda ctx: models(ctx.model))
        if match["headers"] is not None:
            wanted = [
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in match["headers"].items()
            ]
            self._tests.append(lambda ctx: all(ctx.header(name) == value for name, value in wanted))
        if match["cidrs"] is not None:
            networks = [ipaddress.ip_network(c) for c in match["cidrs"]]
            self._tests.append(lambda ctx: _in_networks(ctx.ip, networks))

        self.by_route_only = len(self._tests) == (1 if self.routes is not None else 0)
        """Whether the route's name alone decides if this rule applies (no other match)."""

    def applies_to_route(self, name: str) -> bool:
        """Whether this rule names the plain route ``name`` in ``match.routes``."""
        return self.routes is not None and self.routes(name)

    def matches(self, ctx: RequestContext) -> bool:
        for test in self._tests:  # a loop, not all(genexpr): this runs per request per rule
            if not test(ctx):
                return False
        return True

    def key(self, ctx: RequestContext) -> str:
        """The counter this request uses, e.g. ``team-a:gpt-4o``; values are %-escaped so
        a ``:`` inside one cannot make two different requests share a key."""
        return key_of(self.key_parts(ctx))

    def key_parts(self, ctx: RequestContext) -> tuple[str, ...]:
        """The raw values :meth:`key` joins: a cheap cache key for the counter's name."""
        return tuple([_part(ctx, kind, arg) for kind, arg in self._key])


def key_of(parts: tuple[str, ...]) -> str:
    """:meth:`Rule.key` from its :meth:`Rule.key_parts`."""
    return ":".join([quote(part, safe="") for part in parts])


def _part(ctx: RequestContext, kind: str, arg: str) -> str:
    if kind == "consumer":
        return ctx.consumer or ANONYMOUS
    if kind == "model":
        return ctx.model
    if kind == "ip":
        return ctx.ip or ""
    if kind == "header":
        value = ctx.header(arg.encode("latin-1"))
        return value.decode("latin-1") if value is not None else ""
    return ctx.query_value(arg)


def _in_networks(ip: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d
    return any(address in network for network in networks)

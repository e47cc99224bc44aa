"""A config generation as a worker runs it: immutable, built once per publish.

The supervisor validates and normalises a config and publishes it as a JSON blob; each
worker turns the blob into a :class:`Generation` (router, routes with their balancers,
limits). Requests keep a reference to the generation they started with, so a push
never changes the rules under an in-flight request or stream.
"""

from __future__ import annotations

import json
import resource
import threading
from dataclasses import dataclass, field
from typing import Any

from fastgw.ai.health import ProviderHealth
from fastgw.filters import BuildEnv, Chain, build
from fastgw.filters.lanes import Lane
from fastgw.filters.observe import Observe
from fastgw.filters.overload import Overload
from fastgw.filters.ratelimit import RateLimit
from fastgw.filters.transform import TransformFilter
from fastgw.filters.waf import WafFilter
from fastgw.http.encoding import Compression
from fastgw.limits.cluster import RedisLink
from fastgw.limits.local import LocalLimitStore
from fastgw.proxy.balancer import make_balancer
from fastgw.proxy.endpoint_table import EndpointTable
from fastgw.proxy.endpoints import EndpointSet
from fastgw.proxy.upstream import Pool, PoolSet
from fastgw.router import Router
from fastgw.server.tls import Certificates
from fastgw.transform import Transform

HOST_PRESERVE = 0
HOST_UPSTREAM = 1
HOST_LITERAL = 2


class Endpoint:
    __slots__ = ("pool", "host_header", "url", "zone")

    def __init__(self, pool: Pool, url: str, zone: str | None = None) -> None:
        self.pool = pool
        default_port = 443 if pool.scheme == "https" else 80
        host = pool.host if ":" not in pool.host else f"[{pool.host}]"
        self.host_header = (host if pool.port == default_port else f"{host}:{pool.port}").encode()
        self.url = url
        self.zone = zone or ""  # the metrics label


class Upstream:
    """An endpoint set with its balancer, shared by every route that names the same one.

    Sharing keeps least-request counts per endpoint rather than per route, and building
    10,000 routes to one service creates one balancer, not 10,000. Gray-release lanes are
    index subsets of the one balancer: ``base`` (untagged endpoints; None when no endpoint
    is tagged, i.e. all of them) and ``by_lane``.
    """

    __slots__ = ("endpoints", "balancer", "states", "base", "by_lane")

    def __init__(self, spec: dict[str, Any], resources: Resources, zone: dict | None) -> None:
        pool_cfg = spec["pool"]
        pools = resources.pools
        self.endpoints = [
            Endpoint(
                pools.get(e["scheme"], e["host"], e["port"], pool_cfg["max_idle"], pool_cfg["idle_timeout"]),
                e["url"],
                e.get("zone"),
            )
            for e in spec["endpoints"]
        ]
        self.balancer = make_balancer([e["weight"] for e in spec["endpoints"]], spec["balance"])
        self.states = EndpointSet(spec, self.balancer, resources.endpoint_table, resources.own_endpoints, zone)
        tags = [e.get("lane") for e in spec["endpoints"]]
        self.base: tuple[int, ...] | None = None
        self.by_lane: dict[str, tuple[int, ...]] = {}
        if any(tags):
            self.base = tuple(i for i, tag in enumerate(tags) if tag is None)
            for name in dict.fromkeys(tag for tag in tags if tag):
                self.by_lane[name] = tuple(i for i, tag in enumerate(tags) if tag == name)

    @staticmethod
    def key(spec: dict[str, Any]) -> tuple:
        pool = spec["pool"]
        endpoints = tuple((e["url"], e["weight"], e.get("zone"), e.get("lane")) for e in spec["endpoints"])
        health = json.dumps([spec.get(k) for k in ("health", "outlier", "slow_start", "zones")], sort_keys=True)
        return endpoints, spec["balance"], pool["max_idle"], pool["idle_timeout"], health


EVERY_ENDPOINT = (None, None)
"""``Route.endpoints_for`` of a request that may use any endpoint, with no lane to fall back from."""


class Route:
    """One plain HTTP route: where to send matching requests, and how."""

    __slots__ = (
        "name",
        "endpoints",
        "balancer",
        "states",
        "base_endpoints",
        "lane_endpoints",
        "lane_headers",
        "host_mode",
        "literal_host",
        "strip_prefix",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "tunnel_idle_timeout",
        "websocket",
        "chain",
        "compression",
    )

    def __init__(self, spec: dict[str, Any], upstream: Upstream, env: BuildEnv) -> None:
        self.name = spec["name"]
        self.endpoints = upstream.endpoints
        self.balancer = upstream.balancer
        self.states = upstream.states
        self.base_endpoints = upstream.base
        self.lane_endpoints = upstream.by_lane
        lanes = env.lanes
        self.lane_headers: frozenset[bytes] = lanes.headers if lanes is not None else frozenset()
        upstream_spec = spec["upstream"]
        host_header = upstream_spec["host_header"]
        if host_header == "preserve":
            self.host_mode, self.literal_host = HOST_PRESERVE, b""
        elif host_header == "upstream":
            self.host_mode, self.literal_host = HOST_UPSTREAM, b""
        else:
            self.host_mode, self.literal_host = HOST_LITERAL, host_header.encode()
        strip = upstream_spec.get("strip_prefix")
        self.strip_prefix = strip.encode() if strip else b""
        timeouts = upstream_spec["timeouts"]
        self.connect_timeout = timeouts["connect"]
        self.first_byte_timeout = timeouts["first_byte"]
        self.idle_timeout = timeouts["idle"]
        self.tunnel_idle_timeout = timeouts["tunnel_idle"]
        self.websocket = spec.get("websocket", True)
        filters = build(spec.get("filters") or [], env)
        if spec.get("waf"):
            filters.append(WafFilter(spec["waf"]))
        limiter = env.limiter
        if limiter is not None and limiter.limits_route(self.name) and not any(f.name == "ratelimit" for f in filters):
            filters.append(RateLimit(limiter=limiter))  # a rule names this route in match.routes
        if lanes is not None:
            filters.append(lanes)
        overload = env.config["http"]["overload"]
        if overload:
            filters.append(Overload(overload, env.config["consumers"], spec.get("priority")))
        if spec.get("transform"):
            filters.append(TransformFilter(transform=Transform(spec["transform"])))
        filters.append(Observe())
        if env.trace is not None:
            filters.append(env.trace)
        self.chain = Chain(filters)
        self.compression = Compression.of(spec.get("compression"))

    def endpoints_for(self, lane: Lane | None) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None] | None:
        """The endpoint indexes a request of ``lane`` may use (None: every endpoint) and the base
        lane's it falls back to when all of those fail (None: no fallback); None when it may use
        none (a lane without endpoints here and ``fallback: none``, or no untagged endpoint)."""
        base = self.base_endpoints
        if lane is None:
            if base is None:
                return EVERY_ENDPOINT
            return (base, None) if base else None
        own = self.lane_endpoints.get(lane.name)
        if own is None:
            if not lane.fallback or base == ():
                return None
            return (base, None)
        return own, (base or None) if lane.fallback else None


@dataclass(slots=True)
class Resources:
    """What a worker keeps across generations and lends to each one it builds."""

    pools: PoolSet  # warm upstream connections
    health: ProviderHealth  # key cool-downs, breakers, probe verdicts
    limit_store: LocalLimitStore  # node-wide counters in shared memory (from the supervisor)
    limit_stats: dict[str, int] = field(default_factory=dict)
    redis_link: RedisLink | None = None  # the worker replaces it when the redis URL changes
    caches: dict[str, tuple] = field(default_factory=dict)  # cache spec -> (store, semantic index)
    tracing: Any = None  # fastgw.obs.tracing Tracing of the current tracing section
    endpoint_table: EndpointTable = field(default_factory=lambda: EndpointTable(256))  # the node's (supervisor's)
    own_endpoints: EndpointTable = field(default_factory=lambda: EndpointTable(4096))  # addresses it did not register

    def tracing_for(self, spec: dict[str, Any]) -> Any:
        """The tracer for a ``tracing`` section: the same one (and export thread) while it is
        unchanged; a changed section replaces it and the old one flushes and stops."""
        from fastgw.obs.tracing import Tracing

        old = self.tracing
        if old is not None and old.spec == spec:
            return old
        self.tracing = Tracing(spec)
        if old is not None:  # its flush may wait on a stalled collector: never on the event loop
            threading.Thread(target=old.close, name="fastgw-tracing-close", daemon=True).start()
        return self.tracing

    def close_tracing(self) -> None:
        """The worker leaves: export the spans still queued."""
        if self.tracing is not None:
            self.tracing.close()
            self.tracing = None

    def cache_for(self, spec: dict[str, Any], redis_url: str | None) -> tuple:
        """The store and index for a cache section; the same ones while it is unchanged, so
        a config push keeps the cached answers."""
        from fastgw.cache import open_cache

        key = json.dumps([spec, redis_url if spec["store"] == "redis" else None], sort_keys=True)
        found = self.caches.get(key)
        if found is None:
            found = self.caches[key] = open_cache(spec, redis_url)
        return found


def auto_connection_cap() -> int:
    """Half the fd limit: a proxied connection holds two (client and upstream), plus a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(16, (soft - 64) // 2)


class Generation:
    """Everything a worker needs to serve requests under one config version."""

    __slots__ = (
        "number",
        "config",
        "router",
        "routes",
        "ai",
        "unrouted_chain",
        "max_header_size",
        "max_headers",
        "max_body_size",
        "header_timeout",
        "body_timeout",
        "body_min_rate",
        "send_timeout",
        "max_connections",
        "max_connections_per_ip",
        "keepalive_timeout",
        "drain_timeout",
        "max_pipelined",
        "compression",
        "tls",
    )

    def __init__(self, number: int, config: dict[str, Any], resources: Resources) -> None:
        from fastgw.ai.frontdoor import AIFrontDoor  # loaded only by configs that serve models

        self.number = number
        self.config = config
        env = BuildEnv(config, resources)
        upstreams: dict[tuple, Upstream] = {}
        self.routes = []
        for spec in config["routes"]:
            key = Upstream.key(spec["upstream"])
            upstream = upstreams.get(key)
            if upstream is None:
                upstream = upstreams[key] = Upstream(spec["upstream"], resources, config.get("zone"))
            self.routes.append(Route(spec, upstream, env))
        self.router = Router(config["routes"], self.routes)
        self.unrouted_chain = Chain([Observe()] if env.trace is None else [Observe(), env.trace])
        self.ai = AIFrontDoor(config, resources, env) if config.get("models") else None
        http = config["http"]
        self.max_header_size = http["max_header_size"]
        self.max_headers = http["max_headers"]
        self.max_body_size = http["max_body_size"]
        self.header_timeout = http["header_timeout"]
        self.body_timeout = http["body_timeout"]
        self.body_min_rate = http["body_min_rate"]
        self.send_timeout = http["send_timeout"]
        cap = http["max_connections"]
        self.max_connections = auto_connection_cap() if cap == "auto" else cap
        self.max_connections_per_ip = http["max_connections_per_ip"]
        self.keepalive_timeout = http["keepalive_timeout"]
        self.drain_timeout = http["drain_timeout"]
        self.max_pipelined = http["max_pipelined"]
        self.compression = Compression.of(config.get("compression"))
        tls = config["listen"].get("tls")
        self.tls = Certificates(tls) if tls else None  # files read afresh: a push swaps certificates

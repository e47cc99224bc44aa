"""A config generation as a worker runs it: immutable, built once per publish.

The supervisor validates and normalises a config and publishes it as a JSON blob; each
worker turns the blob into a :class:`Generation` (router, routes with their balancers,
limits). Requests keep a reference to the generation they started with, so a push
never changes the rules under an in-flight request or stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastgw.ai.health import ProviderHealth
from fastgw.filters import BuildEnv, Chain, build
from fastgw.filters.observe import Observe
from fastgw.filters.transform import TransformFilter
from fastgw.filters.waf import WafFilter
from fastgw.limits.cluster import RedisLink
from fastgw.limits.local import LocalLimitStore
from fastgw.proxy.balancer import make_balancer
from fastgw.proxy.upstream import Pool, PoolSet
from fastgw.router import Router
from fastgw.server.tls import Certificates
from fastgw.transform import Transform

HOST_PRESERVE = 0
HOST_UPSTREAM = 1
HOST_LITERAL = 2


class Endpoint:
    __slots__ = ("pool", "host_header", "url")

    def __init__(self, pool: Pool, url: str) -> None:
        self.pool = pool
        default_port = 443 if pool.scheme == "https" else 80
        host = pool.host if ":" not in pool.host else f"[{pool.host}]"
        self.host_header = (host if pool.port == default_port else f"{host}:{pool.port}").encode()
        self.url = url


class Upstream:
    """An endpoint set with its balancer, shared by every route that names the same one.

    Sharing keeps least-request counts per endpoint rather than per route, and building
    10,000 routes to one service creates one balancer, not 10,000.
    """

    __slots__ = ("endpoints", "balancer")

    def __init__(self, spec: dict[str, Any], pools: PoolSet) -> None:
        pool_cfg = spec["pool"]
        self.endpoints = [
            Endpoint(
                pools.get(e["scheme"], e["host"], e["port"], pool_cfg["max_idle"], pool_cfg["idle_timeout"]),
                e["url"],
            )
            for e in spec["endpoints"]
        ]
        self.balancer = make_balancer([e["weight"] for e in spec["endpoints"]], spec["balance"])

    @staticmethod
    def key(spec: dict[str, Any]) -> tuple:
        pool = spec["pool"]
        endpoints = tuple((e["url"], e["weight"]) for e in spec["endpoints"])
        return endpoints, spec["balance"], pool["max_idle"], pool["idle_timeout"]


class Route:
    """One plain HTTP route: where to send matching requests, and how."""

    __slots__ = (
        "name",
        "endpoints",
        "balancer",
        "host_mode",
        "literal_host",
        "strip_prefix",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "chain",
    )

    def __init__(self, spec: dict[str, Any], upstream: Upstream, env: BuildEnv) -> None:
        self.name = spec["name"]
        self.endpoints = upstream.endpoints
        self.balancer = upstream.balancer
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
        filters = build(spec.get("filters") or [], env)
        if spec.get("waf"):
            filters.append(WafFilter(spec["waf"]))
        if spec.get("transform"):
            filters.append(TransformFilter(transform=Transform(spec["transform"])))
        filters.append(Observe())
        self.chain = Chain(filters)


@dataclass(slots=True)
class Resources:
    """What a worker keeps across generations and lends to each one it builds."""

    pools: PoolSet  # warm upstream connections
    health: ProviderHealth  # key cool-downs, breakers, probe verdicts
    limit_store: LocalLimitStore  # node-wide counters in shared memory (from the supervisor)
    limit_stats: dict[str, int] = field(default_factory=dict)
    redis_link: RedisLink | None = None  # the worker replaces it when the redis URL changes
    caches: dict[str, tuple] = field(default_factory=dict)  # cache spec -> (store, semantic index)

    def cache_for(self, spec: dict[str, Any], redis_url: str | None) -> tuple:
        """The store and index for a cache section; the same ones while it is unchanged, so
        a config push keeps the cached answers."""
        from fastgw.cache import open_cache

        key = json.dumps([spec, redis_url if spec["store"] == "redis" else None], sort_keys=True)
        found = self.caches.get(key)
        if found is None:
            found = self.caches[key] = open_cache(spec, redis_url)
        return found


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
        "keepalive_timeout",
        "drain_timeout",
        "max_pipelined",
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
                upstream = upstreams[key] = Upstream(spec["upstream"], resources.pools)
            self.routes.append(Route(spec, upstream, env))
        self.router = Router(config["routes"], self.routes)
        self.unrouted_chain = Chain([Observe()])
        self.ai = AIFrontDoor(config, resources, env) if config.get("models") else None
        http = config["http"]
        self.max_header_size = http["max_header_size"]
        self.max_headers = http["max_headers"]
        self.max_body_size = http["max_body_size"]
        self.header_timeout = http["header_timeout"]
        self.keepalive_timeout = http["keepalive_timeout"]
        self.drain_timeout = http["drain_timeout"]
        self.max_pipelined = http["max_pipelined"]
        tls = config["listen"].get("tls")
        self.tls = Certificates(tls) if tls else None  # files read afresh: a push swaps certificates

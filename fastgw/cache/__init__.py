"""Response cache for the AI front door (config: ``fastgw.config.cache``).

Flow for the front door: if :func:`~fastgw.cache.keys.cacheable` and ``read`` from
:func:`~fastgw.cache.keys.cache_mode`, look the exact key up in the store, then (semantic
configured, question text non-empty) ``embed`` + ``nearest`` in the request's
:func:`~fastgw.cache.keys.semantic_scope` and ``get`` that key. On a miss, once a complete
answer is back and :func:`~fastgw.cache.keys.storable`, ``put`` it and ``add`` its vector.
Any call may raise :class:`CacheUnavailable`: treat it as a miss, never as a failure.

``numpy`` is imported only when semantic caching is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw.cache.store import CachedAnswer, CacheRedis, CacheStore, CacheUnavailable, NodeStore, RedisStore

if TYPE_CHECKING:
    from fastgw.cache.semantic import SemanticIndex

__all__ = ["CachedAnswer", "CacheStore", "CacheUnavailable", "open_cache"]


def open_cache(spec: dict, redis_url: str | None) -> tuple[CacheStore, SemanticIndex | None]:
    """The store and semantic index for a normalised ``cache`` section; the index shares its
    vectors through the store's backend. Close the store, then the index, when the config
    generation ends. Nothing is connected here: each process connects on first use."""
    if spec["store"] != "redis":
        node = NodeStore(spec["ttl"], spec["max_entries"])
        return node, _index(spec, node)
    if redis_url is None:
        raise ValueError("the redis cache store needs a Redis URL")
    redis = CacheRedis(redis_url)
    return RedisStore(redis, spec["ttl"]), _index(spec, redis)


def _index(spec: dict, shared: NodeStore | CacheRedis) -> SemanticIndex | None:
    if spec["semantic"] is None:
        return None
    from fastgw.cache.semantic import RedisVectors, SemanticIndex  # numpy only when semantic caching is used

    ttl, max_entries = spec["ttl"], spec["max_entries"]
    vectors = shared if isinstance(shared, NodeStore) else RedisVectors(shared, ttl, max_entries)
    return SemanticIndex(spec["semantic"], ttl, max_entries, vectors)

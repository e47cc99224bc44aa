"""Where cached answers live: in the worker's memory, or in Redis shared by every node.

Both stores hold the answer as JSON bytes, so a hit hands out a fresh object that the caller
may change (set an id, convert it to another dialect) without corrupting the entry.

Every cache operation may raise :class:`CacheUnavailable`; the caller treats that as a miss
(or a skipped write). A cache must never fail or slow down a request much: after a Redis
error the cache does not touch Redis for ``retry_interval``, so an outage costs one timeout
per interval, not one per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastgw.limits.resp import RespClient, RespError

ANSWER_PREFIX = "fastgw:cache:a:"


class CacheUnavailable(Exception):
    """The cache cannot answer right now (Redis or the embeddings endpoint failed or is slow)."""


@dataclass(slots=True)
class CachedAnswer:
    """An OpenAI ``chat.completion`` object as first answered, and the question it answered."""

    response: dict
    created: float  # wall-clock time it was stored, for an ``Age``-like header
    question: str
    usage: dict

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedAnswer:
        return cls(**json.loads(data))


class CacheStore:
    """``get``/``put`` of answers by exact key, each entry living ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl

    async def get(self, key: str) -> CachedAnswer | None:
        raise NotImplementedError

    async def put(self, key: str, answer: CachedAnswer) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""


class MemoryStore(CacheStore):
    """LRU with TTL in one worker process: workers and nodes do not share it.

    Expired entries are dropped when looked up or when they reach the LRU end, so the bound
    is ``max_entries`` whatever the TTL.
    """

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl)
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return CachedAnswer.from_json(entry[1])

    async def put(self, key: str, answer: CachedAnswer) -> None:
        self._entries[key] = (self.clock() + self.ttl, answer.to_json())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class CacheRedis:
    """The cache's Redis connection: errors become :class:`CacheUnavailable`, and after one
    the cache skips Redis for ``retry_interval`` instead of waiting on it for every request."""

    def __init__(self, url: str, *, timeout: float = 0.1, retry_interval: float = 1.0) -> None:
        override = parse_qs(urlsplit(url).query).get("socket_timeout")
        self._client = RespClient(url, float(override[0]) if override else timeout)
        self.retry_interval = retry_interval
        self._down_until = 0.0

    async def call(self, *args: Any) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            raise CacheUnavailable("Redis is unavailable (retrying shortly)")
        try:
            reply = await self._client.call(*args)
        except (RespError, OSError, asyncio.TimeoutError) as exc:
            if not self._down_until:
                os.write(
                    2,
                    f"fastgw cache {os.getpid()}: warning: Redis unavailable ({exc!r}); cache misses\n".encode(),
                )
            self._down_until = time.monotonic() + self.retry_interval
            raise CacheUnavailable(f"Redis: {exc!r}") from exc
        self._down_until = 0.0
        return reply

    async def close(self) -> None:
        await self._client.close()


class RedisStore(CacheStore):
    """Answers in Redis (``SET ... PX ttl``), shared by all workers and nodes."""

    def __init__(self, redis: CacheRedis, ttl: float) -> None:
        super().__init__(ttl)
        self.redis = redis

    async def get(self, key: str) -> CachedAnswer | None:
        data = await self.redis.call("GET", ANSWER_PREFIX + key)
        if data is None:
            return None
        try:
            return CachedAnswer.from_json(data)
        except (ValueError, TypeError) as exc:  # written by an incompatible version: a miss
            raise CacheUnavailable(f"unreadable cache entry: {exc}") from exc

    async def put(self, key: str, answer: CachedAnswer) -> None:
        await self.redis.call(
            "SET", ANSWER_PREFIX + key, answer.to_json(), "PX", max(1, round(self.ttl * 1000))
        )

    async def close(self) -> None:
        await self.redis.close()

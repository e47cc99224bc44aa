"""Where cached answers live: in a file in memory shared by a node's workers, or in Redis
shared by every node.

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
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastgw.cache.nodefile import node_path
from fastgw.resp import RespClient, RespError

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


class NodeStore(CacheStore):
    """Answers, and semantic vectors, in one SQLite file shared by the workers of a node.

    The file is in WAL mode on tmpfs (``/dev/shm``): readers never wait for a writer and no
    disk is touched. Each process opens its own connection on first use, i.e. in the worker
    after the fork (a SQLite connection must never cross a fork). Calls run synchronously on
    the event loop: each reads or writes one small row through an index, tens of
    microseconds, cheaper than a hop to a thread. A write waits at most ``busy_timeout`` for
    another worker's write; any SQLite error is a :class:`CacheUnavailable`.

    Eviction is oldest expiry first (the oldest stored, as every entry has the same TTL),
    not least recently used: an LRU would turn every hit into a write. It is amortised:
    when a new row's rowid (counted node-wide) is a multiple of ``max_entries // 16``,
    expired rows go and each table is cut back to ``max_entries`` (vectors: per partition),
    so a table briefly holds up to ~1/16 more. Expiry is also checked on every read.

    ``path`` is for tests; by default it is :func:`node_path`, resolved in the worker.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        path: str | None = None,
        *,
        busy_timeout: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ttl)
        self.max_entries = max_entries
        self.path = path
        self.busy_timeout = busy_timeout
        self.clock = clock  # wall clock: expiry times are compared across processes
        self._trim_every = max(1, max_entries // 16)
        self._db: sqlite3.Connection | None = None
        self._pid = 0  # the process that opened ``_db``
        self._failing = False

    async def get(self, key: str) -> CachedAnswer | None:
        row = self._run(
            "SELECT value FROM answers WHERE key = ? AND expires > ?", (key, self.clock())
        ).fetchone()
        return None if row is None else CachedAnswer.from_json(row[0])

    async def put(self, key: str, answer: CachedAnswer) -> None:
        now = self.clock()
        rowid = self._run(
            "INSERT OR REPLACE INTO answers (key, value, expires) VALUES (?, ?, ?)",
            (key, answer.to_json(), now + self.ttl),
        ).lastrowid
        if rowid is not None and rowid % self._trim_every == 0:
            self._run("DELETE FROM answers WHERE expires <= ?", (now,))
            self._run(
                "DELETE FROM answers WHERE expires <= "
                "(SELECT expires FROM answers ORDER BY expires DESC LIMIT 1 OFFSET ?)",
                (self.max_entries,),
            )

    async def add_vector(self, scope: str, key: str, vector: bytes, expires: float) -> None:
        """Append a partition's vector; every worker's index reads it on its next lookup."""
        rowid = self._run(
            "INSERT INTO vectors (scope, key, vector, expires) VALUES (?, ?, ?, ?)",
            (scope, key, vector, expires),
        ).lastrowid
        if rowid is not None and rowid % self._trim_every == 0:
            self._run("DELETE FROM vectors WHERE expires <= ?", (self.clock(),))
            self._run(
                "DELETE FROM vectors WHERE scope = ? AND id <= "
                "(SELECT id FROM vectors WHERE scope = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (scope, scope, self.max_entries),
            )

    async def vectors_since(self, scope: str, cursor: str) -> tuple[str, list[tuple[str, bytes, float]]]:
        """The partition's ``(key, vector, expires)`` appended after ``cursor`` ("" = all)."""
        rows = self._run(
            "SELECT id, key, vector, expires FROM vectors WHERE scope = ? AND id > ? ORDER BY id",
            (scope, int(cursor or 0)),
        ).fetchall()
        new_cursor = str(rows[-1][0]) if rows else cursor
        return new_cursor, [(key, vector, expires) for _, key, vector, expires in rows]

    async def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    def _run(self, sql: str, params: tuple) -> sqlite3.Cursor:
        try:
            cursor = self._connection().execute(sql, params)
        except (sqlite3.Error, OSError) as exc:  # OSError: the node's directory
            if not self._failing:
                self._failing = True
                os.write(
                    2,
                    f"fastgw cache {os.getpid()}: warning: node cache failed ({exc!r}); cache misses\n".encode(),
                )
            raise CacheUnavailable(f"node cache: {exc!r}") from exc
        self._failing = False
        return cursor

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # never use a connection from before a fork
            self._db = None
            db = sqlite3.connect(self.path or node_path(), timeout=1.0, isolation_level=None)
            try:
                db.executescript(SCHEMA)  # the first worker creates it; the others wait up to 1 s
                db.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout * 1000)}")
            except sqlite3.Error:
                db.close()
                raise
            self._db, self._pid = db, os.getpid()
        return self._db


SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS answers_expires ON answers (expires);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, key TEXT NOT NULL,
    vector BLOB NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_scope ON vectors (scope, id);
CREATE INDEX IF NOT EXISTS vectors_expires ON vectors (expires);
"""
"""``synchronous = OFF``: the file is in memory and a cache, so nothing is worth an fsync.
``AUTOINCREMENT``: vector ids never go back, so a reader's cursor never skips a new row."""


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

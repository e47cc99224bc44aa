"""Semantic hits: a paraphrase of a cached question gets the cached answer.

A question is embedded by any OpenAI-compatible ``/v1/embeddings`` endpoint and compared
with the questions already answered in the same partition (scope + model + params + history,
see :func:`fastgw.cache.keys.semantic_scope`); the nearest one at or above ``threshold``
cosine similarity gives the exact key whose answer is served.

Search is brute force over a numpy matrix of unit rows per partition: one matrix-vector
product, exact (no recall loss), nothing to build or rebalance when entries come and go.
Its cost is linear in rows x dimensions and runs on the event loop: 10k rows take ~0.3 ms
at 384 dimensions and ~6 ms at 1536 (text-embedding-3-small), measured by
``tests/unit/cache/test_response_cache.py``. That is fine for per-consumer partitions with a TTL; an ANN index
(usearch, faiss) pays off beyond ~1e5 rows x 384 dims (or ~1e4 x 1536) in one partition.
Rows expire with the store's TTL and a partition keeps at most ``max_entries`` (oldest first).

Vectors are shared through the store, so every instance sees every answered question: each
keeps its own matrix per partition, loaded on the partition's first lookup and then
brought up to date on every lookup by reading only the vectors appended since (a cursor).
With the node store (:class:`~fastgw.cache.store.NodeStore`) they are rows of its SQLite
``vectors`` table, read by rowid, so a node's workers share semantic hits. With the Redis
store they live in one Redis stream per partition (``XADD`` with the question's key and
float32 bytes, trimmed to ``max_entries``, expiring with the TTL), read with ``XRANGE
(last-id +``, so two gateways share them. A stream rather than a hash: a hash cannot be
read incrementally, and re-reading every vector per lookup would cost megabytes. Expiry
is the entry id's time (Redis's clock) plus the TTL.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from fastgw.cache.store import CacheRedis, CacheUnavailable

VECTOR_PREFIX = "fastgw:cache:v:"
MAX_IDLE_CONNECTIONS = 4
MAX_EMBEDDINGS_BODY = 16 * 1024 * 1024


class _Rows:
    """One partition's unit vectors, their exact keys and expiry times (oldest first)."""

    __slots__ = ("matrix", "expires", "keys", "count", "cursor", "lock")

    def __init__(self, dim: int) -> None:
        self.matrix = np.empty((16, dim), np.float32)
        self.expires = np.empty(16, np.float64)
        self.keys: list[str] = []
        self.count = 0
        self.cursor = ""  # where the shared vectors read into the matrix end ("": none read)
        self.lock = asyncio.Lock()

    def add(self, vector: np.ndarray, key: str, expires: float, now: float, max_entries: int) -> None:
        if self.count >= min(len(self.matrix), max_entries):
            self._make_room(now, max_entries)
        self.matrix[self.count] = vector
        self.expires[self.count] = expires
        self.keys.append(key)
        self.count += 1

    def _make_room(self, now: float, max_entries: int) -> None:
        """Drop expired rows, and the oldest beyond ``max_entries - 1``; grow if still full."""
        live = np.flatnonzero(self.expires[: self.count] > now)
        keep = max_entries - 1
        live = live[len(live) - keep :] if len(live) > keep else live
        n = len(live)
        self.matrix[:n] = self.matrix[live]
        self.expires[:n] = self.expires[live]
        self.keys = [self.keys[i] for i in live]
        self.count = n
        capacity = len(self.matrix)
        if n * 2 > capacity and capacity < max_entries:  # mostly live: growing beats compacting again soon
            capacity = min(capacity * 2, max_entries)
            self.matrix = np.resize(self.matrix, (capacity, self.matrix.shape[1]))
            self.expires = np.resize(self.expires, capacity)

    def nearest(self, vector: np.ndarray, now: float) -> tuple[float, str] | None:
        n = self.count
        if n == 0:
            return None
        scores = self.matrix[:n] @ vector
        scores[self.expires[:n] <= now] = -2.0  # below any cosine similarity
        i = int(np.argmax(scores))
        return float(scores[i]), self.keys[i]


class VectorLog(Protocol):
    """Where a partition's vectors are shared: appended by any instance, read by all."""

    async def add_vector(self, scope: str, key: str, vector: bytes, expires: float) -> None: ...

    async def vectors_since(self, scope: str, cursor: str) -> tuple[str, list[tuple[str, bytes, float]]]:
        """``(new cursor, [(key, float32 bytes, expires)])`` appended after ``cursor``."""
        ...


class RedisVectors:
    """The partitions as Redis streams, shared by every gateway on the Redis server."""

    def __init__(self, redis: CacheRedis, ttl: float, max_entries: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self.max_entries = max_entries

    async def add_vector(self, scope: str, key: str, vector: bytes, expires: float) -> None:
        """``expires`` is not sent: an entry expires by its id, i.e. Redis's clock."""
        await asyncio.gather(
            self.redis.call("XADD", scope, "MAXLEN", "~", self.max_entries, "*", "k", key, "v", vector),
            self.redis.call("PEXPIRE", scope, max(1, round(self.ttl * 1000))),
        )

    async def vectors_since(self, scope: str, cursor: str) -> tuple[str, list[tuple[str, bytes, float]]]:
        start = b"(" + cursor.encode() if cursor else b"-"
        out = []
        for entry_id, values in await self.redis.call("XRANGE", scope, start, "+") or ():
            cursor = entry_id.decode()
            fields = dict(zip(values[::2], values[1::2], strict=True))
            expires = int(entry_id.split(b"-")[0]) / 1000 + self.ttl
            out.append((fields.get(b"k", b"").decode(), fields.get(b"v", b""), expires))
        return cursor, out


class SemanticIndex:
    """Embeddings client plus vector search per partition, the vectors shared by ``vectors``."""

    def __init__(
        self,
        spec: dict,
        ttl: float,
        max_entries: int,
        vectors: VectorLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.threshold: float = spec["threshold"]
        self.ttl = ttl
        self.max_entries = max_entries
        self.vectors = vectors
        self.clock = clock
        self._embedder = _Embedder(spec["embeddings_url"], spec["model"], spec["api_key"], spec["timeout"])
        self._prefix = f"{VECTOR_PREFIX}{spec['model']}:"  # vectors of another model never mix in
        self._scopes: dict[str, _Rows] = {}

    async def embed(self, text: str) -> list[float]:
        """The question's embedding; :class:`CacheUnavailable` if the endpoint fails or is slow."""
        return await self._embedder.embed(text)

    async def nearest(
        self, scope: str, vector: Sequence[float], threshold: float | None = None
    ) -> str | None:
        """The exact key of the most similar live question, if similar enough.

        The key's answer may have left the store since (evicted, expired): that is a miss.
        """
        unit = _unit(vector)
        if unit is None:
            return None
        rows = await self._sync(scope, len(unit))
        if rows.matrix.shape[1] != len(unit):
            return None
        found = rows.nearest(unit, self.clock())
        limit = self.threshold if threshold is None else threshold
        return found[1] if found is not None and found[0] >= limit else None

    async def add(self, scope: str, vector: Sequence[float], key: str) -> None:
        """Share the vector; every instance, this one too, reads it on its next lookup."""
        unit = _unit(vector)
        if unit is not None:
            await self.vectors.add_vector(self._prefix + scope, key, unit.tobytes(), self.clock() + self.ttl)

    async def _sync(self, scope: str, dim: int) -> _Rows:
        """Read the partition's vectors added since the last lookup into its matrix."""
        rows = self._scopes.setdefault(scope, _Rows(dim))
        async with rows.lock:
            rows.cursor, entries = await self.vectors.vectors_since(self._prefix + scope, rows.cursor)
            now = self.clock()
            for key, data, expires in entries:
                vector = np.frombuffer(data, np.float32)
                if expires > now and len(vector) == rows.matrix.shape[1]:
                    rows.add(vector, key, expires, now, self.max_entries)
        return rows

    async def close(self) -> None:
        """Close the idle embeddings connections (Redis or SQLite belongs to the store)."""
        self._embedder.close()


def _unit(vector: Sequence[float]) -> np.ndarray | None:
    v = np.asarray(vector, np.float32).ravel()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 and np.isfinite(norm) else None


class _Embedder:
    """A small HTTP/1.1 client for one embeddings URL, keeping a few connections alive
    (a TLS handshake per question would cost more than the lookup saves)."""

    def __init__(self, url: str, model: str, api_key: str | None, timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.model = model
        self.timeout = timeout
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nUser-Agent: fastgw-cache\r\n{auth}Content-Length: "
        ).encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def embed(self, text: str) -> list[float]:
        body = json.dumps({"model": self.model, "input": text}).encode()
        request = self._head + b"%d\r\n\r\n" % len(body) + body
        try:
            status, data = await asyncio.wait_for(self._post(request), self.timeout)
        except asyncio.TimeoutError as exc:
            raise CacheUnavailable(f"embeddings endpoint did not answer within {self.timeout}s") from exc
        except (OSError, EOFError, ValueError) as exc:
            raise CacheUnavailable(f"embeddings endpoint failed: {exc!r}") from exc
        if status != 200:
            raise CacheUnavailable(f"embeddings endpoint answered {status}")
        try:
            vector = json.loads(data)["data"][0]["embedding"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CacheUnavailable(f"embeddings endpoint sent no embedding: {exc!r}") from exc
        if not isinstance(vector, list) or not vector:
            raise CacheUnavailable("embeddings endpoint sent an empty embedding")
        return vector

    async def _post(self, request: bytes) -> tuple[int, bytes]:
        reused = bool(self._idle)
        reader, writer = (
            self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        )
        try:
            status, data, keep = await _exchange(reader, writer, request)
        except BaseException as exc:  # cancelled or failed mid-exchange: the connection is unusable
            writer.close()
            if reused and isinstance(exc, (OSError, EOFError)):  # the server closed it while idle
                return await self._post(request)
            raise
        if keep and len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status, data

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one request, read one response: ``(status, body, connection reusable)``."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status = status_line.split(" ", 2)[:2]
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    keep = version == "HTTP/1.1" and headers.get("connection") != "close"
    if "chunked" in headers.get("transfer-encoding", ""):
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if sum(map(len, parts)) > MAX_EMBEDDINGS_BODY:
                raise ValueError("embeddings response too large")
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return int(status), b"".join(parts), keep
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_EMBEDDINGS_BODY:
            raise ValueError("embeddings response too large")
        return int(status), await reader.readexactly(length), keep
    return int(status), await reader.read(MAX_EMBEDDINGS_BODY), False

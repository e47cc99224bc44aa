"""The JSON access log and the Redis usage stream, both written from a worker's event loop.

Access log: one JSON object per request, one line, written with **one** ``os.write`` and
no buffer. Every worker opens the file itself with ``O_APPEND``, and a single
``write(2)`` to such a file is appended whole, so lines from several workers never
interleave (on a pipe that holds only for lines up to ``PIPE_BUF``, 4 KiB). Unbuffered
means nothing to flush on a timer or lose at a crash, for one syscall per request.
Secrets never reach it: the API takes no headers or bodies, and the query parameters
that carry keys (``?key=`` is Gemini's) are dropped from the path.

Usage stream: :class:`UsageSink` hands one record per AI request to a bounded in-memory
queue that a background task drains into a Redis stream (``XADD ... MAXLEN ~``); the
request path only appends to a deque, and a slow or absent Redis costs dropped,
counted records, never memory or latency.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import time
from typing import Any
from urllib.parse import unquote_plus

from redis.asyncio import Redis
from redis.exceptions import RedisError

from fastgw.obs.metrics import GATEWAY, Gateway

SECRET_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "x-api-key", "token", "access_token"})
"""Query parameters dropped from logged paths (compared lower-case)."""
MAX_ERROR_LENGTH = 1000
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;\"']+")


def rfc3339(now: float) -> str:
    """``2024-05-01T12:00:00.123Z``: UTC with milliseconds."""
    seconds = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((now - seconds) * 1000):03d}Z"


def clean_target(target: str) -> str:
    """The request target without the query parameters in :data:`SECRET_PARAMS`.

    Other parameters keep their original encoding and order.
    """
    path, sep, query = target.partition("?")
    if not sep:
        return path
    kept = [part for part in query.split("&") if part and _param_name(part) not in SECRET_PARAMS]
    return f"{path}?{'&'.join(kept)}" if kept else path


def _param_name(part: str) -> str:
    return unquote_plus(part.partition("=")[0]).strip().lower()


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


class AccessLog:
    """One worker's access log; ``target`` is ``stdout``, ``stderr``, a path, or None (off)."""

    def __init__(self, target: str | None, worker: int, metrics: Gateway = GATEWAY) -> None:
        self.worker = worker
        self.metrics = metrics
        self.target: str | None = None
        self._fd = -1
        self.configure(target)

    @property
    def enabled(self) -> bool:
        return self._fd >= 0

    def configure(self, target: str | None) -> None:
        """Switch to ``target`` (a new config generation); a no-op if it did not change."""
        if target == self.target:
            return
        self.close()
        if target == "stdout":
            self._fd = 1
        elif target == "stderr":
            self._fd = 2
        elif target is not None:
            self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.target = target

    def write(
        self,
        *,
        client_ip: str,
        method: str | bytes,
        target: str | bytes,
        status: int,
        duration: float,
        bytes_out: int,
        consumer: str | None = None,
        route: str | None = None,
        model: str | None = None,
        served_model: str | None = None,
        provider: str | None = None,
        attempts: int | None = None,
        stream: bool | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        cached_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        tokens_estimated: bool | None = None,
        cost: float | None = None,
        ttft: float | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> None:
        """Log one finished request; ``duration``/``ttft`` in seconds, ``now`` (epoch) for tests.

        ``target`` is the raw request target: the query is cleaned here. Fields left at
        None are omitted.
        """
        if self._fd < 0:
            return
        record: dict[str, Any] = {
            "ts": rfc3339(time.time() if now is None else now),
            "worker": self.worker,
            "client_ip": client_ip,
            "method": _text(method),
            "path": clean_target(_text(target)),
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "bytes_out": bytes_out,
        }
        optional = {
            "consumer": consumer,
            "route": route,
            "model": model,
            "served_model": served_model,
            "provider": provider,
            "attempts": attempts,
            "stream": stream,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "cached_tokens": cached_tokens,
            "cache_write_tokens": cache_write_tokens,
            "tokens_estimated": tokens_estimated,
            "cost": cost,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "error": None if error is None else _CREDENTIAL.sub(r"\1 ***", error)[:MAX_ERROR_LENGTH],
        }
        record.update((k, v) for k, v in optional.items() if v is not None)
        # ensure_ascii: control characters in a path are escaped, so a line is always one line.
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            written = os.write(self._fd, line)
            while written < len(line):  # only on a full disk or a signal: finish the line
                line = line[written:]
                written = os.write(self._fd, line)
        except OSError:  # a full disk, a closed or non-blocking full pipe: never fail the request
            self.metrics.log_dropped.inc(("access", "write_error"))

    def close(self) -> None:
        if self._fd > 2:
            os.close(self._fd)
        self._fd = -1
        self.target = None


class UsageSink:
    """Usage records for billing, XADDed to a Redis stream off the request path.

    Construct and :meth:`start` it inside the worker's running loop; :meth:`record` per
    AI request; ``await`` :meth:`close` when draining, to flush what is queued.
    """

    def __init__(
        self,
        redis_url: str,
        stream: str,
        *,
        maxlen: int,
        worker: int,
        queue_size: int = 10_000,
        batch: int = 256,
        retry_delay: float = 1.0,
        metrics: Gateway = GATEWAY,
    ) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.maxlen = maxlen
        self.worker = worker
        self.queue_size = queue_size
        self.batch = batch
        self.retry_delay = retry_delay
        self.metrics = metrics
        self._queue: collections.deque[dict[str, str | int]] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._client: Redis | None = None

    def start(self) -> None:
        # Short timeouts: a hung Redis must fill (and overflow) the queue, not hold a batch forever.
        self._client = Redis.from_url(self.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._task = asyncio.get_running_loop().create_task(self._drain())

    def record(
        self,
        *,
        consumer: str,
        model: str,
        provider: str,
        prompt_tokens: int,
        completion_tokens: int,
        estimated: bool,
        cost: float,
        served_model: str | None = None,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        now: float | None = None,
    ) -> None:
        """Queue one AI request's usage; dropped (and counted) if the queue is full. The prompt-cache
        counts (parts of prompt_tokens) are written only when non-zero."""
        if len(self._queue) >= self.queue_size:
            self.metrics.log_dropped.inc(("usage", "queue_full"))
            return
        fields: dict[str, str | int] = {
            "ts": rfc3339(time.time() if now is None else now),
            "worker": self.worker,
            "consumer": consumer,
            "model": model,
            "provider": provider,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "estimated": int(estimated),
            "cost": repr(float(cost)),
        }
        if served_model is not None:
            fields["served_model"] = served_model
        if cached_tokens:
            fields["cached_tokens"] = cached_tokens
        if cache_write_tokens:
            fields["cache_write_tokens"] = cache_write_tokens
        self._queue.append(fields)
        if not self._wake.is_set():
            self._wake.set()

    async def _drain(self) -> None:
        assert self._client is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            pipe = self._client.pipeline(transaction=False)
            for fields in batch:
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            try:
                await pipe.execute()
            except (RedisError, OSError):
                self.metrics.redis_errors.inc(("usage",))
                self.metrics.log_dropped.inc(("usage", "redis_error"), len(batch))
                if not self._closing:
                    await asyncio.sleep(self.retry_delay)

    async def close(self, timeout: float = 2.0) -> None:
        """Flush the queue for up to ``timeout`` seconds, then drop (and count) the rest."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except asyncio.TimeoutError:
                pass
        if self._queue:
            self.metrics.log_dropped.inc(("usage", "redis_error"), len(self._queue))
            self._queue.clear()
        if self._client is not None:
            await self._client.aclose()

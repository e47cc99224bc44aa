"""The JSON access log and the Redis usage stream, both written from a worker's event loop.

Access log: one JSON object per request, one line, written with **one** ``os.write`` and
no buffer. Every worker opens the file itself with ``O_APPEND``, and a single
``write(2)`` to such a file is appended whole, so lines from several workers never
interleave (on a pipe that holds only for lines up to ``PIPE_BUF``, 4 KiB). Unbuffered
means nothing to flush on a timer or lose at a crash, for one syscall per request.
Secrets never reach it: the API takes no headers or bodies, and the query parameters
that carry keys (``?key=`` is Gemini's) are dropped from the path.

Usage stream: :class:`UsageSink` hands one record per AI request to an in-memory queue
that a background task drains into a Redis stream (``XADD ... MAXLEN ~``); the request
path only appends to a deque. A slow or absent Redis sends records to the worker's
append-only spool on disk (:mod:`fastgw.obs.spool`), replayed exactly once when Redis
answers again: records are dropped (counted, logged) only past the spool's size bound.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import sys
import time
import uuid
from typing import Any
from urllib.parse import unquote_plus

from redis.asyncio import Redis
from redis.exceptions import RedisError

from fastgw.obs.metrics import GATEWAY, Gateway
from fastgw.obs.spool import Spool

SECRET_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "x-api-key", "token", "access_token"})
"""Query parameters dropped from logged paths (compared lower-case)."""
MAX_ERROR_LENGTH = 1000
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;\"']+")


def log(message: str) -> None:
    sys.stderr.write(f"fastgw usage {os.getpid()}: {message}\n")
    sys.stderr.flush()


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
        lane: str | None = None,
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
            "lane": lane,
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


DROP_LOG_INTERVAL = 10.0
"""Dropped usage records are logged at once, then at most this often (with the count since)."""

USAGE_SCRIPT = """
-- Append usage records to the stream exactly once, and charge the quota use they carry.
-- KEYS[1]: the stream; KEYS[2]: a hash writer id -> highest sequence number already added.
-- ARGV: maxlen, writer, then per record: seq, 2n, n field/value pairs, m, m key/amount pairs.
-- Records of one writer arrive in sequence order, so one number per writer remembers
-- which were added; a record at or below it is a replay of one already in the stream.
local hwm = tonumber(redis.call('HGET', KEYS[2], ARGV[2])) or 0
local i, added = 3, 0
while i <= #ARGV do
  local seq = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  local first = i + 2
  local m = tonumber(ARGV[first + n])
  if seq > hwm then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, first, first + n - 1))
    for j = 0, m - 1 do
      redis.call('HINCRBYFLOAT', ARGV[first + n + 1 + 2 * j], 'used', ARGV[first + n + 2 + 2 * j])
    end
    hwm = seq
    added = added + 1
  end
  i = first + n + 1 + 2 * m
end
redis.call('HSET', KEYS[2], ARGV[2], hwm)
return added
"""


class UsageSink:
    """Usage records for billing, added to a Redis stream off the request path, never lost.

    Construct and :meth:`start` it inside the worker's running loop; :meth:`record` per
    AI request; ``await`` :meth:`close` when draining. When Redis fails, records go to the
    worker's :class:`~fastgw.obs.spool.Spool` (and stay there across restarts) and are
    replayed, oldest first, once Redis answers; new records queue behind the spool so the
    stream sees each worker's records in order.

    Exactly once: every record carries its writer (a random id per sink) and a sequence
    number, and one Lua script adds a batch and moves the writer's high-water mark in the
    same atomic step. A batch that timed out after Redis applied it, or a crash between the
    script and the spool's truncation, is replayed and skipped, not doubled. (Explicit
    XADD ids cannot do this: stream ids must grow, and the workers' replays interleave.)
    Quota use a request could not charge while Redis was down (``on_redis_down: open``)
    rides on its record and is charged by the same script.
    """

    def __init__(
        self,
        redis_url: str,
        stream: str,
        *,
        maxlen: int,
        worker: int,
        spool: Spool | None = None,
        queue_size: int = 10_000,
        batch: int = 256,
        retry_delay: float = 1.0,
        metrics: Gateway = GATEWAY,
    ) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.maxlen = maxlen
        self.worker = worker
        self.spool = spool
        self.queue_size = queue_size
        self.batch = batch
        self.retry_delay = retry_delay
        self.metrics = metrics
        self.writer = uuid.uuid4().hex[:16]
        self._seq = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._inflight: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._client: Redis | None = None
        self._script: Any = None
        self._down = False
        self._unlogged_drops = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL

    def start(self) -> None:
        # Short timeouts: a hung Redis must send records to the spool, not hold a batch forever.
        self._client = Redis.from_url(self.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._script = self._client.register_script(USAGE_SCRIPT)
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
        owed: list[tuple[str, float]] | None = None,
        now: float | None = None,
    ) -> None:
        """Queue one AI request's usage (``owed``: quota keys and amounts still to charge); the
        prompt-cache counts (parts of prompt_tokens) are written only when non-zero."""
        if len(self._queue) >= self.queue_size and self.spool is None:
            self.metrics.log_dropped.inc(("usage", "queue_full"))
            return
        self._seq += 1
        fields: dict[str, str | int] = {
            "id": f"{self.writer}-{self._seq}",
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
        self._queue.append({"w": self.writer, "s": self._seq, "f": fields, "q": owed or []})
        if not self._wake.is_set():
            self._wake.set()

    # -- the background task ----------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            spool = self.spool
            if spool is not None and spool.pending:
                if await self._replay():
                    continue
                if self._closing:
                    return
                await self._outage_pause()
                continue
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._inflight = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            if await self._write(self._inflight):
                self._inflight = []
                continue
            await self._to_spool()
            if self._closing:
                return
            await self._outage_pause()

    async def _write(self, records: list[dict[str, Any]]) -> bool:
        """One script call per writer present in ``records``; False if Redis failed."""
        try:
            for writer, group in _by_writer(records):
                args: list[Any] = [self.maxlen, writer]
                for record in group:
                    fields = record["f"]
                    args += [record["s"], 2 * len(fields)]
                    for key, value in fields.items():
                        args += [key, value]
                    args.append(len(record["q"]))
                    for key, amount in record["q"]:
                        args += [key, repr(float(amount))]
                await self._script(keys=[self.stream, self.stream + ":writers"], args=args)
        except (RedisError, OSError):
            self.metrics.redis_errors.inc(("usage",))
            if not self._down:
                self._down = True
                log(f"warning: usage stream unavailable; records go to the spool {self._spool_name()}")
            return False
        if self._down:
            self._down = False
            log("usage stream available again; replaying the spool")
        return True

    async def _replay(self) -> bool:
        """Send the spool's oldest batch; True if it reached the stream."""
        spool = self.spool
        assert spool is not None
        records, offset = await asyncio.to_thread(spool.read, self.batch)
        if not await self._write(records):
            return False
        await asyncio.to_thread(spool.commit, offset)
        self.metrics.usage_spool.inc(("replayed",), len(records))
        return True

    async def _to_spool(self) -> None:
        """The batch in flight and everything queued behind it go to disk, in order."""
        records = self._inflight + list(self._queue)
        self._inflight = []
        self._queue.clear()
        if records:
            dropped = len(records)
            if self.spool is not None:
                dropped = await asyncio.to_thread(self.spool.append, records)
            self._count_spooled(len(records), dropped)

    def _count_spooled(self, total: int, dropped: int) -> None:
        if total - dropped:
            self.metrics.usage_spool.inc(("spooled",), total - dropped)
        if dropped:
            self.metrics.usage_spool.inc(("dropped",), dropped)
            self.metrics.log_dropped.inc(("usage", "spool_full" if self.spool is not None else "redis_error"), dropped)
            self._unlogged_drops += dropped
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_INTERVAL or self._closing:
                where = f"the spool {self._spool_name()} is full" if self.spool is not None else "there is no spool"
                log(f"ERROR: {self._unlogged_drops} usage record(s) DROPPED: Redis is unavailable and {where}")
                self._unlogged_drops = 0
                self._drop_logged_at = now

    async def _outage_pause(self) -> None:
        """Wait ``retry_delay`` before trying Redis again; records arriving meanwhile are spooled."""
        deadline = asyncio.get_running_loop().time() + self.retry_delay
        while not self._closing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return
            await self._to_spool()

    def _spool_name(self) -> str:
        return self.spool.path if self.spool is not None else "(none)"

    async def close(self, timeout: float = 1.0) -> None:
        """Flush to Redis for up to ``timeout`` seconds; what is left goes to the spool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except asyncio.TimeoutError:
                pass  # wait_for cancelled it; the batch it held is still in _inflight
        records = self._inflight + list(self._queue)
        self._inflight = []
        self._queue.clear()
        if records:
            dropped = self.spool.append(records) if self.spool is not None else len(records)
            self._count_spooled(len(records), dropped)
        if self._client is not None:
            await self._client.aclose()


def _by_writer(records: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive runs of one writer's records (a spool holds several writers' after restarts)."""
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for record in records:
        if runs and runs[-1][0] == record["w"]:
            runs[-1][1].append(record)
        else:
            runs.append((record["w"], [record]))
    return runs

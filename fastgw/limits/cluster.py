"""Cluster-wide counters in Redis, and knowing when Redis is gone.

A worker makes one :class:`RedisLink` in its event loop and keeps it across config
generations while the ``redis`` URL stays the same. Each request costs one round trip:
``reserve.lua`` checks and charges every key of the request atomically (Redis runs
scripts one at a time), so replicas and workers share one budget exactly (LiteLLM's TPM
check read local memory: limit x replicas). Scripts go by EVALSHA, falling back to EVAL
(which also caches the script) when Redis answers NOSCRIPT after a restart or flush.

Outages: the first error or timeout (``timeout``, 100 ms by default; a
``?socket_timeout=0.05`` in the URL overrides it) marks the link down, logs one warning,
and starts a background PING every ``retry_interval``; until a PING succeeds no request
waits on Redis (the limiter applies each rule's ``on_redis_down``). The first answer marks
the link up again, with no restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fastgw.config.secrets import SCRUBBER
from fastgw.resp import RespClient, RespError

_SCRIPTS = Path(__file__).with_name("scripts")

OUTAGE_ERRORS = (RespError, OSError, asyncio.TimeoutError)
"""What counts as Redis being unavailable: refused, reset, timed out, or answering with an
error (a script error too: failing over beats failing every request)."""


def log(message: str) -> None:
    """One line to stderr in one ``write(2)``, like the supervisor and workers."""
    os.write(2, f"fastgw limits {os.getpid()}: {SCRUBBER(message)}\n".encode())


class Script:
    """A Lua script from ``scripts/``, run by SHA with a fallback to its source."""

    __slots__ = ("source", "sha")

    def __init__(self, name: str) -> None:
        self.source = (_SCRIPTS / name).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


RESERVE = Script("reserve.lua")
SETTLE = Script("settle.lua")
ACQUIRE = Script("acquire.lua")
ACQUIRE_QUEUED = Script("acquire_queued.lua")
RENEW = Script("renew.lua")
RELEASE = Script("release.lua")


class RedisLink:
    """One worker's connection to Redis, and whether Redis is currently usable."""

    def __init__(self, url: str, *, timeout: float = 0.1, retry_interval: float = 1.0) -> None:
        # No client-side retries: a retry would multiply the latency of an outage, and the
        # limiter has its own answer (on_redis_down) for a Redis that does not respond.
        override = parse_qs(urlsplit(url).query).get("socket_timeout")
        self._client = RespClient(url, float(override[0]) if override else timeout)
        self.retry_interval = retry_interval
        self.up = True
        self._probe: asyncio.Task | None = None

    async def reserve(self, keys: list[str], args: list[str | int | float]) -> list | None:
        """``reserve.lua``'s reply, or None if Redis failed (it is then marked down)."""
        return await self._run(RESERVE, keys, args)

    async def settle(self, keys: list[str], args: list[str | int | float]) -> bool:
        """Run ``settle.lua``; False if Redis failed (it is then marked down)."""
        return await self._run(SETTLE, keys, args) is not None

    async def acquire(self, keys: list[str], args: list[str | int | float]) -> list | None:
        """``acquire.lua``'s reply (concurrency slots), or None if Redis failed."""
        return await self._run(ACQUIRE, keys, args)

    async def acquire_queued(self, keys: list[str], args: list[str | int | float]) -> list | None:
        """``acquire_queued.lua``'s reply (slots behind a wait queue), or None if Redis failed."""
        return await self._run(ACQUIRE_QUEUED, keys, args)

    async def renew(self, keys: list[str], args: list[str | int | float]) -> bool:
        """Extend slot leases with ``renew.lua``; False if Redis failed."""
        return await self._run(RENEW, keys, args) is not None

    async def release(self, keys: list[str], args: list[str | int | float]) -> bool:
        """Give slots back with ``release.lua``; False if Redis failed."""
        return await self._run(RELEASE, keys, args) is not None

    async def _run(self, script: Script, keys: list[str], args: list[str | int | float]) -> list | None:
        try:
            try:
                return await self._client.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except RespError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                return await self._client.call("EVAL", script.source, len(keys), *keys, *args)
        except OUTAGE_ERRORS as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: BaseException) -> None:
        """Mark Redis down: warn once per outage and start probing for its return."""
        if not self.up:
            return
        self.up = False
        log(
            f"warning: Redis unavailable ({type(exc).__name__}: {exc}); limits use on_redis_down until it answers"
        )
        self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval)
            try:
                await self._client.call("PING")
            except OUTAGE_ERRORS:
                continue
            self.up = True
            log("Redis is back; limits are cluster-wide again")
            return

    async def command(self, *args: object) -> object:
        """Any other command on the link's connection (tests read Redis TIME this way)."""
        return await self._client.call(*args)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._client.close()

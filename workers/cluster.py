"""Config generations across a cluster: one push through Redis reaches every node.

``fastgw push --redis URL`` stores the config text under a version that one Lua script
increments, stores and announces atomically (two concurrent pushes get distinct versions
and the stored text always matches its version). Each supervisor whose config sets
``redis`` follows: it subscribes to the announcement channel and, as a safety net for a
missed message or a Redis restart, polls the stored version every few seconds. A node
that starts later adopts the cluster's latest push at startup. Every version goes through
the same validation as ``POST /config``: an invalid one is logged and changes nothing.

The supervisor stays free of event-loop code and of extra threads around fork(): its
main loop polls with the synchronous redis client.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from redis.exceptions import RedisError

from fastgw.cluster import CHANNEL, CONFIG_KEY, POLL_INTERVAL


class ConfigFollower:
    """Applies config versions pushed to the cluster; driven by the supervisor's main loop.

    Not a thread: the supervisor forks workers, and a fork while another thread holds an
    import lock (or any lock) leaves the child stuck forever. :meth:`poll` never blocks for
    long: the announcement is read without waiting, Redis calls time out quickly, and a
    down Redis is retried once a second. ``apply(text, source)`` is the supervisor's
    validated push (it raises on an invalid config, which is logged and skipped).
    """

    def __init__(self, url: str, apply: Callable[[str, str], object], log: Callable[[str], None]) -> None:
        self.url = url
        self.apply = apply
        self.log = log
        # The last push seen (applied, or rejected as invalid), by version and content: a Redis
        # without persistence restarts its counter, so a lower version is still news.
        self.applied: tuple[int, int] | None = None
        self._client: redis.Redis | None = None
        self._pubsub = None
        self._next_poll = 0.0
        self._next_retry = 0.0
        self._failing = False

    def poll(self, now: float) -> None:
        """Catch up on an announcement, or every POLL_INTERVAL as a safety net."""
        if now < self._next_retry:
            return
        try:
            if self._pubsub is None:
                self._connect()
                self._next_poll = 0.0
            announced = self._pubsub.get_message(timeout=0) is not None
            if announced or now >= self._next_poll:
                self._next_poll = now + POLL_INTERVAL
                self._catch_up()
            if self._failing:
                self.log("cluster config: Redis is back")
                self._failing = False
        except RedisError as exc:
            if not self._failing:
                self.log(f"cluster config: Redis unavailable ({exc}); retrying (the running config stays)")
            self._failing = True
            self._next_retry = now + 1.0
            self.close()

    def _connect(self) -> None:
        self._client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL)
        self._pubsub = pubsub

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _catch_up(self) -> None:
        stored = self._client.hgetall(CONFIG_KEY)
        if not stored:
            return
        version = int(stored[b"version"])
        seen = (version, hash(stored[b"text"]))
        if seen == self.applied:
            return
        self.applied = seen
        source = f"redis push v{version} ({stored.get(b'source', b'?').decode(errors='replace')})"
        try:
            self.apply(stored[b"text"].decode(), source)
        except Exception as exc:  # an invalid config: logged, the running generation stays
            self.log(f"cluster config: rejected {source}: {exc}")

"""Config generations across a cluster: one push through Redis reaches every node.

``fastgw push --redis URL`` stores the config text under a version that one Lua script
increments, stores and announces atomically (two concurrent pushes get distinct versions
and the stored text always matches its version). Each supervisor whose config sets
``redis`` follows: it subscribes to the announcement channel and, as a safety net for a
missed message or a Redis restart, polls the stored version every few seconds. A node
that starts later adopts the cluster's latest push at startup. Every version goes through
the same validation as ``POST /config``: an invalid one is logged and changes nothing.

The supervisor stays free of event-loop code: this is a plain thread with the synchronous
redis client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

CONFIG_KEY = "fastgw:config"
VERSION_KEY = "fastgw:config:version"
CHANNEL = "fastgw:config"
POLL_INTERVAL = 5.0

_PUBLISH = """
local version = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'version', version, 'text', ARGV[1], 'source', ARGV[2])
redis.call('PUBLISH', ARGV[3], version)
return version
"""


def publish(url: str, text: str, source: str) -> int:
    """Store ``text`` as the cluster's next config version and announce it; returns the version."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return int(client.eval(_PUBLISH, 2, VERSION_KEY, CONFIG_KEY, text, source, CHANNEL))
    finally:
        client.close()


class ConfigFollower:
    """The supervisor's thread that applies config versions pushed to the cluster.

    ``apply(text, source)`` is the supervisor's validated push (it raises on an invalid
    config, which is logged and skipped); ``log`` writes one supervisor log line.
    """

    def __init__(self, url: str, apply: Callable[[str, str], object], log: Callable[[str], None]) -> None:
        self.url = url
        self.apply = apply
        self.log = log
        # The last push seen (applied, or rejected as invalid), by version and content: a Redis
        # without persistence restarts its counter, so a lower version is still news.
        self.applied: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastgw-config-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_timeout=POLL_INTERVAL + 1, socket_connect_timeout=2)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL)
                self._catch_up(client)  # anything pushed while we were not subscribed
                if failing:
                    self.log("cluster config: Redis is back")
                    failing = False
                while not self._stop.is_set():
                    pubsub.get_message(timeout=POLL_INTERVAL)  # an announcement, or the poll interval
                    if not self._stop.is_set():
                        self._catch_up(client)
            except RedisError as exc:
                if not failing:
                    self.log(f"cluster config: Redis unavailable ({exc}); retrying (the running config stays)")
                failing = True
                self._stop.wait(1.0)
            finally:
                pubsub.close()
                client.close()

    def _catch_up(self, client: redis.Redis) -> None:
        stored = client.hgetall(CONFIG_KEY)
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

"""The cluster's config channel in Redis: where a push stores a config and how it is announced.

``fastgw push --redis URL`` calls :func:`publish`; every supervisor with ``redis`` follows the
same keys (``workers.cluster.ConfigFollower``). One Lua script increments the version, stores
the text and announces it atomically, so two concurrent pushes get distinct versions and
the stored text always matches its version.
"""

from __future__ import annotations

import redis

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

"""The ``cache`` section: answers of the AI front door kept and served again.

::

    cache:
      key: all_messages | last_user_message   # what identifies a question (plus model and params)
      params: [temperature, tools, response_format]   # request fields that are part of the key
      ttl: 1h
      scope: consumer | route | global        # whose answers a request may be served
      store: memory | redis                   # memory: shared by a node's workers; redis: the top-level URL
      max_entries: 10000                      # memory store bound (oldest first), and per-scope vector bound
      semantic:                               # optional: near-identical questions count as hits
        embeddings_url: http://127.0.0.1:9000/v1/embeddings
        model: text-embedding-3-small
        api_key: ${KEY}                       # optional
        threshold: 0.92                       # cosine similarity needed for a hit
        timeout: 500ms

``key`` defaults to ``all_messages``: ``last_user_message`` ignores the system prompt and
the history, so it is an explicit choice, not a default that could serve an answer given
under another system prompt. ``scope`` defaults to ``consumer`` so one tenant never sees
another's answers. ``memory`` is one cache per node, shared by all workers of one ``fastgw
run`` (answers and semantic vectors; a SQLite file in ``/dev/shm``, see
:class:`fastgw.cache.store.NodeStore`), not by other gateways; until this version it was
one cache per worker process. ``redis`` shares one cache between nodes.

Normalised: ``None`` when absent, else ``{key, params, ttl (s), scope, store, max_entries,
semantic: None | {embeddings_url, model, api_key (None if absent), threshold, timeout (s)}}``.
"""

from __future__ import annotations

from typing import Any

from fastgw.config import net
from fastgw.config.fields import Issues, duration, fields, integer, one_of, sequence, text
from fastgw.extras import requirement

DEFAULT_PARAMS = ["temperature", "tools", "response_format"]
RESERVED_PARAMS = ("model", "messages", "stream", "stream_options")
"""Never chosen as params: model and messages are always part of the key, and a stream is
answered from the same entry as a non-streamed request (replayed as SSE)."""


def cache(value: Any, issues: Issues, redis_url: str | None) -> dict | None:
    """Check the ``cache`` mapping; ``redis_url`` is the normalised top-level Redis URL."""
    if value is None:
        return None
    out = fields(
        value,
        "cache",
        issues,
        {
            "key": (one_of("all_messages", "last_user_message"), "all_messages"),
            "params": (_params, list(DEFAULT_PARAMS)),
            "ttl": (duration(), 3600.0),
            "scope": (one_of("consumer", "route", "global"), "consumer"),
            "store": (one_of("memory", "redis"), "memory"),
            "max_entries": (integer(1), 10000),
            "semantic": (_semantic, None),
        },
    )
    if out["store"] == "redis" and redis_url is None:
        issues.add("cache.store", "'redis' needs the top-level 'redis' URL to be set")
    return out


def _params(value: Any, path: str, issues: Issues) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(sequence(value, path, issues) or []):
        name = text(item, f"{path}[{i}]", issues)
        if name is None:
            continue
        if name in RESERVED_PARAMS:
            issues.add(
                f"{path}[{i}]",
                f"{name!r} cannot be chosen (model and messages are always in the key; streams share entries)",
            )
        elif name in out:
            issues.add(f"{path}[{i}]", f"duplicate parameter {name!r}")
        else:
            out.append(name)
    return out


def _semantic(value: Any, path: str, issues: Issues) -> dict | None:
    if value is None:
        return None
    out = fields(
        value,
        path,
        issues,
        {
            "embeddings_url": (net.base_url, None),
            "model": (text, None),
            "api_key": (text, None),
            "threshold": (_similarity, 0.92),
            "timeout": (duration(), 0.5),
        },
    )
    if isinstance(value, dict):
        for key in ("embeddings_url", "model"):
            if key not in value:
                issues.add(f"{path}.{key}", "required")
    problem = requirement("numpy")
    if problem:
        issues.add(path, problem)
    return out


def _similarity(value: Any, path: str, issues: Issues) -> float | None:
    """A cosine similarity in (0, 1]: 0 or less would call unrelated questions the same."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        issues.add(path, f"expected a number greater than 0 and at most 1, found {issues.describe(value)}")
        return None
    return float(value)

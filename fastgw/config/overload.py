"""``http.overload`` and request priorities: shedding load before latency collapses.

::

    http:
      overload: {max_in_flight: 512, max_loop_lag: 50ms, retry_after: 1, pause: 250ms}
    consumers: [{name: batch, api_keys: [...], priority: low}]
    routes: [{name: checkout, ..., priority: high}]

Either threshold may be left out (not both). A worker is loaded by the larger of
``in flight / max_in_flight`` and ``loop lag / max_loop_lag``, where a request counts only
the requests in flight of its own priority or higher: at 0.75 it sheds new ``low``
requests, at 1 ``normal`` ones (admitted low traffic never gets a normal request shed);
``high`` ones are never shed. A request's
priority is its consumer's if set, else its route's, else ``normal``. After a shed ``low``
answer the connection is not read for ``pause`` (default 250ms; 0: read on at once), so a client
retrying at once on it waits in the kernel instead of costing the worker another refusal.

Normalised: ``null`` (off) or ``{max_in_flight: N | null, max_loop_lag: seconds | null,
retry_after: seconds, pause: seconds}``; priorities: ``"low" | "normal" | "high" | null``.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.fields import Issues, duration, integer, mapping, one_of

PRIORITIES = ("low", "normal", "high")
priority = one_of(*PRIORITIES)
_KEYS = ("max_in_flight", "max_loop_lag", "retry_after", "pause")
DEFAULT_PAUSE = 0.25
"""Seconds a connection whose request was shed is not read."""


def overload(value: Any, path: str, issues: Issues) -> dict | None:
    """Check ``http.overload``; None turns shedding off."""
    if value is None:
        return None
    given = mapping(value, path, issues, _KEYS)
    if given is None:
        return None
    if "max_in_flight" not in given and "max_loop_lag" not in given:
        issues.add(path, "expected max_in_flight, max_loop_lag or both")
    return {
        "max_in_flight": integer(1)(given["max_in_flight"], f"{path}.max_in_flight", issues)
        if "max_in_flight" in given
        else None,
        "max_loop_lag": duration()(given["max_loop_lag"], f"{path}.max_loop_lag", issues)
        if "max_loop_lag" in given
        else None,
        "retry_after": integer(1)(given["retry_after"], f"{path}.retry_after", issues)
        if "retry_after" in given
        else 1,
        "pause": duration(allow_zero=True)(given["pause"], f"{path}.pause", issues)
        if "pause" in given
        else DEFAULT_PAUSE,
    }

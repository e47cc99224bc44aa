"""``http.overload`` and request priorities: shedding load before latency collapses.

::

    http:
      overload: {max_cpu: 80%, max_in_flight: 512, max_loop_lag: 50ms, retry_after: 1, pause: 1s}
    consumers: [{name: batch, api_keys: [...], priority: low}]
    routes: [{name: checkout, ..., priority: high}]

Any threshold may be left out (not all). A worker is loaded by the largest of
``busy / max_cpu``, ``in flight / max_in_flight`` and ``loop lag / max_loop_lag``, where a
request counts only the requests in flight of its own priority or higher: at 0.75 it sheds new ``low``
requests (a rising share of them from 0.85 x 0.75), at 1 ``normal`` ones (admitted low traffic never gets a normal request shed);
``high`` ones are never shed. A request's
priority is its consumer's if set, else its route's, else ``normal``. After a shed ``low``
answer the connection is not read for ``pause`` (default: ``retry_after``, what the answer told the
client to wait; 0: read on at once), so a client retrying at once on it waits in the kernel instead
of costing the worker another refusal. (A 250 ms default let each of the bench's 512 flood
connections be refused four times a second: refusals were most of the worker's flood work.)

``max_cpu`` is the share of one core the worker's event loop may be busy before it sheds new
``low`` requests (``80%`` or ``0.8``), measured over the last ~30 ms; it never sheds ``normal``
ones, which a worker busy with normal traffic is there to serve. It is the signal that holds latency on a fast upstream: there a
handful of requests in flight, answered back to back, already keep a core saturated, so an
in-flight cap cannot tell an overload from a normal load, while a busy share can.

Normalised: ``null`` (off) or ``{max_cpu: fraction | null, max_in_flight: N | null,
max_loop_lag: seconds | null, retry_after: seconds, pause: seconds}``; priorities: ``"low" | "normal" | "high" | null``.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.fields import Issues, duration, integer, mapping, one_of

PRIORITIES = ("low", "normal", "high")
priority = one_of(*PRIORITIES)
_KEYS = ("max_cpu", "max_in_flight", "max_loop_lag", "retry_after", "pause")
THRESHOLDS = ("max_cpu", "max_in_flight", "max_loop_lag")


def overload(value: Any, path: str, issues: Issues) -> dict | None:
    """Check ``http.overload``; None turns shedding off."""
    if value is None:
        return None
    given = mapping(value, path, issues, _KEYS)
    if given is None:
        return None
    if not any(key in given for key in THRESHOLDS):
        issues.add(path, "expected max_cpu, max_in_flight or max_loop_lag")
    retry_after = (integer(1)(given["retry_after"], f"{path}.retry_after", issues)
                   if "retry_after" in given else 1)
    return {
        "max_cpu": _share(given["max_cpu"], f"{path}.max_cpu", issues) if "max_cpu" in given else None,
        "max_in_flight": integer(1)(given["max_in_flight"], f"{path}.max_in_flight", issues)
        if "max_in_flight" in given
        else None,
        "max_loop_lag": duration()(given["max_loop_lag"], f"{path}.max_loop_lag", issues)
        if "max_loop_lag" in given
        else None,
        "retry_after": retry_after,
        # by default the shed connection is not read before the Retry-After it was given
        "pause": duration(allow_zero=True)(given["pause"], f"{path}.pause", issues)
        if "pause" in given
        else float(retry_after or 1),
    }


def _share(value: Any, path: str, issues: Issues) -> float | None:
    """A share of one core: ``80%`` or ``0.8``, above 0 and at most 1."""
    share = None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            share = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        share = float(value)
    if share is None or not 0 < share <= 1:
        issues.add(path, f"expected a share of one core above 0 and at most 1 (80% or 0.8), got {value!r}")
        return None
    return share

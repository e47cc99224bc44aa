"""The top-level ``console`` key: options of the admin plane's web console.

::

    console:
      summarise:                 # off unless given
        model: gpt-4o-mini       # a model this gateway serves (models[].name)
        api_key: ${CONSOLE_KEY}  # a consumer's key, when the front door needs one
        timeout: 30s

``summarise`` lets an operator ask, from ``/ui/errors`` or ``POST /diagnose/summary``, for a
plain-language summary of one group of recent failures, written by ``model``. The request goes
to this gateway's own front door like any client's (so limits, logs, cost and the model's
failover all apply); nothing is sent anywhere unless an operator asks.

Normalised: ``{summarise: None | {model, api_key (None if absent), timeout (s)}}``.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from fastgw.config.fields import Issues, duration, mapping, required, text


def console(value: Any, issues: Issues, models: list[str]) -> dict[str, Any]:
    if value is None:
        return {"summarise": None}
    given = mapping(value, "console", issues, ("summarise",)) or {}
    spec = given.get("summarise")
    if spec is None:
        return {"summarise": None}
    summarise = mapping(spec, "console.summarise", issues, ("model", "api_key", "timeout"))
    if summarise is None:
        return {"summarise": None}
    model = required(summarise, "model", "console.summarise", issues, text)
    if model is not None and not any(fnmatch.fnmatchcase(model, name) for name in models):
        issues.add("console.summarise.model", f"no model named {model!r} is served (models[].name)")
    api_key = text(summarise["api_key"], "console.summarise.api_key", issues) if summarise.get("api_key") else None
    timeout = duration()(summarise["timeout"], "console.summarise.timeout", issues) if "timeout" in summarise else 30.0
    return {"summarise": {"model": model, "api_key": api_key, "timeout": timeout}}

"""Plain-language diagnosis of a failed request, from its own record (fastgw.obs.recent).

Each record gets one cause (the first that applies: the gateway's own refusals, then what
the providers did, then the plain upstream), an explanation naming who did what, and the
fix, with the config path to change where there is one. ``GET /diagnose`` groups records by
cause; ``GET /diagnose?request_id=`` explains one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

Diagnosis = dict[str, Any]


def _key_path(config: dict, provider: str, key_index: int) -> str:
    for i, spec in enumerate(config.get("providers", [])):
        if spec["name"] == provider:
            return f"providers[{i}].api_keys[{key_index}]"
    return f"the API key #{key_index} of provider '{provider}'"


def _limit_path(config: dict, name: str | None) -> str:
    for i, rule in enumerate(config.get("limits", [])):
        if rule.get("name") == name:
            return f"limits[{i}]"
    return "limits"


def _lane_path(config: dict, name: str) -> str:
    for i, lane in enumerate(config.get("lanes", [])):
        if lane.get("name") == name:
            return f"lanes[{i}]"
    return "lanes"


def _seconds(value: float) -> str:
    return f"{value * 1000:g} ms" if value < 1 else f"{value:g} s"


def _failover(record: dict, after: int) -> str:
    """What happened after the failure at ``after`` in ``record['failures']``."""
    failures = record["failures"]
    if record["status"] < 400 and record.get("provider"):
        return f"failed over to '{record['provider']}', which answered"
    if after + 1 < len(failures):
        return f"failed over to '{failures[after + 1]['provider']}'"
    return "no other target was left to try"


def explain(record: dict, config: dict) -> Diagnosis:
    """``{cause, explanation, fix}`` for one record."""
    code, status, consumer = record.get("code"), record["status"], record.get("consumer") or "anonymous"
    message = record.get("message") or ""
    if code == "insufficient_quota":
        return _out("quota_exhausted", f"consumer '{consumer}' used up its quota: {message}",
                    f"top it up or raise it (POST /quota, or {_limit_path(config, record.get('limit'))} in the config), "
                    "or wait for its period to renew")
    if code == "rate_limit_exceeded" and record.get("limit"):  # a gateway limit (a provider's 429 names none)
        return _out("consumer_limit", f"consumer '{consumer}' hit the limit '{record.get('limit')}': {message}",
                    f"raise it ({_limit_path(config, record.get('limit'))}) or spread the load over time")
    if code == "lane_unavailable":
        lane = record.get("lane")
        where = "routes[].upstream.endpoints[].lane" if record.get("op") is None else "models[].targets[].lane"
        if lane is None:
            fix = f"add an endpoint or target without a lane (the base lane's), or drop the lane tags ({where})"
        else:
            fix = (f"tag an endpoint or target with lane: {lane} ({where}), or let the lane use the base lane's "
                   f"(fallback: base in {_lane_path(config, lane)})")
        return _out("lane_unavailable", message, fix)
    if code == "content_filter":
        return _out("guard_block", f"the guard refused the request: {message}",
                    "rephrase the request, or review the guard rules (guard.rules) if this is a false positive")
    for i, failure in enumerate(record.get("failures", [])):
        provider, key = failure["provider"], failure["key_index"]
        then = _failover(record, i)
        if failure.get("upstream_status") in (401, 403):
            return _out("provider_auth",
                        f"provider '{provider}' answered {failure['upstream_status']} for key #{key}: the key was "
                        f"revoked or mistyped ({then})",
                        f"set a valid key in {_key_path(config, provider, key)}; the gateway rests the key meanwhile "
                        "(providers[].key_cooldown.unauthorized)")
        if failure.get("upstream_status") == 429:
            return _out("provider_rate_limited",
                        f"provider '{provider}' answered 429 for key #{key}: that key is over the provider's "
                        f"rate limit or quota ({then})",
                        "add keys to the provider, raise the limits of the account, or add another target to the model")
        if failure.get("code") == "upstream_timeout":
            what = "first token" if failure.get("stream") else "answer"
            bound = "first_byte" if failure.get("stream") else "idle"
            return _out("first_token_timeout",
                        f"the {what} did not arrive within `{bound}` {_seconds(failure['first_byte'])} from provider "
                        f"'{provider}'; {then}",
                        f"if the provider is just slow, raise providers[].timeouts.{bound} of '{provider}'; "
                        "otherwise check its status page")
    if code == "no_healthy_upstream":
        route = record.get("route") or "?"
        return _out("no_healthy_upstream", f"route '{route}': {message}",
                    "GET /upstreams shows each endpoint's state: undrain a drained one (POST /upstreams/undrain), "
                    "fix what fails its health check (routes[].upstream.health), or wait for an ejection to end "
                    "(routes[].upstream.outlier)")
    if record.get("op") is None and status in (502, 503, 504):
        route = record.get("route") or "?"
        return _out("upstream_unavailable", f"route '{route}': {message}",
                    f"check that the upstream of route '{route}' is running and reachable from the gateway "
                    "(routes[].upstream)")
    return _out(code or f"status_{status}", message or f"the request ended with status {status}",
                "see the message: the request itself may need fixing")


def _out(cause: str, explanation: str, fix: str) -> Diagnosis:
    return {"cause": cause, "explanation": explanation, "fix": fix}


def group(records: list[dict], config: dict) -> list[dict]:
    """Recent failures by cause, the most frequent first, each with its latest example."""
    causes: dict[str, dict] = {}
    counts: Counter[str] = Counter()
    for record in records:
        found = explain(record, config)
        counts[found["cause"]] += 1
        causes[found["cause"]] = {**found, "latest": record}  # records are oldest first: the last one stays
    return [{"count": counts[c], **causes[c]} for c, _ in counts.most_common()]

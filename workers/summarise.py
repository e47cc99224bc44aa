"""``POST /diagnose/summary``: a configured model summarises one group of recent failures.

The admin plane asks this gateway's own front door (``listen``), as any client would, so the
call is authenticated, limited, logged and priced like the others and the model's failover
applies; it only happens when an operator asks (``console.summarise`` is off by default).
Stdlib HTTP: the admin plane runs in the supervisor, which has no event loop.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

EXAMPLES = 5
"""Failed requests of the group shown to the model (the newest)."""
RECORD_FIELDS = ("status", "code", "message", "route", "op", "model", "provider", "consumer", "limit", "attempts",
                 "failures", "duration", "ttft")
INSTRUCTIONS = (
    "You help the operator of an AI gateway. Below is one group of recent failed requests, with the gateway's own "
    "diagnosis. In at most five sentences of plain language say what went wrong, who is affected, and what to do "
    "first. Only name config keys that appear in the diagnosis."
)


class SummaryFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def front_door(listen: dict[str, Any]) -> str:
    """The URL the supervisor reaches its own listener at (a wildcard address via loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen["host"] or "", listen["host"])
    scheme = "https" if listen.get("tls") else "http"
    return f"{scheme}://[{host}]:{listen['port']}" if ":" in host else f"{scheme}://{host}:{listen['port']}"


def prompt(group: dict[str, Any], records: list[dict[str, Any]]) -> str:
    examples = [{k: r.get(k) for k in RECORD_FIELDS} for r in records[-EXAMPLES:]]
    return json.dumps({"cause": group["cause"], "count": group["count"], "diagnosis": group["explanation"],
                       "suggested_fix": group["fix"], "examples": examples}, indent=1)


def summarise(group: dict[str, Any], records: list[dict[str, Any]], spec: dict[str, Any], listen: dict[str, Any]) -> str:
    """The model's summary of ``group`` (its ``records``, oldest first); raises :class:`SummaryFailed`."""
    body = json.dumps({"model": spec["model"], "messages": [
        {"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": prompt(group, records)}]}).encode()
    headers = {"content-type": "application/json", "user-agent": "fastgw-console"}
    if spec["api_key"]:
        headers["authorization"] = f"Bearer {spec['api_key']}"
    request = urllib.request.Request(front_door(listen) + "/v1/chat/completions", body, headers, method="POST")
    # Our own listener on loopback: its certificate is for the public name, not for 127.0.0.1.
    context = ssl._create_unverified_context() if listen.get("tls") else None
    try:
        with urllib.request.urlopen(request, timeout=spec["timeout"], context=context) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise SummaryFailed(502, f"the gateway answered {exc.code} for model '{spec['model']}': {message}") from None
    except (OSError, ValueError) as exc:
        raise SummaryFailed(504 if "timed out" in str(exc) else 502,
                            f"no summary from model '{spec['model']}': {exc}") from None
    try:
        return answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SummaryFailed(502, f"model '{spec['model']}' answered without a message") from None

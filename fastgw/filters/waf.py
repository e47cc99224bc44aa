"""The WAF as a filter (engine: fastgw.waf, libmodsecurity + the OWASP CRS), on a plain route
(the request line, headers and body) or an AI model (the same, the body being the decoded
request with its prompts), before anything reaches the upstream.

Block mode answers 403 ``waf_blocked`` in the client's dialect, naming the matched rule ids
(also in ``x-fastgw-waf-rules``); detect mode lets the request through and only counts and
logs. The matched data itself is never echoed or logged: only rule ids and rule messages.
"""

from __future__ import annotations

import sys
from typing import Any

from fastgw.filters.api import Filter, Phase, Status
from fastgw.obs.metrics import GATEWAY
from fastgw.server.stream import Stream
from fastgw.waf import Verdict, body_for, inspect, rules_for


class WafFilter(Filter):
    name = "waf"
    phase = Phase.POLICY
    priority = -10  # before the guard and transforms: the request as the client sent it
    needs_body = True
    stateless = True

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.block = spec["mode"] == "block"
        self.rules = rules_for(spec)

    def on_request_body(self, s: Stream, body: bytes) -> Status:
        return self._verdict(s, body)

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        return self._verdict(s, body_for(s.native_request or s.decoded or request))

    def _verdict(self, s: Stream, body: bytes) -> Status:
        head = s.head
        version = b"1.1" if head.version == 11 else b"1.0"
        verdict = inspect(self.rules, s.peer, head.method, head.target, version, head.headers, body)
        if not verdict.rules:
            return Status.CONTINUE
        where = s.route_name or s.model or "-"
        for rule in verdict.rules:
            GATEWAY.waf_matches.inc((rule, "block" if self.block else "detect"))
        if verdict.status and self.block:
            return self._refuse(s, verdict)
        sys.stderr.write(f"fastgw: waf detected rules {','.join(verdict.rules)} on {where}: {verdict.message}\n")
        return Status.CONTINUE

    @staticmethod
    def _refuse(s: Stream, verdict: Verdict) -> Status:
        ids = ",".join(verdict.rules)
        s.error = f"waf: rules {ids}"
        if verdict.status == 400:  # the body did not parse as its Content-Type says
            return s.reply(400, "the request body does not parse as its Content-Type says", "invalid_body")
        headers = b"x-fastgw-waf-rules: %b\r\n" % ids.encode()
        return s.reply(verdict.status, f"the request was blocked by the WAF (rules {ids})", "waf_blocked", headers)

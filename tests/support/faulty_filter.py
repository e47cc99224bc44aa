"""A plugin filter that plants gateway bugs on request, to exercise the last resort.

``x-fault: request`` puts a value no JSON encoder takes into the request (the adapter's encode
raises TypeError); ``x-fault: target`` on a plain route rewrites the upstream target to an int (the
proxy's head builder raises); ``x-fault: stream`` hands the dialect writers malformed chunks in the last
on_sse_events call of a converted stream, after its head went out. Neither is a FilterError: the hooks return
normally and the failure happens later, in code that trusts them.
"""

from __future__ import annotations

from fastgw.filters import Filter, Phase, Status


class Faulty(Filter):
    name = "faulty"
    phase = Phase.POLICY

    def on_request_headers(self, s) -> Status:
        if s.op is None and s.head.get(b"x-fault") == b"target":  # a plain route: a target that is no bytes
            s.upstream_target = 12345
        return Status.CONTINUE

    def on_request(self, s, request) -> Status:
        if s.head.get(b"x-fault") == b"request":
            s.request = {**request, "extra": object()}
        return Status.CONTINUE

    def on_sse_events(self, s, events) -> Status:
        if s.head.get(b"x-fault") == b"stream" and s.stream_ending:
            events.append({"choices": ["not a choice object"]})  # breaks the OpenAI writer
            events.append({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "x"}]}}]})
        return Status.CONTINUE

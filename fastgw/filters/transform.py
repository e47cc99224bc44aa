"""Request/response rewriting as a filter (the engine is fastgw.transform).

On a plain route: headers, target and query on the head; the body (rules on it make the
route hold the body whole and send it with its new length); response headers. On a
model: body rules on the decoded request, and response headers on every answer.
"""

from __future__ import annotations

from typing import Any

from fastgw.filters.api import Filter, Phase, Status
from fastgw.server.stream import Stream
from fastgw.transform import Transform, TransformError


class TransformFilter(Filter):
    stateless = True
    name = "transform"
    phase = Phase.POLICY

    def __init__(self, options: dict[str, Any] | None = None, env: Any = None, *,
                 transform: Transform | None = None) -> None:
        super().__init__(options, env)
        self.transform = transform if transform is not None else Transform(self.options)
        self.needs_body = self.transform.needs_body
        # The gateway writes AI answers' heads itself: these lines are added to each.
        self.model_headers = b"".join(b"%b: %b\r\n" % pair for pair in self.transform.response_headers([]))

    def on_request_headers(self, s: Stream) -> Status:
        if s.op is None:
            head = s.head
            t = self.transform
            s.upstream_headers = t.request_headers(s.upstream_headers or head.headers)
            s.upstream_target = t.request_target(s.upstream_target or head.target)
        return Status.CONTINUE

    def on_request_body(self, s: Stream, body: bytes) -> Status:
        try:
            s.body = self.transform.request_body(body)
        except TransformError as exc:
            return s.reply(exc.status, exc.message, "invalid_request")
        return Status.CONTINUE

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        try:
            s.request = self.transform.apply_body_dict(request)  # e.g. a default max_tokens
        except TransformError as exc:
            return s.reply(exc.status, exc.message, "invalid_request")
        s.response_headers += self.model_headers
        return Status.CONTINUE

    def on_response_headers(self, s: Stream, status: int, headers: list) -> Status:
        headers[:] = self.transform.response_headers(headers)
        return Status.CONTINUE

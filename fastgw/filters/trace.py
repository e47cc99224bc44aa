"""Tracing: a span per request, in the OpenTelemetry GenAI conventions for AI requests.

On a chain only when the config has a ``tracing`` section (so a gateway without it builds no
per-request tracing object). The request span starts with the head, as a child of the
client's ``traceparent``; ``s.trace`` carries it to the handlers, which send its context
upstream (plain routes) or open one child span per provider attempt (AI). It ends in
``on_done`` with what the request became: status, model, provider, tokens, time to first token.
"""

from __future__ import annotations

from typing import Any

from fastgw.filters.api import Filter, Phase, Status
from fastgw.obs.genai import GEN_AI_OPERATIONS, gen_ai_provider
from fastgw.obs.tracing import Tracing
from fastgw.server.stream import Stream


class Trace(Filter):
    stateless = True  # the request's spans live on s.trace, which the handlers read
    name = "trace"
    phase = Phase.OBSERVE
    priority = -1  # before observe: the span starts first and ends after observe's on_done ran

    def __init__(self, tracing: Tracing) -> None:
        super().__init__()
        self.tracing = tracing

    def on_request_headers(self, s: Stream) -> Status:
        head = s.head
        carrier = {}
        parent = head.get(b"traceparent")
        if parent is not None:
            carrier["traceparent"] = parent.decode("latin-1")
            state = head.get(b"tracestate")
            if state is not None:
                carrier["tracestate"] = state.decode("latin-1")
        method = head.method.decode("latin-1")
        s.trace = self.tracing.start(carrier, method, {
            "http.request.method": method,
            "url.path": head.path.decode("latin-1"),
            "client.address": s.peer.decode("latin-1"),
        })
        return Status.CONTINUE

    def on_done(self, s: Stream) -> None:
        trace = s.trace
        if trace is None:  # refused before the head reached the chain
            return
        attributes: dict[str, Any] = {"http.response.status_code": s.status}
        if s.consumer is not None:
            attributes["fastgw.consumer"] = s.consumer.name
        if s.lane is not None:
            attributes["fastgw.lane"] = s.lane.name
        if s.op is None:
            if s.route_name:
                attributes["http.route"] = s.route_name
                trace.span.update_name(f"{s.head.method.decode('latin-1')} {s.route_name}")
        else:
            operation = GEN_AI_OPERATIONS.get(s.op, s.op)
            attributes["gen_ai.operation.name"] = operation
            if s.model:
                attributes["gen_ai.request.model"] = s.model
                trace.span.update_name(f"{operation} {s.model}")
            if s.provider:
                attributes["fastgw.provider"] = s.provider
                attributes["gen_ai.provider.name"] = gen_ai_provider(s.gen.ai.providers[s.provider].type)
            if s.served_model:
                attributes["gen_ai.response.model"] = s.served_model
            if s.attempts:
                attributes["fastgw.attempts"] = s.attempts
            if s.cache_status is not None:
                attributes["fastgw.cache"] = s.cache_status
            usage = s.usage
            if usage is not None:
                attributes["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
                attributes["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
            if s.first_byte_at is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = s.first_byte_at - s.started
        trace.finish(s.status, s.error, s.error_code, attributes)

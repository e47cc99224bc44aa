"""OpenTelemetry traces: one span per request, a child per provider attempt (GenAI conventions).

The SDK's ``BatchSpanProcessor`` queues finished spans and its own thread exports them over
OTLP/HTTP, so the event loop only appends to a bounded queue: a stalled collector makes the
queue drop spans, never the requests wait. The SDK is imported only when a config has a
``tracing`` section; without one no request creates any tracing object.

W3C trace context comes in with the client's ``traceparent`` (honoured: the request span is
its child, and its sampled flag decides) and leaves with the request to the upstream: plain
routes get the request span's context, providers get their attempt span's.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()
EXPORT_TIMEOUT = 5.0  # seconds the exporter thread waits on a collector (never the loop)
QUEUE_SIZE = 8192  # spans held for export; beyond it, new spans are dropped



class Tracing:
    """A worker's tracer: built once per ``tracing`` section, kept across generations."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": spec["service_name"]}),
            sampler=ParentBased(TraceIdRatioBased(spec["sample_ratio"])),
            shutdown_on_exit=False,  # workers leave by os._exit: close() flushes instead
        )
        exporter = OTLPSpanExporter(endpoint=spec["otlp_endpoint"], timeout=EXPORT_TIMEOUT)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=QUEUE_SIZE, schedule_delay_millis=1000,
                               export_timeout_millis=int(EXPORT_TIMEOUT * 1000))
        )
        self.tracer = self.provider.get_tracer("fastgw")

    def start(self, headers: dict[str, str], name: str, attributes: dict[str, Any]) -> RequestTrace:
        """The span of one request, child of the client's ``traceparent`` when it sent one."""
        parent = PROPAGATOR.extract(headers) if headers else None
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        return RequestTrace(self.tracer, span)

    def close(self) -> None:
        """Export what is queued (bounded by the export timeout) and stop the export thread."""
        self.provider.shutdown()


def traceparent_of(span: Span) -> bytes | None:
    """The ``traceparent`` header value naming ``span`` as the parent (None: nothing to send)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span, Context()))
    value = carrier.get("traceparent")
    return value.encode() if value else None


class RequestTrace:
    """The spans of one request: the request span, and the provider attempt being made."""

    __slots__ = ("tracer", "span", "attempt", "traceparent")

    def __init__(self, tracer: Any, span: Span) -> None:
        self.tracer = tracer
        self.span = span
        self.attempt: Span | None = None
        self.traceparent = traceparent_of(span)

    def attempt_started(self, name: str, attributes: dict[str, Any]) -> bytes | None:
        """A new provider attempt; returns the ``traceparent`` the provider gets."""
        self._end_attempt(None)
        self.attempt = self.child(name, attributes)
        return traceparent_of(self.attempt)

    def child(self, name: str, attributes: dict[str, Any]) -> Span:
        """A client span under the request's (a Redis round trip, a cache lookup); the caller ends it."""
        return self.tracer.start_span(
            name, context=trace.set_span_in_context(self.span, Context()), kind=SpanKind.CLIENT, attributes=attributes
        )

    def attempt_status(self, status: int) -> None:
        if self.attempt is not None:
            self.attempt.set_attribute("http.response.status_code", status)

    def attempt_failed(self, error: tuple[int, str, str]) -> None:
        """The open attempt (if any) failed: ``error`` is (status, message, code)."""
        self._end_attempt(error)

    def _end_attempt(self, error: tuple | None) -> None:
        attempt = self.attempt
        if attempt is None:
            return
        self.attempt = None
        if error is not None:
            status, message, code = error
            attempt.set_attribute("error.type", code or str(status))
            attempt.set_status(StatusCode.ERROR, message)
        attempt.end()

    def finish(self, status: int, error: str | None, code: str | None, attributes: dict[str, Any]) -> None:
        """The request is over: the open attempt ends with its outcome, then the request span."""
        span = self.span
        if status >= 400 or error:
            failed = (status, error or "", code or str(status))
            self._end_attempt(failed)
            span.set_attribute("error.type", code or str(status))
            span.set_status(StatusCode.ERROR, error or "")
        else:
            self._end_attempt(None)
        span.set_attributes(attributes)
        span.end()

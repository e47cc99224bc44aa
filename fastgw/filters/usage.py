"""Usage metering: every AI request's token counts, from the provider or counted, marked so.

Phase METER, nearest the handler: on the response side it is the first filter to see each
answer and each stream event, before any other filter may change them, so a guarded,
cached or transformed answer is metered from what the provider really produced. The
engine (where each provider reports usage, the estimate) is fastgw.ai.usage.
"""

from __future__ import annotations

from typing import Any

from fastgw.ai.usage import UsageMeter, wants_usage
from fastgw.filters.api import Filter, Phase, Status
from fastgw.server.stream import Stream


class Usage(Filter):
    name = "usage"
    phase = Phase.METER
    accepts_sse_runs = True  # runs of plain events carry no usage: only their bytes are kept

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        if s.op == "count_tokens":  # counting costs no tokens: nothing to meter
            return Status.CONTINUE
        s.vars[self.slot] = UsageMeter(wants_usage(request))
        return Status.CONTINUE

    def on_response(self, s: Stream, response: dict[str, Any]) -> Status:
        s.vars[self.slot].answer(response)
        return Status.CONTINUE

    def on_sse_events(self, s: Stream, events: list) -> Status:
        meter: UsageMeter = s.vars[self.slot]
        kind = s.events_kind
        if kind == "openai":
            meter.relay(events)
        elif kind == "native":
            meter.relay_native(events)
        else:
            needs_usage = s.op == "messages"  # Anthropic's message_delta carries the usage
            events[:] = [chunk for chunk in events if meter.chunk(chunk, needs_usage)]
            if s.stream_ending:
                closing = meter.closing_chunk(s.reported_usage, needs_usage)
                if closing is not None:
                    events.append(closing)
        return Status.CONTINUE

    def on_done(self, s: Stream) -> None:
        meter = s.vars[self.slot]
        if meter is not None and s.status == 200 and s.provider:
            s.usage = meter.result(s.served_model, s.request)

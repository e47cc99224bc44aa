"""Metrics, the access log and usage records: one line and one sample per request.

Outermost in every chain (phase OBSERVE), so its ``on_done`` runs after every other
filter's: usage and cost are known by then.
"""

from __future__ import annotations

from fastgw.filters.api import Filter, Phase
from fastgw.obs.metrics import GATEWAY
from fastgw.obs.recent import RECENT, failure_record
from fastgw.server.stream import Stream


class Observe(Filter):
    stateless = True
    name = "observe"
    phase = Phase.OBSERVE

    def on_done(self, s: Stream) -> None:
        conn = s.conn
        duration = conn.loop.time() - s.started
        services = conn.services
        if s.status >= 400 or s.error is not None or s.failures is not None:
            RECENT.add(failure_record(s, duration, s.first_byte_at - s.started if s.first_byte_at is not None else None))
        if s.op is None:  # a plain route
            route = s.route_name or ""
            GATEWAY.request_done(route, s.status, duration)
            log = services.access_log
            if log.enabled:
                consumer = s.consumer.name if s.consumer is not None else None
                log.write(client_ip=s.peer.decode(), method=s.head.method, target=s.head.target, status=s.status,
                          duration=duration, bytes_out=conn.bytes_out, route=route or None, consumer=consumer)
            return
        usage = s.usage
        ttft = s.first_byte_at - s.started if s.first_byte_at is not None else None
        cost = s.cost  # by a cost quota's price table (the ratelimit filter), unless the model has pricing
        entry = s.entry
        if usage is not None and entry is not None and entry.pricing is not None:
            cost = entry.cost(usage)
        consumer = s.consumer.name if s.consumer is not None else None
        GATEWAY.ai_done(
            consumer=consumer or "", model=s.model, provider=s.provider, status=s.status,
            seconds=duration, ttft=ttft,
            prompt_tokens=usage["prompt_tokens"] if usage else 0,
            completion_tokens=usage["completion_tokens"] if usage else 0,
            estimated=bool(usage and usage["estimated"]),
            cost=cost or 0.0,
        )
        sink = services.usage_sink
        if sink is not None and usage is not None:
            sink.record(
                consumer=consumer or "", model=s.model, provider=s.provider,
                prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
                estimated=usage["estimated"], cost=cost or 0.0, served_model=s.served_model, owed=s.quota_owed,
                cached_tokens=usage.get("cached_tokens", 0), cache_write_tokens=usage.get("cache_write_tokens", 0),
            )
        log = services.access_log
        if log.enabled:
            head = s.head
            log.write(
                client_ip=s.peer.decode(), method=head.method, target=head.target,
                status=s.status, duration=duration, bytes_out=conn.bytes_out,
                consumer=consumer, model=s.model or None, served_model=s.served_model or None,
                provider=s.provider or None, attempts=s.attempts or None, stream=s.is_stream,
                prompt_tokens=usage["prompt_tokens"] if usage else None,
                completion_tokens=usage["completion_tokens"] if usage else None,
                total_tokens=usage["total_tokens"] if usage else None,
                cached_tokens=usage.get("cached_tokens") if usage else None,
                cache_write_tokens=usage.get("cache_write_tokens") if usage else None,
                tokens_estimated=usage["estimated"] if usage else None,
                cost=cost, ttft=ttft, error=s.error,
            )

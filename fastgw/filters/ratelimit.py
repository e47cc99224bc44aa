"""Token and request limits and quotas as a filter (engine: fastgw.limits).

Before the call: the prompt is counted (``count_chat``) and, with the answer's
``max_tokens``, reserved against every matching rule — a decision without a round trip
when the rules allow it (local mode, Redis down), else one pipelined Redis call through
``spawn``. After the answer (``on_done``): the reservation is settled with the real usage
(a failed call costs nothing) and the request's cost priced.

On a plain route (``filters: [ratelimit]``) the request is checked from its head with
no tokens: request limits and quotas of rules that match it by consumer, IP, header or
query (its model is the empty name, so rules for every model ``*`` apply), and by route
name (``match.routes``; such a rule puts this filter on the routes it names by itself).

Concurrency rules come first: the request takes a slot of each (all or none) before its
rates are charged, and ``on_done`` — which runs once however the request ends, a
client that disconnects mid-stream included — gives the slots back. A rule with a
``queue`` makes a request over the limit wait for a slot in a spawned coroutine; a client
that goes meanwhile (``on_done``) or closes its side (``Stream.on_client_eof``) leaves the
queue at once.
"""

from __future__ import annotations

import json
from typing import Any

from fastgw.filters.api import Filter, Phase, Status
from fastgw.limits.quotas import output_reservation
from fastgw.limits.rules import RequestContext
from fastgw.obs.metrics import GATEWAY
from fastgw.server.stream import Stream
from fastgw.tokencount import count_chat, count_text


class RateLimit(Filter):
    name = "ratelimit"
    phase = Phase.LIMIT

    def __init__(self, options: dict[str, Any] | None = None, env: Any = None, *, limiter: Any = None) -> None:
        super().__init__(options, env)
        self.limiter = limiter if limiter is not None else env.limiter

    def on_request_headers(self, s: Stream) -> Status:
        if s.op is not None or self.limiter is None:
            return Status.CONTINUE  # AI requests are reserved once decoded (on_request)
        return self._reserve(s, "", 0, 0)

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        model = s.model
        if s.op == "count_tokens":  # a request against request limits, but it spends no tokens
            return self._reserve(s, model, 0, 0)
        if "messages" in request:
            prompt, _ = count_chat(model, request["messages"], request.get("tools"))
        else:
            prompt, _ = count_text(model, json.dumps(request.get("prompt", request.get("input", ""))))
        completion = output_reservation(request) if s.op != "embeddings" else 0
        return self._reserve(s, model, prompt, completion)

    def _reserve(self, s: Stream, model: str, prompt: int, completion: int) -> Status:
        limiter = self.limiter
        head = s.head
        consumer = s.consumer.name if s.consumer is not None else None
        ctx = RequestContext(consumer, model, s.peer.decode(), head.get, head.query, s.route_name)
        s.vars[self.slot] = held = [None, None, None]  # [concurrency holding, rate reservation, waiter]
        rules = limiter.concurrency.applies(ctx)
        if not rules:
            return self._rates(s, ctx, held, prompt, completion)
        decision = limiter.concurrency.acquire_nowait(rules, ctx)
        if decision is None:  # a Redis round trip, or a wait in a queue
            waiter = held[2] = limiter.concurrency.waiter(rules)
            if waiter is not None:
                s.on_client_eof = waiter.leave  # a client gone (or half-closed) gives its place back
            return s.spawn(
                limiter.concurrency.acquire(rules, ctx, waiter),
                lambda result: self._slots_decided(s, ctx, held, result, prompt, completion),
            )
        return self._slots_decided(s, ctx, held, decision, prompt, completion)

    def _slots_decided(
        self, s: Stream, ctx: RequestContext, held: list, decision: Any, prompt: int, completion: int
    ) -> Status:
        s.on_client_eof = None
        if isinstance(decision, BaseException):
            return s.reply(500, f"concurrency limiter failed: {decision!r}", "limiter_error")
        held[0] = decision.reservation
        if s.finished:  # the client left while Redis answered: on_done has run already
            self.limiter.concurrency.release(held[0])
            return Status.CONTINUE
        if not decision.allowed:
            return self._refuse(s, decision)
        return self._rates(s, ctx, held, prompt, completion)

    def _rates(self, s: Stream, ctx: RequestContext, held: list, prompt: int, completion: int) -> Status:
        limiter = self.limiter
        if not limiter.needs_check(ctx):
            return Status.CONTINUE
        # Reserve before the call, from estimates; on_done charges the real usage.
        decision = limiter.reserve_nowait(ctx, prompt, completion)
        if decision is None:  # a Redis round trip: continue when it answers
            if s.trace is not None:
                span = s.trace.child("EVALSHA limits", {"db.system.name": "redis", "db.operation.name": "EVALSHA"})
                return s.spawn(
                    limiter.reserve(ctx, prompt, completion), lambda result: self._traced(s, held, result, span)
                )
            return s.spawn(
                limiter.reserve(ctx, prompt, completion), lambda result: self._decided(s, held, result)
            )
        return self._decided(s, held, decision)

    def _traced(self, s: Stream, held: list, decision: Any, span: Any) -> Status:
        span.set_attribute("fastgw.limit.allowed", bool(getattr(decision, "allowed", False)))
        span.end()
        return self._decided(s, held, decision)

    def _decided(self, s: Stream, held: list, decision: Any) -> Status:
        if isinstance(decision, BaseException):  # a limiter bug must not leave the client hanging
            return s.reply(500, f"rate limiter failed: {decision!r}", "limiter_error")
        s.response_headers += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in decision.headers)
        if s.finished:  # the client left while Redis answered
            self.limiter.settle(decision.reservation, 0, 0)
            self.limiter.concurrency.release(held[0])
            return Status.CONTINUE
        if not decision.allowed:
            return self._refuse(s, decision)
        held[1] = decision.reservation
        return Status.CONTINUE

    def _refuse(self, s: Stream, decision: Any) -> Status:
        GATEWAY.ratelimit_rejections.inc((decision.rule, decision.kind or decision.code))
        s.retry_after = decision.retry_after
        s.limit_name = decision.rule
        if decision.kind == "concurrency":
            s.response_headers += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in decision.headers)
        return s.reply(decision.status, decision.message, decision.code)

    def on_done(self, s: Stream) -> None:
        usage = s.usage
        held = s.vars[self.slot]
        cached = usage.get("cached_tokens", 0) if usage else 0
        written = usage.get("cache_write_tokens", 0) if usage else 0
        if held is not None:
            holding, reservation, waiter = held
            if waiter is not None:  # still queued if the client left: stop waiting now
                waiter.leave()
            self.limiter.concurrency.release(holding)  # the request is no longer in flight
            if reservation is not None:  # charge what was really used; a failed call costs nothing
                self.limiter.settle(reservation, usage["prompt_tokens"] if usage else 0,
                                    usage["completion_tokens"] if usage else 0, cached, written)
                if reservation.owed:  # quota use Redis could not take: it rides on the usage record
                    s.quota_owed = reservation.owed
        if usage is not None:
            s.cost = self.limiter.cost(s.model, usage["prompt_tokens"], usage["completion_tokens"], cached, written)

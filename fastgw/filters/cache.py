"""The response cache as a filter (engine: fastgw.cache): exact and semantic lookups before
the limits (a hit costs no quota), answers stored after the client got them, streamed
answers included (assembled into one ``chat.completion``).

What is stored is what the client was given: a plain answer after every response filter
(a masked answer is stored masked); a stream only when no filter changed it
(``s.answer_changed``), since its events were collected before the others saw them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastgw import fastjson
from fastgw.ai.dialects import OPENAI
from fastgw.ai.handler import EVENTS_NATIVE
from fastgw.ai.providers.base import ProviderError
from fastgw.ai.usage import wants_usage
from fastgw.cache.keys import cache_key, cache_mode, cacheable, scope_value, semantic_scope, storable
from fastgw.cache.replay import assemble, replay_chunks, replay_stream, served
from fastgw.cache.store import CachedAnswer, CacheUnavailable
from fastgw.filters.api import Filter, Phase, Status
from fastgw.obs.metrics import GATEWAY
from fastgw.server.stream import Stream

_BACKGROUND: set = set()  # cache writes in flight (the loop keeps only weak references to tasks)

REDIS = {"db.system.name": "redis", "db.operation.name": "GET"}
"""Span attributes of a lookup in the Redis store."""


class CacheState:
    """What a request knows about the response cache: its keys, and what its stream said."""

    __slots__ = ("key", "question", "semantic_scope", "write", "vector", "chunks", "converter")

    def __init__(self, key: str, question: str, semantic_scope: str, write: bool) -> None:
        self.key = key
        self.question = question
        self.semantic_scope = semantic_scope
        self.write = write
        self.vector = None  # the question's embedding, once computed
        self.chunks: list[dict] | None = None  # a streamed answer's chunks, to store it
        self.converter: Any = None  # native Anthropic events -> chunks, for an Anthropic pass-through


class CacheFilter(Filter):
    name = "cache"
    phase = Phase.CACHE

    def __init__(self, spec: dict[str, Any], store: Any, index: Any) -> None:
        super().__init__()
        self.spec = spec
        self.store = store
        self.index = index

    # -- lookup -----------------------------------------------------------------------------

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        if s.op not in ("chat", "messages") or not cacheable(request):
            return Status.CONTINUE
        read, write = cache_mode(s.head.get)
        if not (read or write):
            return Status.CONTINUE
        consumer = s.consumer.name if s.consumer is not None else None
        scope = scope_value(self.spec, consumer, s.model)  # AI "routes" are the public models
        lane = s.lane
        if lane is not None and (lane.name in s.entry.lanes or not lane.fallback):
            # The lane has targets of its own (or may not use the base's): its answers are its own.
            # No scope_value starts with "lane=" and lane names hold no ';': no collision.
            scope = f"lane={lane.name};{scope}"
        key, question = cache_key(request, s.model, scope, self.spec)
        state = s.vars[self.slot] = CacheState(key, question, semantic_scope(request, s.model, scope, self.spec), write)
        s.cache_status = "miss"
        if not read:
            return Status.CONTINUE
        if s.trace is not None:  # a Redis (or node store) round trip, and maybe an embedding call
            store = self.spec["store"]
            span = s.trace.child("cache lookup", {"fastgw.cache.store": store, **(REDIS if store == "redis" else {})})
            return s.spawn(self._lookup(state), lambda found: self._traced(s, found, span))
        return s.spawn(self._lookup(state), lambda found: self._looked_up(s, found))

    def _traced(self, s: Stream, found: Any, span: Any) -> Status:
        span.set_attribute("fastgw.cache", "unavailable" if isinstance(found, BaseException) else found[1])
        span.end()  # before a hit is answered: the request span ends with the answer
        return self._looked_up(s, found)

    async def _lookup(self, state: CacheState) -> tuple[CachedAnswer | None, str]:
        try:
            answer = await self.store.get(state.key)
            if answer is not None:
                return answer, "hit"
            index = self.index
            if index is not None and state.question:
                state.vector = await index.embed(state.question)
                near = await index.nearest(state.semantic_scope, state.vector)
                if near is not None:
                    answer = await self.store.get(near)
                    if answer is not None:
                        return answer, "semantic-hit"
        except CacheUnavailable:
            return None, "unavailable"
        return None, "miss"

    def _looked_up(self, s: Stream, found: Any) -> Status:
        answer, result = (None, "unavailable") if isinstance(found, BaseException) else found
        GATEWAY.cache_requests.inc((s.model, result.replace("-", "_")))
        if s.finished or answer is None:
            return Status.CONTINUE  # a miss (or an unavailable cache) goes to the provider
        s.cache_status = result
        GATEWAY.cache_saved_tokens.inc((s.model,), int(answer.usage.get("total_tokens") or 0))
        header = b"x-fastgw-cache: %b\r\n" % result.encode()
        writer = s.conn.writer
        dialect = s.handler.dialect
        s.status = 200
        if s.is_stream and dialect is OPENAI:
            events = b"".join(replay_stream(answer, s.model, include_usage=wants_usage(s.request)))
            writer.stream_whole(events, extra=header)
        elif s.is_stream:
            render = dialect.stream(s.model)
            events = b"".join(render.chunk(c) for c in replay_chunks(answer, s.model, include_usage=True))
            writer.stream_whole(events + render.end(), extra=header)
        else:
            writer.complete(200, dialect.response(s.op, served(answer, s.model), s.model), extra=header)
        s.handler.finish()
        return Status.REPLY

    # -- storing ------------------------------------------------------------------------------

    def on_sse_events(self, s: Stream, events: list) -> Status:
        state = s.vars[self.slot]
        if state is None or not state.write:
            return Status.CONTINUE
        chunks = state.chunks
        if chunks is None:
            chunks = state.chunks = []
        for item in events:
            if type(item) is dict:
                chunks.append(item)
            elif type(item) is not bytes and not item.is_done:
                try:
                    if s.events_kind == EVENTS_NATIVE:  # an Anthropic provider's own events
                        chunks.extend(self._native_chunks(s, state, item))
                        continue
                    chunk = fastjson.loads(item.data)
                except (ValueError, ProviderError):  # not storable; the relay reports the error
                    state.write = False
                    continue
                if isinstance(chunk, dict):
                    chunks.append(chunk)
        return Status.CONTINUE

    @staticmethod
    def _native_chunks(s: Stream, state: CacheState, event: Any) -> list[dict]:
        """An Anthropic event relayed untouched, read as the chunks its conversion would give."""
        converter = state.converter
        if converter is None:
            converter = state.converter = s.handler.provider.adapter.stream("chat", s.served_model)
        chunks = converter.event(event.event, event.data)
        if converter.done and converter.usage:
            chunks.append({"choices": [], "usage": converter.usage})
        return chunks

    def on_done(self, s: Stream) -> None:
        state = s.vars[self.slot]
        if state is None or not state.write or s.status != 200 or s.cache_status not in ("miss", None):
            return
        if s.is_stream:
            if s.answer_changed or s.error or not state.chunks:
                return
            response = assemble(state.chunks)
        else:
            response = s.response
        if response is None or not storable(s.request, response):
            return
        if not response.get("usage") and s.usage:
            response = {**response, "usage": {k: s.usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}
        self._store(s.model, state, CachedAnswer(response, time.time(), state.question, response.get("usage") or {}))

    def _store(self, model: str, state: CacheState, answer: CachedAnswer) -> None:
        """Keep a successful answer (and its question's vector) for the next asker, off the request path."""
        store, index = self.store, self.index

        async def put() -> None:
            try:
                await store.put(state.key, answer)
                if index is not None and state.question:
                    vector = state.vector if state.vector is not None else await index.embed(state.question)
                    await index.add(state.semantic_scope, vector, state.key)
            except CacheUnavailable:
                GATEWAY.cache_requests.inc((model, "unavailable"))

        task = asyncio.ensure_future(put())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

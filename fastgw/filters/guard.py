"""The content guard as a filter (engine: fastgw.guard): prompts blocked or masked before
the cache key and the provider see them, the moderation hook, and answers masked or
blocked, plain and streamed (matches split across chunks are caught with a bounded
hold-back).

A streamed answer stays a raw relay: a plain text delta (the bulk of a stream) is
checked from its content literal alone (:func:`delta_content`) and relayed untouched
unless the guard changed its text, in which case only the literal is replaced.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from typing import Any

from fastgw import fastjson
from fastgw.filters.api import Filter, Phase, Status
from fastgw.guard import Guard
from fastgw.obs.metrics import GATEWAY
from fastgw.server.stream import Stream

_DELTA_CONTENT = re.compile(rb'"delta":\s*\{"content":\s*("(?:[^"\\]|\\.)*")\}')
"""The content literal of a plain OpenAI text delta, as providers write it."""


def delta_content(raw: bytes) -> tuple[str, int, int] | None:
    """The text of a plain OpenAI text delta event and where its JSON literal sits in ``raw``,
    or None for any other event (which then takes the full parse).

    Exact, not a guess: quotes inside JSON strings are escaped, so ``"delta"`` and
    ``"finish_reason"`` with their quotes can only be keys (or whole string values); one of
    each means one choice, not finished, whose delta holds only content."""
    if raw.count(b'"delta"') != 1 or raw.count(b'"finish_reason"') != 1 or b'"finish_reason":null' not in raw:
        return None
    match = _DELTA_CONTENT.search(raw)
    if match is None:
        return None
    literal = match.group(1)
    # Without escapes a JSON string's bytes are its text: decode only when needed.
    text = json.loads(literal) if b"\\" in literal else literal[1:-1].decode()
    return text, match.start(1), match.end(1)


def _literal(text: str) -> bytes:
    """``text`` as a JSON string literal, as json.dumps(ensure_ascii=False) writes it."""
    try:
        return encode_basestring(text).encode()
    except UnicodeEncodeError:  # a lone surrogate (from a "\ud800" escape): keep it escaped
        return json.dumps(text).encode()


def message_texts(request: dict[str, Any]) -> list[str]:
    """Every text a chat request sends: string contents and text parts, in order."""
    texts = []
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


def with_message_texts(request: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The request with its texts replaced, in the order message_texts found them."""
    replacements = iter(texts)
    messages = []
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            message = {**message, "content": next(replacements)}
        elif isinstance(content, list):
            parts = [
                {**p, "text": next(replacements)} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
                for p in content
            ]
            message = {**message, "content": parts}
        messages.append(message)
    return {**request, "messages": messages}


def _blocked(chunk: dict[str, Any]) -> dict[str, Any]:
    """The answer ends here: every choice finishes with content_filter."""
    indexes = [c.get("index", 0) for c in chunk.get("choices") or () if isinstance(c, dict)] or [0]
    return {**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": "content_filter"} for i in indexes]}


def _count_hits(s: Stream, stream: Any) -> None:
    if stream.hits:
        s.answer_changed = True
    for rule, category in stream.hits:
        GATEWAY.guard_hits.inc((rule, category, "response"))


class GuardFilter(Filter):
    name = "guard"
    phase = Phase.POLICY

    def __init__(self, guard: Guard, *, prompts: bool, answers: bool) -> None:
        super().__init__()
        self.guard = guard
        self.prompts = prompts
        self.answers = answers
        self.needs_openai_events = answers  # every delta is seen: no native pass-through

    # -- the prompt -------------------------------------------------------------------------

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        guard = self.guard
        if self.prompts:
            verdict = guard.check_prompt(message_texts(request))
            for rule, category in verdict.hits:
                GATEWAY.guard_hits.inc((rule, category, "prompt"))
            if verdict.action == "block":
                return s.reply(400, "the request was blocked by the content filter", "content_filter")
            if verdict.action == "mask":
                s.request = request = with_message_texts(request, verdict.texts)
        if guard.moderation is not None:
            return s.spawn(guard.moderate("prompt", message_texts(request)), lambda flagged: self._moderated(s, flagged))
        return Status.CONTINUE

    def _moderated(self, s: Stream, flagged: Any) -> Status:
        if s.finished:
            return Status.CONTINUE
        if flagged:  # True, or the exception of a failed call under a closed policy
            return s.reply(400, "the request was flagged by the moderation service", "content_filter")
        return Status.CONTINUE

    # -- the answer ---------------------------------------------------------------------------

    def on_response(self, s: Stream, response: dict[str, Any]) -> Status:
        if not self.answers or s.op not in ("chat", "messages"):
            return Status.CONTINUE
        choices = response.get("choices") or []
        guarded = [self._guard_choice(s, choice) for choice in choices]
        if any(new is not old for new, old in zip(guarded, choices, strict=True)):
            s.response = {**response, "choices": guarded}
        return Status.CONTINUE

    def _guard_choice(self, s: Stream, choice: Any) -> Any:
        """One choice of a plain answer (``n`` > 1 asks for several): masked or blocked."""
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return choice
        stream = self.guard.stream()
        text, blocked = stream.feed(message["content"])
        tail, blocked_at_end = stream.finish() if not blocked else ("", True)
        _count_hits(s, stream)
        if blocked or blocked_at_end:
            return {**choice, "message": {**message, "content": ""}, "finish_reason": "content_filter"}
        if text + tail == message["content"]:
            return choice
        return {**choice, "message": {**message, "content": text + tail}}

    def on_sse_events(self, s: Stream, events: list) -> Status:
        if not self.answers:
            return Status.CONTINUE
        streams = s.vars[self.slot]
        if streams is None:
            streams = s.vars[self.slot] = {}  # choice index -> its StreamGuard
        out: list = []
        for item in events:
            if type(item) is dict:
                out.extend(self._guarded(s, streams, item))
            elif type(item) is bytes:
                out.append(item)
            else:
                self._relay_raw(s, streams, item, out)
            if s.stream_closed:
                break
        events[:] = out
        if s.stream_closed or s.stream_ending:
            for stream in streams.values():
                _count_hits(s, stream)
        return Status.CONTINUE

    def _stream_for(self, streams: dict, index: Any) -> Any:
        stream = streams.get(index)
        if stream is None:
            stream = streams[index] = self.guard.stream()
        return stream

    def _relay_raw(self, s: Stream, streams: dict, event: Any, out: list) -> None:
        raw = event.raw
        one_choice = s.request.get("n") in (None, 1)  # every chunk is choice 0's
        delta = delta_content(raw) if one_choice else None
        if delta is not None:
            text, start, end = delta
            safe, blocked = self._stream_for(streams, 0).feed(text)
            if blocked:
                s.stream_closed = True
                out.append(_blocked(fastjson.loads(event.data)))
                return
            if safe != text:
                raw = b"%b%b%b" % (raw[:start], _literal(safe), raw[end:])
                out.append(raw)
            else:
                out.append(event)
            return
        chunk = None if event.is_done else fastjson.loads(event.data)
        if not isinstance(chunk, dict) or not chunk.get("choices"):
            out.append(event)  # [DONE], usage chunks: relayed as they are
            return
        guarded = self._guarded(s, streams, chunk)
        if len(guarded) == 1 and guarded[0] is chunk:
            out.append(event)
        else:
            out.extend(guarded)

    def _guarded(self, s: Stream, streams: dict, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """One chunk through the stream guard of each of its choices; a block ends the answer
        right here."""
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return [chunk]
        guarded = []
        for choice in choices:
            if not isinstance(choice, dict):
                guarded.append(choice)
                continue
            stream = self._stream_for(streams, choice.get("index", 0))
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                safe, blocked = stream.feed(content)
                if blocked:
                    s.stream_closed = True
                    return [_blocked(chunk)]
                delta = {**delta, "content": safe}
            if choice.get("finish_reason"):
                tail, blocked = stream.finish()
                if blocked:
                    s.stream_closed = True
                    return [_blocked(chunk)]
                if tail:
                    delta = {**delta, "content": (delta.get("content") or "") + tail}
            same = delta is choice.get("delta") or delta == (choice.get("delta") or {})
            guarded.append(choice if same else {**choice, "delta": delta})
        if all(new is old for new, old in zip(guarded, choices, strict=True)):
            return [chunk]
        return [{**chunk, "choices": guarded}]

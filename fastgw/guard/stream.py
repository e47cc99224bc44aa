"""Guarding a streamed answer: text deltas in, text safe to send out.

A banned term may arrive split across deltas (or SSE events), so some text is held back
until it can no longer be the start of a match:

- terms: only the tail the automaton is in the middle of (its state's depth, and never more
  than ``max_len - 1`` characters: a later match must end in new text);
- regexes and PII: a fixed window (``window`` characters, 256 by default), since a regex
  cannot say where a partial match starts. Regex/PII matches are assumed to be shorter than
  the window; one is decided once ``window`` characters after its start have been seen,
  and the same number of emitted characters is kept as context for look-behinds.

So the stream is never delayed by more than ``max(max_len - 1, window)`` characters. A mask
span is remembered until it has been emitted entirely, and so is the run of overlapping
spans it belongs to (:func:`~fastgw.guard.rules.pending`), so a match, or a run of them,
straddling the emitted point is masked the same way on both sides
(:func:`~fastgw.guard.rules.render`).
"""

from __future__ import annotations

from fastgw.guard.rules import Rule, Side, Span, pending, render

__all__ = ["StreamGuard"]


class StreamGuard:
    """One per streamed answer; ``hits`` lists ``(rule name, category)`` as they are decided."""

    __slots__ = ("hits", "_side", "_rules", "_window", "_state", "_total", "_emitted", "_buf", "_base",
                 "_masks", "_seen", "_blocked")

    def __init__(self, side: Side, rules: list[Rule], window: int) -> None:
        self.hits: list[tuple[str, str]] = []
        self._side, self._rules = side, rules
        self._window = window if side.scans else 0
        self._state = side.matcher.start()
        self._total = self._emitted = self._base = 0  # stream positions; _buf starts at _base
        self._buf = ""
        self._masks: list[tuple[int, int, str]] = []
        self._seen: set[tuple[int, str, int]] = set()  # regex spans already decided
        self._blocked = False

    def feed(self, delta: str) -> tuple[str, bool]:
        """Take one delta; return the text now safe to emit and whether the answer is blocked
        (the caller then ends the stream with finish_reason ``content_filter``)."""
        if self._blocked:
            return "", True
        matcher = self._side.matcher
        start = self._total
        self._total += len(delta)
        self._state, matches = matcher.feed(self._state, delta, start)
        if (
            not matches
            and not self._window
            and not self._masks
            and self._emitted == start  # nothing held back from earlier deltas
            and matcher.depth(self._state) == 0
        ):
            # The common case: no match and nothing that could become one: the delta goes out as is.
            self._emitted = self._base = self._total
            return delta, False
        self._buf += delta
        for span in self._side.term_spans(matches):
            self._hit(span)
        safe = self._total - min(matcher.depth(self._state), max(matcher.max_len - 1, 0))
        if self._window:
            safe = min(safe, self._total - self._window)
            self._scan(safe)
        return self._emit(safe)

    def finish(self) -> tuple[str, bool]:
        """End of the answer: decide what is left and flush the hold-back."""
        if self._blocked:
            return "", True
        if self._window:
            self._scan(self._total)
        return self._emit(self._total)

    def _scan(self, safe: int) -> None:
        """Decide the regex spans that start before ``safe`` and were not decided before."""
        for span in self._side.scan(self._buf, self._base):
            key = (span[2], span[3], span[0])
            if span[0] < safe and span[1] > self._emitted and key not in self._seen:
                self._seen.add(key)
                self._hit(span)

    def _hit(self, span: Span) -> None:
        rule = self._rules[span[2]]
        self.hits.append((rule.name, span[3]))
        if rule.action == "block":
            self._blocked = True
        elif rule.action == "mask":
            self._masks.append((span[0], span[1], rule.mask))

    def _emit(self, safe: int) -> tuple[str, bool]:
        if self._blocked:
            return "", True
        if safe <= self._emitted:
            return "", False
        out = render(self._buf, self._base, self._emitted, safe, self._masks)
        self._emitted = safe
        self._masks = pending(self._masks, safe)
        keep_from = max(self._base, safe - self._window)  # look-behind context for the regexes
        self._buf = self._buf[keep_from - self._base:]
        self._base = keep_from
        self._seen = {key for key in self._seen if key[2] >= keep_from}
        return out, False

"""Compiled guard rules: what to look for on one side (prompt or response), and masking.

Every term of every rule on a side goes into one :class:`~fastgw._speedups.Matcher`, so a
side costs one automaton pass plus its regexes, however many rules and terms it has. A
found piece of text is a *span* ``(start, end, rule index, category)``; the category
(``term``, ``regex`` or a PII kind) is what reaches logs and metrics, never the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fastgw._speedups import Matcher
from fastgw.guard import pii

__all__ = ["Rule", "Side", "Span", "Verdict", "pending", "render"]

Span = tuple[int, int, int, str]
"""``(start, end, rule index, category)`` in the positions of the text scanned."""


@dataclass(frozen=True)
class Rule:
    name: str
    action: str  # block | mask | flag
    mask: str  # one character: per masked character; longer: a label for the whole match


@dataclass
class Verdict:
    """Outcome of checking a prompt: ``texts`` are masked when ``action`` is ``mask``."""

    action: str  # allow | block | mask
    texts: list[str]
    hits: list[tuple[str, str]] = field(default_factory=list)  # (rule name, category)


class Side:
    """The rules that apply to one side, compiled."""

    __slots__ = ("matcher", "owner", "patterns", "pii")

    def __init__(self, rules: list[dict], side: str) -> None:
        terms: list[str] = []
        self.owner: list[int] = []  # term index -> rule index
        self.patterns: list[tuple[int, re.Pattern[str]]] = []
        self.pii: list[tuple[int, frozenset[str]]] = []
        for i, rule in enumerate(rules):
            if side not in rule["apply_to"]:
                continue
            terms += rule["terms"]
            self.owner += [i] * len(rule["terms"])
            self.patterns += [(i, re.compile(p, re.IGNORECASE)) for p in rule["regex"]]
            if rule["pii"]:
                self.pii.append((i, frozenset(rule["pii"])))
        self.matcher = Matcher(terms)

    @property
    def scans(self) -> bool:
        """Whether regexes (user or PII) run: they need a window of text, not a stream."""
        return bool(self.patterns or self.pii)

    def term_spans(self, matches: list[tuple[int, int, int]]) -> list[Span]:
        owner = self.owner
        return [(s, e, owner[k], "term") for s, e, k in matches]

    def scan(self, text: str, base: int) -> list[Span]:
        """Regex and PII spans in ``text``, whose first character is at ``base``."""
        spans = [
            (base + m.start(), base + m.end(), i, "regex")
            for i, pattern in self.patterns
            for m in pattern.finditer(text)
            if m.end() > m.start()
        ]
        for i, kinds in self.pii:
            spans += [(base + s, base + e, i, kind) for s, e, kind in pii.find(kinds, text)]
        return spans

    def spans(self, text: str) -> list[Span]:
        """Every span in a whole text."""
        return self.term_spans(self.matcher.find(text)) + (self.scan(text, 0) if self.scans else [])


def _runs(masks: list[tuple[int, int, str]]) -> list[tuple[int, int, str, list[tuple[int, int, str]]]]:
    """Overlapping masks merged into runs ``(start, end, mask, members)``; a run takes the mask
    of its first span (by start, the longest first)."""
    runs: list[tuple[int, int, str, list[tuple[int, int, str]]]] = []
    for m in sorted(masks, key=lambda m: (m[0], -m[1])):
        if runs and m[0] < runs[-1][1]:
            s, e, mask, members = runs[-1]
            members.append(m)
            runs[-1] = (s, max(e, m[1]), mask, members)
        else:
            runs.append((m[0], m[1], m[2], [m]))
    return runs


def render(text: str, base: int, start: int, stop: int, masks: list[tuple[int, int, str]]) -> str:
    """``text[start:stop]`` (stream positions; ``text`` begins at ``base``) with ``masks`` applied.

    Overlapping masks merge into one run that takes the mask of its first span. A label is
    written at its run's start only, so rendering a run in several pieces (a stream emitting
    it across chunks) gives the same text as rendering it whole, as long as the masks kept
    between pieces are :func:`pending`'s.
    """
    out, pos = [], start
    for s, e, mask, _ in _runs(masks):
        if e <= pos or s >= stop:
            continue
        a, b = max(s, pos), min(e, stop)
        out.append(text[pos - base:a - base])
        if len(mask) == 1:
            out.append(mask * (b - a))
        elif a == s:
            out.append(mask)
        pos = b
    out.append(text[pos - base:stop - base])
    return "".join(out)


def pending(masks: list[tuple[int, int, str]], stop: int) -> list[tuple[int, int, str]]:
    """The masks still needed once the text before ``stop`` is out.

    Dropping every mask that ends by ``stop`` would be wrong: a run reaching past ``stop``
    could lose its first span and so change its mask, or split in two where its spans only
    met through a dropped one. So the finished spans of such a run are replaced by one span
    from the run's start to the furthest of their ends: it keeps the run's mask and joins
    its remaining spans, in a bounded number of masks however long the run grows.
    """
    kept: list[tuple[int, int, str]] = []
    for s, e, mask, members in _runs(masks):
        if e <= stop:
            continue
        done = [m[1] for m in members if m[1] <= stop]
        if done:
            kept.append((s, max(done), mask))
        kept += [m for m in members if m[1] > stop]
    return kept

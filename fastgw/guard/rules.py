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

__all__ = ["Rule", "Side", "Span", "Verdict", "render"]

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


def render(text: str, base: int, start: int, stop: int, masks: list[tuple[int, int, str]]) -> str:
    """``text[start:stop]`` (stream positions; ``text`` begins at ``base``) with ``masks`` applied.

    Overlapping masks merge into one run that takes the mask of its first span. A label is
    written at its run's start only, so rendering a run in several pieces (a stream emitting
    it across chunks) gives the same text as rendering it whole.
    """
    runs: list[list] = []
    for s, e, mask in sorted(masks, key=lambda m: (m[0], -m[1])):
        if runs and s < runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], e)
        else:
            runs.append([s, e, mask])
    out, pos = [], start
    for s, e, mask in runs:
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

"""Multi-pattern matcher (Aho-Corasick): the pure-Python reference twin.

``csrc/matcher.pyx`` (built as ``fastgw._c.matcher``) is the compiled twin with the same API
and the same results; tests run both. The guard (:mod:`fastgw.guard`) uses one matcher per
side (prompt, response) for every term of every rule, so a banned-word list of 100,000
terms costs one pass over the text, not one per term.

Matching is case- and width-insensitive through a fixed fold of one character to one
character (:func:`fold_char`), applied to terms and text alike. Because the fold never
changes the length of a text, match positions are positions in the caller's own string:
no offset mapping, and a stream can be matched piece by piece (:meth:`Matcher.feed`).
There are no word boundaries, so CJK text (written without spaces) works like any other.

A match is ``(start, end, term_index)``: ``text[start:end]`` folds to ``terms[term_index]``
folded. Every match is reported, overlaps and duplicate terms included, sorted as tuples
(by start, then end, then term index).
"""

from __future__ import annotations

import unicodedata

__all__ = ["FOLD", "Matcher", "fold", "fold_char"]


def fold_char(cp: int) -> int:
    """The folded code point of ``cp``: the one rule both twins (and the term lists) share.

    Fullwidth ASCII becomes ASCII and the ideographic space a space; halfwidth katakana
    become their fullwidth forms (NFKC, when that is one character); then case folds to
    ``casefold()``, or ``lower()`` where casefold would give several characters (so capital
    sharp s still meets sharp s), or stays when neither is one character.
    """
    if 0xFF01 <= cp <= 0xFF5E:
        cp -= 0xFEE0
    elif cp == 0x3000:
        return 0x20
    elif 0xFF61 <= cp <= 0xFF9F:
        wide = unicodedata.normalize("NFKC", chr(cp))
        if len(wide) == 1:
            cp = ord(wide)
    ch = chr(cp)
    for folded in (ch.casefold(), ch.lower()):
        if len(folded) == 1:
            return ord(folded)
    return cp


class _FoldTable(dict):
    """``str.translate`` table filled on first sight of each code point (Unicode is too big to
    fill up front, and a text only ever meets a few blocks of it)."""

    def __missing__(self, cp: int) -> int:
        folded = self[cp] = fold_char(cp)
        return folded


FOLD = _FoldTable()
"""Process-wide fold table for ``str.translate``."""


def fold(text: str) -> str:
    """``text`` with every character folded; same length, so positions carry over."""
    return text.translate(FOLD)


class Matcher:
    """Aho-Corasick automaton over folded terms; states are ints, 0 is the root.

    ``_goto[s]`` maps a folded character to the next trie state, ``_fail[s]`` is the state of
    the longest proper suffix that is also a trie path, ``_out[s]`` the ``(length, index)``
    of every term ending at ``s`` (its own and those reached through fail links).
    """

    __slots__ = ("max_len", "_goto", "_fail", "_out", "_depth")

    def __init__(self, terms: list[str]) -> None:
        goto: list[dict[str, int]] = [{}]
        own: dict[int, tuple[tuple[int, int], ...]] = {}
        for index, term in enumerate(terms):
            if not term:
                raise ValueError(f"term {index} is empty (it would match everywhere)")
            folded = term.translate(FOLD)
            state, node, i = 0, goto[0], 0
            for ch in folded:  # follow the part already in the trie...
                nxt = node.get(ch)
                if nxt is None:
                    break
                state, node, i = nxt, goto[nxt], i + 1
            for ch in folded[i:]:  # ...then add the rest as a fresh chain
                state = node[ch] = len(goto)
                node = {}
                goto.append(node)
            own[state] = own.get(state, ()) + ((len(term), index),)
        n = len(goto)
        fail, depth = [0] * n, [0] * n
        out: list[tuple[tuple[int, int], ...]] = [()] * n
        queue = list(goto[0].values())
        for s in queue:
            depth[s], out[s] = 1, own.get(s, ())
        for s in queue:  # breadth first: fail targets are shallower, so already complete
            node = goto[s]
            if node:
                fs, ds = fail[s], depth[s] + 1
                for ch, t in node.items():
                    f = fs
                    while (nxt := goto[f].get(ch)) is None and f:
                        f = fail[f]
                    if nxt:
                        fail[t] = nxt
                        out[t] = own[t] + out[nxt] if t in own else out[nxt]
                    elif t in own:
                        out[t] = own[t]
                    depth[t] = ds
                queue += node.values()
        self._goto, self._fail, self._out, self._depth = goto, fail, out, depth
        self.max_len = max(depth)

    def find(self, text: str) -> list[tuple[int, int, int]]:
        """Every match in ``text``."""
        return self.feed(0, text, 0)[1]

    def start(self) -> int:
        """The state to feed a stream's first piece from."""
        return 0

    def depth(self, state: int) -> int:
        """Length of the text's tail that ``state`` has matched so far: the only characters a
        stream filter must hold back, since a later match can start no earlier."""
        if not 0 <= state < len(self._depth):
            raise ValueError(f"invalid state {state}")
        return self._depth[state]

    def feed(self, state: int, text: str, offset: int) -> tuple[int, list[tuple[int, int, int]]]:
        """Continue from ``state`` over ``text``, whose first character is at ``offset`` of the
        stream; returns the new state and the matches ending in ``text`` (stream positions)."""
        goto, fail, out = self._goto, self._fail, self._out
        if not 0 <= state < len(goto):
            raise ValueError(f"invalid state {state}")
        found = []
        end = offset
        for ch in fold(text):
            end += 1
            while state and ch not in goto[state]:
                state = fail[state]
            state = goto[state].get(ch, 0)
            if out[state]:
                found += [(end - length, end, index) for length, index in out[state]]
        found.sort()
        return state, found

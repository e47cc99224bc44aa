"""Built-in detectors for personal data: regexes narrowed by checksums where one exists.

A regex alone flags too much (any 16 digits look like a card), so cards must pass the Luhn
check and Chinese resident IDs their ISO 7064 check digit and a plausible birth date. Each
pattern refuses to start or end inside a longer run of digits, so a long number is never
reported as a phone number hidden in its middle. Kinds are tried in a fixed priority order
and a later kind's match overlapping an earlier one's is dropped: one span, one category.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["KINDS", "find", "luhn", "cn_id_valid"]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def luhn(digits: str) -> bool:
    """The Luhn mod-10 check every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def cn_id_valid(number: str) -> bool:
    """An 18-character Chinese resident ID: plausible birth date and ISO 7064 MOD 11-2 check."""
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if not (1800 <= year <= 2199 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def _card(match: str) -> bool:
    return luhn(match.replace(" ", "").replace("-", ""))


def _id(match: str) -> bool:
    return "-" in match or cn_id_valid(match)  # the dashed form is a US SSN, checked by its regex


_DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    (
        "id",
        re.compile(
            r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])"
            r"|(?<![0-9-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9-])"
        ),
        _id,
    ),
    ("card", re.compile(r"(?<![0-9+])(?<![0-9][ -])[0-9](?:[ -]?[0-9]){12,18}(?![ -]?[0-9])"), _card),
    (
        "email",
        re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"),
        None,
    ),
    (
        "phone",
        re.compile(
            r"(?<![\w+])(?<![0-9][ .-])"
            r"(?:(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?|[0-9]{1,4}[ .-])?[0-9]{3,4}[ .-][0-9]{4}"
            r"|(?:\+?86[ -]?)?1[3-9][0-9]{9})"
            r"(?![ .-]?[0-9])(?!\w)"
        ),
        None,
    ),
]
KINDS = tuple(kind for kind, _, _ in _DETECTORS)


def find(kinds: frozenset[str], text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` of each piece of personal data of the given kinds in ``text``."""
    found: list[tuple[int, int, str]] = []
    for kind, pattern, valid in _DETECTORS:
        if kind not in kinds:
            continue
        taken = list(found)
        for m in pattern.finditer(text):
            s, e = m.span()
            if (valid is None or valid(m.group())) and not any(s < te and ts < e for ts, te, _ in taken):
                found.append((s, e, kind))
    return found

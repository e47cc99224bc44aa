"""Consumer and model names as the limits, quotas and prompt decorators match them.

Shared by ``fastgw/limits/``, ``fastgw/ai/prompts.py`` and ``fastgw/config/prompts.py``; no imports from
the package, so any layer can use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ANONYMOUS = "anonymous"
"""The consumer name of an unauthenticated request, for matching and for keys."""


def wildcard(patterns: list[str]) -> Callable[[str], bool]:
    """A predicate for names matching any of ``patterns`` (``*`` matches any run of characters)."""
    if "*" in patterns:
        return lambda name: True
    exact = frozenset(p for p in patterns if "*" not in p)
    wild = [".*".join(map(re.escape, p.split("*"))) for p in patterns if "*" in p]
    if not wild:
        return exact.__contains__
    regex = re.compile("|".join(wild), re.DOTALL)
    return lambda name: name in exact or regex.fullmatch(name) is not None

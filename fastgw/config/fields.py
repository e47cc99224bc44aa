"""Field-level checks shared by every config section.

Each check records ``path: message`` in an :class:`Issues` and returns ``None`` instead of
raising, so one run reports every problem. Checks also normalise: durations become float
seconds, sizes int bytes, so later code never re-parses user spellings.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from typing import Any

Check = Callable[[Any, str, "Issues"], Any]
"""``check(value, path, issues) -> normalised value, or None after recording a problem``."""


class Issues:
    """Problems found so far; also knows which strings came from the environment.

    Error messages echo offending values to be useful, so anything containing an
    environment value (likely a secret) is shown as ``'***'`` instead. A field whose
    ``${VAR}`` could not be resolved gets that one error, not a second one about the
    empty string left in its place.
    """

    __slots__ = ("errors", "secrets", "unresolved")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.secrets: set[str] = set()
        self.unresolved: set[str] = set()

    def add(self, path: str, message: str) -> None:
        if path not in self.unresolved:
            self.errors.append(f"{path}: {message}")

    def describe(self, value: Any) -> str:
        """Say what was found, e.g. ``string 'abc'`` or ``mapping``, hiding secrets."""
        if isinstance(value, str):
            if any(secret in value for secret in self.secrets):
                return "string '***'"
            shown = value if len(value) <= 60 else value[:57] + "..."
            return f"string {shown!r}"
        if isinstance(value, bool):
            return f"boolean {'true' if value else 'false'}"
        if isinstance(value, (int, float)):
            return f"{kind(value)} {value!r}"
        return kind(value)


def join(path: str, key: object) -> str:
    """Child field path: ``routes[2]`` + ``upstream`` -> ``routes[2].upstream``."""
    return f"{path}.{key}" if path else str(key)


def kind(value: Any) -> str:
    """Name a value's type the way a config author thinks of it (YAML, not Python)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def mapping(value: Any, path: str, issues: Issues, allowed: Collection[str]) -> dict | None:
    """Require a mapping whose keys are all known; a typo gets a "did you mean" hint."""
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping, found {issues.describe(value)}")
        return None
    for key in [key for key in value if key not in allowed]:
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "expected one of: " + ", ".join(allowed)
        issues.add(join(path, key), f"unknown key; {hint}")
    return value


def sequence(value: Any, path: str, issues: Issues) -> list | None:
    if not isinstance(value, list):
        issues.add(path, f"expected a list, found {issues.describe(value)}")
        return None
    return value


def fields(value: Any, path: str, issues: Issues, spec: dict[str, tuple[Check, Any]]) -> dict:
    """Check a mapping of simple fields; absent ones take the default from ``spec``."""
    if value == {}:
        return {key: default for key, (_, default) in spec.items()}
    given = mapping(value, path, issues, spec) or {}
    out = {}
    for key, (check, default) in spec.items():
        out[key] = check(given[key], f"{path}.{key}", issues) if key in given else default
    return out


def required(given: dict, key: str, path: str, issues: Issues, check: Check) -> Any:
    """``check`` a key that must be present in ``given``."""
    if key not in given:
        issues.add(f"{path}.{key}", "required")
        return None
    return check(given[key], f"{path}.{key}", issues)


def unknown_name(what: str, name: str, known: Collection[str]) -> str:
    """Message for a reference to an undefined name, with the closest defined one as a hint."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"defined: {', '.join(sorted(known)) or 'none'}"
    return f"unknown {what} {name!r}; {hint}"


def unique_names(section: str, names: list[tuple[int, str | None]], issues: Issues) -> None:
    """Names must be unique within a section; ``names`` holds ``(index in section, name)``."""
    first: dict[str, int] = {}
    for i, name in names:
        if name is None:
            continue
        if name in first:
            issues.add(
                f"{section}[{i}].name", f"duplicate name {name!r} (already used by {section}[{first[name]}])"
            )
        else:
            first[name] = i


def text(value: Any, path: str, issues: Issues) -> str | None:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        found = "an empty string" if value == "" else issues.describe(value)
        issues.add(path, f"expected a non-empty string, found {found}")
        return None
    return value


def text_list(value: Any, path: str, issues: Issues) -> list[str]:
    items = sequence(value, path, issues) or []
    return [text(item, f"{path}[{i}]", issues) for i, item in enumerate(items)]


def one_of(*choices: str) -> Check:
    def check(value: Any, path: str, issues: Issues) -> str | None:
        if not isinstance(value, str) or value not in choices:
            issues.add(path, f"expected one of {', '.join(choices)}; found {issues.describe(value)}")
            return None
        return value

    return check


def boolean(value: Any, path: str, issues: Issues) -> bool | None:
    """true/false only ('yes', 1 are refused); the strings "true"/"false" let ``${VAR}`` work."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    issues.add(path, f"expected a boolean (true or false), found {issues.describe(value)}")
    return None


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    """An int in bounds; a string of digits is accepted so ``${PORT}`` works."""

    def check(value: Any, path: str, issues: Issues) -> int | None:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if type(value) is not int:
            issues.add(path, f"expected an integer, found {issues.describe(value)}")
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            span = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            issues.add(path, f"must be {span}, found {value}")
            return None
        return value

    return check


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*\Z")
_SECONDS_PER = {"s": 1, "m": 60, "h": 3600}


def duration(allow_zero: bool = False) -> Check:
    """Seconds as a number, or a string like ``250ms``, ``2s``, ``1.5s``, ``1m``, ``1h``."""

    def check(value: Any, path: str, issues: Issues) -> float | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            number, unit = float(m.group(1)), m.group(2) or "s"
            seconds = number / 1000 if unit == "ms" else number * _SECONDS_PER[unit]
        else:
            issues.add(
                path,
                f"expected a duration (seconds, or e.g. '250ms', '2s', '1m'), found {issues.describe(value)}",
            )
            return None
        if seconds < 0 or (seconds == 0 and not allow_zero) or seconds != seconds or seconds == float("inf"):
            issues.add(path, f"must be {'>= 0' if allow_zero else '> 0'} and finite, found {seconds}")
            return None
        return seconds

    return check


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*\Z", re.IGNORECASE)
_BYTES_PER = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(value: Any, path: str, issues: Issues) -> int | None:
    """Bytes as an int, or a string like ``16k``, ``16KiB``, ``10MB``, ``1g`` (binary multiples)."""
    if type(value) is int:
        number = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2)
        number = int(float(m.group(1)) * _BYTES_PER[unit.lower() if unit else None])
    else:
        issues.add(
            path, f"expected a size (bytes, or e.g. '16k', '10MiB', '1g'), found {issues.describe(value)}"
        )
        return None
    if number < 1:
        issues.add(path, f"must be > 0 bytes, found {number}")
        return None
    return number

"""The ``guard`` section: content rules on prompts and answers, and an optional moderation hook.

``guard``
    ``{rules: [...], moderation: null | {...}}``. Each rule::

        {name, terms: [..] | terms_file: path, regex: [..], pii: [email, phone, card, id],
         action: block | mask | flag, mask: "*", apply_to: [prompt, response]}

    A rule needs at least one of ``terms``/``terms_file``, ``regex`` or ``pii``.
    ``terms_file`` holds one term per line (UTF-8; blank lines and lines starting with
    ``#`` are skipped) and is read at load, so workers get the terms, not the path. Terms
    match case- and width-insensitively anywhere (no word boundaries; see
    :mod:`fastgw.matcher`); ``regex`` entries are Python regular expressions, matched
    ignoring case (``(?-i:...)`` opts out) on the text as written. ``mask`` (default ``*``) of one character replaces each masked character,
    a longer one (``[REDACTED]``) replaces the whole match. ``apply_to`` defaults to both.

    ``moderation``: ``{url, timeout: 500ms, on_error: open | closed, apply_to: [prompt]}``;
    an OpenAI-shaped ``/v1/moderations`` endpoint. ``on_error`` (default ``open``) says
    whether a hook that fails or times out lets the text through (open) or refuses it.

Normalised: ``{rules: [{name, terms, regex, pii, action, mask, apply_to}], moderation:
null | {url, timeout (float seconds), on_error, apply_to}}``.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.config import net
from fastgw.config.fields import (
    Issues,
    duration,
    mapping,
    one_of,
    required,
    sequence,
    text,
    text_list,
    unique_names,
    unknown_name,
)

PII_KINDS = ("email", "phone", "card", "id")
ACTIONS = ("block", "mask", "flag")
SIDES = ("prompt", "response")
_RULE_KEYS = ("name", "terms", "terms_file", "regex", "pii", "action", "mask", "apply_to")
_MODERATION_KEYS = ("url", "timeout", "on_error", "apply_to")


def guard(value: Any, issues: Issues) -> dict:
    """Check the ``guard`` mapping and return its normalised form."""
    out: dict[str, Any] = {"rules": [], "moderation": None}
    if value is None:
        return out
    given = mapping(value, "guard", issues, ("rules", "moderation")) or {}
    names = []
    for i, item in enumerate(sequence(given.get("rules", []), "guard.rules", issues) or []):
        rule = _rule(item, f"guard.rules[{i}]", issues)
        if rule is not None:
            names.append((i, rule["name"]))
            out["rules"].append(rule)
    unique_names("guard.rules", names, issues)
    if given.get("moderation") is not None:
        out["moderation"] = _moderation(given["moderation"], issues)
    return out


def _rule(item: Any, path: str, issues: Issues) -> dict | None:
    given = mapping(item, path, issues, _RULE_KEYS)
    if given is None:
        return None
    rule = {
        "name": required(given, "name", path, issues, text),
        "terms": [],
        "regex": [],
        "pii": [],
        "action": required(given, "action", path, issues, one_of(*ACTIONS)),
        "mask": text(given["mask"], f"{path}.mask", issues) if "mask" in given else "*",
        "apply_to": _sides(given.get("apply_to", list(SIDES)), f"{path}.apply_to", issues),
    }
    if "terms" in given and "terms_file" in given:
        issues.add(f"{path}.terms_file", "give either terms or terms_file, not both")
    elif "terms" in given:
        rule["terms"] = text_list(given["terms"], f"{path}.terms", issues)
        if given["terms"] == []:
            issues.add(f"{path}.terms", "at least one term is required")
    elif "terms_file" in given:
        rule["terms"] = _terms_file(given["terms_file"], f"{path}.terms_file", issues)
    for j, pattern in enumerate(text_list(given.get("regex", []), f"{path}.regex", issues)):
        if pattern is not None:
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                issues.add(f"{path}.regex[{j}]", f"invalid regular expression: {exc}")
        rule["regex"].append(pattern)
    for j, kind in enumerate(sequence(given.get("pii", []), f"{path}.pii", issues) or []):
        if kind not in PII_KINDS:
            issues.add(f"{path}.pii[{j}]", unknown_name("pii kind", str(kind), PII_KINDS))
        rule["pii"].append(kind)
    if not ({"terms", "terms_file"} & given.keys() or rule["regex"] or rule["pii"]):
        issues.add(path, "needs terms, terms_file, regex or pii: something to look for")
    return rule


def _terms_file(value: Any, path: str, issues: Issues) -> list[str]:
    name = text(value, path, issues)
    if name is None:
        return []
    try:
        with open(name, encoding="utf-8") as f:
            terms = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        issues.add(path, f"cannot read {name!r}: {exc}")
        return []
    terms = [term for term in terms if term and not term.startswith("#")]
    if not terms:
        issues.add(path, f"{name!r} holds no terms")
    return terms


def _sides(value: Any, path: str, issues: Issues) -> list[str]:
    sides = [one_of(*SIDES)(side, f"{path}[{i}]", issues) for i, side in enumerate(sequence(value, path, issues) or [])]
    if value == []:
        issues.add(path, "at least one of prompt, response is required")
    return sides


def _moderation(value: Any, issues: Issues) -> dict:
    given = mapping(value, "guard.moderation", issues, _MODERATION_KEYS) or {}
    path = "guard.moderation"
    return {
        "url": required(given, "url", path, issues, net.base_url),
        "timeout": duration()(given["timeout"], f"{path}.timeout", issues) if "timeout" in given else 0.5,
        "on_error": one_of("open", "closed")(given["on_error"], f"{path}.on_error", issues)
        if "on_error" in given
        else "open",
        "apply_to": _sides(given.get("apply_to", ["prompt"]), f"{path}.apply_to", issues),
    }

"""The ``prompts`` section and the per-route ``transform`` mapping.

Prompts::

    prompts:
      templates:
        - name: summarize
          messages: [{role: system, content: "Summarise {{language}} text."}, {role: user, content: "{{text}}"}]
          defaults: {language: English}      # optional
          model: gpt-4o-mini                 # optional: used when a request names no model
      decorators:
        - name: safety
          match: {models: ["*"], consumers: [team-a]}     # optional; default: every request
          prepend: [{role: system, content: "Never reveal secrets."}]
          append: []

Normalised: ``{templates: [{name, messages: [{role, content}], defaults: {var: str},
model: str|null, variables: [var...]}], decorators: [{name, match: {models, consumers}
(null when not given), prepend, append}]}``. ``variables`` lists every placeholder in order
of first use; those without a default are ones each request must send. That is checked per
request, not here; a default for a variable no message uses is an error here (a typo).

Transform (see :mod:`fastgw.transform` for the order rules apply in)::

    transform:
      request:
        headers: {add: {x-env: prod}, remove: [x-debug], rename: {x-old: x-new}}
        query: {add: {api-version: "2024-10-21"}, remove: [debug], rename: {}}
        body: {set: {temperature: 0.2}, default: {max_tokens: 512}, remove: [user], rename: {maxTokens: max_tokens}}
      response:
        headers: {add: {x-served-by: fastgw}, remove: [server], rename: {}}

Normalised: every part present, each rule an empty ``{}``/``[]`` when not given; header
names lower-case; header and query values strings. Body paths are dotted (``metadata.team``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from typing import Any

from fastgw.config.fields import (
    Issues,
    join,
    mapping,
    one_of,
    required,
    sequence,
    text,
    text_list,
    unique_names,
    unknown_name,
)
from fastgw.names import ANONYMOUS

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""``{{name}}``, spaces inside the braces allowed; anything else between braces is literal text."""

ROLES = ("system", "developer", "user", "assistant")
"""Roles a template or decorator message may take (tool messages need a call to answer)."""

_TEMPLATE_KEYS = ("name", "messages", "defaults", "model")
_DECORATOR_KEYS = ("name", "match", "prepend", "append")
_ROLE = one_of(*ROLES)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 header name
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")  # no CR/LF: a value cannot inject a header
# Framing and hop-by-hop headers belong to the proxy: rewriting them would corrupt the
# message boundaries, and Host has upstream.host_header.
_RESERVED = frozenset(
    (
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "host",
    )
)
_NAME_RULES = ("add", "remove", "rename")
_BODY_RULES = ("set", "default", "remove", "rename")


def prompts(value: Any, issues: Issues, models: Collection[str], consumers: Collection[str]) -> dict:
    """Check and normalise ``prompts``; ``models`` and ``consumers`` are the defined names."""
    given = mapping(value, "prompts", issues, ("templates", "decorators")) or {}
    return {
        "templates": _list(given, "templates", issues, lambda v, p: _template(v, p, issues, models)),
        "decorators": _list(
            given, "decorators", issues, lambda v, p: _decorator(v, p, issues, models, consumers)
        ),
    }


def _list(given: dict, key: str, issues: Issues, check: Callable[[Any, str], dict | None]) -> list[dict]:
    """A list of named entries; names unique within it."""
    section = f"prompts.{key}"
    out, names = [], []
    for i, item in enumerate(sequence(given.get(key, []), section, issues) or []):
        entry = check(item, f"{section}[{i}]")
        if entry is not None:
            names.append((i, entry["name"]))
            out.append(entry)
    unique_names(section, names, issues)
    return out


def _template(value: Any, path: str, issues: Issues, models: Collection[str]) -> dict | None:
    given = mapping(value, path, issues, _TEMPLATE_KEYS)
    if given is None:
        return None
    name = required(given, "name", path, issues, text)
    messages = required(given, "messages", path, issues, _messages)
    if given.get("messages") == []:
        issues.add(f"{path}.messages", "a template needs at least one message")
    used = list(dict.fromkeys(var for m in messages or [] for var in PLACEHOLDER.findall(m["content"])))
    defaults: dict[str, str] = {}
    for var, default in _mapping_of(given.get("defaults", {}), f"{path}.defaults", issues).items():
        where = join(f"{path}.defaults", var)
        if var not in used and messages is not None:
            issues.add(where, f"no message uses {{{{{var}}}}}; variables: {', '.join(used) or 'none'}")
        found = _scalar(default, where, issues)
        if found is not None:
            defaults[var] = found
    model = text(given["model"], f"{path}.model", issues) if "model" in given else None
    if model is not None:
        if "*" in model:
            issues.add(f"{path}.model", "must name one model, not a pattern")
        elif not _defined(model, models):
            issues.add(f"{path}.model", unknown_name("model", model, models))
    return {
        "name": name,
        "messages": messages or [],
        "defaults": defaults,
        "model": model,
        "variables": used,
    }


def _decorator(
    value: Any, path: str, issues: Issues, models: Collection[str], consumers: Collection[str]
) -> dict | None:
    given = mapping(value, path, issues, _DECORATOR_KEYS)
    if given is None:
        return None
    name = required(given, "name", path, issues, text)
    prepend = _messages(given.get("prepend", []), f"{path}.prepend", issues) or []
    append = _messages(given.get("append", []), f"{path}.append", issues) or []
    if given.get("prepend", []) == [] and given.get("append", []) == []:
        issues.add(path, "a decorator needs messages to prepend, append or both")
    return {
        "name": name,
        "match": _match(given.get("match", {}), f"{path}.match", issues, models, consumers),
        "prepend": prepend,
        "append": append,
    }


def _match(
    value: Any, path: str, issues: Issues, models: Collection[str], consumers: Collection[str]
) -> dict:
    given = mapping(value, path, issues, ("models", "consumers")) or {}
    out: dict[str, list[str] | None] = {"models": None, "consumers": None}
    known = {"models": ("model", list(models)), "consumers": ("consumer", [*consumers, ANONYMOUS])}
    for key, (what, names) in known.items():
        if key not in given:
            continue
        at = f"{path}.{key}"
        out[key] = [name for name in text_list(given[key], at, issues) if name is not None]
        if given[key] == []:
            issues.add(at, f"list at least one {what}, or leave {key} out to match any")
        for j, name in enumerate(out[key]):
            # A pattern may match names only seen at run time; an exact name must be defined.
            if "*" not in name and not _defined(name, names):
                issues.add(f"{at}[{j}]", unknown_name(what, name, names))
    return out


def _defined(name: str, names: Collection[str]) -> bool:
    """Whether ``name`` is one of ``names``, which may hold ``*`` wildcards (models do)."""
    return any(re.fullmatch(".*".join(map(re.escape, n.split("*"))), name, re.DOTALL) for n in names)


def _messages(value: Any, path: str, issues: Issues) -> list[dict[str, str]] | None:
    items = sequence(value, path, issues)
    if items is None:
        return None
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        given = mapping(item, where, issues, ("role", "content"))
        if given is None:
            continue
        role = required(given, "role", where, issues, _ROLE)
        content = required(given, "content", where, issues, _string)
        if role is not None and content is not None:
            out.append({"role": role, "content": content})
    return out


def _string(value: Any, path: str, issues: Issues) -> str | None:
    """Any string, empty included (unlike ``text``): message content."""
    if not isinstance(value, str):
        issues.add(path, f"expected a string, found {issues.describe(value)}")
        return None
    return value


def _scalar(value: Any, path: str, issues: Issues) -> str | None:
    """A string or a number, as the string a template or a header will carry."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    issues.add(path, f"expected a string or a number, found {issues.describe(value)}")
    return None


def _mapping_of(value: Any, path: str, issues: Issues) -> dict:
    """A mapping with free-form keys (names chosen by the author)."""
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping, found {issues.describe(value)}")
        return {}
    return value


# -- transform ---------------------------------------------------------------------------


def transform(value: Any, path: str, issues: Issues) -> dict:
    """Check and normalise a ``transform`` mapping found at ``path``."""
    given = mapping(value, path, issues, ("request", "response")) or {}
    request = mapping(given.get("request", {}), f"{path}.request", issues, ("headers", "query", "body")) or {}
    response = mapping(given.get("response", {}), f"{path}.response", issues, ("headers",)) or {}
    return {
        "request": {
            "headers": _names(request.get("headers", {}), f"{path}.request.headers", issues, header=True),
            "query": _names(request.get("query", {}), f"{path}.request.query", issues, header=False),
            "body": _body(request.get("body", {}), f"{path}.request.body", issues),
        },
        "response": {
            "headers": _names(response.get("headers", {}), f"{path}.response.headers", issues, header=True)
        },
    }


def _names(value: Any, path: str, issues: Issues, header: bool) -> dict:
    """``add``/``remove``/``rename`` of headers (case-insensitive names) or query parameters."""
    given = mapping(value, path, issues, _NAME_RULES) or {}
    out: dict[str, Any] = {"add": {}, "remove": [], "rename": {}}
    seen: dict[str, str] = {}

    def name(raw: Any, where: str) -> str | None:
        if header:
            if not isinstance(raw, str) or not _TOKEN.match(raw):
                issues.add(where, f"expected a header name, found {issues.describe(raw)}")
                return None
            raw = raw.lower()
            if raw in _RESERVED:
                hint = "; use upstream.host_header" if raw == "host" else ""
                issues.add(where, f"'{raw}' is managed by the proxy and cannot be rewritten{hint}")
                return None
        elif not isinstance(raw, str) or not raw:
            issues.add(where, f"expected a parameter name, found {issues.describe(raw)}")
            return None
        if raw in seen:  # one rule per name: no order to remember
            issues.add(where, f"'{raw}' is already used by {seen[raw]}")
            return None
        seen[raw] = where
        return raw

    for key, item in _mapping_of(given.get("add", {}), f"{path}.add", issues).items():
        where = join(f"{path}.add", key)
        found, wanted = name(key, where), _scalar(item, where, issues)
        if header and wanted is not None and not _HEADER_VALUE.match(wanted):
            issues.add(where, "a header value must be printable ASCII (no line breaks)")
        elif found is not None and wanted is not None:
            out["add"][found] = wanted
    removed = sequence(given.get("remove", []), f"{path}.remove", issues) or []
    out["remove"] = [n for j, item in enumerate(removed) if (n := name(item, f"{path}.remove[{j}]"))]
    for key, item in _mapping_of(given.get("rename", {}), f"{path}.rename", issues).items():
        where = join(f"{path}.rename", key)
        old, new = name(key, where), name(item, where)
        if old is not None and new is not None:
            out["rename"][old] = new
    return out


def _body(value: Any, path: str, issues: Issues) -> dict:
    """Body rules; unlike headers, one field may be in several (rename ``maxTokens`` to
    ``max_tokens`` and default ``max_tokens``), except ``set`` and ``default``: one always wins."""
    given = mapping(value, path, issues, _BODY_RULES) or {}
    out: dict[str, Any] = {"set": {}, "default": {}, "remove": [], "rename": {}}

    def field(raw: Any, where: str) -> str | None:
        if not isinstance(raw, str) or not all(raw.split(".")):
            issues.add(where, f"expected a field path like 'metadata.team', found {issues.describe(raw)}")
            return None
        return raw

    for rule in ("set", "default"):
        for key, item in _mapping_of(given.get(rule, {}), f"{path}.{rule}", issues).items():
            where = join(f"{path}.{rule}", key)
            found = field(key, where)
            try:
                json.dumps(item, allow_nan=False)
            except (TypeError, ValueError) as exc:
                issues.add(
                    where, f"must be JSON: strings, numbers, booleans, null, lists and mappings ({exc})"
                )
                continue
            if found is not None and rule == "default" and found in out["set"]:
                issues.add(where, f"also in {path}.set, which always overrides a default")
            elif found is not None:
                out[rule][found] = item
    removed = sequence(given.get("remove", []), f"{path}.remove", issues) or []
    out["remove"] = [f for j, item in enumerate(removed) if (f := field(item, f"{path}.remove[{j}]"))]
    for key, item in _mapping_of(given.get("rename", {}), f"{path}.rename", issues).items():
        where = join(f"{path}.rename", key)
        old, new = field(key, where), field(item, where)
        if old is not None and new is not None:
            out["rename"][old] = new
    return out

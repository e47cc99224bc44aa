"""Prompt templates and decorators, applied to OpenAI-shaped chat requests.

A request may name a template instead of (or before) its own ``messages``::

    {"model": "...", "template": {"name": "summarize", "variables": {"text": "..."}}, "messages": [...]}

The template's messages, with ``{{variable}}`` placeholders filled, come first and the
request's own messages after them. Decorators then add fixed messages before and after,
for every request whose model and consumer they match (e.g. a safety system prompt for one
team), so policy prompts live in the gateway instead of in every client.

Substitution is one pass over template text split at load: a variable's value is inserted
as is and never scanned again, so a caller cannot smuggle a placeholder (or anything else)
into a template through a value. Built once per config generation from the normalised
``prompts`` section (see :mod:`fastgw.config.prompts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastgw.config.prompts import PLACEHOLDER
from fastgw.names import ANONYMOUS, wildcard


class PromptError(Exception):
    """A request the templates cannot serve: ``status`` 400 (bad variables) or 404 (no such template)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Template:
    """One template, its message texts pre-split into literal and variable parts."""

    __slots__ = ("name", "messages", "defaults", "model", "required")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        # re.split with one group alternates literal, name, literal...: odd indexes are names.
        self.messages = [(m["role"], PLACEHOLDER.split(m["content"])) for m in spec["messages"]]
        self.defaults: dict[str, str] = spec["defaults"]
        self.model: str | None = spec["model"]
        names = dict.fromkeys(name for _, parts in self.messages for name in parts[1::2])
        self.required = [name for name in names if name not in self.defaults]

    def expand(self, given: Any) -> list[dict[str, str]]:
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise PromptError(400, "'template.variables' must be an object")
        values = dict(self.defaults)
        for name, value in given.items():
            if isinstance(value, str):
                values[name] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = str(value)
            else:
                raise PromptError(400, f"template variable '{name}' must be a string or a number")
        missing = [name for name in self.required if name not in values]
        if missing:
            names = ", ".join(f"'{name}'" for name in missing)
            raise PromptError(400, f"prompt template '{self.name}' needs variable(s) {names}")
        return [
            {"role": role, "content": "".join(values[p] if i % 2 else p for i, p in enumerate(parts))}
            for role, parts in self.messages
        ]


class _Decorator:
    __slots__ = ("models", "consumers", "prepend", "append")

    def __init__(self, spec: dict[str, Any]) -> None:
        match = spec["match"]
        self.models: Callable[[str], bool] = wildcard(match["models"] or ["*"])
        self.consumers: Callable[[str], bool] = wildcard(match["consumers"] or ["*"])
        self.prepend: list[dict[str, str]] = spec["prepend"]
        self.append: list[dict[str, str]] = spec["append"]


class Prompts:
    """The templates and decorators of one config generation."""

    __slots__ = ("_templates", "_decorators")

    def __init__(self, config: dict[str, Any]) -> None:
        self._templates = {t["name"]: _Template(t) for t in config["templates"]}
        self._decorators = [_Decorator(d) for d in config["decorators"]]

    def apply(self, request: dict[str, Any], consumer: str | None, model: str | None) -> dict[str, Any]:
        """A new request with its template expanded and matching decorators' messages added.

        ``model`` is the one the request asked for; when it names none, a template's
        ``model`` is filled in and used for matching decorators. ``request`` is not changed,
        and no message dict of the config is shared with the result (later stages may edit it).
        """
        out = dict(request)
        spec = out.pop("template", None)
        messages = out.get("messages")
        if spec is not None:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise PromptError(400, "'template' must be an object with a string 'name'")
            template = self._templates.get(spec["name"])
            if template is None:
                raise PromptError(404, f"prompt template '{spec['name']}' does not exist")
            if messages is not None and not isinstance(messages, list):
                raise PromptError(400, "'messages' must be a list")
            messages = template.expand(spec.get("variables")) + (messages or [])
            if not model and template.model:
                model = out["model"] = template.model
        if isinstance(messages, list):  # completions and embeddings have no messages to decorate
            who = consumer or ANONYMOUS
            matched = [d for d in self._decorators if d.models(model or "") and d.consumers(who)]
            if matched:
                messages = (
                    [dict(m) for d in matched for m in d.prepend]
                    + messages
                    + [dict(m) for d in matched for m in d.append]
                )
            out["messages"] = messages
        return out

"""What makes two chat requests "the same question", and whether a request may use the cache.

A key is the sha256 of canonical JSON (sorted keys, no spaces, integral floats as ints) of:
the scope (whose cache), the model asked for, the chosen request params, and the messages
(all of them, or only the last user message, per ``cache.key``). ``stream`` is never part
of it: a streamed request is answered from the same entry, replayed as SSE.

For semantic lookups the question is split off: the *partition* is everything but the last
user message, so a paraphrase only matches under the same scope, model, params and (with
``all_messages``) the same history and system prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any


def scope_value(spec: dict, consumer: str | None, route: str | None) -> str:
    """The scope a request's entries live in, e.g. ``consumer:alice``.

    Anonymous callers (no consumer) share one ``consumer`` scope: the gateway cannot tell
    them apart. The ``:`` keeps that scope distinct from any named consumer's.
    """
    scope = spec["scope"]
    if scope == "global":
        return "global"
    name = consumer if scope == "consumer" else route
    return scope if name is None else f"{scope}:{name}"


def cacheable(request: dict) -> bool:
    """A chat request whose answer can be stored and served: one choice, some user message,
    and no forced tool call (its answer is an action to take now, not a reusable reply)."""
    messages = request.get("messages")
    if not isinstance(messages, list) or _last_user(messages) is None:
        return False
    if request.get("n", 1) != 1:
        return False
    choice = request.get("tool_choice")
    return not (choice == "required" or isinstance(choice, dict))


def cache_mode(get_header: Callable[[bytes], bytes | None]) -> tuple[bool, bool]:
    """``(read, write)`` for a request, from its headers.

    * ``x-fastgw-cache: bypass`` skips the cache entirely (neither read nor written): a test
      or debugging call that must reach the provider and leave no trace.
    * ``Cache-Control: no-cache`` or ``max-age=0`` does not read, but stores the fresh answer,
      as in HTTP (RFC 9111 §5.2.1): it is how a client refreshes a stale entry.
    * ``Cache-Control: no-store`` may read but stores nothing.
    """
    if (get_header(b"x-fastgw-cache") or b"").strip().lower() == b"bypass":
        return False, False
    directives = {
        d.strip().replace(b" ", b"") for d in (get_header(b"cache-control") or b"").lower().split(b",")
    }
    read = not ({b"no-cache", b"max-age=0"} & directives)
    return read, b"no-store" not in directives


def storable(request: dict, response: dict) -> bool:
    """Only a successful, complete answer with text content is stored (not a truncated one,
    not tool calls, not a request that forced a tool call)."""
    if not cacheable(request) or response.get("object") != "chat.completion":
        return False
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return False
    message = choices[0].get("message")
    return (
        choices[0].get("finish_reason") == "stop"
        and isinstance(message, dict)
        and isinstance(message.get("content"), str)
        and not message.get("tool_calls")
    )


def cache_key(request: dict, model: str, scope_value: str, spec: dict) -> tuple[str, str]:
    """``(exact key, question text)``; the text is ``""`` when the question is not plain text
    (images, audio), which skips the semantic lookup. Call only for a :func:`cacheable` request."""
    context, message = _split(request, model, scope_value, spec)
    context["question"] = message
    return _digest(context), _text(message)


def semantic_scope(request: dict, model: str, scope_value: str, spec: dict) -> str:
    """The partition a question's vector is searched in: everything in its key but the question."""
    return _digest(_split(request, model, scope_value, spec)[0])


def _split(request: dict, model: str, scope_value: str, spec: dict) -> tuple[dict, Any]:
    messages = request["messages"]
    i = _last_user(messages)
    context: dict[str, Any] = {
        "scope": scope_value,
        "model": model,
        "params": {name: request[name] for name in spec["params"] if name in request},
    }
    if spec["key"] == "all_messages":
        context["before"], context["after"] = messages[:i], messages[i + 1 :]
    return context, messages[i]


def _last_user(messages: list) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return i
    return None


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "\n".join(str(p.get("text", "")) for p in content)
    return ""


def _digest(value: Any) -> str:
    data = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """``1.0`` and ``1`` are the same temperature; JSON would spell them differently."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value

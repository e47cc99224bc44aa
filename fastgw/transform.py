"""Per-route request and response rewriting: headers, query parameters and JSON body fields.

Built once per config generation from a normalised ``transform`` mapping (see
:func:`fastgw.config.prompts.transform`). Every method is a pure function of its input and
returns the input itself when it has no rules, so an unconfigured part costs one test.
Only routes with body rules (``needs_body``) ever have their body parsed.

Within each part, rules apply in a fixed order: ``remove``, ``rename``, then ``add``
(headers, query) or ``remove``, ``rename``, ``set``, ``default`` (body). Config validation
refuses a header or parameter name in two rules, so there the order only matters against
what the client sent: an added header replaces the client's, and a renamed one replaces any
the client sent under the new name. In the body it is what lets ``maxTokens`` be renamed to
``max_tokens`` and ``max_tokens`` then be defaulted; ``set`` overwrites, ``default`` fills
only what is absent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote_plus

Headers = list[tuple[bytes, bytes]]
"""Name, value pairs as the HTTP parser gives them (names in the client's case)."""


class TransformError(Exception):
    """A body the rules cannot apply to (not JSON, not an object, a path through a non-object)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Names:
    """``remove``/``rename``/``add`` rules for headers (case-insensitive) or query parameters."""

    __slots__ = ("active", "remove", "rename", "add", "drop")

    def __init__(self, spec: dict[str, Any], encode: Callable[[str], bytes], prefix: bytes = b"") -> None:
        self.remove = frozenset(encode(name) for name in spec["remove"])
        self.rename = {encode(old): encode(new) for old, new in spec["rename"].items()}
        self.add = [(encode(name), prefix + encode(value)) for name, value in spec["add"].items()]
        self.drop = self.remove | {name for name, _ in self.add}
        self.active = bool(self.remove or self.rename or self.add)

    def apply(self, items: Headers, key: Callable[[bytes], bytes]) -> Headers:
        """``items`` rewritten; ``key(name)`` is how a rule names an item (lower-case, re-quoted).
        Added values start with ``prefix``: query items carry their ``=``, headers don't."""
        keys = [key(name) for name, _ in items]
        drop = self.drop
        if self.rename:
            drop = drop | {self.rename[k] for k in keys if k in self.rename}
        out = []
        for (name, value), k in zip(items, keys, strict=True):
            if k in self.rename:
                out.append((self.rename[k], value))
            elif k not in drop:
                out.append((name, value))
        return out + self.add


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


def _query_part(text: str) -> bytes:
    return quote(text, safe="").encode("ascii")


def _query_key(raw: bytes) -> bytes:
    """A parameter's name as rules spell it, re-quoted one canonical way (``%7E`` and ``~`` match)."""
    return _query_part(unquote_plus(raw.decode("latin-1")))


def _split_param(part: bytes) -> tuple[bytes, bytes]:
    """``name=value`` as ``(name, b"=value")``; a bare ``flag`` as ``(flag, b"")``, so both come back byte for byte."""
    eq = part.find(b"=")
    return (part, b"") if eq < 0 else (part[:eq], part[eq:])


class Transform:
    """The compiled ``transform`` of one route or model."""

    __slots__ = ("needs_body", "_request_headers", "_query", "_response_headers", "_body")

    def __init__(self, spec: dict[str, Any]) -> None:
        request = spec["request"]
        self._request_headers = _Names(request["headers"], _latin1)
        self._query = _Names(request["query"], _query_part, b"=")
        self._response_headers = _Names(spec["response"]["headers"], _latin1)
        body = request["body"]
        self._body: list[tuple[str, Any]] = (
            [("remove", (path.split("."),)) for path in body["remove"]]
            + [("rename", (old.split("."), new.split("."))) for old, new in body["rename"].items()]
            + [("set", (path.split("."), value)) for path, value in body["set"].items()]
            + [("default", (path.split("."), value)) for path, value in body["default"].items()]
        )
        self.needs_body: bool = bool(self._body)

    def request_headers(self, headers: Headers) -> Headers:
        if not self._request_headers.active:
            return headers
        return self._request_headers.apply(headers, bytes.lower)

    def response_headers(self, headers: Headers) -> Headers:
        if not self._response_headers.active:
            return headers
        return self._response_headers.apply(headers, bytes.lower)

    def request_target(self, target: bytes) -> bytes:
        """``path?query`` with the query rules applied; untouched parameters keep their order
        and their bytes exactly, and a query left empty loses its ``?``."""
        if not self._query.active:
            return target
        path, _, query = target.partition(b"?")
        params = [_split_param(part) for part in query.split(b"&")] if query else []
        kept = self._query.apply(params, _query_key)
        return path + b"?" + b"&".join(name + rest for name, rest in kept) if kept else path

    def request_body(self, body: bytes) -> bytes:
        """The JSON body rewritten; an empty body (a GET, say) passes through untouched."""
        if not self.needs_body or not body.strip():
            return body
        try:
            parsed = json.loads(body)
        except ValueError:
            raise TransformError(400, "the request body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise TransformError(400, "the request body must be a JSON object")
        out = self.apply_body_dict(parsed)
        try:
            return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
        except (
            UnicodeEncodeError
        ):  # a lone surrogate (\\ud800) is valid JSON but not UTF-8: keep it escaped
            return json.dumps(out, separators=(",", ":")).encode()

    def apply_body_dict(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` rewritten as a new dict; objects on edited paths are copied, never changed
        in place, so the caller's dict (and the config's values) stay as they were."""
        if not self._body:
            return body
        out = dict(body)
        for rule, args in self._body:
            if rule == "remove":
                _pop(out, args[0])
            elif rule == "rename":
                old, new = args
                found, value = _pop(out, old)
                if found:
                    _put(out, new, value, overwrite=True)
            else:
                path, value = args
                _put(out, path, copy.deepcopy(value), overwrite=rule == "set")
        return out


def _parent(root: dict[str, Any], path: list[str], create: bool) -> dict[str, Any] | None:
    """The object holding ``path``'s last key, each object on the way copied into its parent.

    Missing objects are created when ``create``, else ``None`` is returned; a non-object on
    the way is an error only when creating (removing from it just finds nothing).
    """
    node = root
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None and create:
            child = {}
        elif not isinstance(child, dict):
            if create:
                where = ".".join(path[: i + 1])
                raise TransformError(400, f"cannot set '{'.'.join(path)}': '{where}' is not an object")
            return None
        else:
            child = dict(child)
        node[key] = child
        node = child
    return node


def _pop(root: dict[str, Any], path: list[str]) -> tuple[bool, Any]:
    node = _parent(root, path, create=False)
    if node is None or path[-1] not in node:
        return False, None
    return True, node.pop(path[-1])


def _put(root: dict[str, Any], path: list[str], value: Any, overwrite: bool) -> None:
    node = _parent(root, path, create=True)
    if overwrite or path[-1] not in node:
        node[path[-1]] = value

"""Turn config text (YAML, or JSON, which is YAML) into plain Python data.

PyYAML's composer and constructor dominate loading a big config (about 1.5 s for 10,000
routes, even with libyaml), so the tree is built here straight from libyaml's event stream
(about 0.2 s), reusing PyYAML's scalar resolution and constructors. Departures from
``yaml.safe_load``, each on purpose:

- a key repeated in one mapping is an error (PyYAML keeps the last one, hiding a section
  pasted twice);
- dates stay strings and ``=`` is a plain string: the tree is shipped to workers as JSON;
- tags other than the core ones (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``,
  ``!!map``, ``!!seq``) are errors, as is an alias to a mapping that contains it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from fastgw.config.fields import Issues

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # only its parser (libyaml when built) is used
_CORE = "tag:yaml.org,2002:"
_IMPLICIT = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_CORE + "timestamp", _CORE + "value")]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_constructor = SafeConstructor()
_SCALARS = {
    _CORE + "null": _constructor.construct_yaml_null,
    _CORE + "bool": _constructor.construct_yaml_bool,
    _CORE + "int": _constructor.construct_yaml_int,
    _CORE + "float": _constructor.construct_yaml_float,
}
_MERGE = object()  # the "<<" key: merge another mapping into this one
_NO_KEY = object()  # a mapping frame waiting for its next key


class _Invalid(Exception):
    """A problem in the YAML document; the message starts with its line."""


class _DuplicateKey(Exception):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def parse(text: str, source: str, issues: Issues) -> Any:
    """Parse ``text``; on failure record ``source: ...`` and return ``None``.

    JSON-looking text goes through ``json`` first: it is faster still, and configs with
    thousands of routes are usually machine-written JSON.
    """
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except _DuplicateKey as exc:
            issues.add(source, str(exc))
            return None
        except ValueError:
            pass  # not JSON after all (e.g. a YAML flow mapping): let YAML judge it
    try:
        return _build(yaml.parse(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        issues.add(source, f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}")
    except _Invalid as exc:
        issues.add(source, str(exc))
    return None


def _scalar(event: events.ScalarEvent) -> Any:
    tag, value = event.tag, event.value
    if tag is None or tag == "!":
        if not event.implicit[0]:  # quoted or block scalar: always a string
            return value
        tag = next((tag for tag, regexp in _IMPLICIT.get(value[:1], ()) if regexp.match(value)), None)
        if tag is None:
            return value
        if tag == _CORE + "merge":
            return _MERGE
    if tag == _CORE + "str":
        return value
    construct = _SCALARS.get(tag)
    if construct is None:
        raise _Invalid(f"line {event.start_mark.line + 1}: unsupported tag {tag!r}")
    try:
        return construct(yaml.ScalarNode(tag, value))
    except (ValueError, yaml.YAMLError):
        raise _Invalid(
            f"line {event.start_mark.line + 1}: {value!r} is not a valid {tag[len(_CORE) :]}"
        ) from None


def _build(stream: Any) -> Any:
    """Build dicts, lists and scalars from parser events (one document only)."""
    frames: list[list] = []  # [container, key awaiting its value, mappings merged in, anchor]
    anchors: dict[str, Any] = {}
    open_anchors: set[str] = set()
    root = None
    for event in stream:
        kind = type(event)
        if kind is events.ScalarEvent:
            value = _scalar(event)
            if event.anchor is not None:
                anchors[event.anchor] = value
        elif kind is events.MappingStartEvent or kind is events.SequenceStartEvent:
            if event.tag not in (None, "!", _CORE + "map", _CORE + "seq"):
                raise _Invalid(f"line {event.start_mark.line + 1}: unsupported tag {event.tag!r}")
            container: Any = {} if kind is events.MappingStartEvent else []
            frames.append([container, _NO_KEY, [], event.anchor])
            if event.anchor is not None:
                anchors[event.anchor] = container
                open_anchors.add(event.anchor)
            continue
        elif kind is events.MappingEndEvent or kind is events.SequenceEndEvent:
            value, _, merged, anchor = frames.pop()
            for other in merged:  # explicit keys win, then earlier merges
                for key, item in other.items():
                    value.setdefault(key, item)
            open_anchors.discard(anchor)
        elif kind is events.AliasEvent:
            if event.anchor in open_anchors:
                raise _Invalid(
                    f"line {event.start_mark.line + 1}: alias *{event.anchor} is inside its own anchor"
                )
            if event.anchor not in anchors:
                raise _Invalid(f"line {event.start_mark.line + 1}: undefined alias *{event.anchor}")
            value = anchors[event.anchor]
        elif kind is events.DocumentStartEvent and root is not None:
            raise _Invalid(f"line {event.start_mark.line + 1}: only one YAML document is allowed")
        else:
            continue
        if frames:
            _add(frames[-1], value, event.start_mark.line + 1)
        else:
            root = "<<" if value is _MERGE else value
    return root


def _add(frame: list, value: Any, line: int) -> None:
    """Put ``value`` into the innermost open container (as a key or a value)."""
    container, key = frame[0], frame[1]
    if type(container) is list:
        container.append("<<" if value is _MERGE else value)
    elif key is _NO_KEY:
        if isinstance(value, (dict, list)):
            raise _Invalid(f"line {line}: a mapping key must be a scalar")
        if value in container:
            raise _Invalid(f"line {line}: duplicate key {value!r}")
        frame[1] = value
    else:
        frame[1] = _NO_KEY
        if key is not _MERGE:
            container[key] = "<<" if value is _MERGE else value
        elif isinstance(value, dict):
            frame[2].append(value)
        elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
            frame[2].extend(value)
        else:
            raise _Invalid(f"line {line}: '<<' merges a mapping or a list of mappings")

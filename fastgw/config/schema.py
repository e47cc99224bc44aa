"""What each top-level config key accepts, and the normalised shape it becomes.

The top-level keys are the user-facing contract (DESIGN.md); the normalised output is a
plain JSON-serialisable dict, shipped to workers as is.

``listen``
    ``"host:port"``, ``"[::1]:port"``, ``":port"`` (all IPv4 interfaces) or a mapping
    ``{address, reuse_port: true, backlog: 2048}`` -> ``{host, port, reuse_port, backlog}``.
``workers``
    An integer >= 1 or ``auto``; default: the number of CPUs.
``admin``
    ``"host:port"`` (default ``127.0.0.1:9901``) -> ``{host, port}``; ``null`` or ``false``
    turns the admin API off.
``redis``
    ``redis://``, ``rediss://`` or ``unix://`` URL, or ``null`` (single node, no Redis).
``http``
    Limits and timeouts for *clients* of the front door (each guards the workers from a
    slow or hostile client):

    - ``max_header_size`` (16k): request line + headers; larger -> 431.
    - ``max_headers`` (100): number of header lines; more -> 431.
    - ``max_body_size`` (10MiB): request body; larger -> 413.
    - ``header_timeout`` (10s): time to receive a whole request head (slowloris) -> 408.
    - ``keepalive_timeout`` (75s): idle time allowed between requests; 0 turns keep-alive off.
    - ``drain_timeout`` (30s): on shutdown, how long in-flight requests and streams may finish.
    - ``max_pipelined`` (32): pipelined requests queued per connection before reading pauses.
``providers``
    ``[{name, type, base_url, api_keys: [], timeouts: {connect, first_byte, idle}, options: {}}]``;
    ``base_url`` is required unless ``type: mock``; ``options`` is passed to the adapter as is.
``models``
    ``[{name, targets: [{provider, model}]}]``: the public name and its failover chain.
    A name may hold one ``*`` (``gpt-4*``); in a target ``model`` (default: the public
    name) ``*`` stands for the part of the requested name the public ``*`` matched.
``consumers``
    ``[{name, api_keys, models: ["*"]}]``: who may call, and which models.
``limits``
    A list of mappings (its schema comes with the limits feature).
``routes``
    Plain HTTP routes, see :mod:`fastgw.config.routes`.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any

from fastgw.config import net
from fastgw.config.fields import (
    Check,
    Issues,
    boolean,
    duration,
    fields,
    integer,
    mapping,
    one_of,
    sequence,
    size,
    text,
    text_list,
    unique_names,
)
from fastgw.config.routes import routes

TOP_LEVEL_KEYS = (
    "listen",
    "workers",
    "admin",
    "redis",
    "http",
    "providers",
    "models",
    "consumers",
    "limits",
    "routes",
)
PROVIDER_TYPES = (
    "openai",
    "azure",
    "anthropic",
    "gemini",
    "ollama",
    "qwen",
    "deepseek",
    "openai-compatible",
    "mock",
)
_PROVIDER_TYPE = one_of(*PROVIDER_TYPES)

_HTTP = {
    "max_header_size": (size, 16 * 1024),
    "max_headers": (integer(1), 100),
    "max_body_size": (size, 10 * 1024 * 1024),
    "header_timeout": (duration(), 10.0),
    "keepalive_timeout": (duration(allow_zero=True), 75.0),
    "drain_timeout": (duration(allow_zero=True), 30.0),
    "max_pipelined": (integer(1), 32),
}
_PROVIDER_TIMEOUTS = {
    "connect": (duration(), 2.0),
    "first_byte": (duration(), 15.0),
    "idle": (duration(), 60.0),
}
_PROVIDER_KEYS = ("name", "type", "base_url", "api_keys", "timeouts", "options")
_LISTEN_KEYS = ("address", "reuse_port", "backlog")


def normalise(data: Any, source: str, issues: Issues) -> dict:
    """Check a parsed config and return its normalised form (meaningless if issues were found)."""
    if not isinstance(data, dict):
        found = "an empty document" if data is None else issues.describe(data)
        issues.add(
            source,
            f"the top level must be a mapping of keys such as listen, providers, routes; found {found}",
        )
        return {}
    mapping(data, "", issues, TOP_LEVEL_KEYS)
    config = {
        "listen": _listen(data.get("listen", "127.0.0.1:8080"), issues),
        "workers": _workers(data["workers"], issues) if "workers" in data else os.cpu_count() or 1,
        "admin": _admin(data.get("admin", "127.0.0.1:9901"), issues),
        "redis": net.redis_url(data.get("redis"), "redis", issues),
        "http": fields(data.get("http", {}), "http", issues, _HTTP),
        "providers": _providers(data.get("providers", []), issues),
    }
    config["models"] = _models(data.get("models", []), {p["name"] for p in config["providers"]}, issues)
    config["consumers"] = _consumers(data.get("consumers", []), {m["name"] for m in config["models"]}, issues)
    config["limits"] = _limits(data.get("limits", []), issues)
    config["routes"] = routes(data.get("routes", []), issues)
    return config


def _listen(value: Any, issues: Issues) -> dict:
    if isinstance(value, dict):
        given = mapping(value, "listen", issues, _LISTEN_KEYS) or {}
        found = net.address(given.get("address", "127.0.0.1:8080"), "listen.address", issues)
    else:
        given = {}
        found = net.address(value, "listen", issues)
    host, port = found or (None, None)
    return {
        "host": host,
        "port": port,
        "reuse_port": boolean(given["reuse_port"], "listen.reuse_port", issues)
        if "reuse_port" in given
        else True,
        "backlog": integer(1)(given["backlog"], "listen.backlog", issues) if "backlog" in given else 2048,
    }


def _workers(value: Any, issues: Issues) -> int | None:
    if value == "auto":
        return os.cpu_count() or 1
    return integer(1)(value, "workers", issues)


def _admin(value: Any, issues: Issues) -> dict | None:
    if value is None or value is False:
        return None
    host, port = net.address(value, "admin", issues) or (None, None)
    return {"host": host, "port": port}


def _required(given: dict, key: str, path: str, issues: Issues, check: Check) -> Any:
    if key not in given:
        issues.add(f"{path}.{key}", "required")
        return None
    return check(given[key], f"{path}.{key}", issues)


def _unknown_name(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"defined: {', '.join(sorted(known)) or 'none'}"
    return f"unknown {what} {name!r}; {hint}"


def _providers(value: Any, issues: Issues) -> list[dict]:
    out, names = [], []
    for i, item in enumerate(sequence(value, "providers", issues) or []):
        path = f"providers[{i}]"
        given = mapping(item, path, issues, _PROVIDER_KEYS)
        if given is None:
            continue
        kind = _required(given, "type", path, issues, _PROVIDER_TYPE)
        if "base_url" in given:
            url = net.base_url(given["base_url"], f"{path}.base_url", issues)
        else:
            url = None
            if kind not in (None, "mock"):
                issues.add(f"{path}.base_url", f"required for type {kind}")
        options = given.get("options", {})
        if isinstance(options, dict):
            _check_json(options, f"{path}.options", issues)
        else:
            issues.add(f"{path}.options", f"expected a mapping, found {issues.describe(options)}")
        names.append((i, _required(given, "name", path, issues, text)))
        out.append(
            {
                "name": names[-1][1],
                "type": kind,
                "base_url": url,
                "api_keys": text_list(given.get("api_keys", []), f"{path}.api_keys", issues),
                "timeouts": fields(given.get("timeouts", {}), f"{path}.timeouts", issues, _PROVIDER_TIMEOUTS),
                "options": options,
            }
        )
    unique_names("providers", names, issues)
    return out


def _check_json(value: Any, path: str, issues: Issues) -> None:
    """Pass-through values must survive the JSON trip to workers."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        issues.add(path, f"must hold only strings, numbers, booleans, null, lists and mappings ({exc})")


def _models(value: Any, providers: set[str], issues: Issues) -> list[dict]:
    out, names = [], []
    for i, item in enumerate(sequence(value, "models", issues) or []):
        path = f"models[{i}]"
        given = mapping(item, path, issues, ("name", "targets"))
        if given is None:
            continue
        name = _required(given, "name", path, issues, text)
        names.append((i, name))
        if name is not None and name.count("*") > 1:
            issues.add(f"{path}.name", "at most one '*' wildcard is allowed")
        targets = _required(given, "targets", path, issues, sequence)
        if targets == []:
            issues.add(f"{path}.targets", "at least one target is required")
        chain = [
            _target(t, f"{path}.targets[{j}]", name, providers, issues) for j, t in enumerate(targets or [])
        ]
        out.append({"name": name, "targets": chain})
    unique_names("models", names, issues)
    return out


def _target(value: Any, path: str, public: str | None, providers: set[str], issues: Issues) -> dict:
    given = mapping(value, path, issues, ("provider", "model"))
    if given is None:
        return {"provider": None, "model": public}
    provider = _required(given, "provider", path, issues, text)
    if provider is not None and provider not in providers:
        issues.add(f"{path}.provider", _unknown_name("provider", provider, providers))
    model = text(given["model"], f"{path}.model", issues) if "model" in given else public
    if model is not None and public is not None and "*" in model and "*" not in public:
        issues.add(f"{path}.model", "'*' in a target model needs a '*' in the public model name")
    return {"provider": provider, "model": model}


def _consumers(value: Any, models: set[str], issues: Issues) -> list[dict]:
    out, names = [], []
    key_owner: dict[str, str] = {}
    for i, item in enumerate(sequence(value, "consumers", issues) or []):
        path = f"consumers[{i}]"
        given = mapping(item, path, issues, ("name", "api_keys", "models"))
        if given is None:
            continue
        keys = _required(given, "api_keys", path, issues, text_list) or []
        for j, key in enumerate(keys):
            if key is not None and key_owner.setdefault(key, path) != path:
                # The key itself is a secret: name where it clashes, never what it is.
                issues.add(f"{path}.api_keys[{j}]", f"this key is already used by {key_owner[key]}")
        allowed = text_list(given.get("models", ["*"]), f"{path}.models", issues)
        for j, name in enumerate(allowed):
            if name is not None and name != "*" and name not in models:
                issues.add(f"{path}.models[{j}]", _unknown_name("model", name, models))
        names.append((i, _required(given, "name", path, issues, text)))
        out.append({"name": names[-1][1], "api_keys": keys, "models": allowed})
    unique_names("consumers", names, issues)
    return out


def _limits(value: Any, issues: Issues) -> list[dict]:
    items = sequence(value, "limits", issues) or []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            _check_json(item, f"limits[{i}]", issues)
        else:
            issues.add(f"limits[{i}]", f"expected a mapping, found {issues.describe(item)}")
    return items

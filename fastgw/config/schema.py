"""What each top-level config key accepts, and the normalised shape it becomes.

The top-level keys are the user-facing contract (DESIGN.md); the normalised output is a
plain JSON-serialisable dict, shipped to workers as is.

``listen``
    ``"host:port"``, ``"[::1]:port"``, ``":port"`` (all IPv4 interfaces) or a mapping
    ``{address, reuse_port: true, backlog: 2048}`` -> ``{host, port, reuse_port, backlog}``.
``workers``
    An integer >= 1 or ``auto``; default: the number of CPUs.
``admin``
    ``"host:port"`` (default ``127.0.0.1:9901``) or a mapping ``{address | socket, token,
    metrics_public: false}`` -> ``{host, port, socket, token, metrics_public}``; ``null`` or
    ``false`` turns the admin API off. ``token`` (at least 16 characters, usually
    ``"${FASTGW_ADMIN_TOKEN}"``; empty means none) is the bearer token every endpoint but
    ``/healthz`` requires (and ``/metrics`` unless ``metrics_public``). Without a token the
    admin API may only bind a loopback address. ``socket``: a Unix socket path instead of an
    address (created ``0600``: only this user may connect; host and port are then null).
``redis``
    ``redis://``, ``rediss://`` or ``unix://`` URL, or ``null`` (single node, no Redis).
``http``
    Limits and timeouts for *clients* of the front door (each guards the workers from a
    slow or hostile client):

    - ``max_header_size`` (16k): request line + headers; larger -> 431.
    - ``max_headers`` (100): number of header lines; more -> 431.
    - ``max_body_size`` (10MiB): request body; larger -> 413.
    - ``header_timeout`` (10s): time to receive a whole request head (slowloris) -> 408.
    - ``body_timeout`` (10s): longest silence inside a request body -> 408.
    - ``body_min_rate`` (240 bytes/s; 0 = off): after a ``body_timeout`` grace a body must
      average this rate, so a trickle that is never silent is cut too -> 408.
    - ``send_timeout`` (30s): how long a client may leave our answer unread before it is
      disconnected (the upstream is released and never blamed).
    - ``max_connections`` (``auto``: half the worker's file-descriptor limit; 0 = no cap):
      open client connections per worker; beyond it a new one gets a 503 and is closed.
    - ``max_connections_per_ip`` (0 = off): open client connections per worker and client address.
    - ``keepalive_timeout`` (75s): idle time allowed between requests; 0 turns keep-alive off.
    - ``drain_timeout`` (30s): on shutdown, how long in-flight requests and streams may finish.
    - ``max_pipelined`` (32): pipelined requests queued per connection before reading pauses.
    - ``overload`` (off): ``{max_cpu, max_in_flight, max_loop_lag, retry_after, pause}``, shed low-priority
      requests with 503 when a worker is loaded, see :mod:`fastgw.config.overload`.
``providers``
    ``[{name, type, base_url, api_keys: [], timeouts: {connect, first_byte, idle}, options: {},
    breaker: {failures, cooldown}, key_cooldown: {rate_limited, unauthorized}, health_check: null | {interval, timeout}}]``;
    ``first_byte`` bounds the wait for the first stream event (time to first token) and
    ``idle`` any silence after it, or the wait for a non-streamed answer;
    ``base_url`` is required unless ``type: mock``; ``options`` is passed to the adapter as is;
    ``pass_headers`` lists client headers forwarded as sent (see :mod:`fastgw.config.failover`).
``models``
    ``[{name, targets: [{provider, model, context_window, lane}], failover}]``: the public name and its
    failover chain; ``context_window`` (tokens, optional) lets a context-window error skip targets
    no larger; ``lane`` puts a target in a gray-release lane (untagged: the base lane);
    ``failover`` tunes waits and retries (see :mod:`fastgw.config.failover`);
    ``pricing`` (USD per million tokens) prices its calls (see :mod:`fastgw.config.pricing`).
    A name may hold one ``*`` (``gpt-4*``); in a target ``model`` (default: the public
    name) ``*`` stands for the part of the requested name the public ``*`` matched.
``consumers``
    ``[{name, api_keys, models: ["*"]}]``: who may call, and which models (``*`` wildcards;
    an entry must be able to match some model). ``api_keys`` may be empty for a consumer
    that only presents JWTs. See :mod:`fastgw.config.consumers`.
``auth``
    ``{anonymous, jwt: [{issuer, audience, algorithms, keys, jwks_file, consumer_claim, leeway}]}``.
    ``anonymous`` (default: true only when there are no consumers and no issuers) lets a
    request without credentials through. Each ``jwt`` entry trusts one issuer: ``audience``
    (string or list) is required, ``algorithms`` a subset of HS256, RS256, ES256 (default
    RS256, ES256), ``keys`` inline ``{kid?, secret}`` (HS256, >= 32 bytes) or ``{kid?, pem}``
    (RSA >= 2048 bits or EC P-256 public key), ``jwks_file`` a JWKS read at load,
    ``consumer_claim`` (``sub``) names the consumer, ``leeway`` (30s) is the allowed clock skew.
    Normalised keys are ``{kid, alg, secret}`` or ``{kid, alg, pem}`` (canonical PEM).
``limits``
    Rate limits and quotas, see :mod:`fastgw.config.limits`.
``routes``
    Plain HTTP routes, see :mod:`fastgw.config.routes`.
``log``
    Access log and usage stream, see :mod:`fastgw.config.logging`.
``tracing``
    OpenTelemetry traces over OTLP/HTTP, see :mod:`fastgw.config.tracing`.
``console``
    ``{summarise: null | {model, api_key, timeout}}``: a model that summarises a group of
    recent failures on request, see :mod:`fastgw.config.console`.
``compression``
    Response compression (off when absent), overridable per route and per model; see
    :mod:`fastgw.config.compression`.
``lanes``, ``lanes_header``
    Gray-release lanes and the header that carries a request's lane upstream, see
    :mod:`fastgw.config.lanes`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastgw.config import net
from fastgw.config.cache import cache
from fastgw.config.compression import compression
from fastgw.config.console import console
from fastgw.config.consumers import access
from fastgw.config.failover import failover as _failover
from fastgw.config.failover import pass_headers as _pass_headers
from fastgw.config.fields import (
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
from fastgw.config.fields import required as _required
from fastgw.config.fields import unknown_name as _unknown_name
from fastgw.config.filters import filters
from fastgw.config.guard import guard
from fastgw.config.lanes import check_consumers, lane_tag, lanes_header
from fastgw.config.lanes import lanes as _lanes
from fastgw.config.limits import limits
from fastgw.config.logging import log_section
from fastgw.config.overload import overload
from fastgw.config.pricing import pricing
from fastgw.config.prompts import prompts, transform
from fastgw.config.routes import routes
from fastgw.config.tls import tls_section
from fastgw.config.tracing import tracing
from fastgw.config.upstream_health import node_zone, zone_name
from fastgw.config.waf import waf
from fastgw.filters import NOT_ON_MODELS

TOP_LEVEL_KEYS = (
    "listen",
    "workers",
    "admin",
    "redis",
    "http",
    "providers",
    "models",
    "consumers",
    "auth",
    "limits",
    "routes",
    "log",
    "prompts",
    "cache",
    "guard",
    "tracing",
    "compression",
    "console",
    "lanes",
    "lanes_header",
    "zone",
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
NEEDS_BASE_URL = ("azure", "openai-compatible")
"""Types without a well-known endpoint; the others default to their public API (api.openai.com...)."""

_HTTP = {
    "max_header_size": (size, 16 * 1024),
    "max_headers": (integer(1), 100),
    "max_body_size": (size, 10 * 1024 * 1024),
    "header_timeout": (duration(), 10.0),
    "body_timeout": (duration(), 10.0),
    "body_min_rate": (integer(0), 240),
    "send_timeout": (duration(), 30.0),
    "max_connections": (lambda value, path, issues: _connection_cap(value, path, issues), "auto"),
    "max_connections_per_ip": (integer(0), 0),
    "keepalive_timeout": (duration(allow_zero=True), 75.0),
    "drain_timeout": (duration(allow_zero=True), 30.0),
    "max_pipelined": (integer(1), 32),
    "overload": (overload, None),
}
_PROVIDER_TIMEOUTS = {
    "connect": (duration(), 2.0),
    "first_byte": (duration(), 15.0),
    "idle": (duration(), 60.0),
}
_BREAKER = {"failures": (integer(1), 3), "cooldown": (duration(), 30.0)}
_KEY_COOLDOWN = {"rate_limited": (duration(), 30.0), "unauthorized": (duration(), 300.0)}
_HEALTH_CHECK = {"interval": (duration(), 10.0), "timeout": (duration(), 2.0)}
_PROVIDER_KEYS = (
    "name", "type", "base_url", "api_keys", "timeouts", "options", "breaker", "key_cooldown", "health_check",
    "pass_headers",
)
_LISTEN_KEYS = ("address", "reuse_port", "backlog", "tls", "redirect")
_REDIRECT_KEYS = ("address", "status", "https_port")
_ADMIN_KEYS = ("address", "socket", "token", "metrics_public")
MIN_ADMIN_TOKEN = 16
"""Characters; a guessable token is no better than none (``openssl rand -hex 32`` makes one)."""


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
        "compression": compression(data.get("compression"), "compression", issues),
        "lanes_header": lanes_header(data.get("lanes_header"), issues),
        "zone": node_zone(data.get("zone"), issues),
    }
    config["lanes"] = _lanes(data.get("lanes", []), config["lanes_header"], issues)
    lane_names = {lane["name"] for lane in config["lanes"] if lane["name"]}
    config["models"] = _models(data.get("models", []), {p["name"] for p in config["providers"]}, issues,
                               config["compression"], lane_names)
    config["consumers"], config["auth"] = access(
        data.get("consumers", []), data.get("auth", {}), [m["name"] for m in config["models"] if m["name"]], issues
    )
    check_consumers(config["lanes"], [c["name"] for c in config["consumers"] if c.get("name")], issues)
    config["limits"] = _limits(data.get("limits", []), issues)
    config["routes"] = routes(data.get("routes", []), issues, config["compression"], lane_names)
    config["log"] = log_section(data.get("log"), config["redis"], issues)
    config["cache"] = cache(data.get("cache"), issues, config["redis"])
    config["guard"] = guard(data.get("guard", {}), issues)
    config["tracing"] = tracing(data.get("tracing"), issues)
    config["console"] = console(data.get("console"), issues, [m["name"] for m in config["models"] if m["name"]])
    config["prompts"] = prompts(
        data.get("prompts", {}),
        issues,
        [m["name"] for m in config["models"] if m["name"]],
        [c["name"] for c in config["consumers"] if c.get("name")],
    )
    return config


def _connection_cap(value: Any, path: str, issues: Issues) -> int | str | None:
    if value == "auto":
        return value
    if type(value) is int and value >= 0:
        return value
    issues.add(path, f"expected 'auto' or a number of connections >= 0 (0 = no cap), found {issues.describe(value)}")
    return None


def _listen(value: Any, issues: Issues) -> dict:
    if isinstance(value, dict):
        given = mapping(value, "listen", issues, _LISTEN_KEYS) or {}
        found = net.address(given.get("address", "127.0.0.1:8080"), "listen.address", issues)
    else:
        given = {}
        found = net.address(value, "listen", issues)
    host, port = found or (None, None)
    tls = tls_section(given.get("tls"), issues)
    return {
        "host": host,
        "port": port,
        "reuse_port": boolean(given["reuse_port"], "listen.reuse_port", issues)
        if "reuse_port" in given
        else True,
        "backlog": integer(1)(given["backlog"], "listen.backlog", issues) if "backlog" in given else 2048,
        "tls": tls,
        "redirect": _redirect(given["redirect"], port, "tls" in given, issues) if "redirect" in given else None,
    }


def _redirect(value: Any, tls_port: int | None, tls: bool, issues: Issues) -> dict | None:
    """``listen.redirect``: a plain-HTTP listener that sends every request to https (fastgw.server.redirect)."""
    given = value if isinstance(value, dict) else {"address": value}
    given = mapping(given, "listen.redirect", issues, _REDIRECT_KEYS) or {}
    if not tls:
        issues.add("listen.redirect", "needs listen.tls: it redirects to the TLS listener")
    found = net.address(given.get("address"), "listen.redirect.address", issues) if "address" in given else None
    if "address" not in given:
        issues.add("listen.redirect.address", "is required")
    status = given.get("status", 308)
    if status not in (301, 302, 307, 308) or type(status) is not int:
        issues.add("listen.redirect.status", f"expected 301, 302, 307 or 308, found {issues.describe(status)}")
    https_port = integer(1, 65535)(given["https_port"], "listen.redirect.https_port", issues) \
        if "https_port" in given else tls_port
    if found is None or https_port is None:
        return None
    return {"host": found[0], "port": found[1], "status": status, "https_port": https_port}


def _workers(value: Any, issues: Issues) -> int | None:
    if value == "auto":
        return os.cpu_count() or 1
    return integer(1)(value, "workers", issues)


def _admin(value: Any, issues: Issues) -> dict | None:
    if value is None or value is False:
        return None
    socket_path = None
    if isinstance(value, dict):
        given = mapping(value, "admin", issues, _ADMIN_KEYS) or {}
        where = "admin.address"
        if "socket" in given:
            if "address" in given:
                issues.add("admin.socket", "give either address or socket, not both")
            socket_path = _socket_path(given["socket"], issues)
            found = None
        else:
            found = net.address(given.get("address", "127.0.0.1:9901"), where, issues)
    else:
        given, where = {}, "admin"
        found = net.address(value, where, issues)
    token = given.get("token")
    if token is not None:
        token = text(token, "admin.token", issues) if token != "" else None
        if token is not None and len(token) < MIN_ADMIN_TOKEN:
            issues.add("admin.token", f"too short: use at least {MIN_ADMIN_TOKEN} characters (e.g. openssl rand -hex 32)")
    host, port = found or (None, None)
    if host is not None and token is None and not net.loopback(host) and "admin.token" not in issues.unresolved:
        issues.add(
            where,
            f"{host} is not a loopback address, and without admin.token anyone who reaches it could change "
            "the config: set admin.token (e.g. \"${FASTGW_ADMIN_TOKEN}\") or bind 127.0.0.1",
        )
    metrics_public = boolean(given["metrics_public"], "admin.metrics_public", issues) if "metrics_public" in given else False
    return {"host": host, "port": port, "socket": socket_path, "token": token, "metrics_public": metrics_public}


def _socket_path(value: Any, issues: Issues) -> str | None:
    path = text(value, "admin.socket", issues)
    if path is None:
        return None
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        issues.add("admin.socket", f"directory {os.path.dirname(path)!r} does not exist")
        return None
    return path


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
            if kind in NEEDS_BASE_URL:
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
                "breaker": fields(given.get("breaker", {}), f"{path}.breaker", issues, _BREAKER),
                "key_cooldown": fields(given.get("key_cooldown", {}), f"{path}.key_cooldown", issues, _KEY_COOLDOWN),
                "health_check": None
                if given.get("health_check") in (None, False)
                else fields(given["health_check"], f"{path}.health_check", issues, _HEALTH_CHECK),
                "pass_headers": _pass_headers(given.get("pass_headers"), kind, f"{path}.pass_headers", issues),
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


_NO_RULES = {"add": {}, "remove": [], "rename": {}}


def _models(value: Any, providers: set[str], issues: Issues, compressing: dict | None = None,
            lane_names: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    out, names = [], []
    for i, item in enumerate(sequence(value, "models", issues) or []):
        path = f"models[{i}]"
        given = mapping(item, path, issues, ("name", "targets", "max_attempts", "transform", "waf", "filters",
                                             "compression", "failover", "pricing"))
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
            _target(t, f"{path}.targets[{j}]", name, providers, issues, lane_names) for j, t in enumerate(targets or [])
        ]
        attempts = integer(1, 20)(given["max_attempts"], f"{path}.max_attempts", issues) if "max_attempts" in given else None
        # Default: every target once, plus two retries with other keys or fresh connections.
        rules = transform(given["transform"], f"{path}.transform", issues) if "transform" in given else None
        if rules is not None and (rules["request"]["headers"] != _NO_RULES or rules["request"]["query"] != _NO_RULES):
            # Provider calls are built by adapters: only body rules (and response headers) apply to models.
            issues.add(f"{path}.transform.request", "only body rules apply to models (providers' headers come from their adapters)")
        model_filters = filters(given.get("filters", []), f"{path}.filters", issues)
        for j, spec in enumerate(model_filters):
            if spec["use"] in NOT_ON_MODELS:
                issues.add(f"{path}.filters[{j}]", f"'{spec['use']}' {NOT_ON_MODELS[spec['use']]}")
        out.append({"name": name, "targets": chain, "max_attempts": attempts or len(chain) + 2, "transform": rules,
                    "waf": waf(given["waf"], f"{path}.waf", issues) if given.get("waf") is not None else None,
                    "filters": model_filters,
                    "compression": compression(given["compression"], f"{path}.compression", issues, compressing)
                    if "compression" in given else compressing,
                    "failover": _failover(given.get("failover", {}), f"{path}.failover", issues),
                    "pricing": pricing(given["pricing"], f"{path}.pricing", issues) if given.get("pricing") is not None
                    else None})
    unique_names("models", names, issues)
    return out


def _target(value: Any, path: str, public: str | None, providers: set[str], issues: Issues,
            lane_names: frozenset[str] | set[str] = frozenset()) -> dict:
    given = mapping(value, path, issues, ("provider", "model", "context_window", "lane", "zone"))
    if given is None:
        return {"provider": None, "model": public, "context_window": None, "zone": None}
    provider = _required(given, "provider", path, issues, text)
    if provider is not None and provider not in providers:
        issues.add(f"{path}.provider", _unknown_name("provider", provider, providers))
    model = text(given["model"], f"{path}.model", issues) if "model" in given else public
    if model is not None and public is not None and "*" in model and "*" not in public:
        issues.add(f"{path}.model", "'*' in a target model needs a '*' in the public model name")
    window = given.get("context_window")
    if window is not None:
        window = integer(1)(window, f"{path}.context_window", issues)
    zone = zone_name(given["zone"], f"{path}.zone", issues) if "zone" in given else None
    target = {"provider": provider, "model": model, "context_window": window, "zone": zone}
    lane = lane_tag(given, f"{path}.lane", lane_names, issues)
    if lane is not None:  # untagged: the base lane's
        target["lane"] = lane
    return target


def _limits(value: Any, issues: Issues) -> list[dict]:
    return limits(value, issues)

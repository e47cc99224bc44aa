"""The admin HTTP API, served by the supervisor from a daemon thread.

Stdlib only (``ThreadingHTTPServer``): the admin API is low-traffic and must not pull an
event loop into the supervisor. Every response is JSON (or Prometheus text), including
errors for malformed requests, and no handler failure can reach the supervisor's loop.

Endpoints: ``GET /status``, ``GET /healthz``, ``GET /metrics``, ``GET /config`` (secrets
redacted), ``POST /config`` (validate, then publish a new generation), ``GET /quota`` /
``POST /quota`` (read, set, top up or reset one consumer's quota under one rule),
``GET /config/history``, ``GET /config/diff``, ``POST /config/rollback``, ``GET /diagnose``,
``POST /diagnose/summary``, the console under ``/ui``, and ``POST /drain`` / ``POST /undrain``
(take the node out of service without exiting: new connections refused, answers in flight
finish, ``/healthz`` 503; and back), ``GET /upstreams``
(every plain route's endpoints and their state) and ``POST /upstreams/drain`` /
``/upstreams/undrain`` with ``{"route", "endpoint"}`` (one endpoint takes no new requests,
node-wide; those in flight finish; and back, through slow start).

Who may call: with ``admin.token`` every endpoint but ``/healthz`` (and ``/metrics`` when
``admin.metrics_public``) needs ``Authorization: Bearer <token>`` (compared in constant
time); without one the admin API only binds loopback (the config refuses anything else) and
answers only requests whose ``Host`` names a loopback address, so a page that rebinds a DNS
name to 127.0.0.1 reads nothing. A browser must not be able to drive it either: a request
with an ``Origin`` other than the admin API's own is refused (403), and a POST must say
``application/json`` or a YAML type (415 otherwise), which a cross-site "simple" request
(``text/plain``, forms) cannot.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl

from redis.exceptions import RedisError

from fastgw.config import ConfigError
from fastgw.config.diff import config_diff
from fastgw.config.net import loopback
from fastgw.config.secrets import redact
from fastgw.limits.quotas import QuotaAdmin
from fastgw.obs import diagnose
from fastgw.obs.metrics import Snapshot
from fastgw.obs.recent import RING_SIZE
from workers.console import HISTORY, UI_DIR, UI_FILES
from workers.shm import BlobTooLarge
from workers.summarise import SummaryFailed, summarise
from workers.trial import GenerationRefused

DEFAULT_SPAN = 900
"""Seconds of history ``/ui/data`` returns unless ``?seconds=`` asks for more (up to an hour)."""
POST_TYPES = frozenset(("application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"))
"""Content types a state-changing request may carry: none of them is one a cross-site form or
"simple" fetch can send without a CORS preflight (which the Origin check refuses)."""


class Backend(Protocol):
    """What the admin API needs from the supervisor (kept narrow so tests can fake it).

    Optionally also ``metrics``: a :class:`workers.metrics_shm.WorkerMetrics` whose
    aggregated families ``/metrics`` appends (looked up with ``getattr``, so fakes may omit it).
    """

    config: dict
    generation: int

    def status(self) -> dict: ...

    def push_config(self, text: str, source: str) -> tuple[int, list[str]]: ...

    def quota_admin(self) -> QuotaAdmin: ...

    @property
    def draining(self) -> bool: ...

    def drain(self) -> dict: ...

    def undrain(self) -> dict: ...

    def upstream_listing(self) -> dict:
        """Every plain route's endpoints and their node-wide state (``GET /upstreams``)."""

    def drain_endpoint(self, route: str | None, endpoint: object, drained: bool) -> dict:
        """Drain or undrain one endpoint address; ``LookupError`` if nothing matches."""

    def recent_failures(self) -> list[dict]:
        """Every worker's recent failed requests, oldest first (``/diagnose``)."""

    def config_history(self) -> list[dict]:
        """The generations published, newest last (``/config/history``)."""

    def rollback(self) -> tuple[int, int]:
        """Publish the generation before the live one again (``POST /config/rollback``)."""

    def generation_config(self, generation: int) -> dict | None:
        """A generation's config while it is in the history (``/config/diff``), else None."""


def format_url(host: str, port: int) -> str:
    """``http://host:port``, bracketing IPv6 literals."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- metrics ------------------------------------------------------------------------------


@dataclass
class Metric:
    """One Prometheus metric family: ``add`` samples, then :func:`render_metrics`."""

    name: str
    kind: str  # "gauge", "counter" or "histogram"
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    """``(suffix, labels, value)``; the suffix (``_bucket``, ``_sum``, ``_count``) is for histograms."""

    def add(self, value: float, **labels: object) -> None:
        self.samples.append(("", {k: str(v) for k, v in labels.items()}, value))

    def add_sample(self, suffix: str, labels: dict[str, str], value: float) -> None:
        self.samples.append((suffix, labels, value))


Collector = Callable[[dict], Iterable[Metric]]
"""Builds metric families from a ``/status`` snapshot; append new ones to :data:`COLLECTORS`."""


def _worker_metrics(status: dict) -> Iterable[Metric]:
    generation = Metric("fastgw_config_generation", "gauge", "Config generation published by the supervisor.")
    generation.add(status["generation"])
    families = {
        "up": Metric("fastgw_worker_up", "gauge", "1 if the worker in this slot is ready."),
        "requests_total": Metric("fastgw_worker_requests_total", "counter", "Requests served by the slot's worker."),
        "active_requests": Metric("fastgw_worker_active_requests", "gauge", "Requests in flight."),
        "connections": Metric("fastgw_worker_connections", "gauge", "Open client connections."),
        "restarts": Metric("fastgw_worker_restarts_total", "counter", "Times the supervisor respawned the slot."),
        "generation": Metric("fastgw_worker_generation", "gauge", "Config generation the worker serves."),
    }
    for worker in status["workers"]:
        slot = worker["slot"]
        families["up"].add(int(worker["ready"]), slot=slot)
        families["requests_total"].add(worker["requests_total"], slot=slot)
        families["active_requests"].add(worker["active_requests"], slot=slot)
        families["connections"].add(worker["connections"], slot=slot)
        families["restarts"].add(worker["restarts"], slot=slot)
        if worker["generation"] is not None:
            families["generation"].add(worker["generation"], slot=slot)
    return [generation, *families.values()]


COLLECTORS: list[Collector] = [_worker_metrics]


def snapshot_metrics(snapshot: Snapshot) -> Iterable[Metric]:
    """Families aggregated over all workers (:meth:`WorkerMetrics.collect`) as :class:`Metric`s."""
    for name, (kind, help, labelnames, buckets, values) in snapshot.items():
        metric = Metric(name, kind, help)
        for key, value in values.items():
            labels = dict(zip(labelnames, key, strict=True))
            if kind != "histogram":
                metric.add_sample("", labels, value)
                continue
            cumulative = 0
            for bound, count in zip((*buckets, math.inf), value[:-1], strict=True):
                cumulative += count
                metric.add_sample("_bucket", {**labels, "le": repr(bound) if bound != math.inf else "+Inf"}, cumulative)
            metric.add_sample("_sum", labels, value[-1])
            metric.add_sample("_count", labels, cumulative)
        yield metric


def _sample_metrics(samples: Iterable[tuple[str, str, str, dict, float]]) -> list[Metric]:
    """``(name, kind, help, labels, value)`` samples grouped into families, in first-seen order."""
    families: dict[str, Metric] = {}
    for name, kind, help, labels, value in samples:
        metric = families.get(name)
        if metric is None:
            metric = families[name] = Metric(name, kind, help)
        metric.add_sample("", labels, value)
    return list(families.values())


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """Exact, unlike ``:g`` (which turns 1234567 into 1.23457e+06)."""
    if isinstance(value, int):
        return str(int(value))  # int() turns a bool into 0/1
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render_metrics(metrics: Iterable[Metric]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {_help_text(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for suffix, labels, value in metric.samples:
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            series = f"{metric.name}{suffix}{{{inner}}}" if inner else f"{metric.name}{suffix}"
            lines.append(f"{series} {_number(value)}")
    return "\n".join(lines) + "\n"


# -- HTTP -------------------------------------------------------------------------------


def _host_name(value: str) -> str:
    """The host of a ``Host`` header: ``[::1]:9901`` -> ``::1``, ``localhost`` -> ``localhost``."""
    if value.startswith("["):
        return value[1 : value.find("]")]
    return value.rpartition(":")[0] if ":" in value else value


def _error(status: int, message: str, kind: str, **extra: object) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": kind, **extra}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server | _UnixServer
    server_version = "fastgw-admin"
    timeout = 10  # a client that stalls mid-request only ties up its own thread, and not for long

    ROUTES = {
        "/status": ("GET",),
        "/healthz": ("GET",),
        "/metrics": ("GET",),
        "/config": ("GET", "POST"),
        "/config/history": ("GET",),
        "/config/rollback": ("POST",),
        "/config/diff": ("GET",),
        "/quota": ("GET", "POST"),
        "/drain": ("POST",),
        "/undrain": ("POST",),
        "/upstreams": ("GET",),
        "/upstreams/drain": ("POST",),
        "/upstreams/undrain": ("POST",),
        "/diagnose": ("GET",),
        "/diagnose/summary": ("POST",),
        "/ui/data": ("GET",),
        **{path: ("GET",) for path in UI_FILES},
    }

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs would drown the supervisor's event lines; requests are not logged."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (bad request line, headers, method) get JSON, not HTML."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # an unparsable request line leaves 0.9, which sends no head
        self._send_json(*_error(code, message or HTTPStatus(code).phrase, "invalid_request"))

    def _refusal(self, path: str) -> tuple[int, dict, tuple[tuple[str, str], ...]] | None:
        """Why this caller may not go further, as ``(status, body, extra headers)``; None if it may."""
        server = self.server
        origin = self.headers.get("Origin")
        if origin is not None and origin not in server.origins:
            return (*_error(403, "cross-origin requests to the admin API are refused", "forbidden"), ())
        if server.loopback_only and not loopback(_host_name(self.headers.get("Host") or "")):
            return (*_error(403, "without admin.token only loopback host names are served", "forbidden"), ())
        # The console's pages and scripts hold no data (their calls carry the token): a browser
        # can load them and then ask for the token.
        open_path = path == "/healthz" or path in UI_FILES or (path == "/metrics" and server.metrics_public)
        if server.token is not None and not open_path:
            scheme, _, presented = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), server.token):
                message = "a valid admin token is required (Authorization: Bearer ...)"
                challenge = (("WWW-Authenticate", 'Bearer realm="fastgw-admin"'),)
                return (*_error(401, message, "unauthorized"), challenge)
        return None

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        methods = self.ROUTES.get(path)
        refusal = self._refusal(path)
        media = (self.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if refusal is not None:
            status, body, headers = refusal
            self.close_connection = True  # the body of a refused request is never read
            self._send_json(status, body, *headers)
        elif methods is None:
            self._send_json(*_error(404, f"no such endpoint: {path}", "not_found"))
        elif self.command not in methods:
            allowed = ", ".join(methods)
            self._send_json(*_error(405, f"{path} allows {allowed}", "method_not_allowed"), ("Allow", allowed))
        elif self.command != "GET" and media not in POST_TYPES:
            self.close_connection = True
            message = f"a {self.command} needs Content-Type application/json or application/yaml"
            self._send_json(*_error(415, message, "unsupported_media_type"))
        else:
            try:
                self._route(path)
            except Exception as exc:  # a bug here must not take the admin thread, or more, down
                self.server.log(f"admin: {self.command} {path} failed: {exc!r}")
                self._send_json(*_error(500, "internal error", "internal_error"))

    def _route(self, path: str) -> None:
        backend = self.server.backend
        if path == "/status":
            self._send_json(200, backend.status())
        elif path == "/healthz":
            ready = sum(worker["ready"] for worker in backend.status()["workers"])
            if backend.draining:  # a load balancer takes the node out while its streams finish
                self._send_json(503, {"ready_workers": ready, "draining": True})
            else:
                self._send_json(200 if ready else 503, {"ready_workers": ready})
        elif path == "/drain":
            self._send_json(200, backend.drain())
        elif path == "/undrain":
            self._send_json(200, backend.undrain())
        elif path == "/upstreams":
            self._send_json(200, backend.upstream_listing())
        elif path in ("/upstreams/drain", "/upstreams/undrain"):
            self._send_json(*self._drain_endpoint(path == "/upstreams/drain"))
        elif path == "/metrics":
            status = backend.status()
            metrics = [metric for collect in COLLECTORS for metric in collect(status)]
            upstream_metrics = getattr(backend, "upstream_metrics", None)
            if upstream_metrics is not None:
                metrics.extend(_sample_metrics(upstream_metrics()))
            worker_metrics = getattr(backend, "metrics", None)
            if worker_metrics is not None:
                metrics.extend(snapshot_metrics(worker_metrics.collect()))
            text = render_metrics(metrics)
            self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/quota":
            self._send_json(*self._quota())
        elif path == "/config/history":
            self._send_json(200, {"generation": backend.generation, "history": backend.config_history()})
        elif path == "/config/rollback":
            try:
                generation, restored = backend.rollback()
            except LookupError as exc:
                self._send_json(*_error(409, str(exc), "no_earlier_generation"))
            else:
                self._send_json(200, {"generation": generation, "restored": restored})
        elif path == "/config/diff":
            self._send_json(*self._config_diff())
        elif path == "/diagnose":
            self._send_json(*self._diagnose())
        elif path == "/diagnose/summary":
            self._send_json(*self._summary())
        elif path in UI_FILES:  # the console's static page, script and vendored uPlot
            name, content_type = UI_FILES[path]
            self._send(200, (UI_DIR / name).read_bytes(), content_type, ("Cache-Control", "no-cache"))
        elif path == "/ui/data":
            history = getattr(backend, "console", None)
            status = backend.status()
            seconds = dict(parse_qsl(self.path.partition("?")[2])).get("seconds", "")
            span = min(int(seconds), HISTORY) if seconds.isdigit() and int(seconds) > 0 else DEFAULT_SPAN
            series = history.series(span) if history is not None else {"t": []}
            body = {"generation": status["generation"], "workers": status["workers"], "series": series}
            self._send_json(200, body, indent=None)  # thousands of points: no pretty-printing
        elif self.command == "GET":  # /config: shaped like a config file, generation in a header
            generation, config = backend.generation, backend.config
            self._send_json(200, redact(config), ("X-Fastgw-Generation", str(generation)))
        else:
            self._send_json(*self._post_config())

    def _json_body(self) -> dict | tuple[int, dict]:
        """The request's JSON object, or the error to answer with."""
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > 65536:
            return _error(400, "a JSON body with Content-Length is required", "invalid_request")
        try:
            request = json.loads(self.rfile.read(int(length)))
        except ValueError:
            return _error(400, "the body is not valid JSON", "invalid_request")
        if not isinstance(request, dict):
            return _error(400, "the body must be a JSON object", "invalid_request")
        return request

    def _drain_endpoint(self, drained: bool) -> tuple[int, dict]:
        """``{"endpoint": URL or index, "route": name}`` (``route`` optional with a URL)."""
        request = self._json_body()
        if isinstance(request, tuple):
            return request
        route, endpoint = request.get("route"), request.get("endpoint")
        if route is not None and not isinstance(route, str):
            return _error(400, "'route' must be a route name", "invalid_request")
        index = isinstance(endpoint, int) and not isinstance(endpoint, bool)
        if not (isinstance(endpoint, str) or index) or (index and route is None):
            return _error(400, "'endpoint' is required: its URL, or its index with 'route'", "invalid_request")
        try:
            return 200, self.server.backend.drain_endpoint(route, endpoint, drained)
        except LookupError as exc:
            return _error(404, str(exc.args[0]), "not_found")

    def _quota(self) -> tuple[int, dict]:
        """``GET /quota?rule=R&consumer=C``; ``POST /quota`` with JSON
        ``{"rule", "consumer", "action": "set" | "top_up" | "reset", "amount"}``."""
        if self.command == "GET":
            query = dict(parse_qsl(self.path.partition("?")[2]))
            request = {"rule": query.get("rule"), "consumer": query.get("consumer"), "action": "get"}
        else:
            request = self._json_body()
            if isinstance(request, tuple):
                return request
        rule, consumer, action = request.get("rule"), request.get("consumer"), request.get("action")
        if not isinstance(rule, str) or not isinstance(consumer, str):
            return _error(400, "'rule' and 'consumer' are required", "invalid_request")
        admin = self.server.backend.quota_admin()
        try:
            if action == "get":
                return 200, admin.get(rule, consumer)
            if action == "reset":
                return 200, admin.reset(rule, consumer)
            if action in ("set", "top_up"):
                amount = request.get("amount")
                if isinstance(amount, bool) or not isinstance(amount, int | float):
                    return _error(400, "'amount' must be a number", "invalid_request")
                change = admin.set_limit if action == "set" else admin.top_up
                return 200, change(rule, consumer, amount)
            return _error(400, "'action' must be one of set, top_up, reset", "invalid_request")
        except KeyError:
            return _error(404, f"no quota rule named {rule!r}", "not_found")
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request")
        except RedisError as exc:
            return _error(503, f"the quota store (Redis) is unavailable: {exc}", "quota_store_unavailable")

    def _config_diff(self) -> tuple[int, dict]:
        """``GET /config/diff?from=A&to=B``: redacted unified diff of two generations still in the
        history; ``to`` defaults to the live generation, ``from`` to the one published before ``to``."""
        backend = self.server.backend
        query = dict(parse_qsl(self.path.partition("?")[2]))
        numbers = [entry["generation"] for entry in backend.config_history()]
        try:
            to = int(query.get("to", backend.generation))
            earlier = [n for n in numbers if n < to]
            start = int(query["from"]) if "from" in query else (earlier[-1] if earlier else None)
        except ValueError:
            return _error(400, "'from' and 'to' must be generation numbers", "invalid_request")
        if start is None:
            return _error(404, f"no generation before {to} is kept", "not_found")
        old, new = backend.generation_config(start), backend.generation_config(to)
        if old is None or new is None:
            missing = start if old is None else to
            return _error(404, f"generation {missing} is not in the history (kept: {numbers})", "not_found")
        return 200, {"from": start, "to": to,
                     **config_diff(old, new, f"generation {start}", f"generation {to}")}

    def _diagnose(self) -> tuple[int, dict]:
        """``GET /diagnose``: recent failures grouped by cause; ``?request_id=``: one of them."""
        backend = self.server.backend
        records = backend.recent_failures()
        request_id = dict(parse_qsl(self.path.partition("?")[2])).get("request_id")
        if request_id is None:
            return 200, {"failures": len(records), "causes": diagnose.group(records, backend.config),
                         "summarise": (backend.config.get("console") or {}).get("summarise") is not None}
        found = next((r for r in reversed(records) if r["request_id"] == request_id), None)
        if found is None:
            return _error(404, f"no recent failed request has id {request_id!r} (each worker keeps its last "
                               f"{RING_SIZE})", "not_found")
        return 200, {"request_id": request_id, **diagnose.explain(found, backend.config), "record": found}

    def _summary(self) -> tuple[int, dict]:
        """``POST /diagnose/summary`` with JSON ``{"cause"}``: ``console.summarise``'s model
        summarises that group of recent failures (through this gateway's front door)."""
        backend = self.server.backend
        config = backend.config
        spec = (config.get("console") or {}).get("summarise")
        if spec is None:
            return _error(404, "no model summarises errors: set console.summarise.model", "not_configured")
        request = self._json_body()
        if not isinstance(request, dict) or not isinstance(request.get("cause"), str):
            return _error(400, "a JSON body {\"cause\": ...} is required", "invalid_request")
        records = backend.recent_failures()
        group = next((g for g in diagnose.group(records, config) if g["cause"] == request["cause"]), None)
        if group is None:
            return _error(404, f"no recent failure has cause {request['cause']!r}", "not_found")
        mine = [r for r in records if diagnose.explain(r, config)["cause"] == group["cause"]]
        try:
            text = summarise(group, mine, spec, config["listen"])
        except SummaryFailed as exc:
            return _error(exc.status, str(exc), "summary_failed")
        return 200, {"cause": group["cause"], "count": group["count"], "model": spec["model"], "summary": text}

    def _json_body(self) -> Any:
        """The request's JSON body (at most 64 KiB), or None when it is missing or not JSON."""
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > 65536:
            return None
        try:
            return json.loads(self.rfile.read(int(length)))
        except ValueError:
            return None

    def _post_config(self) -> tuple[int, dict]:
        length = self.headers.get("Content-Length")
        if length is None:
            return _error(411, "Content-Length is required", "invalid_request")
        if not length.isdigit():
            return _error(400, "invalid Content-Length", "invalid_request")
        if int(length) > self.server.max_body:
            self.close_connection = True
            return _error(413, f"config is larger than {self.server.max_body} bytes", "config_too_large")
        raw = self.rfile.read(int(length))
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            return _error(400, "invalid config", "invalid_config", errors=[f"POST /config: not UTF-8 ({exc.reason})"])
        try:
            generation, warnings = self.server.backend.push_config(text, "POST /config")
        except ConfigError as exc:
            return _error(400, "invalid config", "invalid_config", errors=exc.errors)
        except BlobTooLarge as exc:
            return _error(413, str(exc), "config_too_large")
        except GenerationRefused as exc:
            kind = "unbuildable_config" if exc.status == 409 else "generation_not_loaded"
            message = f"generation {exc.generation} refused; the running generation stays"
            return _error(exc.status, message, kind, errors=[exc.reason])
        return 200, {"generation": generation, "warnings": warnings}

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _send_json(self, status: int, body: dict, *headers: tuple[str, str], indent: int | None = 1) -> None:
        self._send(status, json.dumps(body, indent=indent).encode() + b"\n", "application/json", *headers)

    def _send(self, status: int, body: bytes, content_type: str, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _AdminState:
    """What the handler reads from its server, whether TCP or Unix socket."""

    backend: Backend
    max_body: int
    log: Callable[[str], None]
    token: bytes | None
    metrics_public: bool
    origins: frozenset[str] = frozenset()
    """The admin API's own origins: a console it serves may POST, no other page may."""
    loopback_only: bool = False
    """Answer only ``Host`` names of loopback addresses (TCP without a token: DNS rebinding)."""

    def _state(
        self, backend: Backend, max_body: int, log: Callable[[str], None], token: str | None, metrics_public: bool
    ) -> None:
        self.backend = backend
        self.max_body = max_body
        self.log = log
        self.token = None if token is None else token.encode()
        self.metrics_public = metrics_public

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-response is not worth a traceback."""
        self.log("admin: a request failed (the client went away?)")


class _Server(_AdminState, ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, state: tuple) -> None:
        self.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self._state(*state)
        super().__init__((host, port), _Handler)
        bound = self.server_address[1]
        self.origins = frozenset(format_url(name, bound) for name in (host, "127.0.0.1", "localhost", "::1"))
        self.loopback_only = self.token is None

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS round trip we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _UnixServer(_AdminState, socketserver.ThreadingUnixStreamServer):
    """The admin API on a Unix socket: only this user may connect (mode 0600), and no browser can."""

    daemon_threads = True

    def __init__(self, path: str, state: tuple) -> None:
        self._state(*state)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a previous run's, left by a kill
        old = os.umask(0o177)  # born 0600: no window in which another user could connect
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)


class AdminServer:
    """The admin API on ``host:port`` or the Unix socket ``socket_path``, serving ``backend`` from
    a daemon thread.

    ``token``: the bearer token required (see the module docstring); without one a TCP admin API
    binds loopback only.
    """

    def __init__(
        self,
        host: str | None,
        port: int | None,
        backend: Backend,
        *,
        max_body: int,
        log: Callable[[str], None],
        token: str | None = None,
        metrics_public: bool = False,
        socket_path: str | None = None,
    ) -> None:
        state = (backend, max_body, log, token, metrics_public)
        self._path = socket_path
        if socket_path is not None:
            self._server: _AdminState = _UnixServer(socket_path, state)
        elif host is None or port is None:
            raise ValueError("the admin API needs host and port, or a socket path")
        elif token is None and not loopback(host):
            raise ValueError(f"the admin API binds {host} only with a token")
        else:
            self._server = _Server(host, port, state)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fastgw-admin", daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port``, or ``unix:/path`` (what ``fastgw push --admin`` takes)."""
        if self._path is not None:
            return f"unix:{self._path}"
        return format_url(*self._server.server_address[:2])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    def close_in_child(self) -> None:
        """In a forked worker: drop the inherited listening socket (the thread did not fork)."""
        self._server.socket.close()

"""The node's view of plain-route endpoints, kept by the supervisor: active health checks,
drain and undrain, and what ``GET /upstreams`` and ``/metrics`` show.

One checker per node, not per worker: N workers probing each endpoint would multiply the
probes by N and could disagree about an endpoint's state. The supervisor is the one process
that outlives workers, holds the live config and already serves the admin API, so it probes,
from a thread (stdlib ``http.client``: a probe is one short request) and writes the verdicts
into the shared :class:`~fastgw.proxy.endpoint_table.EndpointTable`, which every worker reads
before it picks an endpoint.

A check passes when the endpoint answers ``health.path`` within ``health.timeout`` with a status
in ``health.expect``. ``unhealthy_threshold`` failures in a row take a healthy endpoint out,
``healthy_threshold`` passes in a row bring an unhealthy one back (through slow start). An
endpoint no check has judged yet counts as healthy (a gateway serves from its first second);
its first failures count towards the threshold as for any healthy endpoint.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastgw.proxy.endpoint_table import (
    HEALTH_NAMES,
    HEALTH_UNKNOWN,
    HEALTHY,
    PROVIDER_PREFIX,
    UNHEALTHY,
    EndpointTable,
    slow_start_factor,
)

PROBE_THREADS = 8
"""Probes in flight at once; a probe waits at most its ``timeout``."""
TICK = 0.05
"""How often the checker looks for checks that are due."""


@dataclass(slots=True)
class _Check:
    """One address's active check and its recent results (the supervisor's own state)."""

    address: str
    scheme: str
    host: str
    port: int
    spec: dict
    record: int
    due: float = 0.0
    passes: int = 0
    failures: int = 0
    running: bool = False
    last: str = ""  # the last result, for GET /upstreams
    judged: int = HEALTH_UNKNOWN


@dataclass
class UpstreamDirectory:
    """Registers endpoint addresses, checks them, drains them; see the module docstring."""

    table: EndpointTable
    log: Callable[[str], None]
    checks: dict[str, _Check] = field(default_factory=dict)
    routes: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pool: ThreadPoolExecutor | None = None

    # -- generations -----------------------------------------------------------------------

    def configure(self, config: dict, *, boot: bool = False) -> None:
        """Register every address the config names (before it is published) and set up the
        checks it asks for. Addresses new after boot come in through slow start; an address
        no longer checked forgets its verdict."""
        now = time.monotonic()
        wanted: dict[str, tuple[dict, dict]] = {}
        unshared = set()
        for route in config["routes"]:
            upstream = route["upstream"]
            for endpoint in upstream["endpoints"]:
                record = self.table.register(endpoint["url"], revived_at=float("-inf") if boot else now)
                if record is None:
                    unshared.add(endpoint["url"])
                elif upstream["health"] is not None:
                    wanted.setdefault(endpoint["url"], (endpoint, upstream["health"]))
        if unshared:
            self.log(f"warning: no room to share the state of {len(unshared)} endpoint address(es) between workers "
                     f"(the node holds {self.table.capacity}); each worker keeps its own, and they are not checked")
        probed = set()
        for provider in config["providers"]:  # AI probes: one worker probes, the others follow
            if provider.get("health_check") and provider["type"] != "mock":
                record = self.table.register(PROVIDER_PREFIX + provider["name"])
                if record is not None:
                    probed.add(record)
        for state_record, state in enumerate(self.table.states()):
            if state.address.startswith(PROVIDER_PREFIX) and state_record not in probed:
                self.table.set_health(state_record, HEALTH_UNKNOWN, now)  # not probed now: forget
        with self._lock:
            self.routes = config["routes"]
            for address in list(self.checks):
                kept = wanted.get(address)
                if kept is None or kept[1] != self.checks[address].spec:
                    check = self.checks.pop(address)
                    self.table.set_health(check.record, HEALTH_UNKNOWN, now)
            for address, (endpoint, spec) in wanted.items():
                if address not in self.checks:
                    self.checks[address] = _Check(address, endpoint["scheme"], endpoint["host"], endpoint["port"],
                                                  spec, self.table.find(address), due=now)

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="fastgw-health")
        self._thread = threading.Thread(target=self._run, name="fastgw-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- checking --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            now = time.monotonic()
            with self._lock:
                due = [c for c in self.checks.values() if not c.running and c.due <= now]
                for check in due:
                    check.running = True
            for check in due:
                self._pool.submit(self._check, check)

    def _check(self, check: _Check) -> None:
        spec = check.spec
        try:
            passed, detail = probe(check.scheme, check.host, check.port, spec["path"], spec["timeout"], spec["expect"])
        except Exception as exc:  # a bug must not stop the checks of every other endpoint
            passed, detail = False, f"probe failed: {exc!r}"
        now = time.monotonic()
        with self._lock:
            check.running = False
            check.due = now + spec["interval"]
            check.last = detail
            if self.checks.get(check.address) is not check:
                return  # a push replaced or removed this check meanwhile
            if passed:
                check.passes, check.failures = check.passes + 1, 0
            else:
                check.passes, check.failures = 0, check.failures + 1
            verdict = check.judged
            if passed and (check.judged == HEALTH_UNKNOWN or check.passes >= spec["healthy_threshold"]):
                verdict = HEALTHY
            elif not passed and check.failures >= spec["unhealthy_threshold"]:
                verdict = UNHEALTHY
            if verdict != check.judged and not (check.judged == HEALTH_UNKNOWN and verdict == HEALTHY):
                self.log(f"upstream endpoint {check.address} is {HEALTH_NAMES[verdict]} ({detail})")
            check.judged = verdict
            self.table.set_health(check.record, verdict, now, failed_check=not passed)

    # -- admin -----------------------------------------------------------------------------

    def find(self, route: str | None, endpoint: object) -> tuple[str, list[str]]:
        """The address an admin call names — ``endpoint`` as a URL, or as an index into
        ``route``'s endpoints — and every route that sends to it. ``LookupError`` if none does."""
        with self._lock:
            routes = self.routes
        if route is not None:
            found = next((r for r in routes if r["name"] == route), None)
            if found is None:
                raise LookupError(f"no route named {route!r}")
            endpoints = found["upstream"]["endpoints"]
            if isinstance(endpoint, int) and not isinstance(endpoint, bool):
                if not 0 <= endpoint < len(endpoints):
                    raise LookupError(f"route {route!r} has {len(endpoints)} endpoint(s); no index {endpoint}")
                address = endpoints[endpoint]["url"]
            else:
                address = _canonical(endpoint, [e["url"] for e in endpoints])
                if address is None:
                    raise LookupError(f"route {route!r} has no endpoint {endpoint!r}")
        else:
            address = _canonical(endpoint, [e["url"] for r in routes for e in r["upstream"]["endpoints"]])
            if address is None:
                raise LookupError(f"no route sends to {endpoint!r}")
        users = [r["name"] for r in routes if any(e["url"] == address for e in r["upstream"]["endpoints"])]
        return address, users

    def set_drained(self, route: str | None, endpoint: object, drained: bool) -> dict:
        """Drain (no new requests; those in flight finish) or undrain one endpoint address, for
        every route and worker of the node: workers read the table before each pick."""
        address, users = self.find(route, endpoint)
        record = self.table.find(address)
        changed = self.table.set_drained(record, drained, time.monotonic())
        if changed:
            self.log(f"upstream endpoint {address} {'drained' if drained else 'undrained'} (routes: {', '.join(users)})")
        return {"endpoint": address, "drained": drained, "changed": changed, "routes": users}

    def listing(self) -> dict:
        """``GET /upstreams``: every route's endpoints with their node-wide state."""
        now = time.monotonic()
        with self._lock:
            routes, checks = self.routes, dict(self.checks)
        out = []
        for route in routes:
            upstream = route["upstream"]
            endpoints = []
            for index, endpoint in enumerate(upstream["endpoints"]):
                record = self.table.find(endpoint["url"])
                if record is None:
                    endpoints.append({"index": index, "url": endpoint["url"], "state": "unshared"})
                    continue
                state = self.table.read(record)
                ejected = state.ejected_until > now
                factor = slow_start_factor(state.revived_at, now, upstream["slow_start"])
                check = checks.get(endpoint["url"])
                entry = {
                    "index": index,
                    "url": endpoint["url"],
                    "weight": endpoint["weight"],
                    "zone": endpoint.get("zone"),
                    "state": _summary(state.drained, state.health, ejected, factor),
                    "drained": state.drained,
                    "health": HEALTH_NAMES[state.health] if check is not None else "not_checked",
                    "ejected_for_s": round(state.ejected_until - now, 3) if ejected else 0,
                    "ejections": state.ejections,
                    "in_flight": self.table.in_flight(record),
                    "weight_factor": round(factor, 3) if not (state.drained or ejected or state.health == UNHEALTHY)
                    else 0.0,
                }
                if check is not None:
                    entry["last_check"] = check.last
                endpoints.append(entry)
            out.append({"route": route["name"], "balance": upstream["balance"], "endpoints": endpoints})
        providers = [{"provider": state.address.removeprefix(PROVIDER_PREFIX), "health": HEALTH_NAMES[state.health],
                      "probes_failed": state.checks_failed}
                     for state in self.table.states() if state.address.startswith(PROVIDER_PREFIX)]
        return {"routes": out, "providers": providers}

    def metrics(self) -> list[tuple[str, str, str, dict, float]]:
        """``(name, kind, help, labels, value)`` samples of every registered address."""
        now = time.monotonic()
        samples = []
        for state in self.table.states():
            if state.address.startswith(PROVIDER_PREFIX):
                continue
            ejected = state.ejected_until > now
            for name in ("healthy", "unhealthy", "ejected", "drained"):
                on = {"healthy": state.health != UNHEALTHY and not ejected and not state.drained,
                      "unhealthy": state.health == UNHEALTHY, "ejected": ejected, "drained": state.drained}[name]
                samples.append(("fastgw_upstream_endpoint_state", "gauge",
                                "1 for each state a plain-route endpoint is in (healthy|unhealthy|ejected|drained).",
                                {"endpoint": state.address, "state": name}, int(on)))
            samples.append(("fastgw_upstream_endpoint_ejections_total", "counter",
                            "Passive ejections of an endpoint since the node started (every worker's).",
                            {"endpoint": state.address}, state.ejections))
            samples.append(("fastgw_upstream_health_check_failures_total", "counter",
                            "Active health checks an endpoint failed.", {"endpoint": state.address},
                            state.checks_failed))
        return samples


def _summary(drained: bool, health: int, ejected: bool, factor: float) -> str:
    if drained:
        return "drained"
    if health == UNHEALTHY:
        return "unhealthy"
    if ejected:
        return "ejected"
    return "slow_start" if factor < 1.0 else "up"


def _canonical(endpoint: object, known: list[str]) -> str | None:
    """A URL as the config spells addresses (``http://host:port``), if one of ``known``."""
    if not isinstance(endpoint, str):
        return None
    from fastgw.config.fields import Issues
    from fastgw.config.net import endpoint as parse_endpoint

    parsed = parse_endpoint(endpoint.strip(), "endpoint", Issues())
    address = parsed["url"] if parsed else endpoint
    return address if address in known else None


def probe(scheme: str, host: str, port: int, path: str, timeout: float, expect: list[list[int]]) -> tuple[bool, str]:
    """One active check: ``GET path``; passes when the status is in one of ``expect``'s ranges."""
    context = ssl.create_default_context() if scheme == "https" else None
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "fastgw-health-check", "Connection": "close"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"GET {path}: {exc.__class__.__name__}: {exc}"
    finally:
        conn.close()
    passed = any(low <= status <= high for low, high in expect)
    return passed, f"GET {path}: {status}"

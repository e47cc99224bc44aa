"""Worker metrics: registry semantics, shared-memory snapshots, aggregation and exposition."""

from __future__ import annotations

import marshal
import os
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastgw.obs.metrics import GATEWAY, Gateway, Registry, merge, status_class
from workers.admin import AdminServer, render_metrics, snapshot_metrics
from workers.metrics_shm import MetricsArea, WorkerMetrics


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` as Prometheus' own parser reads ``text``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def render(snapshot: dict) -> str:
    return render_metrics(snapshot_metrics(snapshot))


def in_child(body: Callable[[], None]) -> int:
    """Fork, run ``body`` in the child, exit; returns the child's pid (the parent reaps it)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- registry -------------------------------------------------------------------------------


def test_counter_and_histogram_semantics() -> None:
    registry = Registry()
    hits = registry.counter("t_hits_total", "Hits.", ("route",))
    assert registry.counter("t_hits_total", "Hits.", ("route",)) is hits
    with pytest.raises(ValueError):
        registry.counter("t_hits_total", "Hits.", ("other",))
    with pytest.raises(ValueError):
        registry.histogram("t_bad", "x", ("le",))
    with pytest.raises(ValueError):
        registry.counter("bad-name", "x")

    hits.inc(("a",))
    hits.inc(("a",), 2)
    hits.inc(("b",), 0.25)
    assert hits.values == {("a",): 3, ("b",): 0.25}
    with pytest.raises(ValueError):
        hits.inc(("a", "b"))

    latency = registry.histogram("t_seconds", "Latency.", ("route",), (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):  # a bucket's bound is inclusive (le)
        latency.observe(("a",), value)
    assert latency.values[("a",)] == [2, 2, 1, 8.65]


def test_gateway_helpers_record_every_family() -> None:
    gw = Gateway(Registry())
    gw.request_done("api", 503, 0.02)
    gw.ai_done(consumer="team", model="gpt", provider="openai", status=200, seconds=1.5, ttft=0.3,
               prompt_tokens=10, completion_tokens=5, estimated=True, cost=0.5)
    assert status_class(204) == "2xx"
    assert gw.requests.values == {("api", "5xx"): 1}
    assert gw.tokens.values == {("team", "gpt", "openai", "prompt"): 10, ("team", "gpt", "openai", "completion"): 5}
    assert gw.tokens_estimated.values == gw.tokens.values
    assert gw.cost.values == {("team", "gpt", "openai"): 0.5}
    assert gw.ai_requests.values == {("team", "gpt", "openai", "200"): 1}
    assert sum(gw.ai_ttft.values[("gpt", "openai")][:-1]) == 1
    names = set(gw.registry.snapshot())
    for name in ("fastgw_ratelimit_rejections_total", "fastgw_upstream_errors_total", "fastgw_failovers_total",
                 "fastgw_redis_errors_total", "fastgw_ai_request_duration_seconds"):
        assert name in names
    assert set(GATEWAY.registry.snapshot()) == names


def test_cardinality_cap_folds_into_other() -> None:
    registry = Registry(max_label_sets=3)
    models = registry.counter("t_total", "x", ("consumer", "model"))
    ttft = registry.histogram("t_seconds", "x", ("model",), (1.0,))
    for i in range(6):
        models.inc(("c", f"m{i}"))
        ttft.observe((f"m{i}",), 0.5)
    models.inc(("c", "m0"))  # known label sets keep counting
    models.inc(("c", "m5"))  # and a folded one is folded again
    assert models.values == {("c", "m0"): 2, ("c", "m1"): 1, ("c", "m2"): 1, ("other", "other"): 4}
    assert ttft.values[("other",)] == [3, 0, 1.5]
    assert registry.overflow.values == {("t_total",): 4, ("t_seconds",): 3}


def test_oversize_snapshot_evicts_oldest_label_sets() -> None:
    registry = Registry()
    paths = registry.counter("t_total", "x", ("path",))
    for i in range(2000):
        paths.inc((f"/path/{i:05d}",))
    blob = registry.encode(8 * 1024)
    assert len(blob) <= 8 * 1024
    kept = marshal.loads(blob)["t_total"][4]
    evicted = registry.dropped.values[("t_total",)]
    assert len(kept) + evicted == 2000 and evicted > 0
    assert ("/path/01999",) in kept and ("/path/00000",) not in kept  # the oldest went first


# -- exposition -------------------------------------------------------------------------------


def test_exposition_format_exact_values() -> None:
    registry = Registry()
    requests = registry.counter("fastgw_requests_total", "Requests.\nSecond line \\ here.", ("route", "status_class"))
    cost = registry.counter("fastgw_cost_total", "USD.", ("consumer", "model"))
    ttft = registry.histogram("fastgw_ai_ttft_seconds", "TTFT.", ("model",), (0.01, 0.5, 2.0))
    requests.inc(("api", "2xx"), 1234567)
    requests.inc(('we"ird\\route\nx', "5xx"))
    cost.inc(("team", "gpt"), 0.25)
    cost.inc(("team", "gpt"), 0.5)
    for value in (0.005, 0.01, 0.3, 1.0, 40.0):
        ttft.observe(("gpt",), value)

    text = render(registry.snapshot())
    assert "fastgw_requests_total{route=\"api\",status_class=\"2xx\"} 1234567\n" in text
    assert "# TYPE fastgw_ai_ttft_seconds histogram" in text
    assert "# HELP fastgw_requests_total Requests.\\nSecond line \\\\ here." in text
    got = samples(text)
    assert got[("fastgw_requests_total", frozenset({("route", "api"), ("status_class", "2xx")}))] == 1234567
    assert got[("fastgw_requests_total", frozenset({("route", 'we"ird\\route\nx'), ("status_class", "5xx")}))] == 1
    assert got[("fastgw_cost_total", frozenset({("consumer", "team"), ("model", "gpt")}))] == 0.75
    buckets = {dict(labels)["le"]: value for (name, labels), value in got.items() if name == "fastgw_ai_ttft_seconds_bucket"}
    assert buckets == {"0.01": 2, "0.5": 3, "2.0": 4, "+Inf": 5}
    assert got[("fastgw_ai_ttft_seconds_sum", frozenset({("model", "gpt")}))] == 0.005 + 0.01 + 0.3 + 1.0 + 40.0
    assert got[("fastgw_ai_ttft_seconds_count", frozenset({("model", "gpt")}))] == 5


def test_admin_metrics_endpoint_appends_worker_families() -> None:
    workers = WorkerMetrics(2, slot_size=64 * 1024)
    registry = Gateway(Registry())
    registry.registry.bind(workers.area, 1)
    registry.request_done("api", 200, 0.003)
    registry.registry.publish(force=True)

    class Backend:
        config: dict = {}
        generation = 1
        metrics = workers

        def status(self) -> dict:
            worker = {"slot": 0, "ready": True, "requests_total": 3, "active_requests": 0, "connections": 1,
                      "restarts": 0, "generation": 1}
            return {"generation": 1, "workers": [worker]}

        def push_config(self, text: str, source: str) -> tuple[int, list[str]]:
            raise AssertionError

    server = AdminServer("127.0.0.1", 0, Backend(), max_body=1024, log=lambda message: None)
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            got = samples(response.read().decode())
    finally:
        server.stop()
        workers.close()
    assert got[("fastgw_worker_up", frozenset({("slot", "0")}))] == 1
    assert got[("fastgw_requests_total", frozenset({("route", "api"), ("status_class", "2xx")}))] == 1
    assert got[("fastgw_request_duration_seconds_bucket", frozenset({("route", "api"), ("le", "0.005")}))] == 1


# -- shared memory and aggregation -------------------------------------------------------------


def test_aggregation_across_forked_workers() -> None:
    workers = WorkerMetrics(3, slot_size=64 * 1024)

    def worker(slot: int) -> Callable[[], None]:
        def body() -> None:
            workers.bind_worker(slot)  # the inherited GATEWAY, empty in every fork
            for _ in range(slot + 1):
                GATEWAY.ai_done(consumer="team", model="gpt", provider="openai", status=200, seconds=0.2,
                                prompt_tokens=100, completion_tokens=10, cost=0.5)
            GATEWAY.request_done(f"route{slot}", 200, 0.01)
            GATEWAY.registry.publish(force=True)

        return body

    for pid in [in_child(worker(slot)) for slot in range(3)]:
        reap(pid)
    got = samples(render(workers.collect()))
    workers.close()
    team = {("consumer", "team"), ("model", "gpt"), ("provider", "openai")}
    assert got[("fastgw_ai_requests_total", frozenset(team | {("status", "200")}))] == 6
    assert got[("fastgw_tokens_total", frozenset(team | {("direction", "prompt")}))] == 600
    assert got[("fastgw_cost_total", frozenset(team))] == 3.0
    duration = frozenset({("model", "gpt"), ("provider", "openai")})
    assert got[("fastgw_ai_request_duration_seconds_count", duration)] == 6
    assert got[("fastgw_ai_request_duration_seconds_bucket", duration | {("le", "0.25")})] == 6
    assert got[("fastgw_ai_request_duration_seconds_bucket", duration | {("le", "0.1")})] == 0
    for slot in range(3):
        assert got[("fastgw_requests_total", frozenset({("route", f"route{slot}"), ("status_class", "2xx")}))] == 1
    assert GATEWAY.ai_requests.values == {}  # this process recorded nothing


def _requests(workers: WorkerMetrics) -> float:
    got = samples(render(workers.collect()))
    return got.get(("fastgw_requests_total", frozenset({("route", "api"), ("status_class", "2xx")})), 0)


def _serve(workers: WorkerMetrics, slot: int, count: int) -> Callable[[], None]:
    def body() -> None:
        workers.bind_worker(slot)
        for _ in range(count):
            GATEWAY.request_done("api", 200, 0.001)
        GATEWAY.registry.publish(force=True)

    return body


def test_counters_stay_monotonic_across_worker_restarts() -> None:
    workers = WorkerMetrics(2, slot_size=64 * 1024)
    first = in_child(_serve(workers, 0, 5))
    reap(first)
    assert _requests(workers) == 5
    workers.retire(0, first)  # what the supervisor does when it reaps the worker
    assert _requests(workers) == 5
    second = in_child(_serve(workers, 0, 2))  # the respawned worker counts from zero
    reap(second)
    assert _requests(workers) == 7
    # Without a retire (say the scrape saw the old worker, then a new one overwrote the slot),
    # the pid change alone folds the old snapshot in.
    third = in_child(_serve(workers, 0, 1))
    reap(third)
    assert _requests(workers) == 8
    workers.retire(0, 12345)  # a pid that is not in the slot changes nothing
    assert _requests(workers) == 8
    workers.close()


def test_reader_never_sees_a_torn_snapshot() -> None:
    area = MetricsArea(1, slot_size=512 * 1024)
    blobs = [marshal.dumps(bytes([i]) * (100_000 + 37_000 * i)) for i in range(5)]

    def writer() -> None:
        deadline = time.monotonic() + 1.0
        i = 0
        while time.monotonic() < deadline:
            area.write(0, os.getpid(), blobs[i % len(blobs)])
            i += 1
            time.sleep(0.0002)  # a real worker writes once a second; this one is 5000x as eager

    pid = in_child(writer)
    reads = 0
    try:
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            found = area.read(0)
            if found is not None:
                assert found[2] in blobs
                reads += 1
    finally:
        reap(pid)
    assert reads > 10
    area.close()


def test_writer_dead_mid_write_keeps_the_last_good_snapshot() -> None:
    workers = WorkerMetrics(1, slot_size=64 * 1024)
    pid = in_child(_serve(workers, 0, 3))
    reap(pid)
    assert _requests(workers) == 3
    workers.area._seqs[0] |= 1  # as if the worker died between its two sequence stores
    assert workers.area.read(0) is None
    assert _requests(workers) == 3
    workers.retire(0, pid)
    assert _requests(workers) == 3
    assert workers.area.read(0) is None
    workers.close()


def test_merge_does_not_alias_its_input() -> None:
    registry = Registry()
    registry.histogram("t_seconds", "x", (), (1.0,)).observe((), 0.5)
    snapshot = marshal.loads(marshal.dumps(registry.snapshot()))
    total = merge(merge({}, snapshot), snapshot)
    assert total["t_seconds"][4][()] == [2, 0, 1.0]
    assert snapshot["t_seconds"][4][()] == [1, 0, 0.5]

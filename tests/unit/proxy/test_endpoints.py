"""The weighting maths of endpoint health: slow-start factors, factors in both balancers, the
node table's ejection back-off, zone preference and spill-over, and the table shared across a fork."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from fastgw.proxy.balancer import NONE_ELIGIBLE, make_balancer
from fastgw.proxy.endpoint_table import (
    HEALTHY,
    SLOW_START_FLOOR,
    UNHEALTHY,
    EndpointTable,
    slow_start_factor,
)
from fastgw.proxy.endpoints import CONNECT_FAILURE, STATUS_5XX, EndpointSet, local_share


def test_slow_start_is_linear_from_the_floor_to_full() -> None:
    assert slow_start_factor(100.0, 100.0, 30.0) == pytest.approx(SLOW_START_FLOOR)
    assert slow_start_factor(100.0, 115.0, 30.0) == pytest.approx(SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) / 2)
    assert slow_start_factor(100.0, 130.0, 30.0) == 1.0
    assert slow_start_factor(100.0, 500.0, 30.0) == 1.0
    assert slow_start_factor(float("-inf"), 1.0, 30.0) == 1.0  # never went away: no ramp
    assert slow_start_factor(100.0, 101.0, 0.0) == 1.0  # slow start off


def picks(balancer, n: int, **kwargs) -> Counter:
    return Counter(balancer.pick(**kwargs) for _ in range(n))


def test_factors_scale_round_robin_shares_exactly() -> None:
    balancer = make_balancer([1, 1, 2], "round_robin")
    balancer.set_factors([1.0, 0.5, 0.0])  # weights 1000 : 500 : 0
    assert picks(balancer, 300) == Counter({0: 200, 1: 100})
    balancer.set_factors([1.0, 1.0, 1.0])  # back to the configured weights, and their exact pattern
    assert [balancer.pick() for _ in range(8)] == [2, 0, 1, 2, 2, 0, 1, 2]


def test_a_returning_endpoint_gets_no_burst_of_old_credit() -> None:
    balancer = make_balancer([1, 1], "round_robin")
    balancer.set_factors([1.0, 0.0])
    for _ in range(50):
        assert balancer.pick() == 0
    balancer.set_factors([1.0, 1.0])
    assert [balancer.pick() for _ in range(4)] in ([0, 1, 0, 1], [1, 0, 1, 0])


def test_no_eligible_endpoint_and_allowed_subsets() -> None:
    for policy in ("round_robin", "least_request"):
        balancer = make_balancer([1, 1, 1], policy)
        balancer.set_factors([0.0, 0.0, 0.0])
        assert balancer.pick() == NONE_ELIGIBLE
        balancer.set_factors([1.0, 0.0, 1.0])
        assert set(picks(balancer, 10)) == {0, 2}
        assert set(picks(balancer, 10, allowed=[1, 2])) == {2}  # 1 is out whatever the subset
        assert balancer.pick(allowed=[1]) == NONE_ELIGIBLE
        assert set(picks(balancer, 6, exclude=frozenset({0}))) == {2}


def test_least_request_gives_a_ramping_endpoint_less_under_load() -> None:
    balancer = make_balancer([1, 1], "least_request")
    balancer.set_factors([1.0, 0.25])
    held = Counter(balancer.pick() for _ in range(50))  # none released: load builds up
    # in flight / factor is compared: endpoint 1 holds a quarter of endpoint 0's count.
    assert held[0] == 40 and held[1] == 10


def test_local_share_counts_weight() -> None:
    assert local_share([1, 3, 5], [0, 1], [True, False, True]) == pytest.approx(0.25)
    assert local_share([1, 3, 5], [], [True, True, True]) == 0.0


def upstream_spec(*endpoints: tuple[str, int, str | None], **extra: object) -> dict:
    return {"endpoints": [{"url": url, "weight": weight, "zone": zone} for url, weight, zone in endpoints],
            "balance": "round_robin", **extra}


def endpoint_set(spec: dict, zone: dict | None = None, table: EndpointTable | None = None):
    table = table or EndpointTable(16)
    for endpoint in spec["endpoints"]:
        table.register(endpoint["url"])
    balancer = make_balancer([e["weight"] for e in spec["endpoints"]], spec["balance"])
    return EndpointSet(spec, balancer, table, EndpointTable(16), zone), table


def test_drain_unhealthy_and_ejected_endpoints_are_not_chosen() -> None:
    states, table = endpoint_set(upstream_spec(("http://a:1", 1, None), ("http://b:1", 1, None)))
    assert {states.choose() for _ in range(4)} == {0, 1}
    table.set_drained(0, True, time.monotonic())
    assert {states.choose() for _ in range(4)} == {1}
    table.set_health(1, UNHEALTHY, time.monotonic())
    assert states.choose() == NONE_ELIGIBLE
    table.set_drained(0, False, time.monotonic())
    table.set_health(1, HEALTHY, time.monotonic())
    assert {states.choose() for _ in range(4)} == {0, 1}


def test_outlier_ejection_doubles_and_starts_over() -> None:
    outlier = {"consecutive_5xx": 2, "consecutive_connect_failures": 1, "base_ejection": 10.0, "max_ejection": 35.0}
    states, table = endpoint_set(upstream_spec(("http://a:1", 1, None), ("http://b:1", 1, None), outlier=outlier))
    states.failed(0, STATUS_5XX)
    states.succeeded(0)  # a success in between: not in a row
    states.failed(0, STATUS_5XX)
    assert table.read(0).ejections == 0
    states.failed(0, STATUS_5XX)
    state = table.read(0)
    assert state.ejections == 1 and state.ejected_until - state.ejected_at == pytest.approx(10.0)
    assert {states.choose() for _ in range(4)} == {1}
    now = time.monotonic()
    # the back-off doubles for ejections in a row, up to the maximum
    assert table.eject(0, state.ejected_until + 1, 10.0, 35.0) == pytest.approx(20.0)
    assert table.eject(0, table.read(0).ejected_until + 1, 10.0, 35.0) == pytest.approx(35.0)
    # in again for longer than max_ejection: from the base again
    assert table.eject(0, table.read(0).ejected_until + 36, 10.0, 35.0) == pytest.approx(10.0)
    assert table.eject(0, now, 10.0, 35.0) == 0.0  # already out: another worker was first


def test_an_ejection_that_ends_slow_starts(monkeypatch) -> None:
    outlier = {"consecutive_5xx": 1, "consecutive_connect_failures": 1, "base_ejection": 1.0, "max_ejection": 5.0}
    states, table = endpoint_set(upstream_spec(("http://a:1", 1, None), ("http://b:1", 1, None), outlier=outlier,
                                               slow_start=10.0))
    states.failed(0, CONNECT_FAILURE)
    until = table.read(0).ejected_until
    clock = [until + 5.0]  # half-way through slow start
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    states.refresh(clock[0])
    assert states.factors[0] == pytest.approx(slow_start_factor(until, clock[0], 10.0))
    share = Counter(states.choose() for _ in range(1000))[0] / 1000
    assert share == pytest.approx(0.55 / 1.55, abs=0.01)


def test_zones_prefer_local_until_min_healthy_then_spill() -> None:
    spec = upstream_spec(("http://a:1", 1, "z1"), ("http://b:1", 1, "z1"), ("http://c:1", 1, "z2"),
                         zones={"min_healthy": None})
    zone = {"name": "z1", "min_healthy": 0.5}
    states, table = endpoint_set(spec, zone)
    assert {states.choose() for _ in range(10)} == {0, 1}
    table.set_health(0, UNHEALTHY, time.monotonic())  # half the local weight: still enough
    assert {states.choose() for _ in range(10)} == {1}
    strict, strict_table = endpoint_set({**spec, "zones": {"min_healthy": 0.75}}, zone)
    strict_table.set_health(0, UNHEALTHY, time.monotonic())
    assert {strict.choose() for _ in range(10)} == {1, 2}  # spilled over to every eligible endpoint
    table.set_health(1, UNHEALTHY, time.monotonic())
    assert {states.choose() for _ in range(10)} == {2}


def test_a_retry_goes_to_a_zone_not_tried() -> None:
    spec = upstream_spec(("http://a:1", 1, "z1"), ("http://b:1", 1, "z1"), ("http://c:1", 1, "z2"))
    states, _ = endpoint_set(spec, {"name": "z1", "min_healthy": 0.5})
    assert states.choose(frozenset({0})) == 2
    assert states.choose(frozenset({0, 2})) == 1  # no other zone left: any endpoint not tried
    # within a lane's subset, the zone preference still applies
    assert {states.choose(subset=[1, 2]) for _ in range(5)} == {1}


def test_no_zone_on_the_node_means_no_preference() -> None:
    spec = upstream_spec(("http://a:1", 1, "z1"), ("http://c:1", 1, "z2"))
    states, _ = endpoint_set(spec, None)
    assert {states.choose() for _ in range(4)} == {0, 1}


def test_the_table_is_shared_with_forked_workers() -> None:
    table = EndpointTable(8)
    record = table.register("http://a:1")
    pid = os.fork()
    if pid == 0:  # a worker: ejects, and sees the supervisor's later drain
        table.eject(record, time.monotonic(), 5.0, 10.0)
        deadline = time.monotonic() + 5
        while not table.read(record).drained and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if table.read(record).drained else 1)
    deadline = time.monotonic() + 5
    while table.read(record).ejections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    epoch = table.epoch
    assert table.read(record).ejections == 1
    table.set_drained(record, True, time.monotonic())
    assert table.epoch != epoch
    assert os.waitpid(pid, 0)[1] == 0
    assert table.register("http://a:1") == record and table.find("http://b:1") is None


def test_endpoints_no_table_has_room_for_are_always_in() -> None:
    spec = upstream_spec(("http://a:1", 1, None), ("http://b:1", 1, None), ("http://c:1", 1, None),
                         outlier={"consecutive_5xx": 1, "consecutive_connect_failures": 1, "base_ejection": 5.0,
                                  "max_ejection": 5.0})
    balancer = make_balancer([1, 1, 1], "round_robin")
    states = EndpointSet(spec, balancer, EndpointTable(1), EndpointTable(1), None)  # room for one address
    for index in range(3):
        states.failed(index, CONNECT_FAILURE)
    assert {states.choose() for _ in range(6)} == {1, 2}  # a (the one with a record) is ejected, b and c stay in

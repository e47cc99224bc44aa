"""Balancer policies: weighted distribution, in-flight accounting, retry exclusion."""

from collections import Counter

import pytest

from fastgw.proxy.balancer import Balancer, LeastRequestBalancer, make_balancer


def picks(balancer: Balancer, n: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    return [balancer.pick(exclude) for _ in range(n)]


def test_smooth_weighted_round_robin_matches_nginx_pattern() -> None:
    balancer = make_balancer([5, 1, 1], "round_robin")
    assert "".join("abc"[i] for i in picks(balancer, 14)) == "aabacaa" * 2


@pytest.mark.parametrize("weights", [[1], [1, 1], [3, 1], [2, 3, 5], [1, 1, 1, 10], [7, 7]])
def test_round_robin_is_exactly_proportional_per_cycle(weights: list[int]) -> None:
    balancer = make_balancer(weights, "round_robin")
    cycle = sum(weights)
    counts = Counter(picks(balancer, cycle * 3))
    assert [counts[i] for i in range(len(weights))] == [w * 3 for w in weights]


def test_equal_weights_alternate() -> None:
    assert picks(make_balancer([1, 1, 1], "round_robin"), 6) == [0, 1, 2, 0, 1, 2]


def test_round_robin_release_is_a_no_op() -> None:
    balancer = make_balancer([1, 1], "round_robin")
    balancer.release(0)
    assert picks(balancer, 4) == [0, 1, 0, 1]


def test_exclude_skips_endpoints_and_keeps_weights_among_the_rest() -> None:
    balancer = make_balancer([1, 2, 3], "round_robin")
    got = Counter(picks(balancer, 50, frozenset({2})))
    assert set(got) == {0, 1}
    assert got[1] == pytest.approx(2 * got[0], abs=2)


def test_excluding_everything_still_returns_an_endpoint() -> None:
    for policy in ("round_robin", "least_request"):
        balancer = make_balancer([1, 1], policy)
        assert balancer.pick(frozenset({0, 1})) in (0, 1)


def test_least_request_prefers_fewest_in_flight() -> None:
    balancer = make_balancer([1, 1, 1], "least_request")
    first = picks(balancer, 3)
    assert sorted(first) == [0, 1, 2]  # all busy once
    balancer.release(1)
    assert balancer.pick() == 1  # the only one with 0 in flight
    balancer.release(2)
    balancer.release(2)  # over-release is clamped at zero, not negative
    assert balancer.pick() == 2
    assert balancer.pick() in (0, 1, 2)


def test_least_request_in_flight_accounting() -> None:
    balancer = make_balancer([1, 1], "least_request")
    assert isinstance(balancer, LeastRequestBalancer)
    held = picks(balancer, 10)
    assert Counter(held) == {0: 5, 1: 5}
    for index in held[:5]:
        balancer.release(index)
    # Releases were 3 of endpoint 0 and 2 of endpoint 1 -> 0 has fewer in flight now.
    assert Counter(held[:5]) == {0: 3, 1: 2}
    assert balancer.pick() == 0


def test_least_request_ties_follow_weights() -> None:
    balancer = make_balancer([5, 1, 1], "least_request")
    sequence = []
    for _ in range(14):  # released at once: always tied at 0, so weighted round robin decides
        index = balancer.pick()
        balancer.release(index)
        sequence.append(index)
    assert "".join("abc"[i] for i in sequence) == "aabacaa" * 2


def test_least_request_respects_exclude() -> None:
    balancer = make_balancer([1, 1, 1], "least_request")
    assert balancer.pick(frozenset({0})) == 1
    assert balancer.pick(frozenset({1})) in (0, 2)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        make_balancer([1], "random")
    with pytest.raises(ValueError):
        make_balancer([], "round_robin")
    with pytest.raises(ValueError):
        make_balancer([1, 0], "round_robin")


@pytest.mark.parametrize("policy", ["round_robin", "least_request"])
def test_allowed_restricts_picks_to_a_subset_with_its_weights(policy: str) -> None:
    """A lane's endpoints are a subset of one balancer: picks stay inside it, weighted, and the
    rest of the endpoints keep their own rotation."""
    balancer = make_balancer([1, 3, 1, 1], policy)
    lane = (1, 2)
    got = Counter()
    for _ in range(40):
        index = balancer.pick(allowed=lane)
        balancer.release(index)
        got[index] += 1
    assert got == {1: 30, 2: 10}
    base = Counter()
    for _ in range(20):
        index = balancer.pick(allowed=(0, 3))
        balancer.release(index)
        base[index] += 1
    assert base == {0: 10, 3: 10}


@pytest.mark.parametrize("policy", ["round_robin", "least_request"])
def test_exclude_never_widens_allowed(policy: str) -> None:
    balancer = make_balancer([1, 1, 1], policy)
    assert {balancer.pick(frozenset({1}), (1, 2)) for _ in range(6)} == {2}
    assert balancer.pick(frozenset({1, 2}), (1, 2)) in (1, 2)  # all of the subset excluded: still inside it

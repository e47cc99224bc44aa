"""Choose which endpoint of a route's upstream gets the next request.

``round_robin`` is nginx's smooth weighted round robin: deterministic, proportional to
weight, and spread out (weights 5,1,1 give a a b a c a a, not a a a a a b c).

``least_request`` picks among the endpoints with the fewest requests in flight, and breaks
ties with the same smooth weighted round robin over the tied endpoints. It scans every
endpoint (an upstream has a handful) instead of sampling two, so it is exact and
deterministic; when traffic is light (everything tied at 0) it degrades to weighted round
robin rather than piling onto one endpoint.

Both honour ``exclude`` (endpoints a retry should avoid) unless that excludes them all,
and ``allowed`` (the index subset a request may use at all: its gray-release lane's
endpoints), which ``exclude`` never widens. A balancer lives in one worker and one config generation, so it needs no locking.
"""

from __future__ import annotations

from collections.abc import Sequence

_NOTHING: frozenset[int] = frozenset()


class Balancer:
    """Smooth weighted round robin; the base of every policy."""

    __slots__ = ("_weights", "_current", "_everyone")

    def __init__(self, weights: list[int]) -> None:
        if not weights or min(weights) < 1:
            raise ValueError("a balancer needs at least one endpoint, each with weight >= 1")
        self._weights = list(weights)
        self._current = [0] * len(weights)
        self._everyone = range(len(weights))

    def pick(self, exclude: frozenset[int] = _NOTHING, allowed: Sequence[int] | None = None) -> int:
        """The endpoint index for the next request, among ``allowed`` (default: every endpoint)."""
        return self._rotate(self._allowed(exclude, allowed))

    def release(self, index: int) -> None:
        """A request to ``index`` ended; round robin keeps no per-request state."""

    def _allowed(self, exclude: frozenset[int], allowed: Sequence[int] | None = None) -> Sequence[int]:
        pool = self._everyone if allowed is None else allowed
        if not exclude:
            return pool
        return [i for i in pool if i not in exclude] or pool

    def _rotate(self, candidates: Sequence[int]) -> int:
        """One step of smooth weighted round robin over ``candidates`` only."""
        if len(candidates) == 1:
            return candidates[0]
        weights, current = self._weights, self._current
        best = candidates[0]
        total = 0
        for i in candidates:
            weight = weights[i]
            total += weight
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return best


class LeastRequestBalancer(Balancer):
    """Fewest requests in flight; ties go by smooth weighted round robin."""

    __slots__ = ("_in_flight",)

    def __init__(self, weights: list[int]) -> None:
        super().__init__(weights)
        self._in_flight = [0] * len(weights)

    def pick(self, exclude: frozenset[int] = _NOTHING, allowed: Sequence[int] | None = None) -> int:
        """The endpoint index for the next request, counted as in flight until :meth:`release`."""
        in_flight = self._in_flight
        candidates = self._allowed(exclude, allowed)
        fewest = min(in_flight[i] for i in candidates)
        index = self._rotate([i for i in candidates if in_flight[i] == fewest])
        in_flight[index] += 1
        return index

    def release(self, index: int) -> None:
        if self._in_flight[index] > 0:
            self._in_flight[index] -= 1


_POLICIES = {"round_robin": Balancer, "least_request": LeastRequestBalancer}


def make_balancer(weights: list[int], policy: str) -> Balancer:
    """A balancer for endpoints with ``weights`` under ``policy`` (round_robin | least_request)."""
    policy_class = _POLICIES.get(policy)
    if policy_class is None:
        raise ValueError(f"unknown balance policy {policy!r}")
    return policy_class(weights)

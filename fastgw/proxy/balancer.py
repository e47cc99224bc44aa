"""Choose which endpoint of a route's upstream gets the next request.

``round_robin`` is nginx's smooth weighted round robin: deterministic, proportional to
weight, and spread out (weights 5,1,1 give a a b a c a a, not a a a a a b c).

``least_request`` picks among the endpoints with the fewest requests in flight, and breaks
ties with the same smooth weighted round robin over the tied endpoints. It scans every
endpoint (an upstream has a handful) instead of sampling two, so it is exact and
deterministic; when traffic is light (everything tied at 0) it degrades to weighted round
robin rather than piling onto one endpoint.

Both honour ``exclude`` (endpoints a retry should avoid) unless that excludes them all, and
``allowed`` (the candidate subset a caller narrows to: the local zone, a lane). Which endpoints
may take traffic at all, and how much, is one input, :meth:`Balancer.set_factors`: per endpoint
a factor in [0, 1] (0: out, drained or ejected or unhealthy; below 1: ramping up in slow start)
that scales its configured weight. ``least_request`` divides an endpoint's in-flight count by its
factor, so a ramping endpoint is also given a smaller share under load, not only on ties.
A balancer lives in one worker and one config generation, so it needs no locking.
"""

from __future__ import annotations

_NOTHING: frozenset[int] = frozenset()
SCALE = 1000
"""Configured weights are multiplied by this before a factor applies: a factor of 0.1 on weight 1
is still an integer weight (100), and the picks of whole factors stay exactly those of the
configured weights (smooth round robin depends only on their ratios)."""
NONE_ELIGIBLE = -1
""":meth:`Balancer.pick` when every candidate's factor is 0."""


class Balancer:
    """Smooth weighted round robin; the base of every policy."""

    __slots__ = ("_base", "_weights", "_factors", "_current", "_everyone", "_eligible")

    def __init__(self, weights: list[int]) -> None:
        if not weights or min(weights) < 1:
            raise ValueError("a balancer needs at least one endpoint, each with weight >= 1")
        self._base = list(weights)
        self._weights = list(weights)
        self._factors = [1.0] * len(weights)
        self._current = [0] * len(weights)
        self._everyone = range(len(weights))
        self._eligible: range | list[int] = self._everyone

    def set_factors(self, factors: list[float]) -> None:
        """Each endpoint's share of its configured weight, 0 (out) to 1 (full); see the module
        docstring. An endpoint that comes back starts its rotation afresh (no burst of credit)."""
        full = all(f >= 1.0 for f in factors)
        if full:
            weights = list(self._base)
        else:
            weights = [0 if f <= 0 else max(1, round(w * SCALE * min(f, 1.0))) for w, f in zip(self._base, factors, strict=True)]
        if full != (self._weights == self._base):  # the scale changed: credit in the old one is void
            self._current = [0] * len(weights)
        else:
            self._current = [c if old else 0 for c, old in zip(self._current, self._weights, strict=True)]
        self._weights = weights
        self._factors = [min(max(f, 0.0), 1.0) for f in factors]
        self._eligible = self._everyone if min(weights) > 0 else [i for i in self._everyone if weights[i]]

    def pick(self, exclude: frozenset[int] = _NOTHING, allowed: list[int] | None = None) -> int:
        """The endpoint index for the next request (:data:`NONE_ELIGIBLE` if none may take it)."""
        candidates = self._allowed(exclude, allowed)
        return self._rotate(candidates) if candidates else NONE_ELIGIBLE

    def release(self, index: int) -> None:
        """A request to ``index`` ended; round robin keeps no per-request state."""

    def _allowed(self, exclude: frozenset[int], allowed: list[int] | None = None) -> range | list[int]:
        """Eligible candidates (within ``allowed``) not in ``exclude``; all eligible ones if that
        excludes them all."""
        eligible = self._eligible
        if allowed is not None:
            weights = self._weights
            eligible = [i for i in allowed if weights[i]]
        if not exclude:
            return eligible
        return [i for i in eligible if i not in exclude] or eligible

    def _rotate(self, candidates: range | list[int]) -> int:
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

    def pick(self, exclude: frozenset[int] = _NOTHING, allowed: list[int] | None = None) -> int:
        """The endpoint index for the next request, counted as in flight until :meth:`release`."""
        in_flight, factors = self._in_flight, self._factors
        candidates = self._allowed(exclude, allowed)
        if not candidates:
            return NONE_ELIGIBLE
        load = [in_flight[i] / factors[i] for i in candidates]
        fewest = min(load)
        index = self._rotate([i for i, n in zip(candidates, load, strict=True) if n == fewest])
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

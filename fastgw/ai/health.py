"""What a worker remembers about providers between requests: key cool-downs and breakers.

State lives in the worker, not in a config generation, so a config push does not forget
that a key was just rate-limited or that a provider is down. A generation asks for the
pool of a provider's keys or the breaker of a target and gets the existing one back when
nothing it depends on changed.
"""

from __future__ import annotations

import hashlib
import time

NO_KEY = -1
"""``KeyPool.pick`` result for a provider configured without keys (ollama, mock)."""


class KeyPool:
    """A provider's API keys, rotated round robin; a refused key sits out its cool-down.

    Each cooling key remembers why: a credential refusal keeps the provider's (redacted) message,
    so a request that finds every key refused is told about the credentials (502), not asked to
    retry later as if they were only rate-limited (429)."""

    __slots__ = ("keys", "cooled_until", "refusals", "next")

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.cooled_until = [0.0] * len(keys)
        self.refusals: list[str | None] = [None] * len(keys)
        self.next = 0

    def pick(self, exclude: frozenset[int] = frozenset()) -> int | None:
        """Index of the next usable key, ``NO_KEY`` if the provider has none, None if all are cooling."""
        count = len(self.keys)
        if count == 0:
            return NO_KEY
        now = time.monotonic()
        for step in range(count):
            index = (self.next + step) % count
            if index not in exclude and self.cooled_until[index] <= now:
                self.next = (index + 1) % count
                return index
        return None

    def key(self, index: int) -> str | None:
        return None if index == NO_KEY else self.keys[index]

    def cool(self, index: int, seconds: float, refusal: str | None = None) -> None:
        """Bench a key for ``seconds``; ``refusal`` is the provider's message when it refused the
        credential (None: rate-limited)."""
        if index != NO_KEY:
            self.cooled_until[index] = max(self.cooled_until[index], time.monotonic() + seconds)
            self.refusals[index] = refusal

    def refusal(self) -> str | None:
        """The provider's latest message when every key is cooling down for a credential refusal."""
        now = time.monotonic()
        if not self.keys or any(until <= now or self.refusals[i] is None for i, until in enumerate(self.cooled_until)):
            return None
        return self.refusals[max(range(len(self.keys)), key=self.cooled_until.__getitem__)]

    def cooling(self) -> int:
        now = time.monotonic()
        return sum(until > now for until in self.cooled_until)


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """Passive health of one target: after ``failures`` failures in a row it opens for
    ``cooldown`` seconds, then lets one trial request through (half-open); the trial's
    outcome closes it or opens it again for another cool-down."""

    __slots__ = ("failures", "cooldown", "state", "consecutive", "opened_at", "trial_out")

    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.trial_out = False

    def allow(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if time.monotonic() - self.opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self.trial_out = False
        if self.trial_out:
            return False
        self.trial_out = True
        return True

    def success(self) -> None:
        self.state = CLOSED
        self.consecutive = 0
        self.trial_out = False

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == HALF_OPEN or self.consecutive >= self.failures:
            self.state = OPEN
            self.opened_at = time.monotonic()
            self.trial_out = False


class ProviderHealth:
    """Per-worker registry of key pools and breakers, reused across config generations."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], KeyPool] = {}
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self.probed_down: set[str] = set()  # providers whose last active health probe failed
        self.probes: dict[str, tuple[bool, float]] = {}  # provider -> (last verdict, wall time)

    def key_pool(self, provider: str, keys: list[str]) -> KeyPool:
        # Keyed by a digest of the keys: a push that changes them starts fresh, one that doesn't keeps cool-downs.
        fingerprint = hashlib.sha256("\0".join(keys).encode()).hexdigest()
        pool = self._pools.get((provider, fingerprint))
        if pool is None:
            pool = self._pools[(provider, fingerprint)] = KeyPool(list(keys))
        return pool

    def breaker(self, provider: str, model: str, failures: int, cooldown: float) -> Breaker:
        breaker = self._breakers.get((provider, model))
        if breaker is None:
            breaker = self._breakers[(provider, model)] = Breaker(failures, cooldown)
        else:
            breaker.failures, breaker.cooldown = failures, cooldown
        return breaker

    def breakers(self) -> dict[tuple[str, str], Breaker]:
        return self._breakers

    def report(self) -> dict:
        """This worker's view of its providers, for ``/status`` and the console: every breaker,
        each provider's keys that are cooling down (and why), and the last probe verdicts.

        Only a provider's newest key pool is shown (an older one belongs to keys a push replaced).
        """
        now = time.monotonic()
        breakers = [
            {"provider": provider, "model": model, "state": b.state, "consecutive_failures": b.consecutive,
             "open_for_s": round(max(0.0, b.cooldown - (now - b.opened_at)), 1) if b.state == OPEN else None}
            for (provider, model), b in self._breakers.items()
        ]
        pools: dict[str, KeyPool] = {}
        for (provider, _), pool in self._pools.items():
            pools[provider] = pool  # insertion order: the newest pool last
        keys = []
        for provider, pool in pools.items():
            if not pool.keys:
                continue
            cooling = [
                {"index": i, "remaining_s": round(until - now, 1),
                 "reason": "rate_limited" if pool.refusals[i] is None else "refused"}
                for i, until in enumerate(pool.cooled_until) if until > now
            ]
            keys.append({"provider": provider, "keys": len(pool.keys), "cooling": cooling})
        probes = [
            {"provider": provider, "healthy": healthy, "at": round(at, 3)}
            for provider, (healthy, at) in self.probes.items()
        ]
        return {"breakers": breakers, "keys": keys, "probes": probes}

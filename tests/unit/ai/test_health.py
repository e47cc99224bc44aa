"""KeyPool remembers why a key cools down (credential refusals told apart from rate limits); the health report."""

from __future__ import annotations

import time

from fastgw.ai.health import NO_KEY, KeyPool, ProviderHealth


def test_a_pool_whose_cooling_keys_were_all_refused_reports_the_refusal():
    pool = KeyPool(["a", "b"])
    pool.cool(0, 60, "provider 'p' answered 401: bad key ***")
    assert pool.refusal() is None  # key b is still usable: nothing to report
    pool.cool(1, 60, "provider 'p' answered 403: forbidden")
    assert pool.pick() is None and pool.refusal() == "provider 'p' answered 403: forbidden"


def test_a_rate_limited_key_among_refused_ones_is_not_a_credential_error():
    pool = KeyPool(["a", "b"])
    pool.cool(0, 60, "provider 'p' answered 401: bad key")
    pool.cool(1, 60)
    assert pool.pick() is None and pool.refusal() is None


def test_a_refusal_is_forgotten_once_its_cool_down_ends():
    pool = KeyPool(["a"])
    pool.cool(0, 0.05, "provider 'p' answered 401: bad key")
    time.sleep(0.1)
    assert pool.refusal() is None and pool.pick() == 0


def test_a_pool_without_keys_never_cools():
    pool = KeyPool([])
    pool.cool(NO_KEY, 60, "refused")
    assert pool.pick() == NO_KEY and pool.refusal() is None


def test_the_report_shows_breakers_the_newest_pools_cooling_keys_and_probes():
    health = ProviderHealth()
    breaker = health.breaker("openai-main", "gpt-4o", failures=2, cooldown=30)
    breaker.failure()
    health.breaker("other", "m", failures=2, cooldown=30)
    health.key_pool("openai-main", ["old-key"]).cool(0, 60)  # a pool a push replaced
    pool = health.key_pool("openai-main", ["k1", "k2", "k3"])
    pool.cool(1, 60, "provider 'openai-main' answered 401")
    pool.cool(2, 60)
    health.key_pool("mock", [])  # no keys: nothing to show
    health.probes["openai-main"] = (False, 1700000000.0)
    report = health.report()
    assert [(b["provider"], b["state"], b["consecutive_failures"], b["open_for_s"]) for b in report["breakers"]] == [
        ("openai-main", "closed", 1, None), ("other", "closed", 0, None)]
    breaker.failure()
    assert health.report()["breakers"][0]["state"] == "open" and 29 < health.report()["breakers"][0]["open_for_s"] <= 30
    assert [(k["provider"], k["keys"]) for k in report["keys"]] == [("openai-main", 3)]
    cooling = report["keys"][0]["cooling"]
    assert [(c["index"], c["reason"]) for c in cooling] == [(1, "refused"), (2, "rate_limited")]
    assert all(59 < c["remaining_s"] <= 60 for c in cooling)
    assert report["probes"] == [{"provider": "openai-main", "healthy": False, "at": 1700000000.0}]
    assert "k1" not in str(report) and "old-key" not in str(report)  # keys are never in it

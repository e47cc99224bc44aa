"""KeyPool remembers why a key cools down: credential refusals are told apart from rate limits."""

from __future__ import annotations

import time

from fastgw.ai.health import NO_KEY, KeyPool


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

"""``models[].pricing``: checked with field paths, normalised, and what a call then costs."""

from __future__ import annotations

import pytest

from fastgw.ai.frontdoor import ModelEntry
from fastgw.config import ConfigError, load_text

BASE = "providers: [{name: mock, type: mock}]\nmodels:\n  - {name: m, targets: [{provider: mock}], pricing: %s}\n"


def test_pricing_is_checked_with_field_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_text(BASE % "{input_per_mtok: -1, cached_input_per_mtok: x, per_call: 1}", env={})
    errors = info.value.errors
    assert any(e.startswith("models[0].pricing.input_per_mtok: expected a number >= 0") for e in errors), errors
    assert any(e.startswith("models[0].pricing.output_per_mtok: required") for e in errors), errors
    assert any(e.startswith("models[0].pricing.cached_input_per_mtok: expected a number") for e in errors), errors
    assert any(e.startswith("models[0].pricing.per_call: unknown key") for e in errors), errors
    with pytest.raises(ConfigError):
        load_text(BASE % "[1, 2]", env={})


def test_pricing_is_normalised_and_prices_cached_input_apart() -> None:
    config = load_text(BASE % "{input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25}", env={})
    entry = ModelEntry(config["models"][0])
    assert config["models"][0]["pricing"] == {"input_per_mtok": 2.5, "output_per_mtok": 10.0, "cached_input_per_mtok": 1.25}
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "cached_tokens": 400}
    assert entry.cost(usage) == pytest.approx((600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6)
    plain = load_text(BASE % "{input_per_mtok: 1, output_per_mtok: 4}", env={})["models"][0]
    assert plain["pricing"]["cached_input_per_mtok"] == 1.0  # defaults to the input price
    assert ModelEntry(plain).cost({"prompt_tokens": 10, "completion_tokens": 5}) == pytest.approx(30 / 1e6)
    unpriced = load_text("providers: [{name: mock, type: mock}]\nmodels: [{name: m, targets: [{provider: mock}]}]\n",
                         env={})["models"][0]
    assert unpriced["pricing"] is None and ModelEntry(unpriced).cost({"prompt_tokens": 1, "completion_tokens": 1}) is None

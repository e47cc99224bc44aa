"""``models[].failover``, ``models[].targets[].context_window`` and ``providers[].pass_headers``:
defaults, normalised values, and every bad value reported with its field path."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text

PROVIDERS = """
providers:
  - {name: oa, type: openai, api_keys: [k1]}
  - {name: claude, type: anthropic, pass_headers: [Anthropic-Beta, x-custom, anthropic-beta]}
  - {name: g, type: gemini}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, env={})
    return info.value.errors


def test_failover_and_window_values_are_normalised() -> None:
    config = load_text(PROVIDERS + """
models:
  - name: m
    targets: [{provider: oa, context_window: 128000}, {provider: claude, model: c}]
    failover: {wait_retry_after: 1500ms, retry_5xx: 0, retry_delay: 0, deadline: 1m}
  - {name: d, targets: [{provider: g}]}
""", env={})
    tuned, default = config["models"]
    assert tuned["failover"] == {"wait_retry_after": 1.5, "retry_5xx": 0, "retry_delay": 0.0, "deadline": 60.0}
    assert [t["context_window"] for t in tuned["targets"]] == [128000, None]
    assert default["failover"] == {"wait_retry_after": 2.0, "retry_5xx": 1, "retry_delay": 0.25, "deadline": 30.0}


def test_pass_headers_default_per_type_and_lower_cased() -> None:
    oa, claude, gemini = load_text(PROVIDERS, env={})["providers"]
    assert oa["pass_headers"] == ["openai-beta"]
    assert claude["pass_headers"] == ["anthropic-beta", "x-custom"]
    assert gemini["pass_headers"] == []


def test_bad_values_name_their_field() -> None:
    found = errors("""
providers:
  - {name: oa, type: openai, pass_headers: [Authorization, "bad header", 3]}
  - {name: o2, type: openai, pass_headers: openai-beta}
models:
  - name: m
    targets: [{provider: oa, context_window: 0}, {provider: oa, context_window: big}]
    failover: {wait_retry_after: -1s, retry_5xx: 9, retry_delay: soon, deadline: 0, retries: 1}
""")
    assert "providers[0].pass_headers[0]: 'authorization' is set by the gateway (credentials and framing are never passed)" in found
    assert "providers[0].pass_headers[1]: expected a header name, found string 'bad header'" in found
    assert "providers[0].pass_headers[2]: expected a header name, found integer 3" in found
    assert "providers[1].pass_headers: expected a list, found string 'openai-beta'" in found
    assert "models[0].targets[0].context_window: must be >= 1, found 0" in found
    assert "models[0].targets[1].context_window: expected an integer, found string 'big'" in found
    assert any(e.startswith("models[0].failover.wait_retry_after: expected a duration") for e in found)
    assert "models[0].failover.retry_5xx: must be between 0 and 5, found 9" in found
    assert any(e.startswith("models[0].failover.retry_delay: expected a duration") for e in found)
    assert "models[0].failover.deadline: must be > 0 and finite, found 0.0" in found
    assert any(e.startswith("models[0].failover.retries: unknown key") for e in found)
    assert len(found) == 11, found

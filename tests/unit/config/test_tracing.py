"""The top-level ``tracing`` section: checked with field paths, normalised, off by default."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text


def test_tracing_config_is_checked_with_field_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("tracing: {sample_ratio: 2, service_name: '', extra: 1}\n", env={})
    errors = info.value.errors
    assert any(e.startswith("tracing.otlp_endpoint: required") for e in errors), errors
    assert any(e.startswith("tracing.sample_ratio: expected a number from 0 to 1") for e in errors), errors
    assert any(e.startswith("tracing.service_name: expected a non-empty string") for e in errors), errors
    assert any("extra" in e for e in errors), errors
    with pytest.raises(ConfigError) as info:
        load_text("tracing: {otlp_endpoint: 'ftp://x'}\n", env={})
    assert any(e.startswith("tracing.otlp_endpoint: expected an http") for e in info.value.errors)
    config = load_text("tracing: {otlp_endpoint: 'http://c:4318/v1/traces'}\n", env={})
    assert config["tracing"] == {"otlp_endpoint": "http://c:4318/v1/traces", "sample_ratio": 1.0, "service_name": "fastgw"}
    assert load_text("listen: ':1'\n", env={})["tracing"] is None

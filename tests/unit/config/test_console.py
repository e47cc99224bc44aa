"""The ``console`` section: off by default, its model must be served, its key is a secret."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text
from fastgw.config.secrets import redact

MODELS = "providers: [{name: mock, type: mock}]\nmodels: [{name: 'gpt-*', targets: [{provider: mock}]}]\n"


def test_summarise_is_off_by_default_and_checked_with_field_paths() -> None:
    assert load_text(MODELS, env={})["console"] == {"summarise": None}
    with pytest.raises(ConfigError) as info:
        load_text(MODELS + "console: {summarise: {model: claude, timeout: -1, temperature: 0}}\n", env={})
    errors = info.value.errors
    assert any(e.startswith("console.summarise.model: no model named 'claude'") for e in errors), errors
    assert any(e.startswith("console.summarise.timeout:") for e in errors), errors
    assert any(e.startswith("console.summarise.temperature: unknown key") for e in errors), errors
    with pytest.raises(ConfigError) as info:
        load_text(MODELS + "console: {summarise: {}}\n", env={})
    assert any(e.startswith("console.summarise.model: required") for e in info.value.errors)


def test_summarise_is_normalised_and_its_key_redacted() -> None:
    config = load_text(MODELS + "console: {summarise: {model: gpt-4o-mini, api_key: '${KEY}', timeout: 5s}}\n",
                       env={"KEY": "console-key-0123456789"})
    assert config["console"] == {"summarise": {"model": "gpt-4o-mini", "api_key": "console-key-0123456789", "timeout": 5.0}}
    assert "console-key" not in str(redact(config))
    assert load_text(MODELS + "console: {summarise: {model: gpt-4o}}\n", env={})["console"]["summarise"] == {
        "model": "gpt-4o", "api_key": None, "timeout": 30.0}

"""The diff between two generations: the changed field with its context, never a secret."""

from __future__ import annotations

from fastgw.config import load_text
from fastgw.config.diff import config_diff

CONFIG = """
providers:
  - {name: main, type: openai, base_url: "https://user:%s@api.example/v1", api_keys: ["%s"]}
models:
  - {name: gpt, targets: [{provider: main, model: %s}]}
"""


def test_the_diff_shows_the_changed_field_and_hides_secrets() -> None:
    old = load_text(CONFIG % ("urlpass-one-123456", "sk-one-0123456789abcdef", "gpt-4o"), env={})
    new = load_text(CONFIG % ("urlpass-two-123456", "sk-two-0123456789abcdef", "gpt-4o-mini"), env={})
    found = config_diff(old, new, "generation 1", "generation 2")
    lines = found["diff"]
    assert lines[:2] == ["--- generation 1", "+++ generation 2"] and lines[2].startswith("@@")
    assert [" ".join(line.split()) for line in lines if line.startswith(("-", "+"))][2:] == [
        "- model: gpt-4o", "+ model: gpt-4o-mini"]
    assert found["secrets_changed"] is True
    text = "\n".join(lines)
    for secret in ("urlpass-one", "urlpass-two", "sk-one", "sk-two"):
        assert secret not in text


def test_identical_configs_have_an_empty_diff_and_a_secret_change_alone_is_flagged() -> None:
    one = load_text(CONFIG % ("p-123456789", "sk-one-0123456789abcdef", "gpt-4o"), env={})
    assert config_diff(one, one, "a", "b") == {"diff": [], "secrets_changed": False}
    rotated = load_text(CONFIG % ("p-123456789", "sk-two-0123456789abcdef", "gpt-4o"), env={})
    assert config_diff(one, rotated, "a", "b") == {"diff": [], "secrets_changed": True}

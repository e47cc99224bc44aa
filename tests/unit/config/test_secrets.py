"""The list of secret-bearing fields, and the three ways a value holds a secret (fastgw/config/secrets.py)."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, load_text
from fastgw.config.secrets import SECRET_FIELDS, credential_name, redact, scrub, secret_values


@pytest.mark.parametrize(
    "name",
    ["Authorization", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key", "x-auth-token", "apiKey",
     "api_key", "client_secret", "password", "X-Amz-Signature", "sig", "access_token", "Cookie", "key"],
)
def test_credential_names(name: str) -> None:
    assert credential_name(name)


@pytest.mark.parametrize(
    "name", ["content-type", "x-env", "maxTokens", "default_max_tokens", "api-version", "deployments", "model", 5]
)
def test_names_that_are_not_credentials(name: object) -> None:
    assert not credential_name(name)


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("redis://:pw-123456@h:6379/0", "redis://:***@h:6379/0", {"pw-123456"}),
        ("redis://default:pw-123456@h:6379/0", "redis://default:***@h:6379/0", {"pw-123456"}),
        ("https://key-123456@h/v1", "https://***@h/v1", {"key-123456"}),
        ("https://h/v1?api-version=2024&key=abc%2B123456", "https://h/v1?api-version=2024&key=***",
         {"abc%2B123456", "abc+123456"}),
        ("https://h/x?sig=s1234567&sv=2022&token=t1234567", "https://h/x?sig=***&sv=2022&token=***",
         {"s1234567", "t1234567"}),
        ("https://h/v1", "https://h/v1", set()),
    ],
)
def test_urls(url: str, shown: str, secrets: set[str]) -> None:
    assert redact({"redis": url}) == {"redis": shown}
    assert secret_values({"redis": url}) == secrets
    assert scrub(f"failed: {url}") == f"failed: {shown}"  # free text, without knowing the config


def test_named_mappings_at_any_depth_numbers_stay() -> None:
    options = {"headers": {"x-goog-api-key": "g-123456", "x-env": "prod"}, "default_max_tokens": 4096,
               "nested": [{"client_secret": {"value": "c-123456"}}], "endpoint": "https://h/?token=t-123456"}
    shown = redact({"providers": [{"options": options, "api_keys": ["k-123456"], "base_url": None}]})
    assert shown["providers"][0] == {
        "options": {"headers": {"x-goog-api-key": "***", "x-env": "prod"}, "default_max_tokens": 4096,
                    "nested": [{"client_secret": {"value": "***"}}], "endpoint": "https://h/?token=***"},
        "api_keys": ["***"],
        "base_url": None,
    }
    assert secret_values({"providers": [{"options": options, "api_keys": ["k-123456"]}]}) == {
        "g-123456", "c-123456", "t-123456", "k-123456"
    }


def test_redact_copies_and_tolerates_any_shape() -> None:
    config = {"consumers": [{"api_keys": ["a-123456"]}], "routes": "not a list", "admin": "127.0.0.1:1"}
    assert redact(config) == {"consumers": [{"api_keys": ["***"]}], "routes": "not a list", "admin": "127.0.0.1:1"}
    assert config["consumers"][0]["api_keys"] == ["a-123456"]
    assert secret_values(None) == set() and secret_values([1, "x"]) == set()


def test_short_values_are_redacted_but_not_scrubbed_from_text() -> None:
    assert redact({"consumers": [{"api_keys": ["abc"]}]}) == {"consumers": [{"api_keys": ["***"]}]}
    assert secret_values({"consumers": [{"api_keys": ["abc"]}]}) == set()


def test_every_listed_field_exists_in_the_normalised_schema() -> None:
    """A path that names no field of a full config would protect nothing: a typo in the list."""
    token = "t" * 32
    config = load_text(f"""
admin: {{address: 127.0.0.1:9901, token: {token}}}
redis: redis://:pw@127.0.0.1:6379/0
providers: [{{name: p, type: openai, base_url: "https://h/v1", api_keys: [k], options: {{headers: {{x: y}}}}}}]
models: [{{name: m, targets: [{{provider: p}}], transform: {{request: {{body: {{set: {{a: 1}}}}}}}},
           filters: [{{use: "tests.support.stamp_filter:Stamp", value: v}}]}}]
consumers: [{{name: c, api_keys: [ck]}}]
auth: {{jwt: [{{issuer: i, audience: a, algorithms: [HS256], keys: [{{secret: {"s" * 32}}}]}}]}}
cache: {{semantic: {{embeddings_url: "http://e/v1/embeddings", model: e, api_key: ek}}}}
guard: {{moderation: {{url: "http://m/v1/moderations"}}}}
console: {{summarise: {{model: m, api_key: console-key-123}}}}
limits: [{{name: l, match: {{headers: {{x-team: a}}}}, requests: {{per_minute: 1}}}}]
routes: [{{name: r, match: {{headers: {{x-a: b}}}}, upstream: "http://u:1",
           transform: {{request: {{headers: {{add: {{x-b: c}}}}}}}}, filters: [{{name: auth}}]}}]
""")
    from fastgw.config.secrets import _PATTERNS, _find

    for (path, _), (parts, _) in zip(SECRET_FIELDS, _PATTERNS, strict=True):
        assert list(_find(config, parts)), path


def test_config_errors_never_show_a_secret_field() -> None:
    text = """
routes: [{name: r, upstream: "http://user:pw-1234567@u:1"}]
consumers: [{name: a, api_keys: [dup-1234567]}, {name: b, api_keys: [dup-1234567]}]
"""
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    shown = "\n".join(caught.value.errors)
    assert "routes[0].upstream" in shown and "consumers[1].api_keys[0]" in shown
    assert "pw-1234567" not in shown and "dup-1234567" not in shown

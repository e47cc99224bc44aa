"""Config loading: parsing, ${VAR} substitution, validation with field paths, normalisation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from fastgw.config import DEFAULT_CONFIG_YAML, ConfigError, check_file, default_config, load_file, load_text
from fastgw.config.fields import Issues
from fastgw.config.source import parse

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "TEAM_A_KEY": "ka", "TEAM_B_KEY": "kb"}


def load(text: str, **env: str) -> dict:
    return load_text(text, env=env)


def errors(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, env=env)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def error_at(text: str, path: str, **env: str) -> str:
    """The single error message reported for ``path``."""
    found = [e for e in errors(text, **env) if e.startswith(path + ": ")]
    assert len(found) == 1, (path, errors(text, **env))
    return found[0][len(path) + 2 :]


ROUTE = "routes:\n  - upstream: http://u:1\n"


# -- defaults ------------------------------------------------------------------------------


def test_embedded_default() -> None:
    config = default_config()
    assert config == load_text(DEFAULT_CONFIG_YAML, env={})
    assert config["listen"] == {"host": "127.0.0.1", "port": 8080, "reuse_port": True, "backlog": 2048, "tls": None, "redirect": None}
    assert config["admin"] == {"host": "127.0.0.1", "port": 9901, "socket": None, "token": None, "metrics_public": False}
    assert config["workers"] == (os.cpu_count() or 1)
    assert config["providers"][0]["name"] == "mock" and config["providers"][0]["type"] == "mock"
    assert config["models"] == [
        {"name": "mock-gpt", "targets": [{"provider": "mock", "model": "mock-gpt", "context_window": None}],
         "max_attempts": 3, "transform": None, "waf": None, "filters": [], "compression": None,
         "failover": {"wait_retry_after": 2.0, "retry_5xx": 1, "retry_delay": 0.25, "deadline": 30.0}, "pricing": None}
    ]
    assert config["compression"] is None
    assert config["consumers"] == [] and config["routes"] == [] and config["limits"] == []
    assert config["redis"] is None


def test_minimal_config_defaults_and_json_round_trip() -> None:
    config = load("listen: 127.0.0.1:8080\n")
    assert config["http"] == {
        "max_header_size": 16384,
        "max_headers": 100,
        "max_body_size": 10 * 1024 * 1024,
        "header_timeout": 10.0,
        "body_timeout": 10.0,
        "body_min_rate": 240,
        "send_timeout": 30.0,
        "max_connections": "auto",
        "max_connections_per_ip": 0,
        "keepalive_timeout": 75.0,
        "drain_timeout": 30.0,
        "max_pipelined": 32,
        "overload": None,
    }
    assert config["providers"] == config["models"] == config["consumers"] == config["routes"] == []
    full = load_file(str(EXAMPLES / "gateway.yaml"), env=EXAMPLE_ENV)
    assert json.loads(json.dumps(full, allow_nan=False)) == full


# -- parsing -------------------------------------------------------------------------------


def test_json_text_is_accepted() -> None:
    config = load('{"listen": ":9000", "workers": 3, "routes": [{"upstream": "http://a:1"}]}')
    assert config["listen"]["port"] == 9000 and config["workers"] == 3
    assert config["routes"][0]["name"] == "route-0"


def test_yaml_flow_mapping_that_is_not_json_falls_back_to_yaml() -> None:
    assert load("{listen: ':9000'}")["listen"]["port"] == 9000


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("listen: [", "invalid YAML: line"),
        ("listen: :1\nlisten: :2\n", "line 2: duplicate key 'listen'"),
        ('{"workers": 1, "workers": 2}', "duplicate key 'workers'"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("", "found an empty document"),
        ("a: !!binary aGk=\n", "unsupported tag"),
        ("a: &x [*x]\n", "inside its own anchor"),
        ("listen: :1\n---\nlisten: :2\n", "only one YAML document"),
    ],
)
def test_parse_errors_name_the_source(text: str, fragment: str) -> None:
    found = errors(text)
    assert len(found) == 1 and found[0].startswith("<config>: ") and fragment in found[0], found


def test_yaml_builder_agrees_with_pyyaml() -> None:
    doc = """
a: 1
b: 0x1f
c: 1_000
d: 1:30
e: .inf
g: .nan
h: ~
i: null
j: yes
k: No
m: "yes"
o: |
  block
p: >
  folded
q: 1.5e3
s: 0o17
u: [1, "2", three, {x: y}]
v: !!str 123
w: !!int "42"
y: ""
z:
aa: &anchor {p: 1, q: 2}
bb: *anchor
cc:
  <<: *anchor
  q: 3
dd:
  <<: [*anchor, {r: 4, p: 9}]
ee: &s hello
gg: [a, *s]
"""
    issues = Issues()
    ours, reference = parse(doc, "x", issues), yaml.safe_load(doc)
    assert issues.errors == []
    assert math.isnan(ours.pop("g")) and math.isnan(reference.pop("g"))
    assert ours == reference
    assert [type(v) for v in ours.values()] == [type(v) for v in reference.values()]


def test_dates_stay_strings() -> None:
    issues = Issues()
    assert parse("d: 2024-01-02\n", "x", issues) == {"d": "2024-01-02"}


# -- environment substitution --------------------------------------------------------------


def test_env_substitution_and_defaults() -> None:
    text = """
listen: "${HOST:-127.0.0.1}:${PORT}"
redis: ${REDIS:-redis://localhost:6379/0}
providers:
  - {name: p, type: openai, base_url: "${BASE}/v1", api_keys: ["${KEY}", "x-${EMPTY:-dflt}"]}
"""
    config = load(text, PORT="9000", BASE="https://api.example.com", KEY="a: b # not yaml", EMPTY="")
    assert config["listen"]["host"] == "127.0.0.1" and config["listen"]["port"] == 9000
    assert config["redis"] == "redis://localhost:6379/0"
    provider = config["providers"][0]
    assert provider["base_url"] == "https://api.example.com/v1"
    assert provider["api_keys"][0] == "a: b # not yaml"  # substituted after parsing: structure intact
    assert provider["api_keys"][1] == "x-dflt"  # ':-' also covers a set-but-empty variable


def test_empty_substitution_is_still_validated() -> None:
    assert "empty string" in error_at(
        "providers:\n  - {name: p, type: mock, api_keys: ['${E}']}\n", "providers[0].api_keys[0]", E=""
    )


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTGW_TEST_PORT", "8123")
    assert load_text("listen: ':${FASTGW_TEST_PORT}'")["listen"]["port"] == 8123


def test_missing_env_var_is_an_error_at_its_path_once() -> None:
    text = "consumers:\n  - {name: c, api_keys: ['${TEAM_KEY}']}\n"
    message = error_at(text, "consumers[0].api_keys[0]")
    assert "TEAM_KEY" in message and "not set" in message


def test_secret_values_never_appear_in_errors() -> None:
    secret = "sk-live-0123456789abcdef"
    text = """
listen: "${SECRET}"
workers: "${SECRET}"
redis: "${SECRET}"
http: {header_timeout: "${SECRET}"}
routes:
  - upstream: "http://${SECRET}/"
    match: {host: "${SECRET}.example.com", headers: {x-key: ["${SECRET}"]}}
"""
    found = errors(text, SECRET=secret)
    assert len(found) >= 5
    assert not any(secret in e or secret[:12] in e for e in found), found
    redis_secret = "redis://:hunter2@db:6379"
    assert not any("hunter2" in e for e in errors("redis: 'http://:hunter2@x'\n", R=redis_secret))


def test_literal_dollar_brace_and_malformed_reference() -> None:
    config = load(ROUTE.replace("upstream:", "match: {headers: {x-template: '$${NAME}'}}\n    upstream:"))
    assert config["routes"][0]["match"]["headers"] == {"x-template": "${NAME}"}
    assert "malformed reference" in error_at("redis: '${1BAD}'\n", "redis")


# -- scalars -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        (3, 3.0),
        (0.5, 0.5),
        ("7", 7.0),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    config = load(f"http: {{header_timeout: {json.dumps(raw)}}}\n")
    assert config["http"]["header_timeout"] == seconds
    assert isinstance(config["http"]["header_timeout"], float)


@pytest.mark.parametrize("raw", ['"2 days"', '"s"', "-1", "0", "true", "[1]", '"1d"'])
def test_bad_durations(raw: str) -> None:
    message = error_at(f"http: {{header_timeout: {raw}}}\n", "http.header_timeout")
    assert "duration" in message or "> 0" in message


def test_zero_duration_where_it_means_off() -> None:
    assert load("http: {keepalive_timeout: 0}\n")["http"]["keepalive_timeout"] == 0.0


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (1024, 1024),
        ('"16k"', 16384),
        ('"16KiB"', 16384),
        ('"10m"', 10 << 20),
        ('"10MB"', 10 << 20),
        ('"1g"', 1 << 30),
        ('"512b"', 512),
        ('"1.5k"', 1536),
    ],
)
def test_sizes(raw: object, size: int) -> None:
    assert load(f"http: {{max_body_size: {raw}}}\n")["http"]["max_body_size"] == size


@pytest.mark.parametrize("raw", ['"10x"', "1.5", '"k"', "0", "true"])
def test_bad_sizes(raw: str) -> None:
    message = error_at(f"http: {{max_body_size: {raw}}}\n", "http.max_body_size")
    assert "size" in message or "> 0" in message


def test_booleans_are_strict() -> None:
    listen = "listen: {{address: '127.0.0.1:1', reuse_port: {}}}\n"
    assert load(listen.format("false"))["listen"]["reuse_port"] is False
    assert load(listen.format("'true'"))["listen"]["reuse_port"] is True  # e.g. from ${VAR}
    for raw in ("'yes'", "1", "'on'", "'False'"):
        message = error_at(listen.format(raw), "listen.reuse_port")
        assert message.startswith("expected a boolean (true or false), found")


def test_type_errors_name_expected_and_found() -> None:
    assert (
        error_at("http: {max_headers: abc}\n", "http.max_headers")
        == "expected an integer, found string 'abc'"
    )
    assert (
        error_at("http: {max_headers: 1.5}\n", "http.max_headers") == "expected an integer, found number 1.5"
    )
    assert error_at("http: []\n", "http") == "expected a mapping, found list"
    assert error_at("providers: {}\n", "providers") == "expected a list, found mapping"
    assert error_at("http: {max_headers: 0}\n", "http.max_headers") == "must be >= 1, found 0"


# -- unknown keys --------------------------------------------------------------------------


def test_unknown_keys_get_a_did_you_mean_hint() -> None:
    assert error_at("listn: :80\n", "listn") == "unknown key; did you mean 'listen'?"
    text = "routes:\n  - upstream: {endpoints: [http://a:1], timeouts: {conect: 1s}}\n"
    assert "did you mean 'connect'" in error_at(text, "routes[0].upstream.timeouts.conect")
    assert "did you mean 'upstream'" in error_at("routes:\n  - upstrem: http://a:1\n", "routes[0].upstrem")
    message = error_at("http: {zzzzzz: 1}\n", "http.zzzzzz")
    assert "expected one of" in message and "max_body_size" in message


# -- listen, workers, admin, redis ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("'[::1]:8080'", "::1", 8080),
        ("':8080'", "0.0.0.0", 8080),
        ("localhost:0", "localhost", 0),
        ("{address: '10.1.2.3:81'}", "10.1.2.3", 81),
    ],
)
def test_listen_forms(raw: str, host: str, port: int) -> None:
    listen = load(f"listen: {raw}\n")["listen"]
    assert (listen["host"], listen["port"], listen["reuse_port"], listen["backlog"]) == (
        host,
        port,
        True,
        2048,
    )


def test_listen_mapping_options() -> None:
    listen = load("listen: {address: ':81', reuse_port: false, backlog: 128}\n")["listen"]
    assert listen == {"host": "0.0.0.0", "port": 81, "reuse_port": False, "backlog": 128, "tls": None, "redirect": None}
    assert error_at("listen: {reuse_port: 1}\n", "listen.reuse_port").startswith("expected a boolean")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("'1.2.3.4'", "missing ':port'"),
        ("'::1:80'", "needs brackets"),
        ("'h:99999'", "port must be"),
        ("'h:x'", "port must be"),
        ("8080", "expected 'host:port'"),
        ("'bad host:80'", "invalid host"),
    ],
)
def test_listen_errors(raw: str, fragment: str) -> None:
    assert fragment in error_at(f"listen: {raw}\n", "listen")
    assert fragment in error_at(f"listen: {{address: {raw}}}\n", "listen.address")


def test_workers() -> None:
    assert load("workers: 3\n")["workers"] == 3
    assert load("workers: '4'\n")["workers"] == 4
    assert load("workers: auto\n")["workers"] == (os.cpu_count() or 1)
    assert error_at("workers: 0\n", "workers") == "must be >= 1, found 0"
    assert error_at("workers: many\n", "workers") == "expected an integer, found string 'many'"


def test_admin() -> None:
    token = "t" * 16
    assert load(f"admin: {{address: ':9999', token: {token}}}\n")["admin"] == {
        "host": "0.0.0.0", "port": 9999, "socket": None, "token": token, "metrics_public": False
    }
    assert load("admin: '[::1]:9999'\n")["admin"] == {"host": "::1", "port": 9999, "socket": None, "token": None, "metrics_public": False}
    assert load("admin: {metrics_public: true, token: ''}\n")["admin"] == {
        "host": "127.0.0.1", "port": 9901, "socket": None, "token": None, "metrics_public": True
    }
    assert "admin.token" in error_at("admin: ':9999'\n", "admin")
    assert "admin.token" in error_at("admin: {address: 'gw.example:9999'}\n", "admin.address")
    assert "at least 16" in error_at("admin: {token: abc}\n", "admin.token")
    assert "did you mean" in error_at("admin: {tokn: abc}\n", "admin.tokn")
    assert load("admin: {socket: admin.sock}\n")["admin"]["socket"] == os.path.abspath("admin.sock")
    assert "either address or socket" in error_at("admin: {socket: a.sock, address: '127.0.0.1:1'}\n", "admin.socket")
    assert "does not exist" in error_at("admin: {socket: /no/such/dir/a.sock}\n", "admin.socket")
    assert load("admin: null\n")["admin"] is None
    assert load("admin: false\n")["admin"] is None
    assert "expected 'host:port'" in error_at("admin: true\n", "admin")


def test_redis() -> None:
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380", "unix:///tmp/redis.sock"):
        assert load(f"redis: '{url}'\n")["redis"] == url
    assert "redis://" in error_at("redis: 'http://h'\n", "redis")


# -- providers, models, consumers, limits --------------------------------------------------

PROVIDERS = """
providers:
  - {name: oa, type: openai, base_url: "https://api.openai.com/v1/", api_keys: [k1, k2]}
  - {name: m, type: mock, options: {chunks: 3, nested: {a: [1, 2]}}}
"""


def test_providers_normalised() -> None:
    oa, mock = load(PROVIDERS)["providers"]
    assert oa == {
        "name": "oa",
        "type": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_keys": ["k1", "k2"],
        "timeouts": {"connect": 2.0, "first_byte": 15.0, "idle": 60.0},
        "options": {},
        "breaker": {"failures": 3, "cooldown": 30.0},
        "key_cooldown": {"rate_limited": 30.0, "unauthorized": 300.0},
        "health_check": None,
        "pass_headers": ["openai-beta"],
    }
    assert mock["base_url"] is None and mock["api_keys"] == []
    assert mock["options"] == {"chunks": 3, "nested": {"a": [1, 2]}}


def test_provider_errors() -> None:
    text = """
providers:
  - {name: a, type: openai-compatible}
  - {name: b, type: gpt}
  - {name: c, type: azure, base_url: "ftp://x"}
  - {type: mock, timeouts: {first_byte: 0}}
  - {name: e, type: mock, options: [1]}
  - {name: f, type: mock, options: {x: .nan}}
  - {name: a, type: mock}
"""
    found = errors(text)
    assert "providers[0].base_url: required for type openai-compatible" in found
    assert load("providers: [{name: o, type: openai}]\n")["providers"][0]["base_url"] is None  # api.openai.com
    assert any(e.startswith("providers[1].type: expected one of openai, azure,") for e in found)
    assert "providers[2].base_url: expected an http:// or https:// URL with a host" in found
    assert "providers[3].name: required" in found
    assert any(e.startswith("providers[3].timeouts.first_byte: must be > 0") for e in found)
    assert "providers[4].options: expected a mapping, found list" in found
    assert any(e.startswith("providers[5].options: must hold only") for e in found)
    assert "providers[6].name: duplicate name 'a' (already used by providers[0])" in found
    assert len(found) == 8


def test_models_and_targets() -> None:
    config = load(
        PROVIDERS
        + """
models:
  - name: gpt-4o-mini
    targets: [{provider: oa, model: gpt-4o-mini-2024}, {provider: m}]
  - name: "gpt-4*"
    targets: [{provider: oa}]
"""
    )
    first, wildcard = config["models"]
    assert first["targets"] == [
        {"provider": "oa", "model": "gpt-4o-mini-2024", "context_window": None},
        {"provider": "m", "model": "gpt-4o-mini", "context_window": None},
    ]
    assert wildcard == {
        "name": "gpt-4*", "targets": [{"provider": "oa", "model": "gpt-4*", "context_window": None}], "max_attempts": 3,
        "transform": None, "waf": None, "filters": [], "compression": None,
        "failover": {"wait_retry_after": 2.0, "retry_5xx": 1, "retry_delay": 0.25, "deadline": 30.0}, "pricing": None,
    }


def test_model_errors() -> None:
    found = errors(
        PROVIDERS
        + """
models:
  - {name: a, targets: [{provider: oai}]}
  - {name: b, targets: []}
  - {name: c}
  - {name: "x*y*", targets: [{provider: oa}]}
  - {name: d, targets: [{provider: oa, model: "y*"}]}
  - {name: a, targets: [{provider: nobody}, {model: z}]}
"""
    )
    assert "models[0].targets[0].provider: unknown provider 'oai'; did you mean 'oa'?" in found
    assert "models[1].targets: at least one target is required" in found
    assert "models[2].targets: required" in found
    assert "models[3].name: at most one '*' wildcard is allowed" in found
    assert any(e.startswith("models[4].targets[0].model: '*' in a target model") for e in found)
    assert "models[5].targets[0].provider: unknown provider 'nobody'; defined: m, oa" in found
    assert "models[5].targets[1].provider: required" in found
    assert "models[5].name: duplicate name 'a' (already used by models[0])" in found
    assert len(found) == 8


MODELS = (
    PROVIDERS
    + "models:\n  - {name: gpt, targets: [{provider: oa}]}\n  - {name: 'o*', targets: [{provider: oa}]}\n"
)


def test_consumers() -> None:
    config = load(
        MODELS
        + """
consumers:
  - {name: a, api_keys: [ka], models: [gpt, "o*"]}
  - {name: b, api_keys: [kb1, kb2]}
  - {name: c, api_keys: [kc], models: ["*"]}
"""
    )
    assert config["consumers"][0] == {"name": "a", "api_keys": ["ka"], "models": ["gpt", "o*"], "priority": None}
    assert config["consumers"][1]["models"] == ["*"]


def test_consumer_errors_never_print_keys() -> None:
    found = errors(
        MODELS
        + """
consumers:
  - {name: a, api_keys: [secret-key-1], models: [gtp, p1]}
  - {name: b, api_keys: [other, secret-key-1]}
  - {name: a}
"""
    )
    assert "consumers[0].models[0]: unknown model 'gtp'; did you mean 'gpt'?" in found
    assert any(e.startswith("consumers[0].models[1]: unknown model 'p1'") for e in found)  # o1 is fine: 'o*' serves it
    assert "consumers[1].api_keys[1]: this key is already used by consumers[0]" in found
    assert "consumers[2].api_keys: required" in found
    assert "consumers[2].name: duplicate name 'a' (already used by consumers[0])" in found
    assert not any("secret-key-1" in e for e in found)


def test_limits_are_a_list_of_mappings() -> None:
    (rule,) = load("limits: [{name: r, tokens: {per_minute: 100}}]\n")["limits"]
    assert rule["name"] == "r" and rule["tokens"] == {"per_minute": 100}
    assert error_at("limits: [{tokens: 1}, 5]\n", "limits[1]") == "expected a mapping, found integer 5"
    assert error_at("limits: {}\n", "limits") == "expected a list, found mapping"


# -- routes --------------------------------------------------------------------------------


def test_route_defaults() -> None:
    (route,) = load(ROUTE)["routes"]
    assert route == {
        "name": "route-0",
        "match": {"host": None, "path": {"type": "prefix", "value": "/"}, "methods": None, "headers": {}},
        "upstream": {
            "endpoints": [{"url": "http://u:1", "scheme": "http", "host": "u", "port": 1, "weight": 1}],
            "balance": "round_robin",
            "host_header": "preserve",
            "strip_prefix": None,
            "timeouts": {"connect": 2.0, "first_byte": 30.0, "idle": 60.0, "tunnel_idle": 300.0},
            "pool": {"max_idle": 1024, "idle_timeout": 60.0},
        },
        "transform": None,
        "waf": None,
        "filters": [],
        "compression": None,
        "websocket": True,
        "priority": None,
    }


def test_http_hardening_keys_are_checked_with_their_paths() -> None:
    http = load("http: {max_connections: 100, max_connections_per_ip: 8, body_min_rate: 0, send_timeout: 5s}\n")["http"]
    assert (http["max_connections"], http["max_connections_per_ip"], http["body_min_rate"], http["send_timeout"]) == (
        100, 8, 0, 5.0)
    assert "expected 'auto' or a number" in error_at("http: {max_connections: lots}\n", "http.max_connections")
    assert error_at("http: {max_connections_per_ip: -1}\n", "http.max_connections_per_ip")
    assert error_at("http: {body_timeout: 0s}\n", "http.body_timeout")
    assert error_at("routes: [{upstream: 'http://u:1', websocket: maybe}]\n", "routes[0].websocket")
    assert error_at("routes: [{upstream: {endpoints: ['http://u:1'], timeouts: {tunnel_idle: x}}}]\n",
                    "routes[0].upstream.timeouts.tunnel_idle")


def test_route_match_forms() -> None:
    config = load("""
routes:
  - match: {path: /api, host: API.Example.COM., methods: [get, POST, get], headers: {X-Canary: "1", X-V: 2}}
    upstream: http://u:1
  - match: {path: {exact: /healthz}, host: "*.Example.com"}
    upstream: http://u:1
  - match: {path: {regex: '^/v[0-9]+/'}, host: "*"}
    upstream: http://u:1
  - match: {path: {prefix: /p}}
    upstream: http://u:1
""")
    m0, m1, m2, m3 = (r["match"] for r in config["routes"])
    assert m0 == {
        "host": "api.example.com",
        "path": {"type": "prefix", "value": "/api"},
        "methods": ["GET", "POST"],
        "headers": {"x-canary": "1", "x-v": "2"},
    }
    assert m1["host"] == "*.example.com" and m1["path"] == {"type": "exact", "value": "/healthz"}
    assert m2["host"] is None and m2["path"] == {"type": "regex", "value": "^/v[0-9]+/"}
    assert m3["path"] == {"type": "prefix", "value": "/p"}


def test_route_upstream_forms() -> None:
    config = load("""
routes:
  - upstream:
      endpoints: ["HTTPS://Api.Example.com", {url: "http://[::1]:8080/", weight: 3}]
      balance: least_request
      host_header: upstream
      strip_prefix: /api
      timeouts: {connect: 250ms, first_byte: 5s}
      pool: {max_idle: 0, idle_timeout: 1m}
  - upstream: {endpoints: [http://a:1], host_header: "internal.example:8443"}
""")
    upstream = config["routes"][0]["upstream"]
    assert upstream["endpoints"] == [
        {
            "url": "https://api.example.com:443",
            "scheme": "https",
            "host": "api.example.com",
            "port": 443,
            "weight": 1,
        },
        {"url": "http://[::1]:8080", "scheme": "http", "host": "::1", "port": 8080, "weight": 3},
    ]
    assert upstream["balance"] == "least_request" and upstream["host_header"] == "upstream"
    assert upstream["strip_prefix"] == "/api"
    assert upstream["timeouts"] == {"connect": 0.25, "first_byte": 5.0, "idle": 60.0, "tunnel_idle": 300.0}
    assert upstream["pool"] == {"max_idle": 0, "idle_timeout": 60.0}
    assert config["routes"][1]["upstream"]["host_header"] == "internal.example:8443"


def test_route_errors_carry_field_paths() -> None:
    text = """
routes:
  - name: ok
    upstream: http://a:1
  - name: ok
    upstream: "ftp://a"
  - match: {path: {regex: "(unclosed"}, host: "a.com:80", methods: [], headers: {"bad name": x}}
    upstream: {endpoints: ["http://a/path", {url: "http://b:1", weight: 0}, {weight: 2}], balance: random}
  - match: {path: {exact: nope, prefix: /x}}
    upstream: {endpoints: []}
  - match: {path: relative, methods: ["GE T"]}
    upstream: {endpoints: [http://a:1], host_header: "evil\\r\\nX: 1", strip_prefix: api}
  - match: {path: {exact: relative}}
  - upstream: {balance: round_robin}
  - route-0
"""
    found = errors(text)
    expected = [
        "routes[1].name: duplicate name 'ok' (already used by routes[0])",
        "routes[1].upstream: scheme must be http or https, found 'ftp'",
        "routes[2].match.path.regex: invalid regex: missing ), unterminated subpattern at position 0",
        "routes[2].match.host: expected a host like 'api.example.com' or '*.example.com' (no port), found string 'a.com:80'",
        "routes[2].match.methods: list at least one method, or leave methods out to allow any",
        "routes[2].match.headers.bad name: invalid header name",
        "routes[2].upstream.endpoints[0]: expected 'http://host[:port]' or 'https://host[:port]' without a path, "
        "found string 'http://a/path'",
        "routes[2].upstream.endpoints[1].weight: must be >= 1, found 0",
        "routes[2].upstream.endpoints[2].url: required",
        "routes[2].upstream.balance: expected one of round_robin, least_request; found string 'random'",
        "routes[3].match.path: expected exactly one of exact, prefix, regex",
        "routes[3].upstream.endpoints: at least one endpoint is required",
        "routes[4].match.path: must start with '/', found string 'relative'",
        "routes[4].match.methods[0]: expected an HTTP method like GET, found string 'GE T'",
        "routes[4].upstream.host_header: a literal Host value must be visible ASCII without spaces",
        "routes[4].upstream.strip_prefix: expected a path starting with '/', found string 'api'",
        "routes[5].match.path.exact: must start with '/', found string 'relative'",
        "routes[5].upstream: required",
        "routes[6].upstream.endpoints: required",
        "routes[7]: expected a mapping, found string 'route-0'",
    ]
    assert sorted(found) == sorted(expected)


def test_endpoint_url_error_path_inside_mapping() -> None:
    text = "routes:\n" + "  - upstream: http://a:1\n" * 2 + "  - upstream: {endpoints: [{url: 'a:1'}]}\n"
    assert "expected 'http://host[:port]'" in error_at(text, "routes[2].upstream.endpoints[0].url")


def test_default_route_names_must_not_clash() -> None:
    text = "routes:\n  - {name: route-1, upstream: http://a:1}\n  - {upstream: http://a:1}\n"
    assert error_at(text, "routes[1].name") == "duplicate name 'route-1' (already used by routes[0])"


def test_many_errors_are_reported_at_once() -> None:
    text = "listn: 1\nworkers: 0\nhttp: {max_body_size: big}\nroutes: [{upstream: ftp://x}]\nredis: x\n"
    found = errors(text)
    assert [e.split(":")[0] for e in found] == [
        "listn",
        "workers",
        "redis",
        "http.max_body_size",
        "routes[0].upstream",
    ]


def test_ten_thousand_routes() -> None:
    routes = [
        {
            "name": f"r{i}",
            "match": {"host": f"h{i}.example.com", "path": {"exact": f"/x/{i}"}, "methods": ["get"]}
            if i % 2
            else {"path": f"/svc/{i}/"},
            "upstream": f"http://10.0.{i // 250}.{i % 250}:8080"
            if i % 3
            else {
                "endpoints": [f"http://a{i}:80", {"url": f"https://b{i}", "weight": 2}],
                "timeouts": {"connect": "250ms"},
            },
        }
        for i in range(10_000)
    ]
    routes[9_999]["upstream"] = "http://bad/path"
    text = json.dumps({"listen": ":8080", "routes": routes})
    assert errors(text) == [
        "routes[9999].upstream: expected 'http://host[:port]' or 'https://host[:port]' without a path, "
        "found string 'http://bad/path'"
    ]
    routes[9_999]["upstream"] = "http://good:1"
    block_yaml = "routes:\n" + "".join(
        f"  - {json.dumps(route)}\n" for route in routes
    )  # not JSON: YAML parses it
    for source in (json.dumps({"routes": routes}), block_yaml):
        config = load(source)
        assert len(config["routes"]) == 10_000
        assert config["routes"][7]["match"] == {
            "host": "h7.example.com",
            "path": {"type": "exact", "value": "/x/7"},
            "methods": ["GET"],
            "headers": {},
        }
        assert config["routes"][3]["upstream"]["endpoints"][1]["url"] == "https://b3:443"
        assert config["routes"][3]["upstream"]["timeouts"]["connect"] == 0.25
        assert config["routes"][5000]["match"]["path"] == {"type": "prefix", "value": "/svc/5000/"}


# -- files and examples --------------------------------------------------------------------


def test_load_and_check_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("listen: ':8081'\n")
    assert load_file(str(good))["listen"]["port"] == 8081
    assert check_file(str(good)) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: ':8081'\nworkrs: 2\n")
    assert check_file(str(bad)) == ["workrs: unknown key; did you mean 'workers'?"]
    missing = check_file(str(tmp_path / "missing.yaml"))
    assert len(missing) == 1 and missing[0].startswith(f"{tmp_path / 'missing.yaml'}: cannot read config")
    assert check_file(str(good), env={}) == []
    top = tmp_path / "top.yaml"
    top.write_text("[1]\n")
    assert check_file(str(top))[0].startswith(f"{top}: the top level must be a mapping")


def test_examples_load() -> None:
    gateway = load_file(str(EXAMPLES / "gateway.yaml"), env=EXAMPLE_ENV)
    assert [p["name"] for p in gateway["providers"]] == ["openai-main", "claude", "local", "mock"]
    assert gateway["consumers"][1]["models"] == ["*"]
    assert len(gateway["routes"]) >= 2
    demo = load_file(str(EXAMPLES / "routes-demo.yaml"), env={})
    assert demo["providers"] == [] and len(demo["routes"]) >= 4
    assert check_file(str(EXAMPLES / "routes-demo.yaml"), env={}) == []
    unset = check_file(str(EXAMPLES / "gateway.yaml"), env={})
    assert unset and all("is not set" in e for e in unset)


def test_paths_keep_their_index_after_a_broken_entry() -> None:
    found = errors("routes: [5, {name: a, upstream: 'http://a:1'}, {name: a, upstream: 'http://a:1'}]\n")
    assert found == [
        "routes[0]: expected a mapping, found integer 5",
        "routes[2].name: duplicate name 'a' (already used by routes[1])",
    ]


def test_failover_settings() -> None:
    config = load(
        "providers:\n"
        "  - {name: a, type: mock, breaker: {failures: 5, cooldown: 1m}, key_cooldown: {rate_limited: 5s},\n"
        "     health_check: {interval: 2s}}\n"
        "models:\n"
        "  - {name: m, targets: [{provider: a}, {provider: a, model: other}], max_attempts: 6}\n"
        "  - {name: n, targets: [{provider: a}]}\n"
    )
    provider = config["providers"][0]
    assert provider["breaker"] == {"failures": 5, "cooldown": 60.0}
    assert provider["key_cooldown"] == {"rate_limited": 5.0, "unauthorized": 300.0}
    assert provider["health_check"] == {"interval": 2.0, "timeout": 2.0}
    assert [m["max_attempts"] for m in config["models"]] == [6, 3]
    assert error_at(
        "providers: [{name: a, type: mock, breaker: {failures: 0}}]\n", "providers[0].breaker.failures"
    )
    assert error_at(
        "providers: [{name: a, type: mock}]\nmodels: [{name: m, targets: [{provider: a}], max_attempts: 99}]\n",
        "models[0].max_attempts",
    )

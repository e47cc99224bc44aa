"""Config for ``consumers`` and ``auth``: normalised shape, and errors with field paths that never show a secret."""

from __future__ import annotations

import base64
import fnmatch
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.config import ConfigError, load_text
from fastgw.config.consumers import _overlap

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
SECRET = "hs256-secret-with-more-than-32-bytes!"
MODELS = [
    {"name": name, "targets": [{"provider": "m"}]} for name in ("gpt-4o-mini", "claude-3-opus", "gpt-4o*")
]


def pem(key: Any, fmt: serialization.PublicFormat = serialization.PublicFormat.SubjectPublicKeyInfo) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt).decode()


def config(**top: Any) -> str:
    return json.dumps({"providers": [{"name": "m", "type": "mock"}], "models": MODELS} | top)


def load(env: dict[str, str] | None = None, **top: Any) -> dict:
    return load_text(config(**top), env=env or {})


def errors(env: dict[str, str] | None = None, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(config(**top), env=env or {})
    return info.value.errors


def error_at(path: str, env: dict[str, str] | None = None, **top: Any) -> str:
    found = [e for e in errors(env, **top) if e.startswith(path + ": ")]
    assert len(found) == 1, (path, errors(env, **top))
    return found[0][len(path) + 2 :]


def issuer(**fields: Any) -> dict:
    return {
        "issuer": "https://issuer.example",
        "audience": "fastgw",
        "keys": [{"pem": pem(RSA_KEY)}],
    } | fields


def jwt(*issuers: dict, consumers: list | None = None) -> dict:
    return {"consumers": consumers or [{"name": "c", "api_keys": []}], "auth": {"jwt": list(issuers)}}


# -- normalised shape ----------------------------------------------------------------------


def test_auth_defaults() -> None:
    assert load()["auth"] == {"anonymous": True, "jwt": []}
    assert load(consumers=[{"name": "c", "api_keys": ["k"]}])["auth"] == {"anonymous": False, "jwt": []}
    assert load(**jwt(issuer()))["auth"]["anonymous"] is False
    assert load(auth={"anonymous": False})["auth"]["anonymous"] is False
    assert load(consumers=[{"name": "c", "api_keys": ["k"]}], auth={"anonymous": "true"})["auth"]["anonymous"]


def test_issuer_normalised(tmp_path: Path) -> None:
    numbers = EC_KEY.public_key().public_numbers()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    {"kty": "EC", "crv": "P-256", "kid": "e1", "x": b64(numbers.x), "y": b64(numbers.y)},
                    {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},  # not understood: skipped (RFC 7517 5)
                    {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
                    {"kty": "RSA", "alg": "RS512", "n": "AQAB", "e": "AQAB"},
                ]
            }
        )
    )
    spec = issuer(
        audience=["fastgw", "api"],
        algorithms=["HS256", "ES256", "RS256", "ES256"],
        keys=[{"kid": "h1", "secret": SECRET}, {"pem": pem(RSA_KEY, serialization.PublicFormat.PKCS1)}],
        jwks_file=str(jwks),
        consumer_claim="client_id",
        leeway="1m",
    )
    config = load(**jwt(spec))
    (found,) = config["auth"]["jwt"]
    assert found == {
        "issuer": "https://issuer.example",
        "audience": ["fastgw", "api"],
        "algorithms": ["HS256", "ES256", "RS256"],
        "keys": [
            {"kid": "h1", "alg": "HS256", "secret": SECRET},
            {"kid": None, "alg": "RS256", "pem": pem(RSA_KEY)},  # PKCS#1 in, SubjectPublicKeyInfo out
            {"kid": "e1", "alg": "ES256", "pem": pem(EC_KEY)},
        ],
        "jwks_file": str(jwks),
        "consumer_claim": "client_id",
        "leeway": 60.0,
    }
    assert json.loads(json.dumps(config, allow_nan=False)) == config
    defaults = load(**jwt(issuer()))["auth"]["jwt"][0]
    assert defaults["algorithms"] == ["RS256", "ES256"] and defaults["audience"] == ["fastgw"]
    assert (
        defaults["consumer_claim"] == "sub" and defaults["leeway"] == 30.0 and defaults["jwks_file"] is None
    )


def b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


# -- consumers -----------------------------------------------------------------------------


def test_consumer_model_wildcards() -> None:
    consumers = [
        {"name": "a", "api_keys": ["ka"], "models": ["claude-*", "gpt-4o", "gpt-4o-*", "*-mini"]},
        {"name": "b", "api_keys": ["kb"]},
    ]
    found = load(consumers=consumers)["consumers"]
    assert found == [
        {"name": "a", "api_keys": ["ka"], "models": ["claude-*", "gpt-4o", "gpt-4o-*", "*-mini"], "priority": None},
        {"name": "b", "api_keys": ["kb"], "models": ["*"], "priority": None},
    ]
    bad = [{"name": "a", "api_keys": ["ka"], "models": ["llama-*", "gpt-5", "claud-3-opus"]}]
    assert error_at("consumers[0].models[0]", consumers=bad).startswith(
        "no model matches 'llama-*'; defined:"
    )
    assert error_at("consumers[0].models[1]", consumers=bad).startswith("unknown model 'gpt-5'")
    assert error_at("consumers[0].models[2]", consumers=bad).endswith("did you mean 'claude-3-opus'?")


def test_consumer_keys() -> None:
    secret = "sk-1234567890"
    found = errors(
        consumers=[
            {"name": "a", "api_keys": [secret, 12345678]},
            {"name": "b", "api_keys": [secret]},
            {"name": "c", "api_keys": []},
        ]
    )
    assert found == [
        "consumers[0].api_keys[1]: expected a non-empty string, found integer",
        "consumers[1].api_keys[0]: this key is already used by consumers[0]",
        "consumers[2].api_keys: empty, and no auth.jwt issuer can name this consumer",
    ]
    assert load(**jwt(issuer()))["consumers"] == [{"name": "c", "api_keys": [], "models": ["*"], "priority": None}]


# -- errors --------------------------------------------------------------------------------


def test_issuer_errors_have_field_paths() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = EC_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    spec = {
        "issuer": "i",
        "audiences": "x",
        "algorithms": ["none", "RS256"],
        "keys": [
            {"pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
            {"pem": private},
            {"pem": pem(weak)},
            {"pem": pem(ec.generate_private_key(ec.SECP384R1()))},
            {"kid": "k"},
            {"secret": SECRET, "pem": pem(RSA_KEY)},
            {"pem": pem(EC_KEY)},
            {"secret": SECRET},
            {"kid": 5, "pem": 7},
        ],
        "leeway": "soon",
    }
    found = errors(**jwt(spec, issuer(issuer="i"), 5, issuer(algorithms=[], audience=[])))
    assert found == [
        "auth.jwt[0].audiences: unknown key; did you mean 'audience'?",
        "auth.jwt[0].algorithms[0]: expected one of HS256, RS256, ES256; found string 'none'",
        "auth.jwt[0].keys[0].pem: not a PEM public key",
        "auth.jwt[0].keys[1].pem: not a PEM public key (this is a private key: give its public key)",
        "auth.jwt[0].keys[2].pem: RSA key of 1024 bits; at least 2048 are required",
        "auth.jwt[0].keys[3].pem: EC key on curve secp384r1; ES256 needs P-256",
        "auth.jwt[0].keys[4]: needs exactly one of secret (an HS256 secret) or pem (an RS256/ES256 public key)",
        "auth.jwt[0].keys[5]: needs exactly one of secret (an HS256 secret) or pem (an RS256/ES256 public key)",
        "auth.jwt[0].keys[6].pem: an ES256 key, but ES256 is not in algorithms",
        "auth.jwt[0].keys[7].secret: an HS256 key, but HS256 is not in algorithms",
        "auth.jwt[0].keys[8].kid: expected a non-empty string, found integer 5",
        "auth.jwt[0].keys[8].pem: expected a PEM public key, found integer",
        "auth.jwt[0].audience: required",
        "auth.jwt[0].leeway: expected a duration (seconds, or e.g. '250ms', '2s', '1m'), found string 'soon'",
        "auth.jwt[2]: expected a mapping, found integer 5",
        "auth.jwt[3].algorithms: at least one algorithm is required",
        "auth.jwt[3].keys[0].pem: an RS256 key, but RS256 is not in algorithms",
        "auth.jwt[3].audience: at least one audience is required",
        "auth.jwt[1].issuer: duplicate issuer (already used by auth.jwt[0])",
    ]
    assert error_at("auth.jwt[0]", **jwt(issuer(keys=[]))).startswith("needs keys, a jwks_file or both")
    assert error_at("auth.anonymus", auth={"anonymus": True}) == "unknown key; did you mean 'anonymous'?"
    assert error_at("auth", auth=[]) == "expected a mapping, found list"


def test_hmac_secrets_never_appear_in_errors() -> None:
    short = "too-short-secret"
    env = {"SHORT": short, "LONG": SECRET}
    found = errors(
        env,
        **jwt(
            issuer(keys=[{"secret": "${SHORT}"}, {"secret": short + "!"}, {"secret": 31415926535}]),
            issuer(issuer="j", algorithms=["RS256"], keys=[{"secret": "${LONG}"}]),
        ),
    )
    assert found == [
        "auth.jwt[0].keys[0].secret: too short: an HS256 secret needs at least 32 bytes",
        "auth.jwt[0].keys[1].secret: too short: an HS256 secret needs at least 32 bytes",
        "auth.jwt[0].keys[2].secret: expected a string, found integer",
        "auth.jwt[1].keys[0].secret: an HS256 key, but HS256 is not in algorithms",
    ]
    assert not any(short in e or SECRET in e or "31415926535" in e for e in found)
    ok = load(env, **jwt(issuer(algorithms=["HS256"], keys=[{"secret": "${LONG}"}])))
    assert ok["auth"]["jwt"][0]["keys"] == [{"kid": None, "alg": "HS256", "secret": SECRET}]


def _jwks(tmp_path: Path, content: str) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JWKS: invalid JSON (Expecting property name"),
        ('[{"kty": "RSA"}]', 'not a JWKS: expected a JSON object {"keys": [...]}'),
        ('{"keys": 5}', 'not a JWKS: expected a JSON object {"keys": [...]}'),
        ('{"keys": []}', "no usable key for algorithms RS256, ES256"),
        (
            '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": ["RSA"]}]}',
            "no usable key for algorithms RS256, ES256",
        ),
        ('{"keys": [5]}', "keys[0]: expected a JSON object, found integer"),
        ('{"keys": [{"kty": "RSA", "e": "AQAB"}]}', "keys[0]: n must be a non-empty base64url string"),
        ('{"keys": [{"kty": "RSA", "n": "AQAB=", "e": "AQAB"}]}', "keys[0]: n is not unpadded base64url"),
        ('{"keys": [{"kty": "RSA", "kid": 1, "n": "AQAB", "e": "AQAB"}]}', "keys[0]: kid must be a string"),
        (
            '{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}',
            "keys[0]: x and y must be 32 bytes each for P-256",
        ),
    ],
)
def test_jwks_file_errors(tmp_path: Path, content: str, message: str) -> None:
    file = _jwks(tmp_path, content)
    assert error_at("auth.jwt[0].jwks_file", **jwt(issuer(keys=[], jwks_file=file))).startswith(message)


def test_jwks_file_unreadable_or_weak(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.json")
    assert error_at("auth.jwt[0].jwks_file", **jwt(issuer(jwks_file=missing))) == (
        "cannot read: No such file or directory"
    )
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    n = base64.urlsafe_b64encode(numbers.n.to_bytes(128, "big")).rstrip(b"=").decode()
    weak = _jwks(tmp_path, json.dumps({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]}))
    assert error_at("auth.jwt[0].jwks_file", **jwt(issuer(jwks_file=weak))) == (
        "keys[0]: RSA key of 1024 bits; at least 2048 are required"
    )
    off_curve = _jwks(
        tmp_path, json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(1), "y": b64(1)}]})
    )
    assert error_at("auth.jwt[0].jwks_file", **jwt(issuer(jwks_file=off_curve))).startswith("keys[0]: ")


WORDS = ["".join(letters) for n in range(9) for letters in itertools.product("ab", repeat=n)]


@settings(max_examples=300, deadline=None)
@given(st.text("ab*", max_size=4), st.text("ab*", max_size=4))
def test_wildcard_overlap_matches_brute_force(a: str, b: str) -> None:
    """A consumer entry is accepted exactly when some name matches both it and a model."""
    expected = any(fnmatch.fnmatchcase(w, a) and fnmatch.fnmatchcase(w, b) for w in WORDS)
    assert _overlap(a, b) is expected

"""Consumer authentication: API keys, JWTs (HS256, RS256, ES256, JWKS) and model allow-lists.

Tokens are signed here by a small signer of our own, written against RFC 7515 directly, so
the verifier is never checked against its own code paths.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgw.auth.authenticator as auth
from fastgw.auth import Authenticator, AuthFailure, Consumer
from fastgw.config import load_text

ISSUER = "https://issuer.example"
SECRET = "hmac-secret-0123456789-abcdefghijklmnop"
KEY_A = "sk-team-a-0123456789"
KEY_B = "sk-team-b-9876543210"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# -- an independent signer -----------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict, alg: str, key: Any = None, kid: str | None = None, header: dict | None = None) -> str:
    """Compact JWS; ``key`` is a private key, or bytes for HS256 (default: the matching test key)."""
    head = {"alg": alg, "typ": "JWT"} | ({"kid": kid} if kid else {}) | (header or {})
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}".encode()
    if alg == "HS256":
        signature = hmac.new(key or SECRET.encode(), signing_input, hashlib.sha256).digest()
    elif alg == "RS256":
        signature = (key or RSA_KEY).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature((key or EC_KEY).sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = b""
    return f"{signing_input.decode()}.{b64(signature)}"


def claims(**overrides: Any) -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": "fastgw", "sub": "team-b", "exp": now + 300, "iat": now} | overrides


# -- helpers -------------------------------------------------------------------------------

CONSUMERS = [
    {"name": "team-a", "api_keys": [KEY_A], "models": ["gpt-4o-mini", "claude-*"]},
    {"name": "team-b", "api_keys": [KEY_B]},
    {"name": "robot", "api_keys": []},
]
MODELS = [
    {"name": name, "targets": [{"provider": "m"}]}
    for name in ("gpt-4o-mini", "gpt-4o", "claude-3-haiku", "claude-3-opus", "o*")
]


def issuer(**overrides: Any) -> dict:
    return {
        "issuer": ISSUER,
        "audience": ["fastgw", "other"],
        "algorithms": ["HS256", "RS256", "ES256"],
        "keys": [
            {"kid": "h1", "secret": SECRET},
            {"kid": "r1", "pem": public_pem(RSA_KEY)},
            {"kid": "e1", "pem": public_pem(EC_KEY)},
        ],
    } | overrides


def authenticator(clock: Any = time.time, **top: Any) -> Authenticator:
    config = {"providers": [{"name": "m", "type": "mock"}], "models": MODELS} | top
    return Authenticator(load_text(json.dumps(config), env={}), clock=clock)


def headers(**values: str) -> Any:
    lookup = {name.replace("_", "-").encode(): value.encode() for name, value in values.items()}
    return lookup.get


def bearer(credential: str) -> Any:
    return headers(authorization=f"Bearer {credential}")


@pytest.fixture(scope="module")
def keyed() -> Authenticator:
    return authenticator(consumers=CONSUMERS[:2])


@pytest.fixture(scope="module")
def jwt_auth() -> Authenticator:
    return authenticator(consumers=CONSUMERS, auth={"jwt": [issuer()]})


def failure(result: object, status: int, code: str) -> AuthFailure:
    assert isinstance(result, AuthFailure), result
    assert (result.status, result.code) == (status, code), result
    return result


def consumer(result: object) -> str:
    assert isinstance(result, Consumer), result
    return result.name


# -- API keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "get",
    [
        bearer(KEY_A),
        headers(authorization=f"bearer   {KEY_A} "),
        headers(x_api_key=KEY_A),
        headers(api_key=KEY_A),
        headers(authorization="Basic dXNlcjpwYXNz", x_api_key=KEY_A),
        headers(x_api_key="", api_key=KEY_A),
    ],
)
def test_api_key_in_each_header(keyed: Authenticator, get: Any) -> None:
    assert consumer(keyed.authenticate(get)) == "team-a"


def test_bearer_comes_before_x_api_key(keyed: Authenticator) -> None:
    failure(keyed.authenticate(headers(authorization="Bearer nope", x_api_key=KEY_A)), 401, "invalid_api_key")
    assert consumer(keyed.authenticate(headers(authorization=f"Bearer {KEY_B}", x_api_key=KEY_A))) == "team-b"


def test_missing_and_wrong_keys(keyed: Authenticator) -> None:
    assert keyed.anonymous is False
    failure(keyed.authenticate(headers()), 401, "missing_api_key")
    failure(keyed.authenticate(headers(authorization="Bearer ")), 401, "missing_api_key")
    wrong = failure(keyed.authenticate(bearer(KEY_A + "x")), 401, "invalid_api_key")
    assert KEY_A not in wrong.message
    # A JWT-shaped key is just a key when no issuer is configured.
    failure(keyed.authenticate(bearer(sign(claims(), "HS256"))), 401, "invalid_api_key")


def test_api_keys_are_kept_only_as_digests(jwt_auth: Authenticator) -> None:
    token = sign(claims(), "RS256", kid="r1")
    consumer(jwt_auth.authenticate(bearer(token)))
    consumer(jwt_auth.authenticate(headers(x_api_key=KEY_A)))
    secrets = [KEY_A, KEY_B, token]
    seen: set[int] = set()
    todo: list[object] = [jwt_auth]
    while todo:  # everything reachable from the authenticator, except types and modules
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, type(gc))):
            continue
        seen.add(id(obj))
        if isinstance(obj, (str, bytes)):
            text = obj.decode("latin-1") if isinstance(obj, bytes) else obj
            assert not any(secret in text for secret in secrets)
        todo.extend(gc.get_referents(obj))
    assert len(seen) > 20
    assert hashlib.sha256(KEY_A.encode()).digest() in jwt_auth._keys


# -- anonymous -----------------------------------------------------------------------------


def test_anonymous_defaults() -> None:
    open_door = authenticator()
    assert open_door.anonymous is True
    assert open_door.authenticate(headers()) is None
    # SDKs always send a key; with no keys configured it claims nothing.
    assert open_door.authenticate(bearer("sk-anything")) is None
    assert open_door.authorize(None, "gpt-4o") is None
    assert authenticator(consumers=CONSUMERS[:2]).anonymous is False
    assert (
        authenticator(consumers=[{"name": "robot", "api_keys": []}], auth={"jwt": [issuer()]}).anonymous
        is False
    )


def test_anonymous_on_with_consumers_still_checks_presented_keys() -> None:
    mixed = authenticator(consumers=CONSUMERS[:2], auth={"anonymous": True})
    assert mixed.authenticate(headers()) is None
    assert consumer(mixed.authenticate(headers(api_key=KEY_B))) == "team-b"
    failure(mixed.authenticate(headers(api_key="wrong")), 401, "invalid_api_key")
    closed = authenticator(auth={"anonymous": False})
    failure(closed.authenticate(headers()), 401, "missing_api_key")


# -- models --------------------------------------------------------------------------------


def test_model_allow_lists(keyed: Authenticator) -> None:
    team_a, team_b = keyed.consumers["team-a"], keyed.consumers["team-b"]
    for model in ("gpt-4o-mini", "claude-3-haiku", "claude-"):
        assert keyed.authorize(team_a, model) is None
    for model in ("gpt-4o", "gpt-4o-mini-2024", "Claude-3-haiku", "xclaude-3", "o1"):
        denied = failure(keyed.authorize(team_a, model), 403, "model_not_allowed")
        assert "team-a" in denied.message
    assert keyed.authorize(team_b, "anything at all") is None


def test_consumer_patterns() -> None:
    c = Consumer("c", ["a*b*c", "x.y", "q?"])
    assert (
        c.allows("abc") and c.allows("a-b-c") and c.allows("a\nb\nc") and c.allows("x.y") and c.allows("q?")
    )
    assert not c.allows("abcd") and not c.allows("xzy") and not c.allows("qq") and not c.allows("ab")


# -- JWT -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "kid"), [("HS256", "h1"), ("RS256", "r1"), ("ES256", "e1"), ("ES256", None)])
def test_valid_token_per_algorithm(jwt_auth: Authenticator, alg: str, kid: str | None) -> None:
    assert consumer(jwt_auth.authenticate(bearer(sign(claims(), alg, kid=kid)))) == "team-b"


def test_token_audience_issuer_and_claims(jwt_auth: Authenticator) -> None:
    def check(token: str) -> object:
        return jwt_auth.authenticate(bearer(token))

    assert consumer(check(sign(claims(aud=["x", "other"], sub="robot"), "RS256"))) == "robot"
    failure(check(sign(claims(aud="elsewhere"), "RS256")), 401, "wrong_audience")
    failure(check(sign(claims(aud=["x"]), "RS256")), 401, "wrong_audience")
    failure(check(sign(claims(aud=None), "RS256")), 401, "wrong_audience")
    failure(check(sign(claims(iss="https://evil.example"), "RS256")), 401, "wrong_issuer")
    failure(check(sign(claims(iss=None), "RS256")), 401, "wrong_issuer")
    failure(check(sign(claims(exp=None), "RS256")), 401, "invalid_token")
    failure(check(sign(claims(exp="soon"), "RS256")), 401, "invalid_token")
    failure(check(sign(claims(sub="nobody"), "RS256")), 401, "unknown_consumer")
    failure(check(sign(claims(sub=["team-b"]), "RS256")), 401, "unknown_consumer")


def test_time_claims_with_leeway() -> None:
    now = 1_700_000_000.0
    gate = authenticator(lambda: now, consumers=CONSUMERS, auth={"jwt": [issuer(leeway="30s")]})

    def check(**overrides: Any) -> object:
        return gate.authenticate(bearer(sign(claims(iat=int(now)) | overrides, "ES256")))

    assert consumer(check(exp=now - 29))  # within the leeway
    failure(check(exp=now - 31), 401, "token_expired")
    assert consumer(check(exp=now + 60, nbf=now + 29))
    failure(check(exp=now + 60, nbf=now + 31), 401, "token_not_yet_valid")
    failure(check(exp=now + 60, iat=now + 600), 401, "invalid_token")
    failure(check(exp=now + 60, nbf=True), 401, "invalid_token")
    failure(check(exp=10**400), 401, "invalid_token")  # beyond a float: refused, not an OverflowError
    failure(check(exp=1e400), 401, "invalid_token")  # JSON 1e400 is infinity: never expiring is refused


def test_bad_signatures(jwt_auth: Authenticator) -> None:
    head, _, signature = sign(claims(), "RS256", kid="r1").split(".")
    forged_payload = b64(json.dumps(claims(sub="team-a")).encode())
    for bad in (
        f"{head}.{forged_payload}.{signature}",
        sign(claims(), "RS256", key=OTHER_RSA, kid="r1"),
        sign(claims(), "HS256", key=b"another-secret-of-plenty-of-bytes!!", kid="h1"),
        sign(claims(), "ES256", key=ec.generate_private_key(ec.SECP256R1())),
        _der_es256(),  # ES256 in DER (what cryptography returns) instead of JWS r || s
    ):
        failure(jwt_auth.authenticate(bearer(bad)), 401, "invalid_token")


def _der_es256() -> str:
    head = b64(json.dumps({"alg": "ES256"}).encode())
    payload = b64(json.dumps(claims()).encode())
    der = EC_KEY.sign(f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{head}.{payload}.{b64(der)}"


def test_alg_none_and_unlisted_algorithms_are_refused(jwt_auth: Authenticator) -> None:
    for alg in ("none", "None", "HS512", "RS384", "PS256", ""):
        failure(jwt_auth.authenticate(bearer(sign(claims(), alg))), 401, "invalid_token")
    failure(
        jwt_auth.authenticate(bearer(sign(claims(), "HS256", header={"alg": None}))), 401, "invalid_token"
    )
    rs_only = authenticator(
        consumers=CONSUMERS, auth={"jwt": [issuer(algorithms=["RS256"], keys=issuer()["keys"][1:2])]}
    )
    failure(rs_only.authenticate(bearer(sign(claims(), "HS256", kid="h1"))), 401, "invalid_token")
    assert consumer(rs_only.authenticate(bearer(sign(claims(), "RS256"))))


def test_alg_confusion_public_key_as_hmac_secret(jwt_auth: Authenticator) -> None:
    """An attacker who knows the RSA public key signs with HMAC using the PEM as the secret."""
    for pem in (public_pem(RSA_KEY), public_pem(RSA_KEY).strip()):
        for alg in ("RS256", "HS256"):
            for kid in ("r1", "h1", None):
                forged = _hmac_signed(claims(sub="team-a"), alg, pem.encode(), kid)
                failure(jwt_auth.authenticate(bearer(forged)), 401, "invalid_token")


def _hmac_signed(body: dict, alg: str, secret: bytes, kid: str | None) -> str:
    head = {"alg": alg} | ({"kid": kid} if kid else {})
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def test_kid_selection(jwt_auth: Authenticator) -> None:
    failure(jwt_auth.authenticate(bearer(sign(claims(), "RS256", kid="unknown"))), 401, "invalid_token")
    failure(
        jwt_auth.authenticate(bearer(sign(claims(), "RS256", kid="e1"))), 401, "invalid_token"
    )  # another alg's kid
    failure(jwt_auth.authenticate(bearer(sign(claims(), "RS256", header={"kid": 7}))), 401, "invalid_token")
    unnamed = authenticator(
        consumers=CONSUMERS,
        auth={"jwt": [issuer(keys=[{"pem": public_pem(OTHER_RSA)}, {"pem": public_pem(RSA_KEY)}])]},
    )
    assert consumer(unnamed.authenticate(bearer(sign(claims(), "RS256"))))
    # A kid the issuer does not name falls back to the keys without a kid (still verified).
    assert consumer(unnamed.authenticate(bearer(sign(claims(), "RS256", kid="rotated"))))


def test_malformed_tokens(jwt_auth: Authenticator) -> None:
    good = sign(claims(), "HS256", kid="h1")
    head, payload, signature = good.split(".")
    dup = b64(b'{"iss": "%s", "sub": "team-a", "sub": "team-b"}' % ISSUER.encode())
    for bad in (
        f"{head}.{payload}.{signature}=",
        f"{head}==.{payload}.{signature}",
        f"{head}.{payload}.{signature[:-1]}+",
        f"{head}.{payload}.{signature[:-1]}{chr(ord(signature[-1]) + 1)}",  # non-canonical last char
        f"{head}.{b64(b'[1, 2]')}.{signature}",
        f"{head}.{b64(b'{not json')}.{signature}",
        f"{head}.{dup}.{signature}",
        f"{head}.{b64(json.dumps(claims(exp=1)).replace(': 1,', ': NaN,').encode())}.{signature}",
        sign(claims(), "HS256", kid="h1", header={"crit": ["exp"]}),
        f"{b64(b'[' * 50_000 + b']' * 50_000)}.{payload}.{signature}",  # deeper than the stack
    ):
        result = failure(jwt_auth.authenticate(bearer(bad)), 401, "invalid_token")
        assert bad not in result.message and signature not in result.message
    # Four segments is not a JWT: it goes the API-key way.
    failure(jwt_auth.authenticate(bearer(good + ".x")), 401, "invalid_api_key")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=3, max_size=3).map(b".".join))
def test_garbage_tokens_never_raise(token: bytes) -> None:
    result = _FUZZ.authenticate(lambda name: b"Bearer " + token if name == b"authorization" else None)
    assert isinstance(result, AuthFailure) and result.status == 401


_FUZZ = authenticator(consumers=CONSUMERS, auth={"jwt": [issuer()]})


# -- JWKS ----------------------------------------------------------------------------------


def _int(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def test_jwks_file_with_rsa_and_ec_keys(tmp_path: Path) -> None:
    rsa_numbers = RSA_KEY.public_key().public_numbers()
    ec_numbers = EC_KEY.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": "rsa-1",
                "use": "sig",
                "alg": "RS256",
                "n": _int(rsa_numbers.n),
                "e": _int(rsa_numbers.e),
            },
            {
                "kty": "EC",
                "kid": "ec-1",
                "crv": "P-256",
                "x": b64(ec_numbers.x.to_bytes(32, "big")),
                "y": b64(ec_numbers.y.to_bytes(32, "big")),
            },
            {"kty": "oct", "kid": "skipped", "k": b64(b"x" * 32)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    spec = {"issuer": ISSUER, "audience": "fastgw", "jwks_file": str(path)}
    gate = authenticator(consumers=CONSUMERS, auth={"jwt": [spec]})
    assert consumer(gate.authenticate(bearer(sign(claims(), "RS256", kid="rsa-1")))) == "team-b"
    assert consumer(gate.authenticate(bearer(sign(claims(), "ES256", kid="ec-1")))) == "team-b"
    failure(gate.authenticate(bearer(sign(claims(), "ES256", kid="rsa-1"))), 401, "invalid_token")
    failure(
        gate.authenticate(bearer(sign(claims(), "HS256", key=b"x" * 32, kid="skipped"))), 401, "invalid_token"
    )


# -- the verified-token cache --------------------------------------------------------------


def test_token_cache_respects_exp_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "TOKEN_CACHE_SIZE", 4)
    now = [1_700_000_000.0]
    gate = authenticator(lambda: now[0], consumers=CONSUMERS, auth={"jwt": [issuer(leeway=0)]})
    token = sign(claims(iat=int(now[0]), exp=now[0] + 10), "ES256")
    assert consumer(gate.authenticate(bearer(token))) and len(gate._tokens) == 1
    assert consumer(gate.authenticate(bearer(token))) and len(gate._tokens) == 1
    now[0] += 10
    failure(gate.authenticate(bearer(token)), 401, "token_expired")
    assert len(gate._tokens) == 0
    for i in range(10):
        consumer(gate.authenticate(bearer(sign(claims(iat=int(now[0]), exp=now[0] + 100 + i), "HS256"))))
    assert len(gate._tokens) == 4
    failure(
        gate.authenticate(bearer(sign(claims(sub="ghost", iat=int(now[0]), exp=now[0] + 100), "HS256"))),
        401,
        "unknown_consumer",
    )
    assert len(gate._tokens) == 4

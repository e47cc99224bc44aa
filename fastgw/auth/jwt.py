"""Verify JWS-signed JWTs (RFC 7515/7519) for HS256, RS256 and ES256 with ``cryptography``.

Only what a gateway needs: compact serialisation, keys known in advance (inline or from a
JWKS file read at config load; header members such as ``jku``/``jwk``/``x5u`` are never
followed), and the registered claims ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``.

Each algorithm has its own key table, so the header's ``alg`` picks both the verifier and
the only keys it may use: an RS256 token is never checked against an HMAC secret (the
classic key-confusion attack), and ``none`` is never accepted. Error messages never hold
the token, a key or a claim value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ALGORITHMS = ("HS256", "RS256", "ES256")
MIN_HMAC_SECRET = 32
"""Bytes; RFC 7518 3.2: an HS256 key must be at least as long as the hash output."""
MIN_RSA_BITS = 2048

_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(hashes.SHA256())

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class JwtError(Exception):
    """A refused token: ``code`` is the client-facing error code; the message holds no secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def b64url_decode(data: bytes | str) -> bytes:
    """Strict unpadded base64url: one spelling per value, so a token has one string form."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if len(data) % 4 == 1 or not _B64URL.fullmatch(data):
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != data:
        raise ValueError("non-canonical base64url")
    return raw


def key_algorithm(key: object) -> str:
    """The one JWS algorithm a public key serves; ValueError for keys too weak or of another kind."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"EC key on curve {key.curve.name}; ES256 needs P-256")
        return "ES256"
    raise ValueError(f"unsupported key type {type(key).__name__}; expected RSA or EC P-256")


def jwk_public_key(jwk: dict[str, Any]) -> PublicKey:
    """An RSA (``n``, ``e``) or EC P-256 (``crv``, ``x``, ``y``) JWK as a key; ValueError if malformed."""
    kty = jwk.get("kty")
    if kty == "RSA":
        n, e = (int.from_bytes(_member(jwk, name), "big") for name in ("n", "e"))
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and jwk.get("crv") == "P-256":
        x, y = _member(jwk, "x"), _member(jwk, "y")
        if len(x) != 32 or len(y) != 32:
            raise ValueError("x and y must be 32 bytes each for P-256")
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    raise ValueError("expected kty RSA, or kty EC with crv P-256")


def _member(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty base64url string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise ValueError(f"{name} is not unpadded base64url") from None


def pem(key: PublicKeyTypes) -> str:
    """One canonical PEM (SubjectPublicKeyInfo) form for every key, however it was given."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _verify_hs256(secret: bytes, data: bytes, signature: bytes) -> bool:
    return hmac.compare_digest(hmac.new(secret, data, hashlib.sha256).digest(), signature)


def _verify_rs256(key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, _PKCS1, _SHA256)
    except InvalidSignature:
        return False
    return True


def _verify_es256(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    # JWS carries ECDSA as raw r || s (RFC 7518 3.4); cryptography wants DER.
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, _ECDSA)
    except InvalidSignature:
        return False
    return True


_VERIFIERS: dict[str, Callable[[Any, bytes, bytes], bool]] = {
    "HS256": _verify_hs256,
    "RS256": _verify_rs256,
    "ES256": _verify_es256,
}


class Issuer:
    """One trusted issuer from ``auth.jwt``, its keys parsed once per config generation."""

    __slots__ = ("name", "audiences", "algorithms", "consumer_claim", "leeway", "_keys", "_unnamed", "_all")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["issuer"]
        self.audiences = frozenset(spec["audience"])
        self.algorithms = frozenset(spec["algorithms"])
        self.consumer_claim: str = spec["consumer_claim"]
        self.leeway: float = spec["leeway"]
        # (alg, kid) -> keys; alg -> keys without a kid; alg -> all: the alg is in every lookup.
        self._keys: dict[tuple[str, str], list[Any]] = {}
        self._unnamed: dict[str, list[Any]] = {}
        self._all: dict[str, list[Any]] = {}
        for key in spec["keys"]:
            alg = key["alg"]
            if alg == "HS256":
                material: Any = key["secret"].encode()
            else:
                material = serialization.load_pem_public_key(key["pem"].encode())
            self._all.setdefault(alg, []).append(material)
            if key["kid"] is None:
                self._unnamed.setdefault(alg, []).append(material)
            else:
                self._keys.setdefault((alg, key["kid"]), []).append(material)

    def candidates(self, alg: str, kid: str | None) -> list[Any]:
        """Keys to try, never another alg's: all without a ``kid``; else the ones it names,
        falling back to keys configured without a kid."""
        if kid is None:
            return self._all.get(alg, [])
        return self._keys.get((alg, kid)) or self._unnamed.get(alg, [])

    def check_claims(self, claims: dict[str, Any], now: float) -> None:
        """Registered claims after the signature is good; ``exp`` is required."""
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self.audiences for a in audiences):
            raise JwtError("wrong_audience", "token audience is not accepted")
        exp = _time_claim(claims, "exp")
        if exp is None:
            raise JwtError("invalid_token", "token has no exp claim")
        if now >= exp + self.leeway:
            raise JwtError("token_expired", "token has expired")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and now + self.leeway < nbf:
            raise JwtError("token_not_yet_valid", "token is not valid yet (nbf)")
        iat = _time_claim(claims, "iat")
        if iat is not None and now + self.leeway < iat:
            raise JwtError("invalid_token", "token is issued in the future (iat)")


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
    raise JwtError("invalid_token", f"token claim {name} is not a finite number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 4: duplicate member names must be rejected (or parsers could disagree on them).
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")
    return out


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def _json_object(raw: bytes) -> dict[str, Any]:
    value = _DECODER.decode(raw.decode())  # JWS JSON is UTF-8 (RFC 7515 5.2)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


class Verifier:
    """Verifies tokens against the trusted issuers of one config generation."""

    __slots__ = ("_issuers",)

    def __init__(self, issuers: list[dict[str, Any]]) -> None:
        self._issuers = {spec["issuer"]: Issuer(spec) for spec in issuers}

    def verify(self, token: bytes, now: float) -> tuple[Issuer, dict[str, Any]]:
        """The issuer and claims of a valid token, or :class:`JwtError`."""
        parts = token.split(b".")
        if len(parts) != 3:
            raise JwtError("invalid_token", "malformed token: expected header.payload.signature")
        try:
            header = _json_object(b64url_decode(parts[0]))
            claims = _json_object(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the stack
            raise JwtError("invalid_token", "malformed token") from None
        # The issuer is picked by the unverified iss; its keys then decide whether to believe it.
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise JwtError("wrong_issuer", "token issuer is not trusted")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise JwtError("invalid_token", "token algorithm is not accepted")
        if "crit" in header:
            raise JwtError(
                "invalid_token", "token has critical header parameters this gateway does not support"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtError("invalid_token", "token kid is not a string")
        keys = issuer.candidates(alg, kid)
        if not keys:
            raise JwtError("invalid_token", "no key for the token's algorithm and kid")
        verify, signed = _VERIFIERS[alg], token[: len(parts[0]) + 1 + len(parts[1])]
        if not any(verify(key, signed, signature) for key in keys):
            raise JwtError("invalid_token", "bad token signature")
        issuer.check_claims(claims, now)
        return issuer, claims

"""``consumers`` and ``auth``: who may call, with which credentials, and which models.

Keys are parsed and checked here, at load, so a bad PEM or an unreadable JWKS file is a
config error with its field path, never a worker failing at the first request. The
normalised form stays plain data (PEM strings, secrets as strings) that the runtime
(:mod:`fastgw.auth`) parses once per generation. No message ever shows an API key,
an HMAC secret or key material.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from fastgw.auth import jwt
from fastgw.config.fields import (
    Issues,
    boolean,
    duration,
    kind,
    mapping,
    required,
    sequence,
    text,
    text_list,
    unique_names,
    unknown_name,
)
from fastgw.config.overload import priority

_CONSUMER_KEYS = ("name", "api_keys", "models", "priority")
_ISSUER_KEYS = ("issuer", "audience", "algorithms", "keys", "jwks_file", "consumer_claim", "leeway")
_DEFAULT_ALGORITHMS = ["RS256", "ES256"]
_LEEWAY = duration(allow_zero=True)


def access(
    consumers: Any, auth: Any, models: Collection[str], issues: Issues
) -> tuple[list[dict], dict[str, Any]]:
    """The normalised ``consumers`` list and ``auth`` mapping (they depend on each other)."""
    out = _consumers(consumers, models, issues)
    given = mapping(auth, "auth", issues, ("anonymous", "jwt")) or {}
    issuers = _issuers(given.get("jwt", []), issues)
    if not issuers:
        for i, consumer in enumerate(out):
            if consumer["api_keys"] == []:
                issues.add(f"consumers[{i}].api_keys", "empty, and no auth.jwt issuer can name this consumer")
    if "anonymous" in given:
        anonymous = boolean(given["anonymous"], "auth.anonymous", issues)
    else:
        anonymous = not out and not issuers
    return out, {"anonymous": anonymous, "jwt": issuers}


def _consumers(value: Any, models: Collection[str], issues: Issues) -> list[dict]:
    out, names = [], []
    key_owner: dict[str, str] = {}
    for i, item in enumerate(sequence(value, "consumers", issues) or []):
        path = f"consumers[{i}]"
        given = mapping(item, path, issues, _CONSUMER_KEYS)
        if given is None:
            continue
        keys = required(given, "api_keys", path, issues, sequence) or []
        for j, key in enumerate(keys):
            if not isinstance(key, str) or not key:
                issues.add(f"{path}.api_keys[{j}]", f"expected a non-empty string, found {kind(key)}")
            elif key_owner.setdefault(key, path) != path:
                # The key itself is a secret: name where it clashes, never what it is.
                issues.add(f"{path}.api_keys[{j}]", f"this key is already used by {key_owner[key]}")
        allowed = text_list(given.get("models", ["*"]), f"{path}.models", issues)
        for j, name in enumerate(allowed):
            if name is not None and name != "*" and not any(_overlap(name, model) for model in models):
                message = (
                    f"no model matches {name!r}; defined: {', '.join(sorted(models)) or 'none'}"
                    if "*" in name
                    else unknown_name("model", name, models)
                )
                issues.add(f"{path}.models[{j}]", message)
        names.append((i, required(given, "name", path, issues, text)))
        level = priority(given["priority"], f"{path}.priority", issues) if "priority" in given else None
        out.append({"name": names[-1][1], "api_keys": keys, "models": allowed, "priority": level})
    unique_names("consumers", names, issues)
    return out


def _overlap(a: str, b: str) -> bool:
    """Whether two names with ``*`` wildcards match at least one common model name.

    A consumer may list ``o1`` when the models table serves ``o*``, or ``claude-*`` when it
    names ``claude-3-opus``; only an entry that can never match anything is an error.
    A search over (position in a, position in b): O(len(a) * len(b)), no recursion.
    """
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":  # the star matches nothing more, or b's next character
            todo += [(i + 1, j), (i, j + 1)] if j < len(b) else [(i + 1, j)]
        elif j < len(b) and b[j] == "*":
            todo += [(i, j + 1), (i + 1, j)] if i < len(a) else [(i, j + 1)]
        elif i < len(a) and j < len(b) and a[i] == b[j]:
            todo.append((i + 1, j + 1))
    return False


def _issuers(value: Any, issues: Issues) -> list[dict]:
    out, names = [], []
    for i, item in enumerate(sequence(value, "auth.jwt", issues) or []):
        path = f"auth.jwt[{i}]"
        given = mapping(item, path, issues, _ISSUER_KEYS)
        if given is None:
            continue
        name = required(given, "issuer", path, issues, text)
        names.append((i, name))
        algorithms = _algorithms(given.get("algorithms", _DEFAULT_ALGORITHMS), f"{path}.algorithms", issues)
        keys = [
            _inline_key(key, f"{path}.keys[{j}]", algorithms, issues)
            for j, key in enumerate(sequence(given.get("keys", []), f"{path}.keys", issues) or [])
        ]
        jwks_file = text(given["jwks_file"], f"{path}.jwks_file", issues) if "jwks_file" in given else None
        if jwks_file is not None:
            keys += _jwks_file(jwks_file, f"{path}.jwks_file", algorithms, issues)
        elif not keys:
            issues.add(path, "needs keys, a jwks_file or both: tokens cannot be verified without a key")
        out.append(
            {
                "issuer": name,
                "audience": required(given, "audience", path, issues, _audience),
                "algorithms": algorithms,
                "keys": [key for key in keys if key is not None],
                "jwks_file": jwks_file,
                "consumer_claim": text(given["consumer_claim"], f"{path}.consumer_claim", issues)
                if "consumer_claim" in given
                else "sub",
                "leeway": _LEEWAY(given["leeway"], f"{path}.leeway", issues) if "leeway" in given else 30.0,
            }
        )
    _unique_issuers(names, issues)
    return out


def _unique_issuers(names: list[tuple[int, str | None]], issues: Issues) -> None:
    # A token's iss picks its issuer entry, so two entries for one issuer would be ambiguous.
    first: dict[str, int] = {}
    for i, name in names:
        if name is not None and first.setdefault(name, i) != i:
            issues.add(f"auth.jwt[{i}].issuer", f"duplicate issuer (already used by auth.jwt[{first[name]}])")


def _audience(value: Any, path: str, issues: Issues) -> list[str] | None:
    if isinstance(value, str):
        return [text(value, path, issues)]
    found = text_list(value, path, issues)
    if isinstance(value, list) and not value:
        issues.add(path, "at least one audience is required")
    return found


def _algorithms(value: Any, path: str, issues: Issues) -> list[str]:
    found: list[str] = []
    for j, alg in enumerate(sequence(value, path, issues) or []):
        if alg not in jwt.ALGORITHMS:
            issues.add(
                f"{path}[{j}]", f"expected one of {', '.join(jwt.ALGORITHMS)}; found {issues.describe(alg)}"
            )
        elif alg not in found:
            found.append(alg)
    if value == []:
        issues.add(path, "at least one algorithm is required")
    return found


def _inline_key(value: Any, path: str, algorithms: list[str], issues: Issues) -> dict | None:
    given = mapping(value, path, issues, ("kid", "secret", "pem"))
    if given is None:
        return None
    kid = text(given["kid"], f"{path}.kid", issues) if "kid" in given else None
    if ("secret" in given) == ("pem" in given):
        issues.add(path, "needs exactly one of secret (an HS256 secret) or pem (an RS256/ES256 public key)")
        return None
    if "secret" in given:
        field, material, alg = "secret", _secret(given["secret"], f"{path}.secret", issues), "HS256"
        if material is None:
            return None
    else:
        field, found = "pem", _pem(given["pem"], f"{path}.pem", issues)
        if found is None:
            return None
        alg, material = found
    if alg not in algorithms:
        issues.add(f"{path}.{field}", f"an {alg} key, but {alg} is not in algorithms")
        return None
    return {"kid": kid, "alg": alg, field: material}


def _secret(value: Any, path: str, issues: Issues) -> str | None:
    """An HS256 secret; messages name its type and the rule, never its value or length."""
    if not isinstance(value, str):
        issues.add(path, f"expected a string, found {kind(value)}")
        return None
    if len(value.encode()) < jwt.MIN_HMAC_SECRET:
        issues.add(path, f"too short: an HS256 secret needs at least {jwt.MIN_HMAC_SECRET} bytes")
        return None
    return value


def _pem(value: Any, path: str, issues: Issues) -> tuple[str, str] | None:
    if not isinstance(value, str):
        issues.add(path, f"expected a PEM public key, found {kind(value)}")
        return None
    try:
        key = serialization.load_pem_public_key(value.encode())
    except (ValueError, UnsupportedAlgorithm):
        hint = " (this is a private key: give its public key)" if "PRIVATE KEY" in value else ""
        issues.add(path, f"not a PEM public key{hint}")
        return None
    try:
        return jwt.key_algorithm(key), jwt.pem(key)
    except ValueError as exc:  # too weak or of another kind; the message names no key material
        issues.add(path, str(exc))
        return None


def _jwks_file(file: str, path: str, algorithms: list[str], issues: Issues) -> list[dict]:
    """Usable keys of a JWKS file (RFC 7517); keys of other kinds, uses or algorithms are skipped."""
    try:
        with open(file, "rb") as f:
            document = json.loads(f.read())
    except OSError as exc:
        issues.add(path, f"cannot read: {exc.strerror or exc}")
        return []
    except ValueError as exc:
        issues.add(path, f"not a JWKS: invalid JSON ({exc})")
        return []
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        issues.add(path, 'not a JWKS: expected a JSON object {"keys": [...]}')
        return []
    keys, reported = [], len(issues.errors)
    for k, jwk in enumerate(entries):
        if not isinstance(jwk, dict):
            issues.add(path, f"keys[{k}]: expected a JSON object, found {kind(jwk)}")
            continue
        kty = jwk.get("kty")
        alg = "RS256" if kty == "RSA" else "ES256" if kty == "EC" and jwk.get("crv") == "P-256" else None
        # RFC 7517 5: skip keys not understood; also keys for encryption or another algorithm.
        if (
            alg is None
            or alg not in algorithms
            or jwk.get("use", "sig") != "sig"
            or jwk.get("alg", alg) != alg
        ):
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            issues.add(path, f"keys[{k}]: kid must be a string")
            continue
        try:
            key = jwt.jwk_public_key(jwk)
            jwt.key_algorithm(key)
        except ValueError as exc:
            issues.add(path, f"keys[{k}]: {exc}")
            continue
        keys.append({"kid": kid, "alg": alg, "pem": jwt.pem(key)})
    if not keys and len(issues.errors) == reported:  # a broken key already said why
        issues.add(
            path, f"no usable key for algorithms {', '.join(algorithms)} (RSA for RS256, EC P-256 for ES256)"
        )
    return keys

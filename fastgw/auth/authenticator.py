"""Who is calling: API keys and JWTs to consumers, and which models a consumer may use.

Built once per config generation from the normalised ``consumers`` and ``auth`` sections.
API keys are kept only as SHA-256 digests: a heap dump, a log line or an error message
can never give a client's key away, and the lookup is a dict hit on the digest.
Verified JWTs are remembered the same way (digest -> consumer, until ``exp``) in a small
bounded LRU, so a client reusing its token skips the signature check.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastgw.auth.jwt import JwtError, Verifier

TOKEN_CACHE_SIZE = 1024
"""Verified tokens remembered per worker (32-byte digests, not the tokens)."""

_CREDENTIAL_HEADERS = (b"x-api-key", b"api-key")


class Consumer:
    """A named caller and the models it may use (``*`` matches any run of characters)."""

    __slots__ = ("name", "_exact", "_pattern", "_any")

    def __init__(self, name: str, models: list[str]) -> None:
        self.name = name
        self._any = "*" in models
        self._exact = frozenset(m for m in models if "*" not in m)
        wildcards = [".*".join(map(re.escape, m.split("*"))) for m in models if "*" in m]
        self._pattern = re.compile("|".join(wildcards), re.DOTALL) if wildcards else None

    def allows(self, model: str) -> bool:
        if self._any or model in self._exact:
            return True
        return self._pattern is not None and self._pattern.fullmatch(model) is not None

    def __repr__(self) -> str:
        return f"Consumer({self.name!r})"


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """A refused request: ``status`` 401 (who are you?) or 403 (not allowed), and an error ``code``."""

    status: int
    code: str
    message: str


MISSING_CREDENTIALS = AuthFailure(
    401,
    "missing_api_key",
    "no credentials: send 'Authorization: Bearer <key or token>' or 'x-api-key: <key>'",
)
INVALID_API_KEY = AuthFailure(401, "invalid_api_key", "invalid API key")


class Authenticator:
    """Maps a request's credentials to a :class:`Consumer`, for one config generation."""

    __slots__ = ("anonymous", "consumers", "_keys", "_jwt", "_tokens", "_clock")

    def __init__(self, config: dict[str, Any], clock: Callable[[], float] = time.time) -> None:
        self.anonymous: bool = config["auth"]["anonymous"]
        self.consumers = {c["name"]: Consumer(c["name"], c["models"]) for c in config["consumers"]}
        self._keys: dict[bytes, tuple[bytes, Consumer]] = {}
        for spec in config["consumers"]:
            for key in spec["api_keys"]:
                digest = hashlib.sha256(key.encode()).digest()
                self._keys[digest] = (digest, self.consumers[spec["name"]])
        issuers = config["auth"]["jwt"]
        self._jwt = Verifier(issuers) if issuers else None
        self._tokens: OrderedDict[bytes, tuple[Consumer, float]] = OrderedDict()
        self._clock = clock

    def authenticate(self, get_header: Callable[[bytes], bytes | None]) -> Consumer | AuthFailure | None:
        """The caller's consumer, a failure, or None for an anonymous caller (when allowed).

        Credentials are looked for in order: ``Authorization: Bearer`` (a JWT when it has
        two dots and issuers are configured, else an API key), ``x-api-key``, ``api-key``.
        A credential that is present but wrong fails even when anonymous access is on,
        except an API key when no consumer has one: SDKs always send some key, and with
        nothing to check it against it is not a claim to be anyone.
        """
        value = get_header(b"authorization")
        if value is not None:
            scheme, _, credential = value.strip().partition(b" ")
            credential = credential.strip()
            if scheme.lower() == b"bearer" and credential:
                if self._jwt is not None and credential.count(b".") == 2:
                    return self._token(self._jwt, credential)
                return self._api_key(credential)
        for name in _CREDENTIAL_HEADERS:
            value = get_header(name)
            if value is not None and (credential := value.strip()):
                return self._api_key(credential)
        return None if self.anonymous else MISSING_CREDENTIALS

    def authorize(self, consumer: Consumer | None, model: str) -> AuthFailure | None:
        """403 when a consumer may not use ``model``; anonymous callers are not restricted."""
        if consumer is None or consumer.allows(model):
            return None
        return AuthFailure(
            403, "model_not_allowed", f"consumer {consumer.name!r} may not use model {model!r}"
        )

    def _api_key(self, key: bytes) -> Consumer | AuthFailure | None:
        if not self._keys and self.anonymous:
            return None
        digest = hashlib.sha256(key).digest()
        found = self._keys.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            return INVALID_API_KEY
        return found[1]

    def _token(self, verifier: Verifier, token: bytes) -> Consumer | AuthFailure:
        now = self._clock()
        digest = hashlib.sha256(token).digest()
        cached = self._tokens.get(digest)
        if cached is not None:
            if now < cached[1]:
                self._tokens.move_to_end(digest)
                return cached[0]
            del self._tokens[digest]  # expired: verify again for the precise error
        try:
            issuer, claims = verifier.verify(token, now)
        except JwtError as exc:
            return AuthFailure(401, exc.code, str(exc))
        name = claims.get(issuer.consumer_claim)
        consumer = self.consumers.get(name) if isinstance(name, str) else None
        if consumer is None:
            return AuthFailure(
                401, "unknown_consumer", f"token claim {issuer.consumer_claim!r} names no known consumer"
            )
        # nbf and iat only get easier to satisfy as time passes; exp is the one re-checked.
        self._tokens[digest] = (consumer, float(claims["exp"]) + issuer.leeway)
        if len(self._tokens) > TOKEN_CACHE_SIZE:
            self._tokens.popitem(last=False)
        return consumer

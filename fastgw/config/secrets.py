"""Which config fields hold secrets: the one list that every output is redacted by.

``GET /config``, ``fastgw check`` and push errors, supervisor and worker logs and the error
answers of the data plane all go through this module, so a field added here is hidden
everywhere at once. :data:`SECRET_FIELDS` names each secret-bearing field by its path in
the config (the same path in the file as written and in the normalised form), with how
its value holds the secret:

- ``SECRET``: the whole value (a string, or every string in a list);
- ``URL``: a URL's userinfo (``redis://:pw@host``, ``https://key@host``) and the values of
  secret-looking query parameters (``?key=``, ``api_key``, ``token``, ``sig`` ...);
- ``NAMED``: a mapping (headers, query parameters, pass-through options) in which
  every entry whose *name* looks like a credential (``authorization``, ``x-goog-api-key``,
  ``ocp-apim-subscription-key``, ``x-auth-token``, ``client_secret`` ...) is a secret,
  and every URL string a ``URL``, at any depth.
"""

from __future__ import annotations

import functools
import marshal
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "***"
SECRET, URL, NAMED = "secret", "url", "named"

SECRET_FIELDS: tuple[tuple[str, str], ...] = (
    ("admin.token", SECRET),
    ("redis", URL),
    ("providers[*].api_keys", SECRET),
    ("providers[*].base_url", URL),
    ("providers[*].options", NAMED),
    ("consumers[*].api_keys", SECRET),
    ("auth.jwt[*].keys[*].secret", SECRET),
    ("cache.semantic.api_key", SECRET),
    ("console.summarise.api_key", SECRET),
    ("cache.semantic.embeddings_url", URL),
    ("guard.moderation.url", URL),
    ("limits[*].match.headers", NAMED),
    ("routes[*].match.headers", NAMED),
    ("routes[*].upstream", URL),
    ("routes[*].upstream.endpoints[*]", URL),
    ("routes[*].upstream.endpoints[*].url", URL),
    ("routes[*].transform", NAMED),
    ("routes[*].filters", NAMED),
    ("models[*].transform", NAMED),
    ("models[*].filters", NAMED),
)
"""``(path, how)``; ``[*]`` is every item of a list. A ``NAMED`` transform covers header and
query ``add`` rules and body ``set``/``default`` values alike; ``NAMED`` filters cover plugin
options, nested (normalised) or inline (as written). Upstream URLs are listed in each form they
may be written in (the schema refuses userinfo there, but the refusal must not echo it)."""

_CREDENTIAL_WORDS = frozenset(
    (
        "auth", "authorization", "bearer", "token", "secret", "password", "passwd", "pass", "pwd", "key",
        "apikey", "credential", "credentials", "cookie", "session", "signature", "sig", "jwt", "sas",
    )
)
_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
MIN_SCRUBBED = 6
"""Shorter values are not scrubbed out of free text (a 1-character "secret" would mangle every line)."""

# Free text: URL userinfo and secret query parameters of URLs not in the config (an upstream's).
_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://)(?P<info>[^/@\s'\"]+)@", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"(?P<head>[?&](?P<name>[^=&#\s'\"]+)=)(?P<value>[^&#\s'\"]+)")


@functools.lru_cache(maxsize=4096)  # a big config repeats the same few names thousands of times
def credential_name(name: object) -> bool:
    """Whether a header, parameter or option name looks like it carries a credential.

    Word-based (``maxTokens`` and ``default_max_tokens`` are not credentials, ``apiKey`` and
    ``x-goog-api-key`` are): the name is split at non-alphanumerics and camel case.
    """
    if not isinstance(name, str):
        return False
    words = _WORD.findall(_CAMEL.sub(r"\1_\2", name).lower())
    return any(word in _CREDENTIAL_WORDS for word in words) or "apikey" in "".join(words)


def _parse(path: str) -> list[str]:
    return [part for part in re.split(r"\.|(?=\[)", path) if part]


_PATTERNS = tuple((_parse(path), how) for path, how in SECRET_FIELDS)


def _find(node: Any, parts: list[str]) -> list[tuple[Any, Any]]:
    """``(container, key)`` of every value at ``parts`` under ``node`` (absent paths: none).

    Level by level over lists, not a recursive generator: a 10,000-route config is walked once
    per listed field on every push and every ``GET /config``."""
    level = [node]
    for part in parts[:-1]:
        if part == "[*]":
            level = [item for n in level if isinstance(n, list) for item in n]
        else:
            level = [n[part] for n in level if isinstance(n, dict) and part in n]
    last = parts[-1]
    if last == "[*]":
        return [(n, i) for n in level if isinstance(n, list) for i in range(len(n))]
    return [(n, last) for n in level if isinstance(n, dict) and last in n]


# -- URLs ------------------------------------------------------------------------------


def _url_parts(url: str) -> tuple[str, str, str, str]:
    """``(before userinfo, userinfo, between, query)``; empty strings where absent."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, "", "", ""
    if not parts.scheme or not parts.netloc:
        return url, "", "", ""
    scheme_end = url.index("//") + 2
    at = parts.netloc.rfind("@")
    info = parts.netloc[:at] if at >= 0 else ""
    return url[:scheme_end], info, url[scheme_end + (len(info) + 1 if info else 0) :], parts.query


def _url_secrets(url: str) -> list[str]:
    if _plain_url(url):
        return []
    _, info, _, query = _url_parts(url)
    found = []
    if info:
        user, colon, password = info.partition(":")
        found += [password, unquote(password)] if colon else [user, unquote(user)]
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and credential_name(unquote(name)):
            found += [value, unquote(value)]
    return [value for value in found if value]


def _plain_url(url: str) -> bool:
    """No userinfo and no query: nothing to hide (decided without parsing, the common case)."""
    return "://" not in url or not ("@" in url or "?" in url)


def _redact_url(url: str) -> str:
    if _plain_url(url):
        return url
    head, info, rest, query = _url_parts(url)
    if info:
        user, colon, _ = info.partition(":")
        head += f"{user}:{REDACTED}@" if colon else f"{REDACTED}@"
    if query:
        rest = _QUERY_PARAM.sub(
            lambda m: m["head"] + REDACTED if credential_name(unquote(m["name"])) else m[0], rest
        )
    return head + rest if (info or query) else url


# -- trees -----------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _named_secrets(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for name, item in value.items():
            if credential_name(name):
                yield from _strings(item)
            else:
                yield from _named_secrets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named_secrets(item)
    elif isinstance(value, str):
        yield from _url_secrets(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTED
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, dict):
        return {name: _redact_value(item) for name, item in value.items()}
    return value  # numbers and booleans are no secrets (``default_max_tokens: 4096``)


def _redact_named(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: _redact_value(item) if credential_name(name) else _redact_named(item) for name, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_named(item) for item in value]
    if isinstance(value, str):
        return _redact_url(value)
    return value


def _copy(value: Any) -> Any:
    """A deep copy of plain config data, at C speed (a 10,000-route config in milliseconds)."""
    return marshal.loads(marshal.dumps(value))


def secret_values(config: Any) -> set[str]:
    """Every secret string in a config tree (as written or normalised), for :func:`scrub`."""
    found: set[str] = set()
    for parts, how in _PATTERNS:
        for container, key in _find(config, parts):
            value = container[key]
            if how == SECRET:
                found.update(_strings(value))
            elif how == URL:
                found.update(_url_secrets(value) if isinstance(value, str) else ())
            else:
                found.update(_named_secrets(value))
    return {value for value in found if len(value) >= MIN_SCRUBBED}


def redact(config: Any) -> Any:
    """A copy of ``config`` with every secret-bearing field's secret replaced by ``"***"``."""
    out = _copy(config)
    for parts, how in _PATTERNS:
        for container, key in _find(out, parts):
            value = container[key]
            if how == SECRET:
                container[key] = _redact_value(value) if value is not None else None
            elif how == URL:
                container[key] = _redact_url(value) if isinstance(value, str) else value
            else:
                container[key] = _redact_named(value)
    return out


def scrub(text: str, secrets: set[str] | frozenset[str] = frozenset()) -> str:
    """``text`` with each of ``secrets`` (longest first) and any URL credential replaced by ``"***"``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(
        lambda m: m["head"] + (m["info"].partition(":")[0] + ":" if ":" in m["info"] else "") + REDACTED + "@",
        text,
    )
    return _QUERY_PARAM.sub(lambda m: m["head"] + REDACTED if credential_name(unquote(m["name"])) else m[0], text)


class Scrubber:
    """The secrets a process has seen in its configs, scrubbed out of every line it logs.

    Secrets of replaced configs are kept: an old generation's requests may still be logging.
    """

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def remember(self, config: Any) -> None:
        self.secrets |= secret_values(config)

    def __call__(self, text: str) -> str:
        return scrub(text, self.secrets)


SCRUBBER = Scrubber()
"""This process's: the loader remembers every config it reads, the logs scrub with it."""

"""Config entry points: text or file in, normalised dict out, or every error at once."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastgw.config.env import substitute
from fastgw.config.errors import ConfigError
from fastgw.config.fields import Issues
from fastgw.config.schema import normalise
from fastgw.config.secrets import SCRUBBER, scrub, secret_values
from fastgw.config.source import parse

DEFAULT_CONFIG_YAML = """\
# The embedded default: what `fastgw run` serves without -c. The OpenAI SDK works at once
# against http://127.0.0.1:8080/v1 with model "mock-gpt" (answered by the built-in mock).
listen: 127.0.0.1:8080
admin: 127.0.0.1:9901
providers:
  - name: mock
    type: mock
models:
  - name: mock-gpt
    targets:
      - provider: mock
consumers: []
limits: []
routes: []
"""


def load_text(text: str, source: str = "<config>", env: Mapping[str, str] | None = None) -> dict:
    """Parse, substitute ``${VAR}`` from ``env`` (default: the process environment), check, normalise.

    Raises :class:`ConfigError` listing every problem, each prefixed by its field path; no
    message shows a value of a secret-bearing field (:mod:`fastgw.config.secrets`). The
    secrets are remembered by this process's :data:`~fastgw.config.secrets.SCRUBBER`, so
    its logs never show them either.
    """
    issues = Issues()
    data = parse(text, source, issues)
    if issues.errors:
        raise ConfigError(issues.errors)
    data = substitute(data, "", os.environ if env is None else env, issues)
    secrets = secret_values(data)
    SCRUBBER.secrets |= secrets
    config = normalise(data, source, issues)
    if issues.errors:
        raise ConfigError([scrub(line, secrets) for line in issues.errors])
    return config


def load_file(path: str, env: Mapping[str, str] | None = None) -> dict:
    """:func:`load_text` on a file; an unreadable file is a :class:`ConfigError` too."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from None
    return load_text(text, path, env)


def check_file(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The error lines for ``fastgw check``: empty when the file is valid."""
    try:
        load_file(path, env)
    except ConfigError as exc:
        return exc.errors
    return []


def default_config() -> dict:
    """The embedded default, normalised (never reads the environment)."""
    return load_text(DEFAULT_CONFIG_YAML, "<default>", env={})

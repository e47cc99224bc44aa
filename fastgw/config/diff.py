"""A readable difference between two normalised configs, with every secret redacted.

Both sides are redacted (:func:`fastgw.config.secrets.redact`) before they are compared, so a
diff never shows a key, a token or a URL's password; a secret that changed shows up only as
``secrets_changed``. YAML with sorted keys makes a changed field one changed line under its
parents, which a unified diff then shows with its context.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from fastgw.config.secrets import redact, secret_values

CONTEXT = 3
"""Unchanged lines shown around each change."""


def as_text(config: dict[str, Any]) -> list[str]:
    """The redacted config as YAML lines, keys sorted (what the diff compares)."""
    return yaml.safe_dump(redact(config), sort_keys=True, default_flow_style=False, width=120).splitlines()


def config_diff(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> dict[str, Any]:
    """``{diff: unified diff lines, secrets_changed}`` from ``old`` to ``new``."""
    lines = difflib.unified_diff(as_text(old), as_text(new), old_name, new_name, n=CONTEXT, lineterm="")
    return {"diff": list(lines), "secrets_changed": secret_values(old) != secret_values(new)}

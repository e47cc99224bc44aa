"""``${VAR}`` and ``${VAR:-default}`` in config strings, filled from the environment.

Substitution runs on the parsed tree, one string at a time, so a secret containing YAML
syntax (``: ``, ``#``, quotes) can never change the config's structure. ``$${`` is a
literal ``${`` (for the rare regex that needs one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastgw.config.fields import Issues, join

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


def substitute(node: Any, path: str, env: Mapping[str, str], issues: Issues) -> Any:
    """Expand references in every string under ``node`` (in place for containers).

    Values taken from ``env`` are remembered in ``issues.secrets`` so no error message
    ever echoes them; defaults written in the file are not secret.
    """
    if isinstance(node, str):
        return _expand(node, path, env, issues) if "${" in node else node
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if "${" in value:
                    node[key] = _expand(value, join(path, key), env, issues)
            elif isinstance(value, (dict, list)):
                substitute(value, join(path, key), env, issues)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, str):
                if "${" in value:
                    node[i] = _expand(value, f"{path}[{i}]", env, issues)
            elif isinstance(value, (dict, list)):
                substitute(value, f"{path}[{i}]", env, issues)
    return node


def _expand(value: str, path: str, env: Mapping[str, str], issues: Issues) -> str:
    def replace(m: re.Match[str]) -> str:
        whole, name, default = m.group(0), m.group(1), m.group(2)
        if whole == "$${":
            return "${"
        if name is None:
            issues.add(
                path, "malformed reference: use ${NAME} or ${NAME:-default} (write $${ for a literal '${')"
            )
            issues.unresolved.add(path)
            return ""
        found = env.get(name)
        if found:
            issues.secrets.add(found)
            return found
        if default is not None:  # like the shell, ':-' also covers a set-but-empty variable
            return default
        if found is None:
            issues.add(
                path,
                f"environment variable {name!r} is not set and has no default (write ${{{name}:-default}})",
            )
            issues.unresolved.add(path)
        return ""

    return _REFERENCE.sub(replace, value)

"""The ``filters`` list of a route or model: which filters run, with which options.

Each item is a built-in or installed filter's name (``auth``, or ``{name: auth, optional:
true}``) or a Python plugin (``{use: "pkg.module:Class", ...options}``). Plugins are
looked up here without being imported (the supervisor runs no plugin code); workers
import them when they build the generation.
"""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import entry_points
from typing import Any

from fastgw.config.fields import Issues, sequence, unknown_name
from fastgw.filters import BUILTIN

_IMPORT_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


def _installed() -> set[str]:
    return {ep.name for ep in entry_points(group="fastgw.filters")}


def filters(value: Any, path: str, issues: Issues) -> list[dict[str, Any]]:
    """Normalised to ``[{"use": name or "module:Class", "options": {...}}]``."""
    out = []
    for i, item in enumerate(sequence(value, path, issues) or []):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            issues.add(where, "must be a filter name or a mapping with 'name' or 'use'")
            continue
        options = {k: v for k, v in item.items() if k not in ("name", "use")}
        if ("name" in item) == ("use" in item):
            issues.add(where, "give exactly one of 'name' (a built-in or installed filter) or 'use' (module:Class)")
            continue
        if "name" in item:
            name = item["name"]
            known = set(BUILTIN) | _installed()
            if not isinstance(name, str) or name not in known:
                issues.add(f"{where}.name", unknown_name("filter", str(name), sorted(known)))
                continue
            out.append({"use": name, "options": options})
            continue
        ref = item["use"]
        if not isinstance(ref, str) or not _IMPORT_REF.match(ref):
            issues.add(f"{where}.use", "must be 'package.module:ClassName'")
            continue
        module = ref.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            issues.add(f"{where}.use", f"module {module!r} is not importable")
            continue
        out.append({"use": ref, "options": options})
    return out

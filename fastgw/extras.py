"""Optional dependencies: which documented config key needs which module, and the pip extra with it.

``pip install fastgw`` (or ``pip install .``) brings what every other key needs. A key listed
here is checked by ``fastgw check`` (and every push) without importing the module, so a config
that needs a missing one is refused up front with the command that installs it, instead of
validating and then failing in the workers.
"""

from __future__ import annotations

import importlib.util

OPTIONAL = {"numpy": ("semantic", "the semantic cache (cache.semantic)")}
"""module -> (extra in pyproject.toml, what needs it)."""


def install_hint(module: str) -> str:
    extra, _ = OPTIONAL[module]
    return f"pip install 'fastgw[{extra}]'"


def missing(module: str) -> bool:
    """Whether ``module`` cannot be imported here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def requirement(module: str) -> str | None:
    """The config error for a key that needs ``module``: None when it is installed."""
    if not missing(module):
        return None
    _, needed_by = OPTIONAL[module]
    return f"{needed_by} needs {module}, which is not installed: {install_hint(module)}"


def describe_failure(exc: BaseException) -> str:
    """``ExcType: message``, naming the extra when an optional module is what is missing."""
    text = f"{type(exc).__name__}: {exc}"
    name = getattr(exc, "name", None)
    if isinstance(exc, ImportError) and name and name.partition(".")[0] in OPTIONAL:
        text += f" ({install_hint(name.partition('.')[0])})"
    return text

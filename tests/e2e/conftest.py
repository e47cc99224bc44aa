"""Every test under tests/e2e starts real processes: mark them ``e2e``, so ``-m "not e2e"`` is the fast set."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before the -m filter deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Hooks in a conftest see every collected item, not only this folder's: keep to ours.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)

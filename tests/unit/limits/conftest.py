"""Both twins of the node's concurrency slot table."""

from __future__ import annotations

import pytest

from fastgw import _speedups


@pytest.fixture(params=["compiled", "pure"])
def slot_table(request: pytest.FixtureRequest) -> type:
    """The compiled table (csrc/slots.pyx), then its pure twin (fastgw/limits/slots.py)."""
    if request.param == "pure":
        return _speedups.SlotTablePy
    if _speedups.SlotTableC is None:
        pytest.fail("csrc/slots.pyx is not built: run `python setup.py build_ext --inplace`")
    return _speedups.SlotTableC

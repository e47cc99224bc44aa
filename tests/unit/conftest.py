"""Unit-test fixtures: both twins of every hot path the connection and the AI handler use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastgw import _speedups


@pytest.fixture(params=["compiled", "pure"])
def twins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the in-process gateway on the Cython hot paths, then on their pure-Python twins."""
    import fastgw.ai.handler
    import fastgw.ai.usage
    import fastgw.server.connection

    if request.param == "compiled":
        if _speedups.RequestParserC is None or _speedups.SSEParserC is None or _speedups.usage_stateC is None:
            pytest.fail("the Cython extensions are not built: run `python setup.py build_ext --inplace`")
        parser, sse, scan = _speedups.RequestParserC, _speedups.SSEParserC, _speedups.usage_stateC
    else:
        parser, sse, scan = _speedups.RequestParserPy, _speedups.SSEParserPy, _speedups.usage_statePy
    monkeypatch.setattr(fastgw.server.connection, "RequestParser", parser)
    monkeypatch.setattr(fastgw.ai.handler, "SSEParser", sse)
    monkeypatch.setattr(fastgw.ai.usage, "usage_state", scan)
    return request.param


@pytest.fixture(autouse=True)
def _own_metrics() -> Iterator[None]:
    """In-process gateways record into this process's metrics registry: each test starts
    and ends with it empty, as a forked worker's is."""
    from fastgw.obs.metrics import GATEWAY

    def clear() -> None:
        for family in GATEWAY.registry._families.values():
            family.values.clear()

    clear()
    yield
    clear()

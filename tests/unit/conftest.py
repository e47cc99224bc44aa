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
        if _speedups.RequestParserC is None or _speedups.SSEParserC is None or _speedups.usage_eventsC is None:
            pytest.fail("the Cython extensions are not built: run `python setup.py build_ext --inplace`")
        twin = "C"
    else:
        twin = "Py"
    pick = {name: getattr(_speedups, name + twin) for name in
            ("RequestParser", "SSEParser", "relay_bytes", "ends_stream", "usage_events", "model_span")}
    monkeypatch.setattr(fastgw.server.connection, "RequestParser", pick["RequestParser"])
    for name in ("SSEParser", "relay_bytes", "ends_stream", "model_span"):
        monkeypatch.setattr(fastgw.ai.handler, name, pick[name])
    for name in ("relay_bytes", "usage_events"):
        monkeypatch.setattr(fastgw.ai.usage, name, pick[name])
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

"""Shared fixtures: real gateway and mock-LLM processes that never outlive their test.

The process helpers live in ``tests/support/gateway.py``; these fixtures only add the cleanup,
so a failing test (or one that never got its process ready) leaves nothing running.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, MockLLMProcess, Proc
from tests.support.redis_server import redis_server  # noqa: F401  (the fixture, for every test module)


def _stop_all(procs: list[Proc]) -> None:
    for proc in procs:
        if hasattr(proc, "proc"):  # Popen got as far as starting it
            proc.stop(signal.SIGKILL)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: ``gateway(config_dict, workers=2, pure=False)`` starts ``fastgw run``, ready.

    ``config_dict`` holds every key but ``listen``/``admin``, which get free ports.
    """
    started: list[Proc] = []

    def start(config: dict | None = None, **kwargs: object) -> Gateway:
        gw = Gateway.__new__(Gateway)
        started.append(gw)  # before __init__: a gateway that never gets ready is still stopped
        gw.__init__(config or {}, tmp_path, **kwargs)  # type: ignore[misc]
        return gw

    yield start
    _stop_all(started)


@pytest.fixture
def mock_llm() -> Iterator[Callable[..., MockLLMProcess]]:
    """Factory: ``mock_llm("--chunks", "3", workers=1)`` starts ``fastgw mock-llm`` on a free port."""
    started: list[Proc] = []

    def start(*extra: str, workers: int = 1) -> MockLLMProcess:
        llm = MockLLMProcess.__new__(MockLLMProcess)
        started.append(llm)
        llm.__init__(*extra, workers=workers)  # type: ignore[misc]
        return llm

    yield start
    _stop_all(started)

"""The compiled slot table and its pure twin agree on every sequence of operations."""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import _speedups
from fastgw.limits.slots import PROBE, SlotTableFull

KEYS = [1, 2, 3, 2 + 64, 1 + 128]  # a few hashes, some probing into the same window
PIDS = [101, 102, 103]

acquire = st.tuples(
    st.just("acquire"),
    st.lists(st.tuples(st.sampled_from(KEYS), st.integers(1, 4)), min_size=1, max_size=3),
    st.sampled_from(PIDS),
    st.one_of(st.none(), st.floats(0, 100)),
)
waiting = st.tuples(
    st.just("set_waiting"), st.sampled_from(KEYS), st.sampled_from(PIDS), st.integers(0, 3), st.floats(0, 100),
    st.one_of(st.none(), st.integers(0, 4)),
)
release = st.tuples(st.just("release"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), st.sampled_from(PIDS))
release_pid = st.tuples(st.just("release_pid"), st.sampled_from(PIDS))


def apply(table, op: tuple):
    try:
        if op[0] == "acquire":
            items, pid, arrival = op[1], op[2], op[3]
            ahead = None if arrival is None else [0] * len(items)
            return table.acquire(items, pid, arrival, ahead)
        if op[0] == "set_waiting":
            return table.set_waiting(*op[1:])
        if op[0] == "release":
            return table.release(op[1], op[2])
        return table.release_pid(op[1])
    except SlotTableFull:
        return "full"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(acquire, waiting, release, release_pid), max_size=60))
def test_compiled_and_pure_tables_agree(ops: list[tuple]) -> None:
    if _speedups.SlotTableC is None:
        pytest.fail("csrc/slots.pyx is not built: run `python setup.py build_ext --inplace`")
    compiled, pure = _speedups.SlotTableC(entries=PROBE * 2), _speedups.SlotTablePy(entries=PROBE * 2)
    try:
        for op in ops:
            assert apply(compiled, op) == apply(pure, op), op
            for h in KEYS:
                assert (compiled.in_flight(h), compiled.waiting(h)) == (pure.in_flight(h), pure.waiting(h)), op
    finally:
        compiled.close()
        pure.close()


def test_a_lock_left_by_a_dead_process_is_taken_over(slot_table: type) -> None:
    """A worker SIGKILLed inside the table's lock does not wedge the node."""
    table = slot_table()
    child = os.fork()
    if child == 0:  # hold the lock, then die holding it
        table._lock()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)
    started = time.monotonic()
    assert table.acquire([(7, 1)], os.getpid())[0]
    assert time.monotonic() - started < 10
    table.close()

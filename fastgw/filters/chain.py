"""A compiled filter chain: the filters of one route or model, sorted, hooks pre-bound.

Compiling keeps, per hook, a tuple of the bound methods of the filters that override it
(``type(f).hook is not Filter.hook``), so a request pays only for hooks that exist; an
empty chain costs two empty-tuple checks. Response hooks and ``on_done`` are reversed.
Running a stage and resuming it after ``Stream.spawn`` live on the Stream, which holds
the cursor.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastgw.filters.api import HOOKS, RESPONSE_HOOKS, Filter


class Chain:
    __slots__ = ("filters", "slots", "needs_body", "needs_openai_events", "sse_runs", *HOOKS)

    def __init__(self, filters: Iterable[Filter]) -> None:
        ordered = sorted(enumerate(filters), key=lambda pair: (pair[1].phase, pair[1].priority, pair[0]))
        self.filters: tuple[Filter, ...] = tuple(f for _, f in ordered)
        # A filter keeps the slot it got first: one filter object may sit in several chains
        # of a generation (the AI chain and each model's chain built on it).
        stateful = [f for f in self.filters if not f.stateless]
        taken = [f.slot for f in stateful if f.slot >= 0]
        if len(set(taken)) != len(taken):
            raise ValueError(f"filters {self.names()} share a state slot: build one filter object per chain")
        next_slot = max(taken, default=-1) + 1
        for f in stateful:
            if f.slot < 0:
                f.slot = next_slot
                next_slot += 1
        self.slots = next_slot
        self.needs_body = any(f.needs_body for f in self.filters)
        self.needs_openai_events = any(f.needs_openai_events for f in self.filters)
        self.sse_runs = all(f.accepts_sse_runs for f in self.filters if type(f).on_sse_events is not Filter.on_sse_events)
        for hook in HOOKS:
            base = getattr(Filter, hook)
            bound = [getattr(f, hook) for f in self.filters if getattr(type(f), hook) is not base]
            if hook in RESPONSE_HOOKS:
                bound.reverse()
            setattr(self, hook, tuple(bound))

    def __len__(self) -> int:
        return len(self.filters)

    def names(self) -> list[str]:
        return [f.name or type(f).__name__ for f in self.filters]


EMPTY = Chain(())

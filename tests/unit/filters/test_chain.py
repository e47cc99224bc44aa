"""The chain itself: compile order, hooks kept only where defined, reverse response order,
per-request state slots, stop/resume through spawn, replies, and on_done exactly once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from fastgw.filters import Chain, Filter, Phase, Status
from fastgw.filters.chain import EMPTY
from fastgw.server.stream import STAGE_HEADERS, STAGE_REQUEST, Stream


class Recorder(Filter):
    def __init__(self, name: str, phase: Phase, log: list, priority: int = 0) -> None:
        super().__init__()
        self.name, self.phase, self.log, self.priority = name, phase, log, priority

    def on_request_headers(self, s):
        self.log.append(("headers", self.name))
        return Status.CONTINUE

    def on_response(self, s, response):
        self.log.append(("response", self.name))
        return Status.CONTINUE

    def on_done(self, s):
        self.log.append(("done", self.name))


class HeadersOnly(Filter):
    def on_request_headers(self, s):
        return Status.CONTINUE


class FakeHandler:
    def __init__(self) -> None:
        self.replies: list[tuple] = []

    def reply_error(self, status, message, code):
        self.replies.append((status, message, code))


def stream(chain: Chain, loop=None) -> Stream:
    conn = SimpleNamespace(loop=loop, peer=b"127.0.0.1")
    s = Stream(conn, None, SimpleNamespace(get=lambda name, default=None: default), chain, 0.0)
    s.handler = FakeHandler()
    return s


def test_compile_sorts_by_phase_then_priority_then_config_order():
    log: list = []
    filters = [Recorder("limit", Phase.LIMIT, log), Recorder("auth", Phase.AUTHN, log),
               Recorder("guard", Phase.POLICY, log), Recorder("waf", Phase.POLICY, log, priority=-1),
               Recorder("transform", Phase.POLICY, log)]
    chain = Chain(filters)
    assert chain.names() == ["auth", "waf", "guard", "transform", "limit"]
    s = stream(chain)
    done = []
    s.run(STAGE_HEADERS, lambda: done.append(True))
    assert done == [True]
    assert [n for kind, n in log if kind == "headers"] == ["auth", "waf", "guard", "transform", "limit"]
    s.response_filters({})
    assert [n for kind, n in log if kind == "response"] == ["limit", "transform", "guard", "waf", "auth"]


def test_only_defined_hooks_are_kept_and_an_empty_chain_has_none():
    chain = Chain([HeadersOnly()])
    assert len(chain.on_request_headers) == 1
    assert chain.on_request == chain.on_response == chain.on_sse_events == chain.on_done == ()
    for hook in ("on_request_headers", "on_request_body", "on_request", "on_response_headers", "on_response",
                 "on_sse_events", "on_done"):
        assert getattr(EMPTY, hook) == ()


def test_on_done_runs_exactly_once_in_reverse_order():
    log: list = []
    s = stream(Chain([Recorder("a", Phase.AUTHN, log), Recorder("b", Phase.LIMIT, log)]))
    s.done()
    s.done()
    assert [n for kind, n in log if kind == "done"] == ["b", "a"]
    assert s.finished


def test_a_reply_skips_the_rest_of_the_chain_and_the_handler():
    class Deny(Filter):
        phase = Phase.AUTHN

        def on_request_headers(self, s):
            return s.reply(401, "no", "missing_api_key", headers=b"WWW-Authenticate: Bearer\r\n")

    log: list = []
    s = stream(Chain([Deny(), Recorder("later", Phase.POLICY, log)]))
    started = []
    s.run(STAGE_HEADERS, lambda: started.append(True))
    assert started == [] and log == []
    assert s.handler.replies == [(401, "no", "missing_api_key")]
    assert s.response_headers == b"WWW-Authenticate: Bearer\r\n"


def test_a_failing_filter_answers_500_and_names_itself():
    class Broken(Filter):
        name = "broken"

        def on_request(self, s, request):
            raise RuntimeError("boom")

    s = stream(Chain([Broken()]))
    s.request = {}
    s.run(STAGE_REQUEST, lambda: pytest.fail("the handler must not run"))
    assert s.handler.replies == [(500, "filter 'broken' failed", "filter_error")]


def test_spawn_pauses_and_resumes_at_the_next_filter_with_state_in_slots():
    class Lookup(Filter):
        phase = Phase.CACHE

        def on_request(self, s, request):
            async def fetch():
                await asyncio.sleep(0)
                return 42

            return s.spawn(fetch(), lambda value: self.found(s, value))

        def found(self, s, value):
            s.vars[self.slot] = value
            return Status.CONTINUE

    class After(Filter):
        phase = Phase.LIMIT

        def on_request(self, s, request):
            s.vars[self.slot] = "after"
            return Status.CONTINUE

    lookup, after = Lookup(), After()
    chain = Chain([after, lookup])
    assert (lookup.slot, after.slot) != (-1, -1) and lookup.slot != after.slot

    async def run() -> list:
        s = stream(chain, asyncio.get_running_loop())
        s.request = {}
        calls = []
        s.run(STAGE_REQUEST, lambda: calls.append(list(s.vars)))
        assert calls == []  # paused
        await asyncio.sleep(0.01)
        return calls

    calls = asyncio.run(run())
    assert len(calls) == 1
    assert calls[0][lookup.slot] == 42 and calls[0][after.slot] == "after"


def test_spawned_work_finishing_after_the_client_left_still_reaches_the_filter():
    released = []

    class Reserve(Filter):
        def on_request(self, s, request):
            async def reserve():
                await asyncio.sleep(0)
                return "reservation"

            return s.spawn(reserve(), lambda r: released.append((r, s.finished)) or Status.CONTINUE)

    async def run() -> None:
        s = stream(Chain([Reserve()]), asyncio.get_running_loop())
        s.request = {}
        s.run(STAGE_REQUEST, lambda: pytest.fail("a finished request must not reach the handler"))
        s.done()  # the client went away
        await asyncio.sleep(0.01)

    asyncio.run(run())
    assert released == [("reservation", True)]


def test_a_filter_object_in_two_chains_keeps_one_slot_and_clashes_are_refused():
    shared = HeadersOnly()
    Chain([shared])
    other = HeadersOnly()
    bigger = Chain([shared, other])
    assert shared.slot != other.slot and bigger.slots == 2
    a, b = HeadersOnly(), HeadersOnly()
    Chain([a])
    Chain([b])  # both got slot 0 in their own chains
    with pytest.raises(ValueError, match="share a state slot"):
        Chain([a, b])


def test_config_refuses_built_ins_a_model_cannot_run():
    from fastgw.config import ConfigError, load_text

    with pytest.raises(ConfigError) as err:
        load_text("providers: [{name: m, type: mock}]\nmodels: [{name: x, targets: [{provider: m}], filters: [auth, ratelimit]}]\n")
    assert "models[0].filters[0]: 'auth' runs before the model is known" in str(err.value)
    assert "models[0].filters[1]: 'ratelimit' every AI request is limited already" in str(err.value)

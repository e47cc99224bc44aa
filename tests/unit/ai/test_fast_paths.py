"""The AI hot path's byte-level shortcuts, property-tested against the full parse on
re-serialised input (whitespace, key order, escapes, nested look-alikes, chunk boundaries):

* the client's body relayed with only the model name and stream_options edited;
* the usage chunk found in a raw relay by the Cython scanner (and its pure twin);
* the relay's per-read helpers (relay_bytes, ends_stream), twin against twin.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw import _speedups
from fastgw.ai import handler as handler_module
from fastgw.ai import usage as usage_module
from fastgw.ai.handler import spliced_body
from fastgw.ai.usage import UsageMeter

TWINS = ["C", "Py"]
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
tricky = st.sampled_from(['model', '"model": "x"', 'usage', '"usage": {', '\\', '"', '\u00e9', '\U0001f600', ''])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), text, tricky)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(text, tricky), inner, max_size=3)), max_leaves=8)


def serialise(obj: object, style: int, rng: random.Random) -> bytes:
    if style == 0:
        out = json.dumps(obj)
    elif style == 1:
        out = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    elif style == 2:
        out = json.dumps(obj, indent=2, sort_keys=True)
    elif style == 3:
        out = json.dumps(obj, ensure_ascii=False, sort_keys=True)
    else:  # random whitespace between tokens
        out = json.dumps(obj, separators=(" ,\n ", " :\t"), ensure_ascii=bool(rng.getrandbits(1)))
        out = "\r\n " + out + " \n"
    return out.encode()


@pytest.fixture(params=TWINS)
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "C" and _speedups.model_spanC is None:
        pytest.fail("the Cython extensions are not built")
    monkeypatch.setattr(handler_module, "model_span", getattr(_speedups, "model_span" + request.param))
    monkeypatch.setattr(usage_module, "usage_events", getattr(_speedups, "usage_events" + request.param))
    monkeypatch.setattr(usage_module, "relay_bytes", getattr(_speedups, "relay_bytes" + request.param))
    return request.param


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.dictionaries(st.one_of(text, tricky).filter(lambda k: k not in ("model", "stream_options")),
                             values, max_size=4),
       model=st.one_of(text.filter(bool), tricky.filter(bool)), target=st.one_of(text.filter(bool), tricky.filter(bool)),
       options=st.sampled_from([None, {"include_usage": True}, {"include_usage": False}, {}, "bad"]),
       ask_usage=st.booleans(), style=st.integers(0, 4), seed=st.integers(0, 2**32),
       model_first=st.booleans())
def test_spliced_body_says_what_a_re_encode_would(twin, extra, model, target, options, ask_usage, style, seed,
                                                  model_first):
    rng = random.Random(seed)
    request = {"model": model, **extra} if model_first else {**extra, "model": model}
    request["messages"] = [{"role": "user", "content": "say \"model\": no", "model": "nested"}]
    if options is not None:
        request["stream_options"] = options
    raw = serialise(request, style, rng)
    decoded = json.loads(raw)
    out = spliced_body(raw, decoded, target, ask_usage)
    expected = dict(decoded, model=target)
    if ask_usage:
        expected["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    if out is None:
        # Only where the client's stream_options need rewriting, or a top-level key is written
        # with an escape (the scanner proves nothing about such a key: it could spell "model").
        # (json's ASCII style escapes DEL and everything above it, its other styles only controls)
        escaped_key = any(json.dumps(k)[1:-1] != k for k in decoded)
        assert (ask_usage and options is not None and options != {"include_usage": True}) or escaped_key
        return
    assert json.loads(out) == expected


def test_spliced_body_touches_only_the_top_level_model():
    raw = b'{"messages":[{"role":"user","content":"\\"model\\":\\"gpt-4o\\""}],"tools":[{"model":"gpt-4o"}],"model":"gpt-4o"}'
    out = spliced_body(raw, json.loads(raw), "gpt-4o-mini-2024-07-18", False)
    assert out == raw[: -len(b'"gpt-4o"}')] + b'"gpt-4o-mini-2024-07-18"}'  # the last (top-level) one only
    assert json.loads(out)["tools"] == [{"model": "gpt-4o"}]


def test_model_twins_agree_on_garbage():
    rng = random.Random(7)
    for _ in range(2000):
        raw = bytes(rng.choice(b'{}[]":,model \\u0065ab01') for _ in range(rng.randint(0, 30)))
        assert _speedups.model_spanC(raw) == _speedups.model_spanPy(raw)


# -- the usage chunk in a raw relay ----------------------------------------------------------------


def chunk(i: int, content: str, usage_null: bool) -> dict:
    out = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    if usage_null:
        out["usage"] = None
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.one_of(text, tricky), min_size=1, max_size=8), usage_null=st.booleans(),
       placement=st.sampled_from(["own-chunk", "last-content", "none"]), style=st.integers(0, 4),
       wants=st.booleans(), seed=st.integers(0, 2**32), runs=st.booleans())
def test_raw_relay_meters_what_a_full_parse_finds(twin, contents, usage_null, placement, style, wants, seed, runs):
    """Framed event by event, or with feed_relay (plain events kept as runs of bytes): the same."""
    rng = random.Random(seed)
    usage = {"prompt_tokens": rng.randint(1, 999), "completion_tokens": rng.randint(1, 999)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    chunks = [chunk(i, c, usage_null) for i, c in enumerate(contents)]
    if placement == "last-content":
        chunks[-1]["usage"] = usage
    elif placement == "own-chunk":
        chunks.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                       "usage": usage})
    stream = b"".join(b"data: " + serialise(c, style, rng).replace(b"\n", b" ").replace(b"\r", b" ") + b"\n\n"
                      for c in chunks) + b"data: [DONE]\n\n"
    parser = getattr(_speedups, "SSEParser" + twin)()
    meter = UsageMeter(wants)
    relayed = b""
    cuts = sorted(rng.sample(range(1, len(stream)), k=min(5, len(stream) - 1)))
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events = parser.feed_relay(stream[a:b]) if runs else parser.feed(stream[a:b])
        meter.relay(events)
        relayed += getattr(_speedups, "relay_bytes" + twin)(events)
    assert meter.usage == (usage if placement != "none" else None)
    dropped = placement == "own-chunk" and not wants
    relayed_chunks = [json.loads(e[5:]) for e in relayed.split(b"\n\n") if e[5:].strip().startswith(b"{")]
    assert len(relayed_chunks) == len(chunks) - dropped
    assert meter.result("gpt-4o", {"messages": [{"role": "user", "content": "x"}]})["estimated"] == (placement == "none")


@settings(max_examples=100, deadline=None)
@given(stream=st.lists(st.tuples(st.sampled_from([None, "message_stop", "ping"]),
                                 st.sampled_from(["[DONE]", "{}", "x", "", '{"usage":null}', '{"usage" :\tnull,"a":"usage"}',
                                                  '{"usage":{"a":1}}', '{"a":"\\u0075sage"}', '{"x":{"usage":{}}}',
                                                  '{"usage": nul}', '{"my_usage":null}', 'usage":null'])), max_size=6))
def test_relay_helpers_twins_agree(stream):
    raw = b"".join((f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode() for name, data in stream)
    results = []
    for twin in TWINS:
        events = getattr(_speedups, "SSEParser" + twin)().feed(raw)
        mixed = [*events, b"extra"]
        results.append((getattr(_speedups, "relay_bytes" + twin)(mixed), getattr(_speedups, "ends_stream" + twin)(events),
                        getattr(_speedups, "usage_events" + twin)(events),
                        getattr(_speedups, "relay_bytes" + twin)([*events, {"a": 1}])))
    assert results[0] == results[1]
    assert results[0][0] == raw + b"extra" and results[0][3] is None
    events = _speedups.SSEParserPy().feed(raw)
    for index in range(len(events)):  # every event that holds a usage object is among those found
        try:
            value = json.loads(events[index].data)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("usage"), dict):
            assert index in results[0][2]

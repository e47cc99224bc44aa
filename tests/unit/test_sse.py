"""Tests for the SSE framer twins (fastgw.sse and fastgw._c.sse).

Every test runs against both twins. The compiled one is imported inside the fixture, so a
missing build fails those tests instead of skipping them. Property tests check that the
outcome does not depend on how the stream is split, that the twins agree on valid streams
and on garbage, that ``raw`` gives back the stream byte for byte, and that
``serialize_event`` output parses back to what was serialized.
"""

from __future__ import annotations

import importlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw import sse as py_sse
from fastgw.sse import SSEError

TWINS = ["py", "c"]


def _module(name: str):
    if name == "py":
        return py_sse
    return importlib.import_module("fastgw._c.sse")  # ImportError fails the test: CI builds it


@pytest.fixture(params=TWINS)
def mod(request):
    return _module(request.param)


def ev(e) -> tuple:
    return (e.event, e.data, e.id, e.retry, e.raw)


def run(mod, chunks, max_event_size: int = 1 << 20) -> dict:
    """Feed ``chunks`` then finish; record events per call, the error, pending and comments."""
    p = mod.SSEParser(max_event_size)
    calls: list[list[tuple]] = []
    error = None
    try:
        for chunk in chunks:
            calls.append([ev(e) for e in p.feed(chunk)])
        calls.append([ev(e) for e in p.finish()])
    except SSEError as e:
        calls.append([ev(x) for x in e.events])
        error = str(e)
    return {
        "calls": calls,
        "events": [e for call in calls for e in call],
        "error": error,
        "pending": p.pending,
        "comments": p.comments,
    }


def events(mod, data: bytes, **kw) -> list[tuple]:
    out = run(mod, [data], **kw)
    assert out["error"] is None
    return out["events"]


def data_of(mod, data: bytes) -> list[str]:
    return [e[1] for e in events(mod, data)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


# -- line endings ------------------------------------------------------------------------------


def test_lf(mod):
    assert events(mod, b"data: hello\n\n") == [(None, "hello", None, None, b"data: hello\n\n")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(mod, eol):
    stream = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    first = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol
    assert events(mod, stream) == [("e", "a\nb", None, None, first),
                                   (None, "c", None, None, b"data: c" + eol + eol)]


def test_mixed_line_endings(mod):
    assert data_of(mod, b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r") == ["a\nb\nc", "d"]


def test_crlf_split_across_feeds_is_one_line_end(mod):
    p = mod.SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n\r") == []  # the final CR may still be the start of a CRLF
    assert p.pending == len(b"data: a\r\n\r")
    (e,) = p.feed(b"\n")
    assert (e.data, e.raw) == ("a", b"data: a\r\n\r\n")
    assert p.feed(b"\r\n") == []  # a blank line on its own: nothing to dispatch
    assert p.pending == 0


def test_cr_then_other_byte_in_next_feed(mod):
    p = mod.SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"data: b\r\r") == []
    (e,) = p.finish()  # the last CR ends the block: the event was complete, so it is dispatched
    assert (e.data, e.raw) == ("a\nb", b"data: a\rdata: b\r\r")
    assert p.pending == 0


def test_cr_held_is_dispatched_by_next_byte(mod):
    p = mod.SSEParser()
    assert p.feed(b"data: a\r\r") == []
    (e,) = p.feed(b"d")
    assert e.raw == b"data: a\r\r"
    assert p.pending == 1


# -- fields ------------------------------------------------------------------------------------


def test_multiline_data_and_space_rules(mod):
    stream = b"data: a\ndata:b\ndata:  c\ndata\ndata:\t d\ndata: e:f\n\n"
    assert data_of(mod, stream) == ["a\nb\n c\n\n\t d\ne:f"]


def test_empty_data_field_dispatches(mod):
    assert data_of(mod, b"data\n\n") == [""]
    assert data_of(mod, b"data:\n\n") == [""]
    assert data_of(mod, b"data: \n\n") == [""]
    assert data_of(mod, b"data\ndata\n\n") == ["\n"]


def test_event_id_retry(mod):
    stream = b"event: delta\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\n"
    assert [e[:4] for e in events(mod, stream)] == [("delta", "x", "7", 1500), (None, "y", "7", None)]


def test_last_field_wins(mod):
    stream = b"event: a\nevent: b\nid: 1\nid: 2\nretry: 1\nretry: 2\ndata: x\n\n"
    assert [e[:4] for e in events(mod, stream)] == [("b", "x", "2", 2)]


def test_id_persists_resets_and_ignores_nul(mod):
    stream = (b"id: 1\ndata: a\n\n"
              b"id: 2\x003\ndata: b\n\n"  # NUL: ignored, the last id stays
              b"id\ndata: c\n\n"  # no colon: empty value resets it
              b"id: \xff\ndata: d\n\n")
    assert [e[2] for e in events(mod, stream)] == ["1", "1", "", "\ufffd"]


@pytest.mark.parametrize("value", [b"", b"15a", b"-1", b" 15", b"1.5", b"\xd9\xa1", b"1" * 19])
def test_invalid_retry_is_ignored(mod, value):
    assert events(mod, b"retry: " + value + b"\ndata: x\n\n")[0][3] is None


def test_retry_limits(mod):
    assert events(mod, b"retry: 0\ndata: x\n\n")[0][3] == 0
    assert events(mod, b"retry:" + b"9" * 18 + b"\ndata: x\n\n")[0][3] == 10**18 - 1


def test_no_colon_and_unknown_fields(mod):
    stream = b"event\nfoo: bar\nDATA: no\nData: no\ndata : no\nbar\ndata: x\n\n"
    assert [e[:2] for e in events(mod, stream)] == [("", "x")]


def test_comments(mod):
    p = mod.SSEParser()
    assert p.feed(b": ping\n\n") == []
    assert p.feed(b":\n") == []
    assert p.comments == 2
    (e,) = p.feed(b"data: x\n: inside\n\n")
    assert (e.data, e.raw) == ("x", b": ping\n\n:\ndata: x\n: inside\n\n")
    assert p.comments == 3
    assert p.pending == 0


def test_comment_counted_when_line_completes(mod):
    p = mod.SSEParser()
    p.feed(b": keep")
    assert p.comments == 0
    p.feed(b"-alive\n")
    assert p.comments == 1


def test_block_without_data_is_carried_into_next_raw(mod):
    stream = b"event: a\nid: 1\nretry: 9\n\n: c\n\nevent: b\ndata: x\n\n"
    assert events(mod, stream) == [("b", "x", "1", 9, stream)]


def test_data_less_block_event_is_dropped(mod):
    assert events(mod, b"event: a\n\ndata: x\n\n")[0][0] is None


def test_done(mod):
    (e,) = mod.SSEParser().feed(b"data: [DONE]\n\n")
    assert e.is_done
    (e,) = mod.SSEParser().feed(b"data: [DONE] \n\n")
    assert not e.is_done


# -- BOM and decoding --------------------------------------------------------------------------


def test_bom_skipped_and_kept_in_raw(mod):
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert events(mod, stream) == [(None, "x", None, None, stream)]
    assert run(mod, bytewise(stream))["events"] == [(None, "x", None, None, stream)]


def test_bom_only_at_stream_start(mod):
    assert data_of(mod, b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == ["a"]
    assert data_of(mod, b"\xef\xbb\xbf\xef\xbb\xbfdata: b\n\n") == []


def test_partial_bom_is_ordinary_bytes(mod):
    assert data_of(mod, b"\xef\xbbdata: x\n\n") == []
    assert run(mod, [b"\xef", b"\xbb"]) == {"calls": [[], [], []], "events": [], "error": None,
                                            "pending": 2, "comments": 0}


def test_utf8_split_across_feeds_and_invalid_bytes(mod):
    stream = "data: héllo → 世界\n\n".encode()
    assert run(mod, bytewise(stream))["events"][0][1] == "héllo → 世界"
    assert data_of(mod, b"data: a\xffb\xe2\x82\n\n") == ["a\ufffdb\ufffd"]


# -- input types, finish, limits ---------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_input_types(mod, kind):
    p = mod.SSEParser()
    buf = bytearray(b"data: a\n\ndata: b")
    (e,) = p.feed(kind(buf))
    buf[:] = b"X" * len(buf)  # the parser must not keep a view of the caller's memory
    (e2,) = p.feed(kind(bytearray(b"\n\n")))
    assert (e.raw, e2.raw, e2.data) == (b"data: a\n\n", b"data: b\n\n", "b")
    assert type(e.raw) is bytes


def test_finish_reports_truncated_block(mod):
    p = mod.SSEParser()
    assert [e.data for e in p.feed(b"data: a\n\ndata: b\n")] == ["a"]
    assert p.pending == 8
    assert p.finish() == []
    assert p.pending == 8
    assert p.finish() == []
    with pytest.raises(SSEError, match="after finish"):
        p.feed(b"\n")


def test_finish_clean_stream(mod):
    p = mod.SSEParser()
    p.feed(b"data: a\n\n: bye\n\n")
    assert p.finish() == []
    assert p.pending == 0  # a complete data-less block is not a truncation


def test_max_event_size(mod):
    assert events(mod, b"data: 12345678\n\n", max_event_size=16)[0][1] == "12345678"
    out = run(mod, [b"data: a\n\ndata: 123456789\n\ndata: b\n\n"], max_event_size=16)
    assert out["events"] == [(None, "a", None, None, b"data: a\n\n")]
    assert out["error"] == "SSE event exceeds max_event_size (16 bytes)"
    assert out["pending"] == 0


def test_max_event_size_incomplete_block_and_dead_parser(mod):
    p = mod.SSEParser(10)
    with pytest.raises(SSEError) as info:
        p.feed(b"data: 1\n\n: abcdefghijk")
    assert [e.data for e in info.value.events] == ["1"]
    assert isinstance(info.value, ValueError)
    for call in (lambda: p.feed(b"\n\n"), p.finish):
        with pytest.raises(SSEError, match="max_event_size") as again:
            call()
        assert again.value.events == []


def test_max_event_size_counts_carried_blocks(mod):
    out = run(mod, [b": ping\n\n"] * 3, max_event_size=20)
    assert out["error"] == "SSE event exceeds max_event_size (20 bytes)"
    assert run(mod, [b": ping\n\n"] * 2 + [b"data\n\n"], max_event_size=22)["error"] is None


def test_shared_error_class(mod):
    assert mod.SSEError is SSEError


def test_event_object(mod):
    e = mod.SSEEvent("[DONE]", event="x", id="1", retry=5, raw=b"r")
    assert (e.event, e.data, e.id, e.retry, e.raw, e.is_done) == ("x", "[DONE]", "1", 5, b"r", True)
    assert mod.SSEEvent("x").event is None
    assert "[DONE]" in repr(e)


# -- serialize_event ---------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "event", "expected"), [
    ("hi", None, b"data: hi\n\n"),
    ("", None, b"data: \n\n"),
    ("a\nb", "delta", b"event: delta\ndata: a\ndata: b\n\n"),
    ("a\r\nb\rc\n", None, b"data: a\ndata: b\ndata: c\ndata: \n\n"),
    ("\r\n\r\n", "", b"event: \ndata: \ndata: \ndata: \n\n"),
    (" lead", None, b"data:  lead\n\n"),
    ("é→世", "ü", "event: ü\ndata: é→世\n\n".encode()),
    (b"raw\nbytes", None, b"data: raw\ndata: bytes\n\n"),
    (bytearray(b"x"), None, b"data: x\n\n"),
])
def test_serialize_event(mod, data, event, expected):
    assert mod.serialize_event(data, event) == expected


@pytest.mark.parametrize("event", ["a\nb", "a\r"])
def test_serialize_event_rejects_line_break_in_name(mod, event):
    with pytest.raises(ValueError, match="line break"):
        mod.serialize_event("x", event)


# -- recorded-shape provider streams -----------------------------------------------------------

OPENAI = b"".join(
    b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    for chunk in [
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1731000000, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        *({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1731000000, "model": "gpt-4o-mini",
           "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
          for word in ["Hello", "!", " How", " can", " I", " help", "?"]),
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1731000000, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1731000000, "model": "gpt-4o-mini",
         "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}},
    ]
) + b"data: [DONE]\n\n"

ANTHROPIC = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-3-5-haiku-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}

"""

GEMINI = b"".join(
    b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
    for chunk in [
        {"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}, "modelVersion": "gemini-1.5-flash"},
        {"candidates": [{"content": {"parts": [{"text": " world"}], "role": "model"}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}, "modelVersion": "gemini-1.5-flash"},
        {"candidates": [{"content": {"parts": [{"text": "!"}], "role": "model"}, "finishReason": "STOP",
                         "index": 0}],
         "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8},
         "modelVersion": "gemini-1.5-flash"},
    ]
)


@pytest.mark.parametrize("split", ["whole", "bytewise", "by7"])
def test_openai_stream(mod, split):
    chunks = {"whole": [OPENAI], "bytewise": bytewise(OPENAI),
              "by7": [OPENAI[i:i + 7] for i in range(0, len(OPENAI), 7)]}[split]
    out = run(mod, chunks)
    evs = out["events"]
    assert len(evs) == 11 and out["pending"] == 0 and out["error"] is None
    assert evs[-1][1] == "[DONE]"
    text = "".join(c["delta"].get("content", "") for e in evs[:-1] for c in json.loads(e[1])["choices"])
    assert text == "Hello! How can I help?"
    assert json.loads(evs[-2][1])["usage"]["total_tokens"] == 16
    assert b"".join(e[4] for e in evs) == OPENAI


def test_anthropic_stream(mod):
    evs = events(mod, ANTHROPIC)
    assert [e[0] for e in evs] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert all(json.loads(e[1])["type"] == e[0] for e in evs)
    assert json.loads(evs[6][1])["usage"]["output_tokens"] == 6
    assert run(mod, bytewise(ANTHROPIC))["events"] == evs
    assert b"".join(e[4] for e in evs) == ANTHROPIC


def test_gemini_stream(mod):
    evs = events(mod, GEMINI)
    assert [json.loads(e[1])["candidates"][0]["content"]["parts"][0]["text"] for e in evs] == [
        "Hello", " world", "!"]
    assert json.loads(evs[-1][1])["usageMetadata"]["totalTokenCount"] == 8
    assert run(mod, bytewise(GEMINI))["events"] == evs
    assert all(e[4].endswith(b"\r\n\r\n") for e in evs)


# -- properties --------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
_value = _text.map(str.encode) | st.binary(max_size=6).filter(lambda b: b"\r" not in b and b"\n" not in b)
_field_line = st.one_of(
    st.tuples(st.sampled_from([b"data", b"event", b"id", b"retry", b"other", b""]),
              st.sampled_from([b":", b": ", b":  "]), _value).map(b"".join),
    st.sampled_from([b"data", b"event", b"id", b"retry: 100", b"retry: 1x", b"id: a\x00b"]),
    _value.map(lambda v: b":" + v),  # comment
)
_data_line = st.tuples(st.sampled_from([b"data:", b"data: ", b"data"]), _value).map(
    lambda t: t[0] + t[1] if t[0] != b"data" else t[0])
_EOLS = [b"\n", b"\r\n", b"\r"]


@st.composite
def sse_streams(draw, mixed: bool = True, all_data: bool = False) -> bytes:
    """Random valid streams: blocks of field lines; one line ending per stream unless ``mixed``."""
    fixed = draw(st.sampled_from(_EOLS))
    out = [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 6))):
        lines = draw(st.lists(_field_line, max_size=4))
        if all_data or draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), draw(_data_line))
        for line in lines + [b""]:
            out.append(line + (draw(st.sampled_from(_EOLS)) if mixed else fixed))
    if draw(st.booleans()):  # a truncated last block
        out.append(draw(_data_line))
    return b"".join(out)


_garbage = st.binary(max_size=120) | st.lists(
    st.sampled_from([b"data", b"event", b"id", b"retry", b":", b" ", b"\r", b"\n", b"\xef\xbb\xbf", b"\xef",
                     b"\x00", b"x", b"\xff", b"7", b"[DONE]"]), max_size=60).map(b"".join)
_sizes = st.just(1 << 20) | st.integers(1, 80)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def outcome(out: dict) -> tuple:
    """What must not depend on the split: events (raw included), error, pending; comments unless failed."""
    return out["events"], out["error"], out["pending"], out["comments"] if out["error"] is None else None


@PROPERTY
@given(stream=sse_streams() | _garbage, cuts=st.lists(st.integers(0, 10_000), max_size=8), size=_sizes,
       twin=st.sampled_from(TWINS))
def test_split_invariance(stream, cuts, size, twin):
    mod = _module(twin)
    whole = outcome(run(mod, [stream], size))
    assert outcome(run(mod, split(stream, cuts), size)) == whole
    assert outcome(run(mod, bytewise(stream), size)) == whole


@PROPERTY
@given(stream=sse_streams() | _garbage, cuts=st.lists(st.integers(0, 10_000), max_size=8), size=_sizes)
def test_twins_agree(stream, cuts, size):
    chunks = split(stream, cuts)
    assert run(_module("c"), chunks, size) == run(py_sse, chunks, size)


@PROPERTY
@given(stream=sse_streams(mixed=False, all_data=True), cuts=st.lists(st.integers(0, 10_000), max_size=8),
       twin=st.sampled_from(TWINS))
def test_raw_reproduces_stream(stream, cuts, twin):
    out = run(_module(twin), split(stream, cuts))
    joined = b"".join(e[4] for e in out["events"])
    assert joined + stream[len(joined):] == stream
    assert len(stream) - len(joined) == out["pending"]


@PROPERTY
@given(stream=sse_streams() | _garbage, twin=st.sampled_from(TWINS))
def test_raw_is_prefix_of_stream(stream, twin):
    out = run(_module(twin), [stream])
    joined = b"".join(e[4] for e in out["events"])
    assert stream.startswith(joined)
    assert out["pending"] <= len(stream) - len(joined)


@PROPERTY
@given(stream=sse_streams() | _garbage, twin=st.sampled_from(TWINS))
def test_max_event_size_is_exact(stream, twin):
    """The limit applies to every raw and to the undispatched tail, to the byte."""
    mod = _module(twin)
    raws = [e[4] for e in run(mod, [stream])["events"]]
    largest = max([len(stream) - len(b"".join(raws)), *map(len, raws)])
    assert run(mod, [stream], max(largest, 1))["error"] is None
    if largest > 1:
        assert run(mod, [stream], largest - 1)["error"] is not None


@PROPERTY
@given(data=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
       event=st.none() | _text, as_bytes=st.booleans())
def test_serialize_roundtrip(data, event, as_bytes):
    payload = data.encode() if as_bytes else data
    framed = py_sse.serialize_event(payload, event)
    assert _module("c").serialize_event(payload, event) == framed
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    for twin in TWINS:
        p = _module(twin).SSEParser()
        (e,) = p.feed(framed)
        assert (e.event, e.data, e.raw, p.pending) == (event, expected, framed, 0)


@pytest.mark.parametrize("cut_every", [1, 7, 64, 100000])
def test_feed_relay_twins_agree_and_keep_every_byte(cut_every):
    """Runs of plain events come back as bytes, the rest as events, in order, on both twins;
    joined, they are exactly the stream's complete events."""
    import random

    from fastgw import _speedups

    rng = random.Random(cut_every)
    pieces = [b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',
              b'data: {"choices":[],"usage":{"total_tokens":3}}\r\n\r\n', b"event: ping\ndata: {}\n\n",
              b": keep-alive\n", b"data: a\ndata: b\n\n", b"retry: 5\ndata: x\n\n", b"data: [DONE]\n\n",
              b'data: {"k":"\\u0075sage"}\r\r']
    stream = b"".join(rng.choice(pieces) for _ in range(200))
    results = []
    for parser in (_speedups.SSEParserC(), _speedups.SSEParserPy()):
        items = []
        for i in range(0, len(stream), cut_every):
            items.extend(parser.feed_relay(stream[i:i + cut_every]))
        results.append([item if type(item) is bytes else (item.data, item.event, item.raw) for item in items])
        assert b"".join(i if type(i) is bytes else i[2] for i in results[-1]) == stream[: len(stream) - parser.pending]
        flagged = [i for i in results[-1] if type(i) is not bytes]
        assert all(i[1] is not None or "usage" in i[0] and "null" not in i[0] or i[0] in ("[DONE]", "a\nb", "x")
                   or "\\u" in i[0] for i in flagged)
    assert results[0] == results[1]

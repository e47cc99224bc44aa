"""Tests for the JSON top-level-key scanner twins (fastgw.jsonscan and fastgw._c.jsonscan).

Every test runs against both twins. The compiled one is imported inside the fixture, so a
missing build fails those tests instead of skipping them. The reference is Python's json:
random objects (nested containers, keys named "usage" at every depth, the text "usage",
quotes, backslashes and non-ASCII in strings, usage and choices values of every type) are
serialised every way json.dumps can and by a writer of our own (random whitespace around
every token, random escapes, duplicate keys, other number forms). For each text a proven
answer must be exactly what json.loads gives, and an unproven one must come only from a
top-level key written with an escape. Garbage (random bytes, broken and truncated JSON)
must never raise, and any claim on it must be true of strict JSON. The twins must agree on
every input, whatever its type.
"""

from __future__ import annotations

import importlib
import json
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw import _speedups
from fastgw import jsonscan as py_scan
from fastgw.jsonscan import CHOICES_EMPTY, MAX_DEPTH, SCAN_UNKNOWN, USAGE_NONE, USAGE_OBJECT, USAGE_UNKNOWN

TWINS = ["py", "c"]


def _module(name: str):
    if name == "py":
        return py_scan
    return importlib.import_module("fastgw._c.jsonscan")  # ImportError fails the test: CI builds it


@pytest.fixture(params=TWINS)
def mod(request):
    return _module(request.param)


_INVALID = object()


def _reject(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: bytes):
    """json's reading of ``text`` as the gateway reads event data, held to strict JSON.

    Decoded with errors="replace" like SSE data; NaN and Infinity rejected (Python's
    extension); ints kept as float so a 5000-digit number is not refused by int(). Returns
    _INVALID when the text is not JSON.
    """
    try:
        return json.loads(text.decode("utf-8", "replace"), parse_constant=_reject, parse_int=float)
    except (ValueError, RecursionError):
        return _INVALID


def check(flags: int, text: bytes, obj) -> None:
    """A proven answer is exactly what the decoded object says; UNKNOWN comes alone."""
    assert flags in (0, USAGE_OBJECT, CHOICES_EMPTY, USAGE_OBJECT | CHOICES_EMPTY, SCAN_UNKNOWN), flags
    if flags == SCAN_UNKNOWN:
        return
    assert isinstance(obj, dict), (text, flags)
    assert bool(flags & USAGE_OBJECT) == isinstance(obj.get("usage"), dict), (text, flags)
    assert bool(flags & CHOICES_EMPTY) == (obj.get("choices") == []), (text, flags)


# -- real-world chunks -------------------------------------------------------------------------

OPENAI_CONTENT = (b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
                  b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}')
OPENAI_USAGE = (b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
                b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}')
DEEPSEEK_LAST = (
    b'{"id":"0f3c7e5a","object":"chat.completion.chunk","created":1738000000,"model":"deepseek-chat",'
    b'"system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[{"index":0,"delta":{"content":""},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":24,'
    b'"total_tokens":35,"prompt_tokens_details":{"cached_tokens":0},"prompt_cache_hit_tokens":0,'
    b'"prompt_cache_miss_tokens":11}}'
)
VLLM_LAST = (
    b'{"id":"chatcmpl-9b2","object":"chat.completion.chunk","created":1738000000,'
    b'"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"."},'
    b'"logprobs":null,"finish_reason":"stop","stop_reason":null}],'
    b'"usage":{"prompt_tokens":20,"total_tokens":27,"completion_tokens":7}}'
)
AZURE_SORTED = (b'{"choices":[],"created":1733470000,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06",'
                b'"object":"chat.completion.chunk","usage":{"completion_tokens":1,"prompt_tokens":9,"total_tokens":10}}')
ANTHROPIC_START = (b'{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant",'
                   b'"content":[],"model":"claude-3-5-haiku-latest","stop_reason":null,"stop_sequence":null,'
                   b'"usage":{"input_tokens":12,"output_tokens":1}}}')
ANTHROPIC_DELTA = (b'{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
                   b'"usage":{"output_tokens":6}}')


@pytest.mark.parametrize(("text", "expected"), [
    (OPENAI_CONTENT, USAGE_NONE),
    (OPENAI_USAGE, USAGE_OBJECT | CHOICES_EMPTY),
    (json.dumps(json.loads(OPENAI_CONTENT)).encode(), USAGE_NONE),  # ", " and ": "
    (json.dumps(json.loads(OPENAI_USAGE)).encode(), USAGE_OBJECT | CHOICES_EMPTY),
    (json.dumps(json.loads(OPENAI_USAGE), indent=2).encode(), USAGE_OBJECT | CHOICES_EMPTY),
    (DEEPSEEK_LAST, USAGE_OBJECT),
    (VLLM_LAST, USAGE_OBJECT),
    (AZURE_SORTED, USAGE_OBJECT | CHOICES_EMPTY),
    (ANTHROPIC_START, USAGE_NONE),  # usage one level down
    (ANTHROPIC_DELTA, USAGE_OBJECT),
    (b'{"type": "ping"}', USAGE_NONE),
    # the byte pattern the old pre-check looked for, inside a string: not usage
    (b'{"choices":[{"delta":{"content":"\\"usage\\":{\\"total_tokens\\":1}"}}],"usage":null}', USAGE_NONE),
    (b'{"usage" :\t{ } , "choices" : [\r\n] }\n', USAGE_OBJECT | CHOICES_EMPTY),
    (b'  {"choices":[ {"index":0} ],"usage":{"a":[{"usage":1}]}}  ', USAGE_OBJECT),
    (b'{"usage":{},"usage":null}', USAGE_NONE),  # the last of a repeated key decides
    (b'{"usage":null,"usage":{}}', USAGE_OBJECT),
    (b'{"choices":[],"choices":[1]}', USAGE_NONE),
    (b'{"usage":[{}],"choices":{}}', USAGE_NONE),
    (b'{"usage":"{}","choices":"[]"}', USAGE_NONE),
    (b'{"usage":0,"x":true,"y":false,"z":-1.5e-3,"w":"\\u00e9\\/\\b\\f\\n\\r\\t"}', USAGE_NONE),
    (b'{}', USAGE_NONE),
    (b'{"Usage":{},"usage ":{},"usages":{},"choice":[]}', USAGE_NONE),
    ('{"usage":{"text":"é→世😀"}}'.encode(), USAGE_OBJECT),
    (b'{"usage":{"bad utf-8":"\xff\xfe"}}', USAGE_OBJECT),
    (b'{"u\\u0073age":{}}', SCAN_UNKNOWN),  # an escaped top-level key: json must decide
    (b'{"a\\"b":1}', SCAN_UNKNOWN),
    (b'[DONE]', SCAN_UNKNOWN),
    (b'', SCAN_UNKNOWN),
    (b'   ', SCAN_UNKNOWN),
    (b'null', SCAN_UNKNOWN),
    (b'[{"usage":{}}]', SCAN_UNKNOWN),
    (b'"usage"', SCAN_UNKNOWN),
    (b'{"usage":{}', SCAN_UNKNOWN),  # truncated
    (b'{"usage":{}}}', SCAN_UNKNOWN),
    (b'{"usage":{}},', SCAN_UNKNOWN),
    (b'{"usage":{}}{}', SCAN_UNKNOWN),
    (b'{"usage":NaN}', SCAN_UNKNOWN),
    (b'{"a":Infinity,"usage":null}', SCAN_UNKNOWN),
    (b'{"a":01}', SCAN_UNKNOWN),
    (b'{"a":1.}', SCAN_UNKNOWN),
    (b'{"a":.5}', SCAN_UNKNOWN),
    (b'{"a":-}', SCAN_UNKNOWN),
    (b'{"a":1e}', SCAN_UNKNOWN),
    (b'{"a":+1}', SCAN_UNKNOWN),
    (b'{"a":"\\x"}', SCAN_UNKNOWN),
    (b'{"a":"\\u12"}', SCAN_UNKNOWN),
    (b'{"a":"\\u12G4"}', SCAN_UNKNOWN),
    (b'{"a":"tab\there"}', SCAN_UNKNOWN),  # a raw control character in a string
    (b'{"a":1,}', SCAN_UNKNOWN),
    (b'{"a" 1}', SCAN_UNKNOWN),
    (b'{"a":[1,]}', SCAN_UNKNOWN),
    (b'{"a":[1 2]}', SCAN_UNKNOWN),
    (b'{"a":{"b"}}', SCAN_UNKNOWN),
    (b'{"a":[}', SCAN_UNKNOWN),
    (b'{"a":tru}', SCAN_UNKNOWN),
    (b'{"a":truex}', SCAN_UNKNOWN),
    (b'{1:2}', SCAN_UNKNOWN),
    (b'\xef\xbb\xbf{}', SCAN_UNKNOWN),  # a BOM
    (b'{}\x00', SCAN_UNKNOWN),
    (b'\xa0{}', SCAN_UNKNOWN),
])
def test_cases(mod, text, expected):
    assert mod.scan_chunk(text) == expected
    assert mod.usage_state(text) == expected & (USAGE_OBJECT | SCAN_UNKNOWN)
    check(expected, text, strict_loads(text))  # the table itself agrees with json


def test_constants(mod):
    assert (mod.USAGE_NONE, mod.USAGE_OBJECT, mod.USAGE_UNKNOWN) == (0, 1, 2)
    assert (mod.SCAN_UNKNOWN, mod.CHOICES_EMPTY, mod.MAX_DEPTH) == (USAGE_UNKNOWN, 4, MAX_DEPTH)


def test_speedups_exports():
    c = _module("c")
    assert (_speedups.scan_chunkPy, _speedups.usage_statePy) == (py_scan.scan_chunk, py_scan.usage_state)
    assert (_speedups.scan_chunkC, _speedups.usage_stateC) == (c.scan_chunk, c.usage_state)
    expected = py_scan if _speedups.PURE else c
    assert (_speedups.scan_chunk, _speedups.usage_state) == (expected.scan_chunk, expected.usage_state)


def test_usage_state_values(mod):
    assert mod.usage_state(OPENAI_CONTENT) == USAGE_NONE
    assert mod.usage_state(OPENAI_USAGE) == USAGE_OBJECT
    assert mod.usage_state(b"[DONE]") == USAGE_UNKNOWN


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, lambda b: b.decode()])
def test_input_types(mod, kind):
    assert mod.scan_chunk(kind(OPENAI_USAGE)) == USAGE_OBJECT | CHOICES_EMPTY
    assert mod.scan_chunk(kind('{"x":"é","usage":{}}'.encode())) == USAGE_OBJECT
    assert mod.scan_chunk(memoryview(b'xx{"usage":{}}yy')[2:-2]) == USAGE_OBJECT


def test_str_with_lone_surrogates(mod):
    # A str with a lone surrogate has no UTF-8 form: scanned as its 3-byte form, like json sees a char.
    assert mod.scan_chunk('{"a":"\ud800","usage":{}}') == USAGE_OBJECT
    assert mod.scan_chunk('{"\udc80":1}') == USAGE_NONE


@pytest.mark.parametrize("bad", [None, 5, 1.5, ["{}"], {"usage": {}}])
def test_rejects_non_buffers(mod, bad):
    with pytest.raises(TypeError):
        mod.scan_chunk(bad)


def test_rejects_non_contiguous_buffer(mod):
    with pytest.raises(BufferError):
        mod.scan_chunk(memoryview(b'{ "usage" :{}}')[::2])


def test_depth_limit(mod):
    def nested(levels: int) -> bytes:  # the top-level object plus ``levels`` containers
        inner = b"".join(b"[" if i % 2 else b'{"k":' for i in range(levels))
        outer = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(levels)))
        return b'{"usage":{},"a":' + inner + b"0" + outer + b"}"

    assert mod.scan_chunk(nested(MAX_DEPTH - 1)) == USAGE_OBJECT
    assert mod.scan_chunk(nested(MAX_DEPTH)) == SCAN_UNKNOWN
    assert mod.scan_chunk(b'{"a":' + b"[" * 100_000) == SCAN_UNKNOWN
    json.loads(nested(MAX_DEPTH - 1))  # the deepest accepted text is one json reads


def test_deep_text_on_a_deep_stack(mod):
    # json's decoder recurses; when the stack is too deep for it, the pure twin walks instead.
    text = b'{"a":' + b"[" * 200 + b"]" * 200 + b',"usage":{}}'
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 60)
    try:
        flags = mod.scan_chunk(text)
    finally:
        sys.setrecursionlimit(limit)
    assert flags == USAGE_OBJECT


def test_long_and_huge_values(mod):
    text = b'{"a":"' + b"x\\\"" * 50_000 + b'","n":' + b"7" * 5000 + b',"usage":{"t":1}}'
    assert mod.scan_chunk(text) == USAGE_OBJECT
    assert mod.scan_chunk(text[:-1]) == SCAN_UNKNOWN


# -- generated objects and their serialisations -----------------------------------------------

_words = st.sampled_from(["usage", "choices", "Usage", "usage ", "usag", '"usage":{', '"usage": {', "{", "}",
                          "[", "]", '"', "\\", '\\"', "\\\\", "/", ":", ",", "é", "世", "😀", "\x00", "\x1f",
                          "\n", "\t", "\x7f", "\u2028", "\ufeff"])
_text = st.text(max_size=6) | st.lists(_words | st.text(max_size=2), max_size=4).map("".join)
_key = st.sampled_from(["usage", "choices", "id", "model", "delta", "content"]) | _text
# Top-level keys are mostly ones json.dumps writes without escapes, so most texts are provable.
_plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='"\\') | st.just("é"),
                 max_size=8)
_top_key = st.sampled_from(["usage", "choices", "id", "object", "model", "usage ", "Usage", "x"]) | _plain
_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
         | st.floats(allow_nan=False, allow_infinity=False) | _text)
_json = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_key, kids, max_size=4),
                     max_leaves=16)
_usage_value = (st.dictionaries(_key, _json, max_size=4) | st.just({}) | st.lists(_json, max_size=3)
                | st.just([]) | _leaf)
_choices_value = (st.just([]) | st.lists(_json, min_size=1, max_size=3) | st.just([[]]) | st.just({})
                  | st.dictionaries(_key, _json, max_size=2) | _leaf)


@st.composite
def top_pairs(draw) -> list[tuple[str, object]]:
    """Top-level members in order, maybe with a repeated key (json keeps the last)."""
    pairs = draw(st.lists(st.tuples(_top_key, _json), max_size=5))
    if draw(st.booleans()):  # a key any text, quotes and backslashes included
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(_text), draw(_json)))
    for name, values in (("usage", _usage_value), ("choices", _choices_value)):
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
            pairs.insert(draw(st.integers(0, len(pairs))), (name, draw(values)))
    return pairs


_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_WS = ["", "", "", "", " ", "  ", "\n", "\t", "\r\n", "\n    "]


class Writer:
    """Valid JSON with random whitespace around every token, random escapes, other number forms."""

    def __init__(self, rnd: random.Random, escape_rate: float, key_escape_rate: float) -> None:
        self.rnd = rnd
        self.escape_rate = escape_rate
        self.key_escape_rate = key_escape_rate
        self.out: list[str] = []

    def ws(self) -> None:
        self.out.append(self.rnd.choice(_WS))

    def string(self, text: str, rate: float) -> bool:
        """Write ``text`` as a JSON string; return whether any escape was used."""
        rnd = self.rnd
        parts = ['"']
        for ch in text:
            code = ord(ch)
            if not (ch in '"\\' or code < 0x20 or rnd.random() < rate):
                parts.append(ch)
            elif ch in _SHORT and rnd.random() < 0.6:
                parts.append(_SHORT[ch])
            elif code > 0xFFFF:  # a surrogate pair
                code -= 0x10000
                for unit in (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)):
                    parts.append(rnd.choice(["\\u%04x", "\\u%04X"]) % unit)
            else:
                parts.append(rnd.choice(["\\u%04x", "\\u%04X"]) % code)
        parts.append('"')
        written = "".join(parts)
        self.out.append(written)
        return "\\" in written

    def number(self, value: int | float) -> None:
        text = json.dumps(value)
        if isinstance(value, int) and self.rnd.random() < 0.3:
            text += self.rnd.choice([".0", "e0", "E+2", "e-3", ".25E-1"])
        self.out.append(text)

    def value(self, value) -> None:
        if value is None or isinstance(value, bool):
            self.out.append(json.dumps(value))
        elif isinstance(value, (int, float)):
            self.number(value)
        elif isinstance(value, str):
            self.string(value, self.escape_rate)
        elif isinstance(value, list):
            self.container("[", "]", [(None, v) for v in value])
        else:
            self.container("{", "}", list(value.items()))

    def container(self, start: str, end: str, members: list[tuple[str | None, object]], top: bool = False) -> bool:
        """Write an array (keys None) or object; return whether a key of it was escaped."""
        escaped = False
        self.out.append(start)
        self.ws()
        for i, (key, value) in enumerate(members):
            if i:
                self.out.append(",")
                self.ws()
            if key is not None:
                escaped |= self.string(key, self.key_escape_rate if top else self.escape_rate)
                self.ws()
                self.out.append(":")
                self.ws()
            self.value(value)
            self.ws()
        self.out.append(end)
        return escaped


@st.composite
def serialised(draw) -> tuple[bytes, bool, bool]:
    """(text, whether a top-level key has an escape, whether json.dumps wrote it)."""
    pairs = draw(top_pairs())
    if draw(st.booleans()):
        obj = dict(pairs)
        ensure_ascii = draw(st.booleans())
        text = json.dumps(obj, ensure_ascii=ensure_ascii, sort_keys=draw(st.booleans()),
                          indent=draw(st.sampled_from([None, None, 2, 0, "\t"])),
                          separators=draw(st.sampled_from([None, (",", ":"), (", ", ": "), (",", ": ")])))
        escaped = any("\\" in json.dumps(k, ensure_ascii=ensure_ascii) for k in obj)
        return text.encode(), escaped, True
    writer = Writer(draw(st.randoms(use_true_random=False)), draw(st.sampled_from([0.0, 0.05, 0.5])),
                    draw(st.sampled_from([0.0, 0.0, 0.0, 0.1])))
    writer.ws()
    escaped = writer.container("{", "}", pairs, top=True)
    writer.ws()
    return "".join(writer.out).encode("utf-8", "surrogatepass"), escaped, False


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(case=serialised(), twin=st.sampled_from(TWINS))
def test_matches_json(case, twin):
    text, escaped, _ = case
    obj = json.loads(text)  # the generator writes only valid JSON...
    assert strict_loads(text) is not _INVALID  # ...and strict JSON
    flags = _module(twin).scan_chunk(text)
    check(flags, text, obj)
    # The fast path is fast: only a top-level key written with an escape leaves it unproven.
    assert (flags == SCAN_UNKNOWN) == escaped, (text, flags)


_PIECES = [b"{", b"}", b"[", b"]", b":", b",", b'"', b"\\", b" ", b"\n", b"\x00", b"\xff", b"\xe2\x82", b"u",
           b'"usage"', b'"choices"', b"0", b"-", b"e", b".", b"1", b"true", b"nul", b"\\u00", b"NaN", b"\t",
           b"\x1f", b"\x7f", b"[DONE]", b"{}", b"[]", b'""']


@st.composite
def mutated(draw) -> bytes:
    """A valid text truncated, or with a byte deleted, inserted or replaced."""
    text = draw(serialised())[0]
    at = draw(st.integers(0, len(text)))
    piece = draw(st.sampled_from(_PIECES) | st.binary(min_size=1, max_size=2))
    return draw(st.sampled_from([
        text[:at], text[:at] + text[at + 1:], text[:at] + piece + text[at:], text[:at] + piece + text[at + 1:],
    ]))


_garbage = st.binary(max_size=80) | st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join) | mutated()


@PROPERTY
@given(text=_garbage, twin=st.sampled_from(TWINS))
def test_garbage(text, twin):
    mod = _module(twin)
    flags = mod.scan_chunk(text)
    obj = strict_loads(text)
    check(flags, text, obj)
    if isinstance(obj, dict) and b"\\" not in text:  # no escape anywhere: always proven
        assert flags != SCAN_UNKNOWN, text
    plain = None
    try:
        plain = json.loads(text)
    except (ValueError, RecursionError):
        pass
    if plain is not None:  # consistent with json.loads of the bytes, whenever that succeeds
        check(flags, text, plain)
    assert mod.usage_state(text) == flags & (USAGE_OBJECT | SCAN_UNKNOWN)


@PROPERTY
@given(text=serialised().map(lambda case: case[0]) | _garbage)
def test_twins_agree(text):
    """The compiled twin, the pure twin and the pure twin's token walk (its reference) agree."""
    c = _module("c")
    expected = c.scan_chunk(text)
    for form in (text, bytearray(text), memoryview(text), text.decode("utf-8", "surrogateescape")):
        assert c.scan_chunk(form) == py_scan.scan_chunk(form) == py_scan._walk(py_scan._as_text(form))
        assert c.usage_state(form) == py_scan.usage_state(form)
    # a str is scanned as its UTF-8 form, whatever surrogates it holds
    assert c.scan_chunk(text.decode("utf-8", "surrogateescape")) == expected

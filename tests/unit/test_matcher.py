"""Tests for the multi-pattern matcher twins (fastgw.matcher and fastgw._c.matcher).

Every test runs against both twins; the compiled one is imported inside the fixture, so a
missing build fails those tests instead of skipping them. Property tests check ``find``
against a brute-force reference, that the twins agree, and that splitting a text into
``feed`` calls finds the same matches as one ``find``.
"""

from __future__ import annotations

import importlib
import random
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import matcher as py_matcher
from fastgw.matcher import fold

TWINS = ["py", "c"]


def _module(name: str):
    if name == "py":
        return py_matcher
    return importlib.import_module("fastgw._c.matcher")  # ImportError fails the test: CI builds it


@pytest.fixture(params=TWINS)
def mod(request):
    return _module(request.param)


def brute(terms: list[str], text: str) -> list[tuple[int, int, int]]:
    """Every (start, end, index) where the folded text equals a folded term."""
    ftext = fold(text)
    return sorted(
        (i, i + len(t), k)
        for k, t in enumerate(fold(t) for t in terms)
        for i in range(len(text) - len(t) + 1)
        if ftext.startswith(t, i)
    )


def feed_all(m, text: str, cuts: list[int]) -> list[tuple[int, int, int]]:
    state, found, pos = m.start(), [], 0
    for cut in sorted(cuts) + [len(text)]:
        state, got = m.feed(state, text[pos:cut], pos)
        assert got == sorted(got)
        found += got
        pos = cut
    return sorted(found)


def test_classic(mod):
    m = mod.Matcher(["he", "she", "his", "hers"])
    assert m.find("ushers") == [(1, 4, 1), (2, 4, 0), (2, 6, 3)]
    assert m.max_len == 4


def test_overlaps_and_duplicates(mod):
    m = mod.Matcher(["a", "aa", "aa"])
    assert m.find("aaa") == [(0, 1, 0), (0, 2, 1), (0, 2, 2), (1, 2, 0), (1, 3, 1), (1, 3, 2), (2, 3, 0)]


def test_case_and_width_folding(mod):
    m = mod.Matcher(["Secret", "ｂａｄ word", "straße"])
    assert m.find("SECRET") == [(0, 6, 0)]
    assert m.find("ｓｅｃｒｅｔ") == [(0, 6, 0)]  # fullwidth text, ASCII term
    assert m.find("BAD　WORD") == [(0, 8, 1)]  # ideographic space
    assert m.find("STRAẞE") == [(0, 6, 2)]  # capital sharp s meets sharp s, same length


def test_cjk_and_halfwidth_katakana(mod):
    m = mod.Matcher(["敏感词", "カタカナ"])
    assert m.find("这是一个敏感词测试") == [(4, 7, 0)]
    assert m.find("ｶﾀｶﾅです") == [(0, 4, 1)]
    assert m.find("x🙂敏感词") == [(2, 5, 0)]  # astral chars count as one position


def test_empty(mod):
    m = mod.Matcher([])
    assert m.find("anything") == [] and m.max_len == 0
    with pytest.raises(ValueError):
        mod.Matcher(["ok", ""])


def test_split_term_and_depth(mod):
    m = mod.Matcher(["password"])
    state, got = m.feed(m.start(), "my pass", 0)
    assert got == [] and m.depth(state) == 4
    state, got = m.feed(state, "word!", 7)
    assert got == [(3, 11, 0)] and m.depth(state) == 0
    with pytest.raises(ValueError):
        m.feed(10_000, "x", 0)


def test_100k_terms_build_under_a_second():
    rng = random.Random(7)
    terms = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(100_000)]
    c = _module("c")
    t0 = time.perf_counter()
    m = c.Matcher(terms)
    assert time.perf_counter() - t0 < 1.0
    assert (2, 2 + len(terms[54321]), 54321) in m.find("xx" + terms[54321] + "yy")


ALPHABET = "abAB ßẞｂ中文ｶカ"
terms_st = st.lists(st.text(ALPHABET, min_size=1, max_size=5), min_size=1, max_size=8)
text_st = st.text(ALPHABET, max_size=60)


@settings(max_examples=300, deadline=None)
@given(terms=terms_st, text=text_st)
def test_find_matches_brute_force_and_twins_agree(terms, text):
    expected = brute(terms, text)
    assert py_matcher.Matcher(terms).find(text) == expected
    assert _module("c").Matcher(terms).find(text) == expected


@settings(max_examples=300, deadline=None)
@given(terms=terms_st, text=text_st, data=st.data())
def test_any_split_finds_the_same(terms, text, data):
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=6))
    for name in TWINS:
        m = _module(name).Matcher(terms)
        assert feed_all(m, text, cuts) == m.find(text)

"""Tests for the content guard (fastgw.guard) and its config section (fastgw.config.guard).

Prompts: block/mask/flag and how rules combine. Streams: a term split across deltas is
still masked, the same way whatever the split (property-tested against masking the whole
text), and the hold-back stays bounded. PII: checksums tell valid numbers from look-alikes.
The moderation hook runs against a tiny asyncio HTTP server answering in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastgw import _speedups
from fastgw.config.fields import Issues
from fastgw.config.guard import guard as guard_config
from fastgw.guard import Guard
from fastgw.guard import pii as pii_mod
from fastgw.guard import rules as guard_rules
from fastgw.guard.moderation import moderate


def make(rules: list[dict], moderation: dict | None = None, **kw) -> Guard:
    issues = Issues()
    config = guard_config({"rules": rules, **({"moderation": moderation} if moderation else {})}, issues)
    assert issues.errors == []
    return Guard(config, **kw)


def errors(value) -> list[str]:
    issues = Issues()
    guard_config(value, issues)
    return issues.errors


def run_stream(g: Guard, deltas: list[str]) -> tuple[str, bool, list]:
    s = g.stream()
    out, blocked = [], False
    for delta in deltas:
        text, blocked = s.feed(delta)
        out.append(text)
        if blocked:
            return "".join(out), True, s.hits
    text, blocked = s.finish()
    return "".join(out) + text, blocked, s.hits


# -- config ------------------------------------------------------------------------------------


def test_config_normalised(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("# banned\nfoo\n\nBar baz\n", encoding="utf-8")
    issues = Issues()
    config = guard_config(
        {
            "rules": [
                {"name": "words", "terms_file": str(words), "action": "mask", "mask": "[X]"},
                {"name": "pii", "pii": ["email", "card"], "action": "flag", "apply_to": ["prompt"]},
            ],
            "moderation": {"url": "http://127.0.0.1:9000/v1/moderations", "timeout": "250ms"},
        },
        issues,
    )
    assert issues.errors == []
    assert config["rules"][0] == {
        "name": "words", "terms": ["foo", "Bar baz"], "regex": [], "pii": [], "action": "mask",
        "mask": "[X]", "apply_to": ["prompt", "response"],
    }
    assert config["moderation"] == {
        "url": "http://127.0.0.1:9000/v1/moderations", "timeout": 0.25, "on_error": "open", "apply_to": ["prompt"],
    }
    assert guard_config(None, Issues()) == {"rules": [], "moderation": None}


def test_config_errors_name_their_field(tmp_path):
    errs = errors({
        "rules": [
            {"name": "r", "regex": ["(unclosed"], "action": "block"},
            {"name": "p", "pii": ["emial"], "action": "mask"},
            {"name": "t", "action": "flag"},
            {"name": "t", "terms": [], "action": "explode", "apply_to": ["both"]},
            {"name": "f", "terms_file": str(tmp_path / "missing.txt"), "action": "mask"},
        ],
        "moderation": {"url": "ftp://x", "on_error": "maybe"},
    })
    text = "\n".join(errs)
    assert "guard.rules[0].regex[0]: invalid regular expression" in text
    assert "guard.rules[1].pii[0]: unknown pii kind 'emial'; did you mean 'email'?" in text
    assert "guard.rules[2]: needs terms, terms_file, regex or pii" in text
    assert "guard.rules[3].terms: at least one term is required" in text
    assert "guard.rules[3].action: expected one of block, mask, flag" in text
    assert "guard.rules[3].apply_to[0]: expected one of prompt, response" in text
    assert "guard.rules[3].name: duplicate name 't'" in text
    assert "guard.rules[4].terms_file: cannot read" in text
    assert "guard.moderation.url: expected an http:// or https:// URL" in text
    assert "guard.moderation.on_error: expected one of open, closed" in text


# -- prompts -----------------------------------------------------------------------------------


def test_prompt_block_mask_flag():
    g = make([
        {"name": "ban", "terms": ["kill switch"], "action": "block"},
        {"name": "stars", "terms": ["darn"], "action": "mask"},
        {"name": "label", "regex": [r"\bsecret-\d+\b"], "action": "mask", "mask": "[REDACTED]"},
        {"name": "watch", "terms": ["competitor"], "action": "flag"},
    ])
    v = g.check_prompt(["hello"])
    assert (v.action, v.texts, v.hits) == ("allow", ["hello"], [])
    v = g.check_prompt(["Darn, SECRET-42 again", "ask ｃｏｍｐｅｔｉｔｏｒ"])
    assert v.action == "mask"
    assert v.texts == ["****, [REDACTED] again", "ask ｃｏｍｐｅｔｉｔｏｒ"]
    assert sorted(v.hits) == [("label", "regex"), ("stars", "term"), ("watch", "term")]
    v = g.check_prompt(["darn", "the KILL SWITCH"])
    assert v.action == "block" and ("ban", "term") in v.hits
    assert g.check_prompt(["competitor"]).action == "allow"


def test_prompt_only_rule_skips_responses():
    g = make([{"name": "p", "terms": ["foo"], "action": "mask", "apply_to": ["prompt"]}])
    assert g.check_prompt(["foo"]).texts == ["***"]
    assert run_stream(g, ["foo"]) == ("foo", False, [])


def test_pii_hits_carry_the_kind_not_the_text():
    g = make([{"name": "pii", "pii": ["email", "phone", "card", "id"], "action": "mask", "mask": "[PII]"}])
    v = g.check_prompt(["mail a.b@example.com, call +1 (415) 555-2671, card 4111 1111 1111 1111"])
    assert v.texts == ["mail [PII], call [PII], card [PII]"]
    assert sorted(v.hits) == [("pii", "card"), ("pii", "email"), ("pii", "phone")]
    assert "example" not in repr(v.hits)


# -- PII ---------------------------------------------------------------------------------------


def kinds(text: str) -> list[tuple[str, str]]:
    return [(text[s:e], k) for s, e, k in pii_mod.find(frozenset(pii_mod.KINDS), text)]


def test_pii_email_and_phone():
    assert kinds("to bob.smith+tag@mail.example.co.uk.") == [("bob.smith+tag@mail.example.co.uk", "email")]
    assert kinds("no user@localhost here") == []
    text = "+1 (415) 555-2671, 415-555-2671, 13812345678, +86 138 1234 5678"
    assert [k for _, k in kinds(text)] == ["phone"] * 4
    assert kinds("on 2024-01-15, v1.2.3, 12345678") == []


def test_pii_cards_need_luhn():
    assert pii_mod.luhn("4111111111111111") and not pii_mod.luhn("4111111111111112")
    assert kinds("4111 1111 1111 1111") == [("4111 1111 1111 1111", "card")]
    assert kinds("5500-0000-0000-0004") == [("5500-0000-0000-0004", "card")]
    assert kinds("4111 1111 1111 1112") == []  # fails Luhn; not re-reported as a phone either
    assert kinds("41111111111111111111111") == []  # too long for a card


def test_pii_ids_need_their_checksum():
    assert kinds("ID 11010519491231002X") == [("11010519491231002X", "id")]
    assert kinds("ID 110105194912310021") == []  # wrong check digit
    assert kinds("ssn 078-05-1120") == [("078-05-1120", "id")]
    assert kinds("ssn 000-05-1120 666-05-1120 078-00-1120") == []


# -- streams -----------------------------------------------------------------------------------


def test_stream_term_split_across_two_and_three_deltas():
    g = make([
        {"name": "m", "terms": ["password"], "action": "mask"},
        {"name": "l", "terms": ["敏感词"], "action": "mask", "mask": "[X]"},
    ])
    assert run_stream(g, ["my pass", "word is"]) == ("my ******** is", False, [("m", "term")])
    assert run_stream(g, ["my pa", "ssw", "ord is"])[0] == "my ******** is"
    assert run_stream(g, ["这是敏", "感", "词！"])[0] == "这是[X]！"


def test_stream_emits_what_cannot_start_a_match():
    g = make([{"name": "m", "terms": ["password"], "action": "mask"}])
    s = g.stream()
    assert s.feed("hello pa") == ("hello ", False)  # "pa" might start "password"
    assert s.feed("rty") == ("party", False)
    assert s.finish() == ("", False)


def test_stream_block():
    g = make([{"name": "b", "terms": ["forbidden"], "action": "block"}])
    out, blocked, hits = run_stream(g, ["this is forb", "idden text"])
    assert blocked and hits == [("b", "term")] and "forb" not in out
    s = g.stream()
    s.feed("forbidden")
    assert s.feed("more") == ("", True) and s.finish() == ("", True)


def test_stream_hold_back_is_bounded():
    g = make([{"name": "m", "terms": ["abcdefgh", "abcdefgX"], "action": "mask"}])
    s, total, emitted = g.stream(), 0, 0
    for ch in "abcdefg" * 20:  # always in the middle of a possible match
        total += 1
        emitted += len(s.feed(ch)[0])
        assert total - emitted <= 7  # max_len - 1
    g = make([{"name": "r", "pii": ["email"], "action": "mask"}], window=32)
    s, total, emitted = g.stream(), 0, 0
    for ch in "word " * 40:
        total += 1
        emitted += len(s.feed(ch)[0])
        assert total - emitted <= 32


def test_stream_pii_across_deltas():
    g = make([{"name": "pii", "pii": ["email", "card"], "action": "mask", "mask": "[PII]"}], window=64)
    text = "write to someone@example.com or pay with 4111 1111 1111 1111 today. " * 3
    deltas = [text[i:i + 3] for i in range(0, len(text), 3)]
    out, blocked, hits = run_stream(g, deltas)
    assert out == g.check_prompt([text]).texts[0]
    assert sorted(set(hits)) == [("pii", "card"), ("pii", "email")] and len(hits) == 6


ALPHA = "ab ΣσςＡ敏感词"
STREAM_EXAMPLES = 150 if os.environ.get("CI") else int(os.environ.get("FASTGW_PROPERTY_EXAMPLES", "800"))
"""CI keeps the property test short; a local run tries more (FASTGW_PROPERTY_EXAMPLES to change)."""


@pytest.fixture(params=["compiled", "pure"])
def matcher_twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Build the guard's automaton from the Cython twin, then from the pure-Python one."""
    twin = _speedups.MatcherC if request.param == "compiled" else _speedups.MatcherPy
    if twin is None:
        pytest.fail("the Cython extensions are not built: run `python setup.py build_ext --inplace`")
    monkeypatch.setattr(guard_rules, "Matcher", twin)
    return request.param


def two_rules(terms: list[str], mask: str = "<b>") -> Guard:
    return make([
        {"name": "a", "terms": terms[:2], "action": "mask"},
        {"name": "b", "terms": terms[2:] or ["zz"], "action": "mask", "mask": mask},
    ])


def assert_stream_equals_whole(g: Guard, deltas: list[str]) -> None:
    out, blocked, hits = run_stream(g, deltas)
    whole = g.check_prompt(["".join(deltas)])
    assert (out, blocked) == (whole.texts[0], False)
    assert sorted(hits) == sorted(whole.hits)


# Found by a random search over terms, texts and splits: a run of overlapping masks that
# straddled the emitted point lost its first span (and so its mask, or its continuity).
OVERLAP_CASES = [
    (["Σ", "ΣΣ", "ΣＡΣ"], "<b>", ["b", "ςσσＡΣ"]),  # lost two characters: 'b***'
    (["σ", "aΣ", "Ａ", " Ａ"], "#", ["b aΣ", ""]),  # the run changed mask: 'b##*'
    (["ςς", "bＡ", "bσ"], "<b>", ["", "", "a", "", "b", "Σσ"]),  # a label run got a tail: 'a<b>*'
    (["Ａσ", " Σ", "ΣΣ", "Σb "], "#", ["", "aςb σ"]),  # '***##'
    (["Σσ", "b ", "Σb"], "#", ["Ａbσ", "b "]),  # 'Ａb##*'
    (["aσＡ", " bΣ", "aaς", "σＡ Σ"], "#", ["", "", "a", "ＡaσＡ", "ς"]),  # 'a###*ς'
]


@pytest.mark.parametrize(("terms", "mask", "deltas"), OVERLAP_CASES)
def test_stream_keeps_runs_of_overlapping_masks(matcher_twin, terms, mask, deltas):
    assert_stream_equals_whole(two_rules(terms, mask), deltas)


def test_stream_overlap_regression_exact_text():
    g = two_rules(["Σ", "ΣΣ", "ΣＡΣ"])
    assert run_stream(g, ["b", "ςσσＡΣ"])[0] == g.check_prompt(["bςσσＡΣ"]).texts[0] == "b*****"


def test_pending_masks_stay_bounded_in_a_long_run():
    g = make([{"name": "a", "terms": ["aa"], "action": "mask", "mask": "<x>"}])
    s, out = g.stream(), []
    for _ in range(500):
        out.append(s.feed("a")[0])
        assert len(s._masks) <= 2  # one span for the run's emitted part, one still open
    out.append(s.finish()[0])
    assert "".join(out) == "<x>"


@settings(max_examples=STREAM_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    terms=st.lists(st.text(st.sampled_from(ALPHA[:7]) | st.sampled_from(ALPHA), min_size=1, max_size=4)
                   .filter(str.strip), min_size=1, max_size=5),
    text=st.text(st.sampled_from(ALPHA[:7]) | st.sampled_from(ALPHA), max_size=40),
    mask=st.sampled_from(["<b>", "#"]),
    data=st.data(),
)
@example(terms=["Σ", "ΣΣ", "ΣＡΣ"], text="bςσσＡΣ", mask="<b>", data=None).via("the reported lost characters")
def test_stream_equals_whole_text_for_any_split(matcher_twin, terms, text, mask, data):
    cuts = [1] if data is None else sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    deltas = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)], strict=True)]
    assert_stream_equals_whole(two_rules(terms, mask), deltas)


# -- moderation --------------------------------------------------------------------------------


class Hook:
    """A tiny moderation server: flags inputs containing "bad", sleeps on "slow"."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        request = json.loads(await reader.readexactly(length))
        self.requests.append(request)
        if "slow" in request["input"]:
            await asyncio.sleep(2)
        if "broken" in request["input"]:
            writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
        else:
            body = json.dumps({"id": "modr-1", "model": "omni-moderation-latest", "results": [
                {"flagged": "bad" in request["input"], "categories": {}, "category_scores": {}}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()


async def _with_hook(fn):
    hook = Hook()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await fn(f"http://127.0.0.1:{port}/v1/moderations"), hook
    finally:
        server.close()


def test_moderation_flagged_or_not():
    async def calls(url):
        return [await moderate(url, text, 1.0, "open") for text in ("fine", "bad stuff")]

    result, hook = asyncio.run(_with_hook(calls))
    assert result == [False, True]
    assert hook.requests == [{"input": "fine"}, {"input": "bad stuff"}]


def test_moderation_errors_follow_policy():
    async def calls(url):
        return [
            await moderate(url, "slow", 0.2, "open"),
            await moderate(url, "slow", 0.2, "closed"),
            await moderate(url, "broken", 1.0, "open"),
            await moderate(url, "broken", 1.0, "closed"),
            await moderate("http://127.0.0.1:1/v1/moderations", "x", 1.0, "closed"),
        ]

    result, _ = asyncio.run(_with_hook(calls))
    assert result == [False, True, False, True, True]


def test_guard_moderate_only_for_configured_side():
    async def calls(url):
        g = make([], moderation={"url": url, "timeout": "1s", "apply_to": ["prompt"]})
        return [await g.moderate("prompt", ["bad"]), await g.moderate("response", ["bad"]),
                await g.moderate("prompt", ["good"])]

    result, _ = asyncio.run(_with_hook(calls))
    assert result == [True, False, False]


@pytest.mark.parametrize("pure", [True, False])
def test_guard_uses_either_matcher(pure, monkeypatch):
    from fastgw import _speedups, matcher
    from fastgw.guard import rules

    monkeypatch.setattr(rules, "Matcher", matcher.Matcher if pure else _speedups.MatcherC)
    g = make([{"name": "m", "terms": ["Ｆoo"], "action": "mask"}])
    assert g.check_prompt(["a FOO b"]).texts == ["a *** b"]
    assert run_stream(g, ["a F", "OO b"])[0] == "a *** b"

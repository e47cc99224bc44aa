"""The WAF engine's two twins (the Cython binding and the ctypes one over the same
libmodsecurity) give the same verdict, rule ids included, for the standard probes, normal
requests and arbitrary inputs; and the rule text compiles for every paranoia level."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import _speedups
from fastgw.waf import inspect, rules_text

SPEC = {"rules": "crs", "paranoia": 1, "mode": "block", "exclusions": [], "body_limit": 1 << 20}
HEADERS = [(b"Host", b"api.example.test"), (b"User-Agent", b"Mozilla/5.0"), (b"Accept", b"*/*")]
JSON = [*HEADERS, (b"Content-Type", b"application/json")]


@pytest.fixture(scope="module")
def twins():
    if _speedups.WafRulesC is None:
        pytest.fail("csrc/modsec.pyx is not built (libmodsecurity-dev missing?)")
    text = rules_text(SPEC)
    return _speedups.WafRulesC(text), _speedups.WafRulesPy(text)


def verdicts(twins, target: bytes, headers: list, body: bytes = b"", method: bytes = b"GET"):
    if body:
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
    return [inspect(rules, b"10.0.0.1", method, target, b"1.1", headers, body) for rules in twins]


@pytest.mark.parametrize(("target", "headers", "body", "rule"), [
    (b"/s?q=1%27%20UNION%20SELECT%20password%20FROM%20users--", HEADERS, b"", "942100"),
    (b"/s?q=%3Cscript%3Ealert(1)%3C/script%3E", HEADERS, b"", "941100"),
    (b"/f?name=../../../../etc/passwd", HEADERS, b"", "930100"),
    (b"/items", JSON, json.dumps({"messages": [{"role": "user", "content": "1' OR '1'='1' --"}]}).encode(), "942100"),
])
def test_both_twins_block_the_probes_with_the_same_rules(twins, target, headers, body, rule):
    compiled, pure = verdicts(twins, target, headers, body, b"POST" if body else b"GET")
    assert compiled == pure
    assert compiled.status == 403 and rule in compiled.rules and "949110" in compiled.rules


def test_normal_requests_pass_on_both(twins):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Summarise this page, please."}]})
    for verdict in verdicts(twins, b"/v1/chat/completions", JSON, body.encode(), b"POST"):
        assert verdict.status == 0 and verdict.rules == ()


def test_a_body_that_does_not_parse_as_json_is_a_400(twins):
    for verdict in verdicts(twins, b"/items", JSON, b'{"a": ', b"POST"):
        assert verdict.status == 400 and "4200003" in verdict.rules


@settings(max_examples=60, deadline=None)
@given(query=st.text(max_size=40), body=st.text(max_size=60))
def test_the_twins_agree_on_any_input(twins, query, body):
    from urllib.parse import quote

    target = b"/x?q=" + quote(query).encode()
    payload = json.dumps({"text": body}).encode()
    compiled, pure = verdicts(twins, target, JSON, payload, b"POST")
    assert compiled == pure


@pytest.mark.parametrize("paranoia", [1, 2, 3, 4])
def test_the_crs_compiles_at_every_paranoia_level_with_exclusions(paranoia):
    rules = _speedups.WafRules(rules_text({**SPEC, "paranoia": paranoia, "exclusions": [920350, 942100]}))
    verdict = inspect(rules, b"10.0.0.1", b"GET", b"/s?q=1%27%20UNION%20SELECT%20a%20FROM%20b--", b"1.1", HEADERS, b"")
    assert "942100" not in verdict.rules

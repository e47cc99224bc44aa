"""The raw HTTP corpus (tests/corpus/http, see its README): every file over a raw socket to a
real gateway in front of the misbehaving upstream, compiled and pure."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from tests.e2e.test_http_hardening import hardening_config, raw_exchange
from tests.support.bad_upstream import BadUpstream
from tests.support.gateway import Gateway, RawClient

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "http"
CASES = sorted(CORPUS.glob("*/*.http"))


def load_case(path: Path) -> tuple[bytes, dict]:
    raw = codecs.escape_decode(path.read_text().rstrip("\n").encode())[0]
    return raw, json.loads(path.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def bad():
    upstream = BadUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory, bad):
    gateway = Gateway(hardening_config(bad), tmp_path_factory.mktemp("corpus"), pure=request.param == "pure", workers=1)
    yield gateway
    assert gateway.stop() == 0


def test_the_corpus_covers_both_outcomes():
    assert {p.parent.name for p in CASES} == {"valid", "invalid"}
    assert all(p.with_suffix(".json").exists() for p in CASES)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_corpus_case(gw, path):
    raw, want = load_case(path)
    c = RawClient(gw.port)
    try:
        if want.get("head_only"):
            c.send(raw)
            status, headers, body = c.read_response(head_only=True)
            raw_head = b""
        else:
            status, raw_head, body = raw_exchange(c, raw)
            headers = {line.split(b":", 1)[0].strip().lower().decode(): line.split(b":", 1)[1].strip().decode()
                       for line in raw_head.split(b"\r\n")[1:]}
        assert status == want["status"], body
        if path.parent.name == "invalid":
            assert status >= 400
        for name, value in want.get("response_headers", {}).items():
            assert headers.get(name, "").lower() == value
        if "response_framing" in want:
            framing = [line.decode() for line in raw_head.lower().split(b"\r\n")
                       if line.startswith((b"content-length", b"transfer-encoding"))]
            assert framing == want["response_framing"]
        seen_want = want.get("upstream")
        if seen_want:
            seen = json.loads(body)
            names = {k.lower(): v for k, v in seen["headers"]}
            if "target" in seen_want:
                assert seen["target"] == seen_want["target"]
            if "host" in seen_want:
                assert names["host"] == seen_want["host"]
            if "body" in seen_want:
                assert seen["body"] == seen_want["body"]
            if "content_length" in seen_want:
                assert [v for k, v in seen["headers"] if k.lower() == "content-length"] == seen_want["content_length"]
            for name in seen_want.get("absent", []):
                assert name not in names
        if "closed" in want:
            assert c.is_closed(wait=2 if want["closed"] else 0.3) is want["closed"]
    finally:
        c.close()

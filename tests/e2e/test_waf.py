"""The WAF: the OWASP CRS run by libmodsecurity, on a plain route and on an AI model, through
real gateways (the compiled binding and its ctypes twin). The standard probes (SQL injection,
XSS, path traversal) are caught in a query, a header, a JSON body and an AI prompt; normal
traffic passes; detect mode only counts; bad rule files are check errors with field paths."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest
import yaml

from tests.support.gateway import Gateway, http_json

SQLI = "1' UNION SELECT username, password FROM users--"
XSS = "<script>alert(document.cookie)</script>"
TRAVERSAL = "../../../../etc/passwd"


class CountingUpstream:
    """Answers 200 to everything and counts what reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                seen.append(self.path)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def request(gw: Gateway, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
    return http_json(method, gw.url + path, data, headers=hdrs)


@pytest.fixture(scope="module")
def upstream():
    server = CountingUpstream()
    yield server
    server.server.shutdown()


def waf_config(upstream_url: str, mode: str = "block") -> dict:
    return {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-gpt"}], "waf": {"mode": mode}}],
        "routes": [{"match": {"path": "/api"}, "upstream": upstream_url, "waf": {"mode": mode, "paranoia": 1}}],
    }


@pytest.mark.parametrize("pure", [False, True])
def test_crs_blocks_the_standard_probes_and_passes_normal_traffic(tmp_path, upstream, pure):
    gw = Gateway(waf_config(upstream.url), tmp_path, workers=1, pure=pure)
    try:
        probes = {
            "sqli in a query": ("GET", "/api/search?q=" + urllib.parse.quote(SQLI), None, None),
            "xss in a query": ("GET", "/api/search?q=" + urllib.parse.quote(XSS), None, None),
            "traversal in a query": ("GET", "/api/files?name=" + urllib.parse.quote(TRAVERSAL), None, None),
            "sqli in a cookie header": ("GET", "/api/items", None, {"Cookie": "session=" + urllib.parse.quote(SQLI)}),
            "xss in a referer header": ("GET", "/api/items", None, {"Referer": "http://x.test/?q=" + XSS}),
            "sqli in a json body": ("POST", "/api/items", {"name": SQLI}, None),
            "xss in a json body": ("POST", "/api/comments", {"text": XSS}, None),
        }
        before = len(upstream.seen)
        for name, (method, path, body, headers) in probes.items():
            status, answer = request(gw, method, path, body, headers)
            assert status == 403, (name, status, answer)
            assert answer["error"]["code"] == "waf_blocked", name
            assert "rules 9" in answer["error"]["message"], name  # e.g. "rules 942100,949110"
        assert len(upstream.seen) == before  # nothing reached the upstream

        for method, path, body in [("GET", "/api/items?page=2&sort=name", None),
                                   ("POST", "/api/items", {"name": "Blue chair", "price": 49.5, "tags": ["home"]})]:
            status, answer = request(gw, method, path, body, {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
            assert (status, answer) == (200, {"ok": True})

        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": SQLI}])
        assert refused.value.body["code"] == "waf_blocked"
        normal = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "What is the capital of France? Answer briefly."}])
        assert normal.choices[0].message.content

        claude = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError) as blocked:
            claude.messages.create(model="m", max_tokens=20, messages=[{"role": "user", "content": XSS}])
        assert blocked.value.body["type"] == "error"
    finally:
        assert gw.stop() == 0


def test_detect_mode_lets_requests_through_and_counts_the_rules(tmp_path, upstream):
    gw = Gateway(waf_config(upstream.url, mode="detect"), tmp_path, workers=1)
    try:
        status, _ = request(gw, "GET", "/api/search?q=" + urllib.parse.quote(SQLI))
        assert status == 200
        wanted = 'fastgw_waf_matches_total{rule="942100",mode="detect"}'
        deadline = time.monotonic() + 10
        while wanted not in (text := urllib.request.urlopen(gw.admin + "/metrics", timeout=5).read().decode()):
            assert time.monotonic() < deadline, text[-2000:]  # workers publish their samples every tick
            time.sleep(0.2)
        assert SQLI not in gw.stderr_text()  # rule ids and messages are logged, never the request's data
    finally:
        assert gw.stop() == 0


def test_check_reports_unreadable_and_broken_rule_files_by_field_path(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text("SecRule ARGS\n")
    config = {"routes": [
        {"match": {"path": "/a"}, "upstream": "http://127.0.0.1:9", "waf": {"rules": [str(tmp_path / "missing.conf")]}},
        {"match": {"path": "/b"}, "upstream": "http://127.0.0.1:9", "waf": {"rules": [str(broken)], "mode": "log"}},
        {"match": {"path": "/c"}, "upstream": "http://127.0.0.1:9", "waf": {"rules": [str(broken)]}},
    ]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "routes[0].waf.rules[0]: cannot read" in out
    assert "routes[1].waf.mode" in out
    assert "routes[2].waf.rules: the rules do not load" in out

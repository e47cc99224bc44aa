"""A distinct secret in every secret-bearing field (fastgw/config/secrets.py) never comes back out.

One gateway carries them all, then is driven down the paths that talk about its config:
``GET /config`` and ``/status``, a refused push, ``fastgw check`` of a broken copy, a provider
that quotes the credentials it refused, a dead moderation hook, embedder and upstream, and the logs (supervisor, workers, access log) of all that.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from fastgw.config.secrets import SECRET_FIELDS
from tests.support.gateway import ROOT, Gateway, free_port, http_json, send_json

FIELDS = (
    "admin_token", "redis_password", "provider_key", "base_url_userinfo", "base_url_query", "goog_header",
    "apim_header", "consumer_key", "jwt_secret", "embedder_key", "embedder_query", "moderation_query",
    "route_match_header", "route_header", "route_query_key", "route_query_sig", "limit_header", "console_key",
)
SECRETS = {name: f"planted-{name.replace('_', '-')}-{i:02d}-0123456789abcdef" for i, name in enumerate(FIELDS)}


class QuotingProvider(BaseHTTPRequestHandler):
    """An OpenAI-compatible provider that refuses every request, quoting back the credentials it
    was sent (OpenAI's errors quote a key: "Incorrect API key provided: sk-..."). A 400, so
    the gateway relays the message to the client rather than cooling the key down."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        quoted = ", ".join(
            f"{name}={self.headers.get(name)}"
            for name in ("Authorization", "x-goog-api-key", "ocp-apim-subscription-key")
        )
        message = f"Incorrect API key provided: {quoted} for {self.path}"
        send_json(self, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": "invalid_api_key"}}, 400)


def planted_config(provider_port: int, redis_port: int, tmp_path: Path) -> dict:
    dead = free_port()  # nothing listens: every call to it fails
    s = SECRETS
    return {
        "redis": f"redis://:{s['redis_password']}@127.0.0.1:{redis_port}/0",
        "providers": [
            {
                "name": "quoting",
                "type": "openai",
                "base_url": f"http://user:{s['base_url_userinfo']}@127.0.0.1:{provider_port}/v1?key={s['base_url_query']}",
                "api_keys": [s["provider_key"]],
                "options": {"headers": {"x-goog-api-key": s["goog_header"], "ocp-apim-subscription-key": s["apim_header"]}},
            }
        ],
        "models": [{"name": "m", "targets": [{"provider": "quoting"}]}],
        "consumers": [{"name": "team", "api_keys": [s["consumer_key"]]}],
        "auth": {"jwt": [{"issuer": "i", "audience": "a", "algorithms": ["HS256"], "keys": [{"secret": s["jwt_secret"]}]}]},
        "cache": {
            "semantic": {
                "embeddings_url": f"http://127.0.0.1:{dead}/v1/embeddings?api_key={s['embedder_query']}",
                "model": "e",
                "api_key": s["embedder_key"],
                "timeout": "300ms",
            }
        },
        "guard": {"moderation": {"url": f"http://127.0.0.1:{dead}/v1/moderations?api_key={s['moderation_query']}",
                                 "timeout": "300ms"}},
        "routes": [
            {
                "name": "svc",
                "match": {"path": "/svc", "headers": {"x-api-key": s["route_match_header"]}},
                "upstream": f"http://127.0.0.1:{dead}",
                "transform": {"request": {"headers": {"add": {"x-auth-token": s["route_header"]}},
                                          "query": {"add": {"key": s["route_query_key"], "sig": s["route_query_sig"]}}}},
            }
        ],
        "limits": [{"name": "l", "match": {"headers": {"authorization": s["limit_header"]}}, "requests": {"per_minute": 1000}}],
        "log": {"access": str(tmp_path / "access.log")},
        "console": {"summarise": {"model": "m", "api_key": s["console_key"]}},
    }


def leaked(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_no_planted_secret_comes_back_out(tmp_path: Path, redis_server) -> None:
    provider = ThreadingHTTPServer(("127.0.0.1", 0), QuotingProvider)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    config = planted_config(provider.server_address[1], redis_server.port, tmp_path)
    # Every kind of field in the list has a planted secret here.
    assert {path.split("[")[0].split(".")[0] for path, _ in SECRET_FIELDS} <= set(config) | {"admin"}
    gw = Gateway(config, tmp_path, workers=2, admin_token=SECRETS["admin_token"])
    answers: list[str] = []
    try:
        chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()
        status, body = http_json("POST", gw.url + "/v1/chat/completions", chat, timeout=15,
                                 headers={"Authorization": f"Bearer {SECRETS['consumer_key']}",
                                          "Content-Type": "application/json"})
        assert status >= 400 and "Incorrect API key provided" in json.dumps(body), body
        answers.append(json.dumps(body))
        status, body = http_json("GET", gw.url + "/svc/x", headers={"x-api-key": SECRETS["route_match_header"]})
        assert status == 502, body
        answers.append(json.dumps(body))

        code, live = gw.admin_call("GET", "/config")
        assert code == 200
        answers.append(json.dumps(live))
        assert live["providers"][0]["base_url"] == (
            f"http://user:***@127.0.0.1:{provider.server_address[1]}/v1?key=***"
        )
        assert live["providers"][0]["options"]["headers"] == {"x-goog-api-key": "***", "ocp-apim-subscription-key": "***"}
        assert live["routes"][0]["transform"]["request"]["query"]["add"] == {"key": "***", "sig": "***"}
        answers.append(json.dumps(gw.status()))

        broken = {**{k: gw.config[k] for k in ("listen", "admin", "workers")}, **config}
        broken["routes"] = [{**config["routes"][0], "upstream": f"http://u:{SECRETS['route_header']}@127.0.0.1:1"}]
        code, refused = gw.admin_call("POST", "/config", yaml.safe_dump(broken).encode(), "application/yaml")
        assert code == 400 and refused["error"]["errors"], refused
        answers.append(json.dumps(refused))

        path = tmp_path / "broken.yaml"
        path.write_text(yaml.safe_dump(broken))
        check = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 1 and "routes[0].upstream" in check.stderr, check.stderr
        answers.append(check.stdout + check.stderr)
    finally:
        gw.stop()
        provider.shutdown()
    logs = gw.stderr_text()
    assert "moderation hook" in logs and "?api_key=***" in logs, logs  # the failure was logged, and said where
    access = (tmp_path / "access.log").read_text()
    assert access.count("\n") >= 2
    for where, text in [*(("answer", a) for a in answers), ("gateway logs", logs), ("access log", access)]:
        assert leaked(text) == [], (where, leaked(text), text[-3000:])

"""The admin API lets no one in: bearer token, loopback-only without one, no cross-site requests.

Everything runs against a real ``fastgw run``; the attacker is a raw client sending what a
browser page on another site (or a rebinding DNS name) would send.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.gateway import ROOT, Gateway, Proc, free_port, http_json

TOKEN = "admin-token-0123456789abcdef"
PROVIDERS = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [{"name": "mock-gpt", "targets": [{"provider": "mock"}]}],
}
TEAM = {"consumers": [{"name": "team", "api_keys": ["team-key-000000"]}]}
ATTACKER_KEY = "attacker-key-0000"
with_attacker = {"consumers": [*TEAM["consumers"], {"name": "evil", "api_keys": [ATTACKER_KEY]}]}

ENDPOINTS = [
    ("GET", "/status", None),
    ("GET", "/metrics", None),
    ("GET", "/config", None),
    ("GET", "/quota?rule=r&consumer=c", None),
    ("POST", "/config", b"{}"),
    ("POST", "/quota", b'{"rule": "r", "consumer": "c", "action": "reset"}'),
    ("POST", "/drain", b"{}"),
    ("POST", "/undrain", b"{}"),
    ("GET", "/no-such-endpoint", None),
]


def models_with_key(gw: Gateway, key: str) -> int:
    return http_json("GET", gw.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})[0]


def test_every_admin_endpoint_refuses_a_missing_or_wrong_token(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(PROVIDERS | TEAM, workers=1, admin_token=TOKEN)
    wrong = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for method, path, body in ENDPOINTS:
        for headers in wrong:
            status, answer = http_json(method, gw.admin + path, body, headers=headers | {"Content-Type": "application/json"})
            assert status == 401, (method, path, headers, status, answer)
            assert answer["error"]["type"] == "unauthorized"
    # The probe a load balancer sends needs no token; everything else works with it.
    assert http_json("GET", gw.admin + "/healthz") == (200, {"ready_workers": 1})
    assert gw.admin_call("GET", "/status")[0] == 200
    assert gw.admin_call("GET", "/config")[0] == 200
    code, answer = gw.push(PROVIDERS | with_attacker)
    assert code == 200 and answer["generation"] == 2, answer
    gw.wait_ready(1, generation=2)
    assert models_with_key(gw, ATTACKER_KEY) == 200
    # None of the refused calls changed anything: the one good push is generation 2.
    assert gw.status()["generation"] == 2


def test_metrics_can_be_public_by_option(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(PROVIDERS, workers=1, admin_token=TOKEN, admin_options={"metrics_public": True})
    status, _ = http_json("GET", gw.admin + "/status")
    assert status == 401
    with urllib.request.urlopen(gw.admin + "/metrics", timeout=5) as response:
        assert "fastgw_worker_up" in response.read().decode()


def test_a_cross_site_simple_post_is_refused_and_changes_nothing(gateway: Callable[..., Gateway]) -> None:
    """Without a token the admin API is loopback-only, so a browser on the same machine is the
    attacker: its page may send "simple" requests (text/plain, forms) anywhere."""
    gw = gateway(PROVIDERS | TEAM, workers=1)
    push = yaml.safe_dump({**{k: gw.config[k] for k in ("listen", "admin", "workers")}, **PROVIDERS, **with_attacker})
    attempts = [
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({}, 415),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "application/yaml", "Origin": "null"}, 403),
        ({"Content-Type": "application/yaml", "Host": "evil.example"}, 403),  # a DNS name rebound to 127.0.0.1
    ]
    for headers, expected in attempts:
        for path in ("/config", "/quota", "/drain"):
            status, answer = http_json("POST", gw.admin + path, push.encode(), headers=headers)
            assert status == expected, (path, headers, status, answer)
    status, _ = http_json("GET", gw.admin + "/config", headers={"Host": "evil.example"})
    assert status == 403
    assert gw.status()["generation"] == 1
    assert models_with_key(gw, ATTACKER_KEY) == 401
    # The admin API's own origin (a console it serves) may push.
    own = {"Content-Type": "application/yaml", "Origin": gw.admin}
    status, answer = http_json("POST", gw.admin + "/config", push.encode(), headers=own)
    assert status == 200, answer


def fastgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "FASTGW_ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=clean | (env or {}),
    )


def test_check_refuses_a_non_loopback_admin_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "open.yaml"
    for admin, where in [("0.0.0.0:9901", "admin:"), ({"address": "10.1.2.3:9901"}, "admin.address:")]:
        path.write_text(yaml.safe_dump({**PROVIDERS, "admin": admin}))
        result = fastgw("check", "-c", str(path))
        assert result.returncode == 1, result.stdout
        assert where in result.stderr and "admin.token" in result.stderr, result.stderr
        assert fastgw("run", "-c", str(path)).returncode == 2  # and the gateway will not start on it
    path.write_text(yaml.safe_dump({**PROVIDERS, "admin": {"address": "0.0.0.0:9901", "token": "${FASTGW_ADMIN_TOKEN}"}}))
    assert fastgw("check", "-c", str(path), env={"FASTGW_ADMIN_TOKEN": TOKEN}).returncode == 0
    result = fastgw("check", "-c", str(path), env={"FASTGW_ADMIN_TOKEN": "short"})
    assert result.returncode == 1 and "admin.token: too short" in result.stderr
    path.write_text(yaml.safe_dump({**PROVIDERS, "admin": {"address": "127.0.0.1:9901", "token": ""}}))
    assert fastgw("check", "-c", str(path)).returncode == 0  # empty: no token, loopback only


def test_push_sends_the_token_from_the_flag_or_the_environment(gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = gateway(PROVIDERS, workers=1, admin_token=TOKEN)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**gw.config, **PROVIDERS, **TEAM}))
    result = fastgw("push", "-c", str(good), "--admin", gw.admin)
    assert result.returncode == 2 and "401" in result.stderr, result.stderr
    assert TOKEN not in result.stderr
    result = fastgw("push", "-c", str(good), "--admin", gw.admin, "--token", TOKEN)
    assert result.returncode == 0 and "generation 2" in result.stdout, result.stderr
    result = fastgw("push", "-c", str(good), "--admin", gw.admin, env={"FASTGW_ADMIN_TOKEN": TOKEN})
    assert result.returncode == 0 and "generation 3" in result.stdout, result.stderr
    assert gw.status()["generation"] == 3



def unix_call(path: str, method: str, target: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One admin call over the Unix socket, as curl --unix-socket makes it."""
    from fastgw.push import _UnixConnection

    conn = _UnixConnection(path, 10)
    try:
        conn.request(method, target, body, headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_the_admin_api_on_a_unix_socket(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "admin.sock")
    config = tmp_path / "unix.yaml"
    config.write_text(yaml.safe_dump(
        {**PROVIDERS, "listen": f"127.0.0.1:{free_port()}", "workers": 1, "admin": {"socket": socket_path}}
    ))
    gw = Proc([sys.executable, "-m", "fastgw", "run", "-c", str(config)])
    try:
        assert f"admin unix:{socket_path}" in gw.wait_line("fastgw listening")
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600  # only this user may connect
        deadline = time.monotonic() + 20
        while unix_call(socket_path, "GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline, gw.stderr_tail()
            time.sleep(0.05)
        assert unix_call(socket_path, "GET", "/status")[1]["generation"] == 1
        # The same browser rules on a socket (no page reaches one, but a local proxy might relay it).
        assert unix_call(socket_path, "POST", "/config", b"{}", {"Content-Type": "text/plain"})[0] == 415
        push = tmp_path / "push.yaml"
        push.write_text(config.read_text())
        result = fastgw("push", "-c", str(push), "--admin", f"unix:{socket_path}")
        assert result.returncode == 0 and "generation 2" in result.stdout, result.stderr
    finally:
        assert gw.stop() == 0
    assert not os.path.exists(socket_path)  # removed with the gateway

"""The ``fastgw`` command line as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import openai
import pytest

from tests.support.gateway import ROOT, Proc


def fastgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


SECRETS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "TEAM_A_KEY": "a", "TEAM_B_KEY": "b"}


def test_check_accepts_the_examples():
    for example in ("examples/gateway.yaml", "examples/routes-demo.yaml"):
        result = fastgw("check", "-c", example, env=SECRETS)
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout


def test_check_reports_every_error_with_its_field_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: nowhere\n"
        "workerz: 2\n"
        "routes:\n"
        "  - match: {path: {regex: '(oops'}}\n"
        "    upstream: ftp://x\n"
    )
    result = fastgw("check", "-c", str(bad))
    assert result.returncode == 1
    for path in ("listen", "workerz", "routes[0].match.path", "routes[0].upstream"):
        assert f"  {path}" in result.stderr, (path, result.stderr)
    assert "did you mean 'workers'" in result.stderr


def test_check_reports_compression_errors_with_their_field_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "compression: {algorithms: [zstd, lz4], levels: {gzip: 12}}\n"
        "routes:\n"
        "  - upstream: http://127.0.0.1:9\n"
        "    compression: {min_size: big}\n"
    )
    result = fastgw("check", "-c", str(bad))
    assert result.returncode == 1
    for path in ("compression.algorithms[1]", "compression.levels.gzip", "routes[0].compression.min_size"):
        assert f"  {path}" in result.stderr, (path, result.stderr)


def test_check_reports_upstream_health_and_zone_errors_with_their_field_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "zone: {min_healthy: 0.5}\n"
        "routes:\n"
        "  - upstream:\n"
        "      endpoints: [{url: 'http://127.0.0.1:9', zone: 3}]\n"
        "      health: {path: healthz, expect: '600', interval: 1s, timeout: 5s}\n"
        "      outlier: {consecutive_5xx: many, base_ejection: 1m, max_ejection: 1s}\n"
        "      slow_start: later\n"
        "      zones: {min_healthy: 1.5}\n"
    )
    result = fastgw("check", "-c", str(bad))
    assert result.returncode == 1
    for path in ("zone.name", "routes[0].upstream.endpoints[0].zone", "routes[0].upstream.health.path",
                 "routes[0].upstream.health.expect", "routes[0].upstream.health.timeout",
                 "routes[0].upstream.outlier.consecutive_5xx", "routes[0].upstream.outlier.max_ejection",
                 "routes[0].upstream.slow_start", "routes[0].upstream.zones.min_healthy"):
        assert f"  {path}" in result.stderr, (path, result.stderr)


def test_check_names_unset_secrets_without_failing_silently():
    result = fastgw("check", "-c", "examples/gateway.yaml", env={k: "" for k in SECRETS} | {"TEAM_B_KEY": "b"})
    assert result.returncode == 1
    assert "providers[0].api_keys[0]" in result.stderr


def test_check_missing_file_is_a_clear_error(tmp_path):
    result = fastgw("check", "-c", str(tmp_path / "none.yaml"))
    assert result.returncode == 1 and "cannot read config" in result.stderr


def test_run_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: 0\n")
    result = fastgw("run", "-c", str(bad))
    assert result.returncode == 2 and "workers" in result.stderr


def test_run_without_config_serves_mock_gpt_on_8080():
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.fail("something already listens on 127.0.0.1:8080, which the embedded default uses")
    gw = Proc([sys.executable, "-m", "fastgw", "run"])
    try:
        gw.wait_line("listening on http://127.0.0.1:8080")
        client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused", max_retries=2)
        answer = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    finally:
        assert gw.stop(signal.SIGTERM) == 0

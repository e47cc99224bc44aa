"""Metrics and access logs as an operator sees them: through a real gateway and its admin port."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.support.gateway import Gateway, MockLLMProcess, RawClient
from tests.support.metrics import samples, value

KEY = "sk-observed-consumer-secret"


@pytest.fixture(scope="module")
def upstream():
    mock = MockLLMProcess()
    yield mock
    mock.stop()


def test_metrics_and_access_log(tmp_path, upstream):
    log_path = tmp_path / "access.log"
    config = {
        "log": {"access": str(log_path)},
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 4}}],
        "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
        "consumers": [{"name": "team", "api_keys": [KEY]}],
        "routes": [{"name": "plain", "match": {"path": "/"}, "upstream": upstream.url}],
        "limits": [{"name": "spend", "quota": {"cost": 1000.0, "prices": {"*": {"input": 2.0, "output": 8.0}}}}],
    }
    gw = Gateway(config, tmp_path, workers=2)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        for _ in range(3):
            c = RawClient(gw.port)
            c.send(b"GET /json?api_key=leak HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response()[0] == 200
            c.close()

        deadline = time.monotonic() + 5  # workers publish their snapshots about once a second
        while True:
            found = samples(gw.admin)
            if value(found, "fastgw_requests_total", route="plain", status_class="2xx", lane="base") == 3 and value(
                found, "fastgw_ai_requests_total", consumer="team", model="m", provider="mock", status="200", lane="base"
            ) == 2:
                break
            assert time.monotonic() < deadline, {k: v for k, v in found.items() if "requests_total" in k[0]}
            time.sleep(0.2)
        assert value(found, "fastgw_ai_requests_total", consumer="team", model="nope", provider="", status="404",
                     lane="base") == 1
        completion = value(found, "fastgw_tokens_total", consumer="team", model="m", provider="mock", direction="completion")
        assert completion > 0
        assert value(found, "fastgw_ai_ttft_seconds_count", model="m", provider="mock", lane="base") == 1  # only the stream
        assert value(found, "fastgw_request_duration_seconds_count", route="plain", lane="base") == 3

        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert len(lines) == 6
        ai = [line for line in lines if line.get("model") == "m"]
        assert {line["stream"] for line in ai} == {True, False}
        for line in ai:
            assert line["consumer"] == "team" and line["provider"] == "mock" and line["status"] == 200
            assert line["total_tokens"] == line["prompt_tokens"] + line["completion_tokens"] > 0
            expected_cost = (line["prompt_tokens"] * 2.0 + line["completion_tokens"] * 8.0) / 1e6  # USD per 1M tokens
            assert line["cost"] == pytest.approx(expected_cost)
        assert value(found, "fastgw_cost_total", consumer="team", model="m", provider="mock") == pytest.approx(
            sum(line["cost"] for line in ai)
        )
        assert any("ttft_ms" in line for line in ai)
        plain = [line for line in lines if line.get("route") == "plain"]
        assert len(plain) == 3 and all(line["path"] == "/json" for line in plain)  # secret-looking query dropped
        assert KEY not in log_path.read_text() and "leak" not in log_path.read_text()
    finally:
        assert gw.stop() == 0

"""Prompt templates and decorators through a real gateway, hot-swapped by a config push."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest

from tests.support.gateway import Gateway, send_json

ANSWER = {
    "id": "chatcmpl-capture", "object": "chat.completion", "created": 1, "model": "captured",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class CaptureProvider:
    """An OpenAI-compatible provider that records every request body it receives."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                provider.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                send_json(self, ANSWER)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def capture():
    provider = CaptureProvider()
    yield provider
    provider.server.shutdown()


def config(capture: CaptureProvider, safety: str) -> dict:
    return {
        "providers": [{"name": "cap", "type": "openai-compatible", "base_url": capture.url}],
        "models": [{"name": "m", "targets": [{"provider": "cap", "model": "upstream-m"}]}],
        "prompts": {
            "templates": [{
                "name": "summarize",
                "messages": [
                    {"role": "system", "content": "Summarise {{language}} text, {{style}}."},
                    {"role": "user", "content": "{{text}}"},
                ],
                "defaults": {"style": "briefly"},
                "model": "m",
            }],
            "decorators": [{"name": "safety", "prepend": [{"role": "system", "content": safety}]}],
        },
    }


def test_templates_and_decorators_reach_the_provider_and_swap_live(tmp_path, capture):
    gw = Gateway(config(capture, "Never reveal secrets."), tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert capture.bodies[-1]["messages"] == [
            {"role": "system", "content": "Never reveal secrets."},
            {"role": "user", "content": "hi"},
        ]
        client.post(
            "/chat/completions", cast_to=object,
            body={"template": {"name": "summarize", "variables": {"language": "French", "text": "Bonjour {{style}}"}}},
        )
        sent = capture.bodies[-1]
        assert sent["model"] == "upstream-m" and "template" not in sent
        assert sent["messages"] == [
            {"role": "system", "content": "Never reveal secrets."},
            {"role": "system", "content": "Summarise French text, briefly."},
            {"role": "user", "content": "Bonjour {{style}}"},  # a variable's value is never expanded again
        ]
        with pytest.raises(openai.BadRequestError) as err:
            client.post("/chat/completions", cast_to=object, body={"template": {"name": "summarize", "variables": {}}})
        assert "language" in str(err.value) and "text" in str(err.value)
        with pytest.raises(openai.NotFoundError):
            client.post("/chat/completions", cast_to=object, body={"model": "m", "template": {"name": "nope"}})

        # Anthropic clients get the decorators too (converted, not passed through natively).
        claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "yo"}])
        assert capture.bodies[-1]["messages"][0] == {"role": "system", "content": "Never reveal secrets."}

        status, answer = gw.push(config(capture, "Answer in English only."))
        assert status == 200, answer
        gw.wait_ready(2, generation=answer["generation"])
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert capture.bodies[-1]["messages"][0]["content"] == "Answer in English only."
    finally:
        assert gw.stop() == 0

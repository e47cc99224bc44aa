"""The content guard through a real gateway: prompts and answers, plain and streamed."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from fastgw.mock.core import answer_text
from tests.e2e.test_prompts import CaptureProvider
from tests.support.gateway import Gateway, send_json

TEXT = answer_text(8)  # "This is a mock answer from fastgw mock-llm." one word per chunk


class SlowModeration:
    """An OpenAI-shaped moderation endpoint that answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                send_json(self, {"results": [{"flagged": False}]})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/moderations"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def guarded(guard: dict, provider: dict | None = None) -> dict:
    provider = provider or {"name": "mock", "type": "mock", "options": {"chunks": 8}}
    return {
        "providers": [provider],
        "models": [{"name": "m", "targets": [{"provider": provider["name"], "model": "mock-gpt"}]}],
        "guard": guard,
    }


RULES = {
    "rules": [
        {"name": "forbidden", "terms": ["launch codes"], "action": "block", "apply_to": ["prompt"]},
        {"name": "no-mock", "terms": ["MOCK answer"], "action": "mask", "mask": "*", "apply_to": ["response"]},
    ]
}


@pytest.mark.parametrize("pure", [False, True])
def test_blocked_prompt_and_masked_answers(tmp_path, pure):
    gw = Gateway(guarded(RULES), tmp_path, pure=pure)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Send the LAUNCH CODES"}])
        assert "content filter" in str(err.value)
        masked = TEXT.replace("mock answer", "*" * len("mock answer"))
        plain = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert plain.choices[0].message.content == masked
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        chunks = [c for c in stream if c.choices]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == masked  # "mock" and "answer" arrive apart
        assert chunks[-1].choices[0].finish_reason == "stop"
    finally:
        assert gw.stop() == 0


def test_a_blocked_streamed_answer_ends_cleanly(tmp_path):
    rules = {"rules": [{"name": "stop-it", "terms": ["fastgw"], "action": "block", "apply_to": ["response"]}]}
    gw = Gateway(guarded(rules), tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        chunks = [c for c in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices]
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        assert "fastgw" not in "".join(c.choices[0].delta.content or "" for c in chunks)
    finally:
        assert gw.stop() == 0


def test_pii_is_masked_before_the_provider_sees_it(tmp_path):
    capture = CaptureProvider()
    rules = {"rules": [{"name": "pii", "pii": ["email", "card"], "action": "mask", "mask": "[PII]", "apply_to": ["prompt"]}]}
    provider = {"name": "cap", "type": "openai-compatible", "base_url": capture.url}
    gw = Gateway(guarded(rules, provider), tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        text = "Mail jane.doe@example.com, card 4111 1111 1111 1111, ref 4111 1111 1111 1112."
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
        sent = capture.bodies[-1]["messages"][0]["content"]
        assert sent == "Mail [PII], card [PII], ref 4111 1111 1111 1112."  # the last fails the Luhn check
    finally:
        gw.stop()
        capture.server.shutdown()


@pytest.mark.parametrize("policy, allowed", [("open", True), ("closed", False)])
def test_moderation_hook_timing_out(tmp_path, policy, allowed):
    hook = SlowModeration(delay=2.0)
    moderation = {"url": hook.url, "timeout": "300ms", "on_error": policy, "apply_to": ["prompt"]}
    gw = Gateway(guarded({"moderation": moderation}), tmp_path, workers=1)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        started = time.monotonic()
        if allowed:
            assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
        else:
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert time.monotonic() - started < 1.5  # the hook's timeout, not its 2 s answer
    finally:
        gw.stop()
        hook.server.shutdown()

"""fastgw.ai.faults: the providers' documented context-window errors (read through each adapter's
own ``error``) are recognised, other 4xx are not; a stream's tail proves it complete or not."""

from __future__ import annotations

import json

import pytest

from fastgw.ai.faults import anthropic_stream_complete, context_overflow, openai_stream_complete
from fastgw.ai.providers import adapter_for
from tests.support.fault_provider import anthropic_stream, openai_stream, split_every


def adapter(kind: str):
    return adapter_for({"name": kind, "type": kind, "base_url": "http://127.0.0.1:1", "options": {}})


CONTEXT_ERRORS = [
    ("openai", 400, {"error": {"message": "This model's maximum context length is 128000 tokens. However, your "
                               "messages resulted in 130532 tokens. Please reduce the length of the messages.",
                               "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
    ("openai", 400, {"error": {"message": "Your input exceeds the context window of this model. Please adjust your "
                               "input and try again.", "type": "invalid_request_error", "param": "input",
                               "code": "context_length_exceeded"}}),
    ("anthropic", 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": "prompt is too long: 208310 tokens > 200000 maximum"}}),
    ("anthropic", 400, {"type": "error", "error": {"type": "invalid_request_error", "message":
                        "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, decrease input "
                        "length or `max_tokens` and try again"}}),
    ("gemini", 400, {"error": {"code": 400, "message": "The input token count (1250000) exceeds the maximum number "
                               "of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}),
]
OTHER_ERRORS = [
    ("openai", 400, {"error": {"message": "Invalid value for 'temperature': must be <= 2.", "type":
                               "invalid_request_error", "param": "temperature", "code": "invalid_value"}}),
    ("anthropic", 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}),
    ("gemini", 400, {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}),
    ("openai", 429, {"error": {"message": "maximum context length quota", "type": "requests", "code": "rate_limit_exceeded"}}),
]


@pytest.mark.parametrize(("kind", "status", "body"), CONTEXT_ERRORS)
def test_documented_context_window_errors_are_recognised(kind, status, body):
    message, code = adapter(kind).error(status, json.dumps(body, indent=1).encode())
    assert context_overflow(status, message, code)


@pytest.mark.parametrize(("kind", "status", "body"), OTHER_ERRORS)
def test_other_client_errors_are_not(kind, status, body):
    message, code = adapter(kind).error(status, json.dumps(body).encode())
    assert not context_overflow(status, message, code)


def test_an_openai_tail_is_complete_only_with_finish_and_usage():
    assert openai_stream_complete(openai_stream(["a"], done=False))
    assert openai_stream_complete(b"".join(split_every(openai_stream(["a", "b"], done=False), 5)))
    assert not openai_stream_complete(openai_stream(["a"], done=False, usage=False))
    assert not openai_stream_complete(openai_stream(["a"], done=False, finish=None))
    assert not openai_stream_complete(b"data: {not json\n\n")


def test_an_anthropic_tail_is_complete_once_message_delta_has_a_stop_reason():
    assert anthropic_stream_complete(anthropic_stream([{"type": "text", "text": "x y"}], stop=False))
    body = anthropic_stream([{"type": "text", "text": "x y"}], stop=False)
    assert not anthropic_stream_complete(body[: body.index(b"event: message_delta")])

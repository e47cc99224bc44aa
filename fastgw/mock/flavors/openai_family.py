"""Mock dialects of providers that speak OpenAI's format: same bodies, their own paths, auth and errors.

Each flavor maps its provider's path prefix onto ``OpenAIFlavor``'s ``/v1`` routes, so answers
(and the text for a given ``chunks``) are identical to the OpenAI mock's; only what really
differs between the services (URL layout, whether a key is required, the error body, DeepSeek's
reasoning stream) is written here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastgw.mock.core import MockReply, MockRequest, OpenAIFlavor, _json_reply

_SEP = (",", ":")


def _bearer(headers: dict[str, str]) -> bool:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(key.strip())


class OpenAICompatibleFlavor(OpenAIFlavor):
    """A vLLM/Groq-style server: OpenAI under /v1, with a Bearer key required."""

    prefixes: tuple[str, ...] = ("/v1",)
    """Path prefixes that stand for OpenAI's /v1, tried in order ("" maps the bare root)."""
    needs_key = True

    def respond(self, req: MockRequest) -> MockReply:
        path = self._openai_path(req.path)
        if path is None:
            return self.error(404, f"Unknown request URL: {req.method} {req.path}", "unknown_url")
        if self.needs_key and not _bearer(req.headers):
            return self.unauthorized()
        return self.answer(replace(req, path=path))

    def _openai_path(self, path: str) -> str | None:
        for prefix in self.prefixes:
            if path.startswith(prefix + "/"):
                return "/v1" + path[len(prefix) :]
        return None

    def unauthorized(self) -> MockReply:
        return self.error(401, "Incorrect API key provided.", "invalid_api_key")

    def answer(self, req: MockRequest) -> MockReply:
        """The OpenAI answer for a request already mapped to /v1 (a hook for dialect quirks)."""
        return super().respond(req)


class OllamaFlavor(OpenAIFlavor):
    """Ollama's /v1 endpoints: no key checked; errors typed by status with a null code, as Ollama's
    OpenAI middleware writes them."""

    _TYPES = {400: "invalid_request_error", 404: "not_found_error"}

    def error(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> MockReply:
        kind = self._TYPES.get(status, "api_error")
        return _json_reply(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})


class QwenFlavor(OpenAICompatibleFlavor):
    """DashScope compatible mode: OpenAI under /compatible-mode/v1; errors carry a request_id."""

    prefixes = ("/compatible-mode/v1",)

    def error(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> MockReply:
        reply = super().error(status, message, code, param)
        body = json.loads(reply.body or b"{}")
        body["request_id"] = "00000000-mock-0000-0000-000000000000"
        reply.body = json.dumps(body, separators=_SEP).encode()
        return reply


REASONING_WORDS = ("Let", " me", " think", " about", " it.")
"""What a DeepSeek reasoner mock "thinks" before answering: reasoning_content, never content."""


def _sse_payload(event: bytes) -> dict[str, Any]:
    """The JSON object of one ``data:`` event."""
    return json.loads(event.decode().removeprefix("data: "))


def _sse_event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=_SEP).encode() + b"\n\n"


class DeepSeekFlavor(OpenAICompatibleFlavor):
    """api.deepseek.com: chat at /chat/completions and /v1/chat/completions, FIM completions also
    under /beta, no embeddings; models named ``*reasoner*`` think first (``reasoning_content``)."""

    prefixes = ("/v1", "/beta", "")

    def error(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> MockReply:
        if status != 401:
            return super().error(status, message, code, param)
        error = {
            "message": message,
            "type": "authentication_error",
            "param": None,
            "code": "invalid_request_error",
        }
        return _json_reply(401, {"error": error})

    def unauthorized(self) -> MockReply:
        return self.error(401, "Authentication Fails (auth header format should be Bearer sk-...)")

    def answer(self, req: MockRequest) -> MockReply:
        if req.path == "/v1/embeddings":
            return self.error(404, f"Unknown request URL: {req.method} {req.path}", "unknown_url")
        reply = super().answer(req)
        if req.path != "/v1/chat/completions" or reply.status != 200:
            return reply
        model = json.loads(req.body)["model"]  # a 200 from the OpenAI flavor: a JSON object with a model
        return self._with_reasoning(reply) if "reasoner" in model else reply

    @staticmethod
    def _with_reasoning(reply: MockReply) -> MockReply:
        """Add the reasoning DeepSeek reasoners send: in the message, or as deltas before the answer."""
        reasoning = len(REASONING_WORDS)
        if reply.events is None:
            body = json.loads(reply.body or b"{}")
            body["choices"][0]["message"]["reasoning_content"] = "".join(REASONING_WORDS)
            _count_reasoning(body["usage"], reasoning)
            return _json_reply(200, body)
        chunks = [_sse_payload(e) for e in reply.events[:-1]]  # the OpenAI mock's last event is [DONE]
        first = chunks[0]
        thinking = []
        for word in REASONING_WORDS:
            chunk = json.loads(json.dumps(first))
            chunk["choices"][0]["delta"] = {"content": None, "reasoning_content": word}
            thinking.append(chunk)
        first["choices"][0]["delta"]["reasoning_content"] = ""
        for chunk in chunks:
            if isinstance(chunk.get("usage"), dict):
                _count_reasoning(chunk["usage"], reasoning)
        events = [_sse_event(c) for c in (first, *thinking, *chunks[1:])] + [reply.events[-1]]
        return MockReply(reply.status, reply.headers, events=events)


def _count_reasoning(usage: dict[str, Any], tokens: int) -> None:
    usage["completion_tokens"] += tokens
    usage["total_tokens"] += tokens
    usage["completion_tokens_details"] = {"reasoning_tokens": tokens}

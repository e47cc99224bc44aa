"""Anthropic Messages API dialect for the mock LLM (``fastgw mock-llm --flavor anthropic``).

Wire-faithful enough for the real ``anthropic`` SDK: the same headers, validation errors, message and
SSE event shapes as api.anthropic.com, so adapter and front-door tests exercise real client code. The
answer text equals the OpenAI flavor's for the same ``chunks``, so tests can compare across providers.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastgw.anthropic_errors import error_type
from fastgw.mock.core import (
    _SSE_HEADERS,
    MockReply,
    MockRequest,
    _estimate_tokens,
    _json_reply,
    _message_text,
    _new_id,
    answer_words,
)

DEFAULT_MODEL = "mock-claude"


def _sse(events: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    """Anthropic frames every event with its name; there is no ``[DONE]``."""
    return [
        f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for name, data in events
    ]


class _Invalid(Exception):
    """A request the real API would refuse with 400 invalid_request_error."""


def _validate(payload: Any, counting: bool) -> None:
    """The checks api.anthropic.com makes that clients most often trip on (count_tokens takes no
    max_tokens)."""
    if not isinstance(payload, dict):
        raise _Invalid("The request body must be a JSON object.")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise _Invalid("model: Field required")
    max_tokens = payload.get("max_tokens")
    if max_tokens is None and not counting:
        raise _Invalid("max_tokens: Field required")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _Invalid("max_tokens: Input should be a valid positive integer")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _Invalid('messages: first message must use the "user" role')
        if i and role == messages[i - 1]["role"]:
            raise _Invalid(
                f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
            )
        content = message.get("content")
        if not isinstance(content, str | list) or (not content and (role == "user" or i < len(messages) - 1)):
            raise _Invalid(
                f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise _Invalid("stream: Input should be a valid boolean")
    tools = payload.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
    ):
        raise _Invalid("tools: Input should be a list of tools, each with a name")
    choice = payload.get("tool_choice")
    if choice is not None:
        if not tools:
            raise _Invalid("tool_choice: tool_choice may only be specified while providing tools.")
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise _Invalid(
                "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
            )
        if choice["type"] == "tool" and choice.get("name") not in [t.get("name") for t in tools]:
            raise _Invalid(f"tool_choice: Tool '{choice.get('name')}' not found in tools")


def _forced_tool(payload: dict[str, Any]) -> str | None:
    """The tool a request forces (tool_choice ``tool`` names it, ``any`` means the first), else None."""
    choice = payload.get("tool_choice")
    if not isinstance(choice, dict):
        return None
    if choice.get("type") == "tool":
        return choice["name"]
    return payload["tools"][0].get("name") if choice.get("type") == "any" else None


def _prompt_tokens(payload: dict[str, Any]) -> int:
    system = payload.get("system")
    texts = [_message_text(m) for m in payload["messages"]]
    return _estimate_tokens(texts + ([_message_text({"content": system})] if system else []))


class AnthropicFlavor:
    """api.anthropic.com shapes: messages (plain, streamed, tool use), token counting, models, errors."""

    def __init__(self, models: tuple[str, ...] = ()) -> None:
        self.models = (DEFAULT_MODEL, *(m for m in models if m != DEFAULT_MODEL))

    def error(self, status: int, message: str, code: str | None = None) -> MockReply:
        """Anthropic's error body; ``code`` picks the error type when it is one (e.g. overloaded_error)."""
        kind = error_type(status, code)
        request_id = _new_id("req_")
        reply = _json_reply(
            status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        )
        reply.headers.append(("request-id", request_id))
        if status in (429, 529):
            reply.headers.append(("retry-after", "1"))
        return reply

    def respond(self, req: MockRequest) -> MockReply:
        # the anthropic SDK (2.x) sends its key as "authorization: Bearer", older clients as x-api-key
        if not req.headers.get("x-api-key") and not req.headers.get("authorization", "").startswith(
            "Bearer "
        ):
            return self.error(401, "x-api-key header is required")
        if req.method == "GET" and req.path == "/v1/models":
            data = [self._model(m) for m in self.models]
            return _json_reply(
                200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
            )
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            model = req.path[len("/v1/models/") :]
            if model in self.models:
                return _json_reply(200, self._model(model))
            return self.error(404, f"model: {model}")
        if req.method != "POST" or req.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return self.error(404, "Not Found")
        if not req.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        try:
            payload = json.loads(req.body)
        except ValueError:
            return self.error(400, "There was an error parsing the body of your request as JSON.")
        counting = req.path.endswith("/count_tokens")
        try:
            _validate(payload, counting)
        except _Invalid as exc:
            return self.error(400, str(exc))
        if counting:
            return _json_reply(200, {"input_tokens": _prompt_tokens(payload)})
        return self._message(payload, req.chunks)

    @staticmethod
    def _model(model: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }

    def _message(self, payload: dict[str, Any], chunks: int) -> MockReply:
        model = payload["model"]
        usage = {
            "input_tokens": _prompt_tokens(payload),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        }
        tool = _forced_tool(payload)
        if tool:
            args = json.dumps({"mock": True, "tool": tool}, separators=(",", ":"))
            size = math.ceil(len(args) / max(chunks, 1))
            pieces = [args[i : i + size] for i in range(0, len(args), size)]
            block: dict[str, Any] = {"type": "tool_use", "id": _new_id("toolu_"), "name": tool, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
            final = {**block, "input": json.loads(args)}
            stop_reason = "tool_use"
        else:
            # max_tokens is honoured (one word a token) so clients can test the max_tokens stop reason
            pieces = list(answer_words(chunks)[: payload["max_tokens"]])
            stop_reason = "max_tokens" if len(pieces) < chunks else "end_turn"
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces]
            final = {**block, "text": "".join(pieces)}
        message = {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [final],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": len(pieces)},
        }
        if not payload.get("stream"):
            return _json_reply(200, message)
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
            ("ping", {"type": "ping"}),
            *[
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
                for d in deltas
            ],
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(pieces)},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return MockReply(200, list(_SSE_HEADERS), events=_sse(events))

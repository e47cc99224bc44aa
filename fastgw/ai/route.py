"""The AI front door's built-in filters: decode the client's dialect, resolve the model.

``Decode`` turns an Anthropic Messages request into the OpenAI-shaped request every later
filter reads (the client's own request is kept for native pass-through). ``RouteModel``
checks the request, resolves the public model name, authorises the consumer, and moves
the request onto the model's own chain (the AI chain plus the model's filters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastgw.ai.anthropic_front import FrontDoorError, messages_to_openai
from fastgw.filters.api import Filter, Phase, Status
from fastgw.server.stream import Stream

if TYPE_CHECKING:
    from fastgw.ai.frontdoor import ModelTable
    from fastgw.auth import Authenticator


def validate(op: str, request: dict[str, Any]) -> str | None:
    """Enough to answer garbage with a clear 400; unknown fields pass through untouched."""
    if op == "chat":
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            return "each message must be an object with a 'role'"
    elif op == "completions":
        if "prompt" not in request:
            return "'prompt' is required"
    elif op == "embeddings":
        if not isinstance(request.get("input"), str | list):
            return "'input' must be a string or a list"
    elif op == "messages":
        if not isinstance(request.get("messages"), list) or not request["messages"]:
            return "'messages' must be a non-empty list"
    if "stream" in request and not isinstance(request["stream"], bool):
        return "'stream' must be a boolean"
    return None


class Decode(Filter):
    stateless = True
    name = "decode"
    phase = Phase.DECODE

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        if s.op not in ("messages", "count_tokens"):
            return Status.CONTINUE
        problem = validate("messages", request)
        if problem:
            return s.reply(400, problem, "invalid_request")
        native = request
        if s.op == "count_tokens" and "max_tokens" not in request:
            request = {**request, "max_tokens": 1}  # counting takes none; the converter wants one
        try:
            converted = messages_to_openai(request)
        except FrontDoorError as exc:
            return s.reply(exc.status, exc.message, "invalid_request")
        s.native_request = native
        s.request = s.decoded = converted  # the baseline later filters may change
        return Status.CONTINUE


class RouteModel(Filter):
    stateless = True
    name = "route"
    phase = Phase.ROUTE

    def __init__(self, models: ModelTable, authenticator: Authenticator) -> None:
        super().__init__()
        self.models = models
        self.authenticator = authenticator

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        model = request.get("model")
        if not isinstance(model, str) or not model:
            return s.reply(400, "'model' is required and must be a non-empty string", "missing_model")
        s.model = model  # the name asked for, in logs and metrics whatever happens next
        if s.op != "messages":
            problem = validate(s.op, request)
            if problem:
                return s.reply(400, problem, "invalid_request")
        entry = self.models.resolve(model)
        if entry is None:
            return s.reply(404, f"model '{model}' is not served by this gateway", "model_not_found")
        denied = self.authenticator.authorize(s.consumer, model)
        if denied is not None:
            return s.reply(denied.status, denied.message, denied.code)
        s.entry = entry
        s.compression = entry.compression
        s.is_stream = bool(request.get("stream")) and s.op != "embeddings"
        s.switch_chain(entry.chain)
        return Status.CONTINUE

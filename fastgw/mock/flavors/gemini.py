"""Mock Gemini API (generativelanguage.googleapis.com) in its own wire format.

``models/{m}:generateContent``, ``:streamGenerateContent`` (SSE with ``alt=sse``, a JSON array
otherwise), ``:batchEmbedContents`` and the model list, under v1beta (and v1). The answer text
for a given ``chunks`` is the OpenAI mock's, one word per stream event; the last event carries
``finishReason: STOP`` and the usage. A request with tools and ``functionCallingConfig.mode: ANY``
gets a functionCall; a prompt with the word "blockme" is blocked (``promptFeedback.blockReason``);
``maxOutputTokens`` below the answer's length cuts it with ``MAX_TOKENS``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from fastgw.mock.core import (
    MockReply,
    MockRequest,
    _estimate_tokens,
    _json_reply,
    _new_id,
    answer_words,
    embed_vector,
)

_PATH = re.compile(r"/(v1|v1beta|v1alpha)/models(?:/([^/:]+)(?::(\w+))?)?")
_SEP = (",", ":")
_SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
_BLOCK_WORD = re.compile(r"\bblockme\b", re.IGNORECASE)
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _texts(payload: dict[str, Any]) -> list[str]:
    """Every text part of the prompt (system instruction and contents)."""
    contents = [payload.get("systemInstruction") or {}, *(payload.get("contents") or [])]
    return [
        part["text"]
        for content in contents
        if isinstance(content, dict)
        for part in content.get("parts") or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]


def _forced_function(payload: dict[str, Any]) -> str | None:
    """The function a request forces (mode ANY: the first allowed name, else the first declared)."""
    config = (payload.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if config.get("mode") != "ANY":
        return None
    allowed = config.get("allowedFunctionNames") or []
    declared = [
        d.get("name") for t in payload.get("tools") or [] for d in t.get("functionDeclarations") or []
    ]
    return allowed[0] if allowed else next(iter(declared), None)


class GeminiFlavor:
    """Gemini's REST shapes and Google's error body ``{"error": {"code", "message", "status"}}``."""

    def __init__(self, models: tuple[str, ...] = ()) -> None:
        self.models = tuple(dict.fromkeys(("gemini-2.0-flash", "text-embedding-004", *models)))

    def error(self, status: int, message: str, code: str | None = None) -> MockReply:
        """A mock-specific ``code`` rides as an ErrorInfo reason, where Google puts e.g.
        API_KEY_INVALID; a 429 says when to retry (RetryInfo), as Google's quota errors do."""
        canonical = _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        error: dict[str, Any] = {"code": status, "message": message, "status": canonical}
        details = []
        if code:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": code,
                    "domain": "googleapis.com",
                }
            )
        if status == 429:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"})
        if details:
            error["details"] = details
        return _json_reply(status, {"error": error})

    def respond(self, req: MockRequest) -> MockReply:
        match = _PATH.fullmatch(req.path)
        if match is None:
            return self.error(404, f"The requested URL {req.path} was not found on this server.")
        _, model, method = match.groups()
        if not (req.headers.get("x-goog-api-key") or parse_qs(req.query).get("key")):
            return self.error(403, _UNREGISTERED)
        if req.method == "GET" and method is None:
            if model is None:
                return _json_reply(200, {"models": [self._model(m) for m in self.models]})
            if model in self.models:
                return _json_reply(200, self._model(model))
            return self.error(404, f"models/{model} is not found for API version v1beta.")
        if (
            req.method != "POST"
            or model is None
            or method
            not in (
                "generateContent",
                "streamGenerateContent",
                "batchEmbedContents",
            )
        ):
            return self.error(404, f"Method {req.method} {req.path} is not found.")
        try:
            payload = json.loads(req.body)
        except ValueError:
            return self.error(400, "Invalid JSON payload received.")
        if not isinstance(payload, dict):
            return self.error(400, "Invalid JSON payload received. Expected an object.")
        if method == "batchEmbedContents":
            return self._embed(payload, model)
        stream = method == "streamGenerateContent"
        return self._generate(payload, model, req.chunks, stream, stream and "alt=sse" in req.query)

    @staticmethod
    def _model(model: str) -> dict[str, Any]:
        methods = (
            ["embedContent", "batchEmbedContents"]
            if "embedding" in model
            else ["generateContent", "countTokens"]
        )
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "description": "fastgw mock model",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": methods,
        }

    def _generate(
        self, payload: dict[str, Any], model: str, chunks: int, stream: bool, sse: bool
    ) -> MockReply:
        contents = payload.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.error(400, "* GenerateContentRequest.contents: contents is not specified")
        texts = _texts(payload)
        prompt = _estimate_tokens(texts)
        head = {"modelVersion": model, "responseId": _new_id("")}
        if any(_BLOCK_WORD.search(t) for t in texts):
            blocked = {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                **head,
            }
            return self._answer([blocked], stream, sse)
        config = payload.get("generationConfig") or {}
        function = _forced_function(payload)
        if function:
            args = {"mock": True, "tool": function}
            pieces = [[{"functionCall": {"name": function, "args": args}}]]
            counts, finish = [_estimate_tokens([json.dumps(args)])], "STOP"
        else:
            words = answer_words(chunks)
            limit = config.get("maxOutputTokens")
            finish = "MAX_TOKENS" if isinstance(limit, int) and limit < len(words) else "STOP"
            words = words[:limit] if finish == "MAX_TOKENS" else words
            if stream and words:
                pieces, counts = [[{"text": w}] for w in words], list(range(1, len(words) + 1))
            else:
                pieces, counts = [[{"text": "".join(words)}]], [len(words)]
        candidates = config.get("candidateCount", 1)
        if not isinstance(candidates, int) or not 1 <= candidates <= 8:
            return self.error(
                400, "* GenerateContentRequest.generation_config.candidate_count: must be 1 to 8"
            )
        events = []
        for i, (parts, count) in enumerate(zip(pieces, counts, strict=True)):
            ending = {"finishReason": finish} if i == len(pieces) - 1 else {}
            output = count * candidates  # cumulative, as Gemini reports it on every stream event
            usage = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": output,
                "totalTokenCount": prompt + output,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            }
            answers = [
                {"content": {"parts": parts, "role": "model"}, **ending, "index": c}
                for c in range(candidates)
            ]
            events.append({"candidates": answers, "usageMetadata": usage, **head})
        return self._answer(events, stream, sse)

    @staticmethod
    def _answer(events: list[dict[str, Any]], stream: bool, sse: bool) -> MockReply:
        """One response object, a JSON array of them (stream without alt=sse), or SSE events."""
        if not stream:
            return _json_reply(200, events[0])
        if not sse:
            return _json_reply(200, events)
        # Google ends each SSE event with CRLF CRLF; a stream has no [DONE] sentinel.
        framed = [b"data: " + json.dumps(e, separators=_SEP).encode() + b"\r\n\r\n" for e in events]
        return MockReply(200, list(_SSE_HEADERS), events=framed)

    def _embed(self, payload: dict[str, Any], model: str) -> MockReply:
        requests = payload.get("requests")
        if not isinstance(requests, list) or not requests:
            return self.error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        embeddings = []
        for i, request in enumerate(requests):
            if not isinstance(request, dict) or request.get("model") != f"models/{model}":
                return self.error(
                    400,
                    f"Model name in requests[{i}] must match the model in the URL: models/{model}.",
                )
            text = "".join(_texts({"contents": [request.get("content")]}))
            dims = request.get("outputDimensionality", 16)
            if not isinstance(dims, int) or not 1 <= dims <= 8192:
                return self.error(400, "* outputDimensionality must be a positive integer.")
            embeddings.append({"values": embed_vector(text, dims)})
        return _json_reply(200, {"embeddings": embeddings})

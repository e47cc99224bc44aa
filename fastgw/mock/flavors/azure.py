"""Mock Azure OpenAI: OpenAI bodies under ``/openai/deployments/{deployment}/...?api-version=``.

Faithful where clients and gateways trip: the ``api-key`` header, a required api-version,
Azure's ``{"error": {"code", "message"}}`` bodies (DeploymentNotFound, content_filter), and
the content-filter annotations, including the first stream chunk that has no choices, only
``prompt_filter_results``. A prompt containing "filterme" is refused as Azure's filter would.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from fastgw.mock.core import MockReply, MockRequest, OpenAIFlavor, _json_reply, _message_text

_PATH = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)")
_SEP = (",", ":")
_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
_SAFE = {name: {"filtered": False, "severity": "safe"} for name in _CATEGORIES}
_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the "
    "last 5 minutes, please wait a moment and try again."
)
_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource."
)
_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry."
)


def _prompt_filter_results() -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": _SAFE}]


class AzureFlavor:
    """Azure OpenAI's data plane; any deployment name exists and serves the OpenAI mock's answers."""

    def __init__(self, models: tuple[str, ...] = ()) -> None:
        self.openai = OpenAIFlavor(models)

    def error(self, status: int, message: str, code: str | None = None) -> MockReply:
        """Azure's error body; 429 carries retry-after, as the service's rate limiter does."""
        reply = _json_reply(status, {"error": {"code": code or str(status), "message": message}})
        if status == 429:
            reply.headers.append(("retry-after", "1"))
        return reply

    def respond(self, req: MockRequest) -> MockReply:
        match = _PATH.fullmatch(req.path)
        if match is None or req.method != "POST":
            return self.error(404, _NOT_FOUND, "DeploymentNotFound")
        if not parse_qs(req.query).get("api-version"):
            return self.error(
                400,
                "The api-version query parameter (?api-version=) is required for all requests.",
                "BadRequest",
            )
        if not req.headers.get("api-key") and not req.headers.get("authorization", "").startswith("Bearer "):
            return self.error(401, _ACCESS_DENIED)  # Entra ID tokens (Bearer) are accepted too
        deployment, op = match.groups()
        try:
            payload = json.loads(req.body)
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.", "BadRequest")
        if not isinstance(payload, dict):
            return self.error(400, "The request body must be a JSON object.", "BadRequest")
        if op == "chat/completions" and any(
            "filterme" in _message_text(m) for m in payload.get("messages") or [] if isinstance(m, dict)
        ):
            return self._filtered()
        payload.setdefault("model", deployment)  # Azure names the model by the deployment, not the body
        body = json.dumps(payload, separators=_SEP).encode()
        reply = self.openai.respond(replace(req, path=f"/v1/{op}", body=body))
        if op != "chat/completions" or reply.status != 200:
            return reply
        return self._annotated(reply)

    def _filtered(self) -> MockReply:
        verdicts = {**_SAFE, "violence": {"filtered": True, "severity": "high"}}
        error = {
            "message": _FILTERED,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": verdicts},
        }
        return _json_reply(400, {"error": error})

    @staticmethod
    def _annotated(reply: MockReply) -> MockReply:
        """Add Azure's filter verdicts: on the body, or as the stream's choice-less first chunk."""
        if reply.events is None:
            body = json.loads(reply.body or b"{}")
            body["prompt_filter_results"] = _prompt_filter_results()
            for choice in body["choices"]:
                choice["content_filter_results"] = _SAFE
            return _json_reply(200, body)
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": _prompt_filter_results(),
        }
        event = b"data: " + json.dumps(first, separators=_SEP).encode() + b"\n\n"
        return MockReply(reply.status, reply.headers, events=[event, *reply.events])

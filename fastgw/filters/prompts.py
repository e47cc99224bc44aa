"""Prompt templates and decorators (engine: fastgw.ai.prompts), before the model is resolved:
a template may bring the model and the messages."""

from __future__ import annotations

from typing import Any

from fastgw.ai.prompts import PromptError, Prompts
from fastgw.filters.api import Filter, Phase, Status
from fastgw.server.stream import Stream


class PromptsFilter(Filter):
    stateless = True
    name = "prompts"
    phase = Phase.PROMPT

    def __init__(self, prompts: Prompts) -> None:
        super().__init__()
        self.prompts = prompts

    def on_request(self, s: Stream, request: dict[str, Any]) -> Status:
        try:
            out = self.prompts.apply(request, s.consumer.name if s.consumer is not None else None, request.get("model"))
        except PromptError as exc:
            return s.reply(exc.status, exc.message, "template_not_found" if exc.status == 404 else "template_error")
        if out != request:  # decorators must reach the provider: the request is no longer the client's
            s.request = out
        return Status.CONTINUE

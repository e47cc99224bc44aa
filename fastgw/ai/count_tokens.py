"""``POST /v1/messages/count_tokens``: how many input tokens a Messages request would cost.

Answered for the model's first target, never with a made-up zero:

* an Anthropic-format target: the provider's own ``/v1/messages/count_tokens`` (its tokenizer),
  the answer relayed as it is (``x-fastgw-token-count: provider``); its 4xx verdict on the
  request is the client's error; when it cannot answer (connect error, timeout, 401/403, 429,
  5xx) the count falls back to the local one below;
* any other target: the request, converted to OpenAI's shape, counted with OpenAI's chat formula
  (``fastgw.tokencount.count_chat``): exact for models with a known OpenAI encoding
  (``cl100k_base``, ``o200k_base``) and plain text, else the documented estimate
  (``x-fastgw-token-count: exact`` or ``estimate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastgw import fastjson
from fastgw.ai.attempts import NetworkAttempt, request_bytes
from fastgw.tokencount import count_chat

if TYPE_CHECKING:
    from fastgw.ai.frontdoor import ProviderRuntime
    from fastgw.ai.handler import ModelHandler

CLIENT_VERDICTS = (400, 404, 413, 422)
"""Provider answers that judge the request itself: relayed instead of counted locally."""


def local_count(request: dict[str, Any], model: str) -> tuple[int, bool]:
    """(input tokens, exact) of an OpenAI-shaped request for ``model``."""
    return count_chat(model, request.get("messages") or [], request.get("tools"))


class ProviderCount:
    """One call to an Anthropic provider's count-tokens endpoint, reporting to its handler."""

    def __init__(self, handler: ModelHandler, provider: ProviderRuntime, model: str, key_index: int) -> None:
        self.handler = handler
        self.loop = handler.loop
        self.provider = provider
        self.model = model
        self.key_index = key_index
        self.status = 0
        self.retry_after: float | None = None
        self.body: list[bytes] = []
        self.attempt: NetworkAttempt | None = None
        self.timer: Any = None

    def start(self, call: Any) -> None:
        provider = self.provider
        self.attempt = NetworkAttempt(self, provider.pool, request_bytes(call, provider.host_header),
                                      provider.timeouts["connect"])
        self.timer = self.loop.call_later(provider.timeouts["idle"], self._timed_out)
        self.attempt.start()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None

    def _timed_out(self) -> None:
        self.timer = None
        self._failed()

    def _failed(self) -> None:
        self.cancel()
        self.handler.count_locally(self.provider, self.model)

    # -- AttemptOwner ------------------------------------------------------------------------

    def pause(self) -> None:
        if self.attempt is not None:
            self.attempt.pause()

    def resume(self) -> None:
        if self.attempt is not None:
            self.attempt.resume()

    def attempt_head(self, attempt: Any, status: int, retry_after: float | None) -> None:
        self.status = status
        self.retry_after = retry_after

    def attempt_body(self, attempt: Any, chunk: bytes | memoryview) -> None:
        self.body.append(bytes(chunk))

    def attempt_failed(self, attempt: Any, status: int, message: str) -> None:
        self.attempt = None
        self._failed()

    def attempt_end(self, attempt: Any) -> None:
        self.attempt = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        body = b"".join(self.body)
        status = self.status
        provider = self.provider
        if 200 <= status < 300:
            try:
                answer = fastjson.loads(body)
            except ValueError:
                answer = None
            if isinstance(answer, dict) and type(answer.get("input_tokens")) is int:
                self.handler.counted(provider, self.model, body, "provider")
                return
        elif status in CLIENT_VERDICTS:
            message, code = provider.adapter.error(status, body)
            self.handler.reply_error(status, f"provider '{provider.name}' answered {status}: "
                                     f"{provider.redact(message)}", code)
            return
        elif status in (401, 403):
            provider.keys.cool(self.key_index, provider.key_cooldown["unauthorized"],
                               f"provider '{provider.name}' answered {status}")
        elif status == 429:
            provider.keys.cool(self.key_index, self.retry_after or provider.key_cooldown["rate_limited"])
        self.handler.count_locally(provider, self.model)

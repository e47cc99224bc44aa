"""What a provider's failure means for failover, read from the providers' documented errors.

* A context-window error is the client's error for *this* target only: a model with a larger
  window may take the request. OpenAI answers 400 with ``code: context_length_exceeded``
  ("This model's maximum context length is ..."); Anthropic 400 ``invalid_request_error``
  "prompt is too long: N tokens > M maximum" (or "input length and `max_tokens` exceed context
  limit"); Gemini 400 ``INVALID_ARGUMENT`` "The input token count (N) exceeds the maximum
  number of tokens allowed (M)".
* A stream that closed without its end marker is still a complete answer when its last events
  say so: OpenAI's final chunk carries ``finish_reason`` and the ``usage`` chunk follows it;
  Anthropic's ``message_delta`` carries ``stop_reason`` (and the usage) before ``message_stop``.
"""

from __future__ import annotations

import re

from fastgw import fastjson

CONTEXT_CODES = frozenset({"context_length_exceeded"})
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context[ _-]length|context window|exceed[s]? context limit|prompt is too long"
    r"|input token count.*exceeds the maximum number of tokens",
    re.IGNORECASE | re.DOTALL,
)
CLIENT_STATUSES = (400, 413, 422)

TAIL_EVENTS = 8
"""How many of a stream's last events are read to judge whether it was complete."""


def context_overflow(status: int, message: str, code: str | None) -> bool:
    """Whether a provider's 4xx says the prompt does not fit this model's context window."""
    if status not in CLIENT_STATUSES:
        return False
    return code in CONTEXT_CODES or _CONTEXT_TEXT.search(message) is not None


def _data_payloads(raw: bytes) -> list[dict]:
    """The JSON objects of the last ``TAIL_EVENTS`` data lines of ``raw`` (newest first)."""
    found: list[dict] = []
    for line in reversed(raw.split(b"\n")):
        if len(found) >= TAIL_EVENTS:
            break
        if not line.startswith(b"data:"):
            continue
        try:
            payload = fastjson.loads(line[5:].strip())
        except ValueError:
            continue
        if isinstance(payload, dict):
            found.append(payload)
    return found


def openai_stream_complete(raw_tail: bytes) -> bool:
    """An OpenAI-format stream's last bytes hold a ``finish_reason`` and its usage."""
    finished = used = False
    for chunk in _data_payloads(raw_tail):
        used = used or isinstance(chunk.get("usage"), dict)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                finished = True
    return finished and used


def anthropic_stream_complete(raw_tail: bytes) -> bool:
    """An Anthropic stream's last bytes hold the ``message_delta`` with its ``stop_reason``."""
    for payload in _data_payloads(raw_tail):
        if payload.get("type") == "message_delta" and (payload.get("delta") or {}).get("stop_reason"):
            return True
    return False

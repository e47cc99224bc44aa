"""Anthropic Messages API adapter: OpenAI chat requests in, ``POST /v1/messages`` out, and back.

Written against the defects found in Higress's converter (research/higress.md section 2): ``tool_choice``
is converted, not dropped; zero values (``temperature: 0``) are kept; ``stop`` may be a string; every
stream chunk keeps choice index 0 (Higress reused the content-block index as the choice index).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from fastgw import fastjson
from fastgw.ai.providers.base import (
    Adapter,
    ProviderError,
    StreamConverter,
    UnsupportedOperation,
    UpstreamCall,
)

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 16384}
MIN_THINKING_BUDGET = 1024  # Anthropic rejects smaller budgets

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_SEP = (",", ":")


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=_SEP, ensure_ascii=False)


# ----------------------------------------------------------------------------------- request conversion


def _text_of(content: Any) -> str:
    """Text of an OpenAI content (string or parts); used where Anthropic only takes text (system)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ProviderError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    """OpenAI ``image_url`` part -> Anthropic image block: data URIs inline (base64), others by URL."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise ProviderError("image_url part needs a url")
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    meta, comma, data = url[5:].partition(",")
    media_type, _, encoding = meta.partition(";")
    if not comma or encoding != "base64":
        raise ProviderError("image data URIs must be base64 encoded (data:<type>;base64,<data>)")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI user/assistant content -> Anthropic blocks; empty text is dropped (Anthropic rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ProviderError(
            f"message content must be a string or a list of parts, got {type(content).__name__}"
        )
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise ProviderError(f"content part type {kind!r} is not supported by Anthropic providers")
    return blocks


def _tool_input(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) -> the ``input`` object Anthropic requires.

    Invalid JSON is an error rather than ``{}``: guessing would silently change the conversation the
    model sees, and Anthropic would reject a non-object anyway. An empty string means no arguments."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        raise ProviderError(f"tool call arguments are not valid JSON: {str(arguments)[:100]!r}") from None
    if not isinstance(value, dict):
        raise ProviderError("tool call arguments must be a JSON object for Anthropic providers")
    return value


def _tool_use_blocks(tool_calls: Any) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls or []:
        if not isinstance(call, dict):
            raise ProviderError("tool_calls must be a list of objects")
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    block["content"] = content if isinstance(content, str) else _content_blocks(content)
    return block


def _append(messages: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Add a message, merging into the previous one of the same role: Anthropic wants user and
    assistant to alternate, so consecutive tool results (and a user turn after them) become one."""
    if messages and messages[-1]["role"] == role:
        previous = messages[-1]
        if isinstance(previous["content"], str):
            previous["content"] = _content_blocks(previous["content"])
        previous["content"].extend(_content_blocks(content) if isinstance(content, str) else content)
    else:
        messages.append({"role": role, "content": content})


def _convert_messages(openai_messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages). System/developer messages are hoisted wherever they appear."""
    if not isinstance(openai_messages, list) or not openai_messages:
        raise ProviderError("'messages' must be a non-empty list")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in openai_messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append(text)
        elif role == "user":
            content = message.get("content")
            _append(messages, "user", content if isinstance(content, str) else _content_blocks(content))
        elif role == "assistant":
            tool_calls = _tool_use_blocks(message.get("tool_calls"))
            content = message.get("content")
            if not tool_calls and isinstance(content, str):
                _append(messages, "assistant", content)
            else:
                _append(messages, "assistant", _content_blocks(content) + tool_calls)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message)])
        else:
            raise ProviderError(f"message role {role!r} is not supported by Anthropic providers")
    return system, messages


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    converted = []
    for tool in tools:
        function = (
            tool.get("function")
            if isinstance(tool, dict) and tool.get("type", "function") == "function"
            else None
        )
        if not isinstance(function, dict) or not function.get("name"):
            raise ProviderError("only function tools with a name can be sent to Anthropic providers")
        spec: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        converted.append(spec)
    return converted


def _convert_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI tool_choice (+ parallel_tool_calls) -> Anthropic tool_choice; None keeps Anthropic's default."""
    if choice is None and parallel is not False:
        return None
    if choice is None or choice == "auto":
        result: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    elif choice == "required":
        result = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and isinstance(choice.get("function"), dict)
        and choice["function"].get("name")
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise ProviderError(f"unsupported tool_choice {choice!r}")
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def _max_tokens(request: dict[str, Any], default: int) -> tuple[int, bool]:
    """(max_tokens, whether the client set it): Anthropic requires the field, OpenAI does not."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ProviderError(f"'{key}' must be a positive integer")
            return value, True
    return default, False


def messages_body(request: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI chat request (pure; exposed for tests and tools)."""
    if request.get("n") not in (None, 1):
        raise ProviderError("Anthropic providers return one choice; 'n' must be 1")
    system, messages = _convert_messages(request.get("messages"))
    max_tokens, explicit = _max_tokens(request, default_max_tokens)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        body["system"] = "\n\n".join(system)
    effort = request.get("reasoning_effort")
    if effort is not None and effort != "none":
        budget = THINKING_BUDGETS.get(effort)
        if budget is None:
            raise ProviderError(f"unsupported reasoning_effort {effort!r}")
        # Anthropic needs max_tokens > budget_tokens: an explicit cap is a cost limit, so the budget
        # shrinks to fit it; the default grows so the answer keeps its room after thinking.
        if not explicit:
            max_tokens = max(max_tokens, budget + default_max_tokens)
        budget = min(budget, max_tokens - 1)
        if budget >= MIN_THINKING_BUDGET:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens
    stop = request.get("stop")
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("temperature", "top_p", "top_k"):
        if request.get(key) is not None:  # `is not None`: a zero is a real setting (Higress lost it)
            body[key] = request[key]
    if request.get("stream"):
        body["stream"] = True
    tools = request.get("tools")
    if tools:
        body["tools"] = _convert_tools(tools)
        choice = _convert_tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if isinstance(request.get("user"), str):
        body["metadata"] = {"user_id": request["user"]}
    return body


# ---------------------------------------------------------------------------------- response conversion


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Anthropic's input_tokens excludes cache reads and writes, while
    OpenAI's prompt_tokens includes them (cached_tokens is a part of it), so they are added back."""
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        result["prompt_tokens_details"] = {"cached_tokens": cached}
    return result


_TEXT_DELTA = re.compile(
    r'\{"type":\s*"content_block_delta",\s*"index":\s*\d+,\s*"delta":\s*\{"type":\s*"text_delta",\s*'
    r'"text":\s*("(?:[^"\\]|\\.)*")\}\}'
)
"""A text delta as Anthropic sends it (fields in this order); anything else takes the full parse."""


def _load_object(body: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = fastjson.loads(body)
    except ValueError:
        raise ProviderError(f"{what} is not JSON: {body[:100]!r}") from None
    if not isinstance(value, dict):
        raise ProviderError(f"{what} is not a JSON object")
    return value


def chat_completion(message: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """An Anthropic message object -> an OpenAI ``chat.completion``."""
    blocks = message.get("content")
    if message.get("type") != "message" or not isinstance(blocks, list):
        raise ProviderError("Anthropic answer is not a message with a content list")
    texts, thinking, tool_calls = [], [], []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": _compact(block.get("input") or {})},
                }
            )
    text = "".join(texts)
    reply: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if tool_calls:
        reply["tool_calls"] = tool_calls
    result: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason"), "stop"),
            }
        ],
    }
    if isinstance(message.get("usage"), dict):
        result["usage"] = openai_usage(message["usage"])
    return result


class AnthropicStream(StreamConverter):
    """Anthropic SSE events -> OpenAI chunks. Tool-call indexes count tool calls only (OpenAI clients
    index ``tool_calls`` from 0), and the choice index is always 0."""

    def __init__(self, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.id = ""
        self.anthropic_usage: dict[str, Any] = {}  # message_start's, updated by message_delta's
        self.tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def event(self, name: str | None, data: str) -> list[dict[str, Any]]:
        # Fast path: nearly every event of an answer is a text delta in exactly this shape;
        # decoding only its text literal halves the cost of converting a stream.
        match = _TEXT_DELTA.fullmatch(data)
        if match is not None:
            text = json.loads(match.group(1))
            return [self._chunk({"content": text})] if text else []
        payload = _load_object(data, "Anthropic stream event")
        kind = payload.get("type") or name
        if kind == "error":
            error = payload.get("error") or {}
            raise ProviderError(error.get("message") or "Anthropic stream error")
        if kind == "message_start":
            message = payload.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self.anthropic_usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index[payload.get("index", 0)] = len(self.tool_index)
                call = {"index": index, "id": block.get("id"), "type": "function"}
                call["function"] = {"name": block.get("name"), "arguments": ""}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            return self._delta(payload)
        if kind == "message_delta":
            # message_delta counts are cumulative (newer APIs repeat input and cache counts): overwrite
            usage = payload.get("usage") or {}
            self.anthropic_usage.update((k, v) for k, v in usage.items() if v is not None)
            reason = (payload.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, FINISH_REASONS.get(reason, "stop"))] if reason else []
        if kind == "message_stop":
            self.done = True
            self.usage = openai_usage(self.anthropic_usage)
        return []  # ping, content_block_stop and event types added later carry nothing for OpenAI

    def _delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self.tool_index.get(payload.get("index", 0))
            if index is None:
                raise ProviderError("input_json_delta for a content block that is not a tool_use")
            return [
                self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]}
                )
            ]
        return []  # signature_delta, citations_delta, empty deltas


# ----------------------------------------------------------------------------------------------- adapter


class AnthropicAdapter(Adapter):
    """Options: ``version`` (anthropic-version header), ``default_max_tokens`` (Anthropic requires one)."""

    type = "anthropic"

    def default_base_url(self) -> str:
        return "https://api.anthropic.com"

    def _call(self, body: dict[str, Any], api_key: str | None, beta: str | None = None) -> UpstreamCall:
        # base_url may be given with or without the /v1 (OpenAI habits): never double it
        prefix = self.base_path if self.base_path.endswith("/v1") else self.base_path + "/v1"
        headers = [
            (b"content-type", b"application/json"),
            (b"anthropic-version", str(self.options.get("version", DEFAULT_VERSION)).encode()),
        ]
        if api_key:
            headers.append((b"x-api-key", api_key.encode()))
        if beta:
            headers.append((b"anthropic-beta", beta.encode()))
        return UpstreamCall(b"POST", (prefix + "/messages").encode(), headers, _compact(body).encode())

    def probe(self, api_key: str | None) -> UpstreamCall:
        call = self._call({}, api_key)
        return UpstreamCall(b"GET", call.path.rsplit(b"/", 1)[0] + b"/models", call.headers, b"")

    def build_count_tokens(self, request: dict[str, Any], model: str, api_key: str | None) -> UpstreamCall:
        """``POST /v1/messages/count_tokens`` for an Anthropic client's request as sent (only ``model``
        replaced): the provider counts its own tokenizer's tokens."""
        call = self._call({**request, "model": model}, api_key)
        call.path += b"/count_tokens"
        return call

    def build(self, op: str, request: dict[str, Any], model: str, api_key: str | None) -> UpstreamCall:
        if op != "chat":
            raise UnsupportedOperation(f"Anthropic providers do not serve {op}")
        default = int(self.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        return self._call(messages_body(request, model, default), api_key)

    def build_messages(
        self, request: dict[str, Any], model: str, api_key: str | None, beta: str | None = None
    ) -> UpstreamCall:
        """A native Anthropic request passed through (only ``model`` replaced), so nothing is lost in
        conversion when an Anthropic client reaches an Anthropic provider. ``beta`` carries the client's
        ``anthropic-beta`` header (prompt-caching, long-context and similar opt-ins)."""
        return self._call({**request, "model": model}, api_key, beta)

    def convert_response(self, op: str, status: int, body: bytes, model: str) -> dict[str, Any]:
        if op != "chat":
            raise UnsupportedOperation(f"Anthropic providers do not serve {op}")
        return chat_completion(_load_object(body, "Anthropic answer"), model, int(time.time()))

    def stream(self, op: str, model: str) -> StreamConverter:
        if op != "chat":
            raise UnsupportedOperation(f"Anthropic providers do not serve {op}")
        return AnthropicStream(model, int(time.time()))

    def error(self, status: int, body: bytes) -> tuple[str, str | None]:
        try:
            error = json.loads(body)["error"]
            return str(error["message"]), error.get("type")
        except (ValueError, KeyError, TypeError, AttributeError):
            text = body[:200].decode("utf-8", "replace").strip()
            return text or f"Anthropic answered HTTP {status}", None

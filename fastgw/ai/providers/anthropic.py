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
    ConversionError,
    ProviderError,
    StreamConverter,
    UnsupportedOperation,
    UpstreamCall,
    function_tools,
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

ANSWER_TOOL = "fastgw_json_answer"
"""The tool a ``response_format`` is forced through (Anthropic's documented JSON-output technique)."""


def _text_of(content: Any, where: str) -> str:
    """Text of an OpenAI content (string or parts); used where Anthropic only takes text (system)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    raise ConversionError(f"must be a string or a list of parts, got {type(content).__name__}", where)


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    """OpenAI ``image_url`` part -> Anthropic image block: data URIs inline (base64), others by URL."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise ConversionError("image_url part needs a url", f"{where}.image_url.url")
    if not url.startswith("data:"):
        if not url.startswith(("https://", "http://")):
            raise ConversionError("image urls must be http(s) or base64 data URLs", f"{where}.image_url.url")
        return {"type": "image", "source": {"type": "url", "url": url}}
    meta, comma, data = url[5:].partition(",")
    media_type, _, encoding = meta.partition(";")
    if not comma or encoding != "base64" or not media_type or not data:
        raise ConversionError(
            "image data URLs must be data:<media type>;base64,<data>", f"{where}.image_url.url"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI user/assistant content -> Anthropic blocks; empty text is dropped (Anthropic rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ConversionError(f"must be a string or a list of parts, got {type(content).__name__}", where)
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise ConversionError("must be a string", f"{where}[{i}].{kind}")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{where}[{i}]"))
        else:
            raise ConversionError(f"content part type {kind!r} is not supported by Anthropic providers", f"{where}[{i}].type")
    return blocks


def _tool_input(arguments: Any, where: str) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) -> the ``input`` object Anthropic requires.

    Invalid JSON is an error rather than ``{}``: guessing would silently change the conversation the
    model sees, and Anthropic would reject a non-object anyway. An empty string means no arguments."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    if not isinstance(arguments, str):
        raise ConversionError("must be a JSON string", where)
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        raise ConversionError(f"tool call arguments are not valid JSON: {arguments[:100]!r}", where) from None
    if not isinstance(value, dict):
        raise ConversionError("tool call arguments must be a JSON object for Anthropic providers", where)
    return value


def _tool_use_blocks(tool_calls: Any, where: str) -> list[dict[str, Any]]:
    if tool_calls is None:
        return []
    if not isinstance(tool_calls, list):
        raise ConversionError("must be a list", where)
    blocks = []
    for i, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ConversionError("a tool call needs function.name", f"{where}[{i}]")
        if not isinstance(call.get("id"), str):
            raise ConversionError("a tool call needs an id", f"{where}[{i}].id")
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": _tool_input(function.get("arguments"), f"{where}[{i}].function.arguments"),
            }
        )
    return blocks


def _thinking_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """An assistant turn's earlier thinking, sent back as Anthropic requires when tools are in play:
    ``thinking_blocks`` (what this gateway's answers carry, signatures included) as they are."""
    blocks = message.get("thinking_blocks")
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        raise ConversionError("must be a list", f"{where}.thinking_blocks")
    out = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking" and isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str):
            out.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            out.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise ConversionError(
                "must be a thinking block (thinking, signature) or a redacted_thinking block (data)",
                f"{where}.thinking_blocks[{i}]",
            )
    return out


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(message.get("tool_call_id"), str):
        raise ConversionError("a tool message needs a tool_call_id", f"{where}.tool_call_id")
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    block["content"] = content if isinstance(content, str) else _content_blocks(content, f"{where}.content")
    return block


def _append(messages: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Add a message, merging into the previous one of the same role: Anthropic wants user and
    assistant to alternate, so consecutive tool results (and a user turn after them) become one."""
    if messages and messages[-1]["role"] == role:
        previous = messages[-1]
        if isinstance(previous["content"], str):
            previous["content"] = _content_blocks(previous["content"], "")
        previous["content"].extend(_content_blocks(content, "") if isinstance(content, str) else content)
    else:
        messages.append({"role": role, "content": content})


def _convert_messages(openai_messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages). System/developer messages are hoisted wherever they appear."""
    if not isinstance(openai_messages, list) or not openai_messages:
        raise ConversionError("must be a non-empty list", "messages")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(openai_messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), f"{where}.content")
            if text:
                system.append(text)
        elif role == "user":
            content = message.get("content")
            _append(messages, "user", content if isinstance(content, str) else _content_blocks(content, f"{where}.content"))
        elif role == "assistant":
            thinking = _thinking_blocks(message, where)
            tool_calls = _tool_use_blocks(message.get("tool_calls"), f"{where}.tool_calls")
            content = message.get("content")
            if not tool_calls and not thinking and isinstance(content, str):
                _append(messages, "assistant", content)
            else:
                _append(messages, "assistant", thinking + _content_blocks(content, f"{where}.content") + tool_calls)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message, where)])
        else:
            raise ConversionError(f"message role {role!r} is not supported by Anthropic providers", f"{where}.role")
    return system, messages


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    converted = []
    for i, function in function_tools(tools, "Anthropic"):
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise ConversionError("must be a JSON Schema object", f"tools[{i}].function.parameters")
        spec: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if isinstance(function.get("description"), str) and function["description"]:
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
        and isinstance(choice["function"].get("name"), str)
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise ConversionError(f"unsupported value {str(choice)[:80]!r}", "tool_choice")
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def _answer_tool(response_format: Any) -> dict[str, Any] | None:
    """``response_format`` -> the tool the answer is forced through, or None for plain text.

    Anthropic has no JSON mode; its documented technique is one tool whose ``input_schema`` is the
    wanted schema, with ``tool_choice`` forcing it: the tool's input is the JSON answer. ``json_object``
    takes any object."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"name": ANSWER_TOOL, "description": "Give the answer as a JSON object.",
                "input_schema": {"type": "object"}}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ConversionError("must be an object", "response_format.json_schema")
        schema = spec.get("schema", {"type": "object"})  # optional in OpenAI's API: any object then
        if not isinstance(schema, dict):
            raise ConversionError("must be a JSON Schema object", "response_format.json_schema.schema")
        if schema.get("type", "object") != "object":
            raise ConversionError(
                "Anthropic providers can force only an object schema (a tool input is an object)",
                "response_format.json_schema.schema.type",
            )
        description = spec.get("description") if isinstance(spec.get("description"), str) else None
        return {"name": ANSWER_TOOL, "description": description or "Give the answer in this schema.",
                "input_schema": schema}
    raise ConversionError(f"unsupported type {kind!r}", "response_format.type")


def _max_tokens(request: dict[str, Any], default: int) -> tuple[int, bool]:
    """(max_tokens, whether the client set it): Anthropic requires the field, OpenAI does not."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConversionError("must be a positive integer", key)
            return value, True
    return default, False


def _stop_sequences(stop: Any) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ConversionError("must be a string or a list of strings", "stop")
    return stops


def messages_body(request: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI chat request (pure; exposed for tests and tools)."""
    if request.get("n") not in (None, 1):
        raise ConversionError("Anthropic providers return one choice; it must be 1", "n")
    system, messages = _convert_messages(request.get("messages"))
    max_tokens, explicit = _max_tokens(request, default_max_tokens)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        body["system"] = "\n\n".join(system)
    answer_tool = _answer_tool(request.get("response_format"))
    effort = request.get("reasoning_effort")
    if effort is not None and effort != "none":
        budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise ConversionError(
                f"unsupported value {str(effort)[:40]!r} (one of {', '.join(['none', *THINKING_BUDGETS])})",
                "reasoning_effort",
            )
        if answer_tool is not None:  # Anthropic refuses a forced tool_choice with thinking on
            raise ConversionError(
                "cannot be combined with response_format on Anthropic providers (thinking forbids a forced tool)",
                "reasoning_effort",
            )
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
        body["stop_sequences"] = _stop_sequences(stop)
    for key in ("temperature", "top_p", "top_k"):
        value = request.get(key)
        if value is not None:  # `is not None`: a zero is a real setting (Higress lost it)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConversionError("must be a number", key)
            body[key] = value
    if request.get("stream"):
        body["stream"] = True
    tools = request.get("tools")
    if answer_tool is not None:
        if tools:
            raise ConversionError(
                "cannot be combined with tools on Anthropic providers (the answer is forced through a tool)",
                "response_format",
            )
        body["tools"] = [answer_tool]
        body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
    elif tools:
        body["tools"] = _convert_tools(tools)
        choice = _convert_tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if isinstance(request.get("user"), str):
        body["metadata"] = {"user_id": request["user"]}
    return body


# ---------------------------------------------------------------------------------- response conversion


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():  # 1.2e1 is JSON's 12 too
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProviderError(f"usage.{key} is not an integer")
    return value


def finish_reason(stop_reason: Any) -> str:
    """Anthropic stop_reason -> OpenAI finish_reason; one added later is a plain stop."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Anthropic's input_tokens excludes cache reads and writes, while
    OpenAI's prompt_tokens includes them (cached_tokens is a part of it), so they are added back; both
    cache counts also stay as Anthropic names them, so a conversion back is exact and metering can
    price them."""
    read = _count(usage, "cache_read_input_tokens")
    written = _count(usage, "cache_creation_input_tokens")
    prompt = _count(usage, "input_tokens") + read + written
    completion = _count(usage, "output_tokens")
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if read or written:
        result["prompt_tokens_details"] = {"cached_tokens": read}
        result["cache_read_input_tokens"] = read
        result["cache_creation_input_tokens"] = written
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


def _text(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProviderError(f"content block {key} is not a string")
    return value


def _thinking_entry(block: dict[str, Any]) -> dict[str, Any] | None:
    """A thinking or redacted_thinking block as carried in OpenAI shapes (``thinking_blocks``): whole,
    so a client sending the assistant turn back hands Anthropic the signature it requires."""
    if block.get("type") == "thinking":
        return {"type": "thinking", "thinking": _text(block, "thinking"), "signature": _text(block, "signature")}
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": _text(block, "data")}
    return None


def chat_completion(message: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """An Anthropic message object -> an OpenAI ``chat.completion``.

    The forced ``response_format`` tool's input becomes the message content (JSON text), finishing
    with ``stop`` as an OpenAI JSON-mode answer does."""
    blocks = message.get("content")
    if message.get("type") != "message" or not isinstance(blocks, list):
        raise ProviderError("Anthropic answer is not a message with a content list")
    texts, thinking, thinking_blocks, tool_calls = [], [], [], []
    answered = False
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text(block, "text"))
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(_text(block, "thinking"))
            thinking_blocks.append(_thinking_entry(block))
        elif kind == "tool_use" and block.get("name") == ANSWER_TOOL:
            texts = [_compact(block.get("input") or {})]  # the answer; text before it was preamble
            answered = True
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
    if thinking_blocks:
        reply["reasoning_content"] = "".join(thinking)
        reply["thinking_blocks"] = thinking_blocks
    if tool_calls:
        reply["tool_calls"] = tool_calls
    finish = finish_reason(message.get("stop_reason"))
    result: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": "stop" if answered and finish == "tool_calls" else finish,
            }
        ],
    }
    if isinstance(message.get("usage"), dict):
        result["usage"] = openai_usage(message["usage"])
    return result


class AnthropicStream(StreamConverter):
    """Anthropic SSE events -> OpenAI chunks. Tool-call indexes count tool calls only (OpenAI clients
    index ``tool_calls`` from 0), and the choice index is always 0.

    Thinking streams as ``reasoning_content`` deltas; when a thinking block's signature arrives, one
    delta carries the whole block in ``thinking_blocks`` (text and signature), so a client that sends
    the turn back gives Anthropic the signed block. The forced ``response_format`` tool streams its
    ``input_json_delta`` pieces as ``content``."""

    def __init__(self, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.id = ""
        self.anthropic_usage: dict[str, Any] = {}  # message_start's, updated by message_delta's
        self.tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self.silent_tools: set[int] = set()  # tool_use blocks no input_json_delta has filled yet
        self.answer_blocks: set[int] = set()  # content blocks of the forced response_format tool
        self.thinking: dict[int, list[str]] = {}  # thinking block index -> its text so far

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
            error = payload.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            raise ProviderError(str(message or "Anthropic stream error"))
        if kind == "message_start":
            message = _object(payload.get("message"), "message_start.message")
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self.anthropic_usage = dict(_object(message.get("usage"), "message_start.message.usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = _object(payload.get("content_block"), "content_block_start.content_block")
            index = _block_index(payload)
            if block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL:
                self.answer_blocks.add(index)
                return []
            if block.get("type") == "tool_use":
                tool = self.tool_index[index] = len(self.tool_index)
                self.silent_tools.add(index)
                call = {"index": tool, "id": block.get("id"), "type": "function"}
                call["function"] = {"name": block.get("name"), "arguments": ""}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            if block.get("type") == "thinking":
                self.thinking[index] = [block["thinking"]] if isinstance(block.get("thinking"), str) else []
                return [self._chunk({"reasoning_content": block["thinking"]})] if block.get("thinking") else []
            if block.get("type") == "redacted_thinking":
                return [self._chunk({"thinking_blocks": [_thinking_entry(block)]})]
            return []
        if kind == "content_block_delta":
            return self._delta(payload)
        if kind == "message_delta":
            # message_delta counts are cumulative (newer APIs repeat input and cache counts): overwrite
            usage = _object(payload.get("usage"), "message_delta.usage")
            self.anthropic_usage.update((k, v) for k, v in usage.items() if v is not None)
            reason = _object(payload.get("delta"), "message_delta.delta").get("stop_reason")
            if reason == "tool_use" and self.answer_blocks and not self.tool_index:
                reason = "end_turn"  # the forced answer tool: a JSON-mode answer ends with stop
            return [self._chunk({}, finish_reason(reason))] if reason else []
        if kind == "message_stop":
            self.done = True
            self.usage = openai_usage(self.anthropic_usage)
        if kind == "content_block_stop" and _block_index(payload) in self.silent_tools:
            # A tool without input streams no JSON (or only ""): OpenAI clients parse the
            # arguments string, and Anthropic's own answer for it is the empty object.
            self.silent_tools.discard(_block_index(payload))
            tool = self.tool_index[_block_index(payload)]
            return [self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": "{}"}}]})]
        return []  # ping, content_block_stop and event types added later carry nothing for OpenAI

    def _delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        delta = _object(payload.get("delta"), "content_block_delta.delta")
        kind = delta.get("type")
        index = _block_index(payload)
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str) and delta["thinking"]:
            self.thinking.setdefault(index, []).append(delta["thinking"])
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "signature_delta" and isinstance(delta.get("signature"), str):
            text = "".join(self.thinking.pop(index, []))
            block = {"type": "thinking", "thinking": text, "signature": delta["signature"]}
            return [self._chunk({"thinking_blocks": [block]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            if index in self.answer_blocks:
                return [self._chunk({"content": delta["partial_json"]})]
            tool = self.tool_index.get(index)
            if tool is None:
                raise ProviderError("input_json_delta for a content block that is not a tool_use")
            self.silent_tools.discard(index)
            return [
                self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": delta["partial_json"]}}]})
            ]
        return []  # citations_delta, empty deltas


def _block_index(payload: dict[str, Any]) -> int:
    index = payload.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise ProviderError("content block index is not an integer")
    return index


def _object(value: Any, what: str) -> dict[str, Any]:
    """A field the stream documents as an object: absent is empty, anything else is garbage."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProviderError(f"{what} is not an object")
    return value


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

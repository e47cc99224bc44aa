"""The Anthropic front door's converters: Claude SDK clients call ``POST /v1/messages`` against any
provider. The engine works in OpenAI shapes, so requests convert to an OpenAI chat request here, and
answers (plain or streamed) convert back to Anthropic's wire format. Pure functions, no I/O.

Follows Higress's claude_to_openai mapping (research/higress.md section 2) with one deliberate
difference in streams: usage arriving in every chunk never yields extra ``message_delta`` events,
so a stream always has exactly one ``message_delta`` and ends with ``message_stop``.
"""

from __future__ import annotations

import json
from typing import Any

from fastgw.ai.usage import token_count
from fastgw.anthropic_errors import error_type

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class FrontDoorError(Exception):
    """An Anthropic request the gateway cannot accept; answered with ``status`` in Anthropic's shape."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error shape, so Claude SDKs raise their typed exceptions (RateLimitError...)."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


# ------------------------------------------------------------------------------------ request conversion


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise FrontDoorError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    _expect(isinstance(source, dict), f"{where}.source: required object")
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        _expect(
            isinstance(media, str) and isinstance(data, str), f"{where}.source: media_type and data required"
        )
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    _expect(
        source.get("type") == "url" and isinstance(source.get("url"), str),
        f"{where}.source: type must be base64 or url",
    )
    return {"type": "image_url", "image_url": {"url": source["url"]}}


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Content as a list of typed blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    _expect(isinstance(content, list), f"{where}: must be a string or a list of content blocks")
    for i, block in enumerate(content):
        _expect(
            isinstance(block, dict) and isinstance(block.get("type"), str),
            f"{where}.{i}: must be an object with a type",
        )
        if block["type"] == "text":
            _expect(isinstance(block.get("text"), str), f"{where}.{i}.text: required string")
    return content


def _tool_result_text(block: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    """(text for the OpenAI tool message, image parts that must follow as user content)."""
    content = block.get("content", "")
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for i, inner in enumerate(_blocks(content, f"{where}.content")):
        if inner["type"] == "text":
            texts.append(inner["text"])
        elif inner["type"] == "image":
            images.append(_image_part(inner, f"{where}.content.{i}"))
        else:
            raise FrontDoorError(f"{where}.content.{i}: block type {inner['type']!r} is not supported")
    return "\n".join(texts), images


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn -> OpenAI messages: tool results first (OpenAI wants them right after
    the assistant's tool_calls), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks(content, where)):
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, f"{where}.{i}"))
        elif kind == "tool_result":
            _expect(isinstance(block.get("tool_use_id"), str), f"{where}.{i}.tool_use_id: required string")
            text, images = _tool_result_text(block, f"{where}.{i}")
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts.extend(images)
        else:
            raise FrontDoorError(f"{where}.{i}: content block type {kind!r} is not supported by this model")
    if parts:
        simple = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if simple else parts})
    return out


def _assistant_message(content: Any, where: str) -> dict[str, Any]:
    """Text blocks -> content, tool_use -> tool_calls; thinking and redacted_thinking blocks ride along
    whole in ``thinking_blocks`` (signatures included), which an Anthropic provider gets back as they
    were and other providers never see."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls, thinking = [], [], []
    for i, block in enumerate(_blocks(content, where)):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            _expect(
                isinstance(block.get("id"), str) and isinstance(block.get("name"), str),
                f"{where}.{i}: tool_use needs an id and a name",
            )
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"), ensure_ascii=False)
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind == "thinking":
            _expect(
                isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str),
                f"{where}.{i}: a thinking block needs thinking and signature strings",
            )
            thinking.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif kind == "redacted_thinking":
            _expect(isinstance(block.get("data"), str), f"{where}.{i}.data: required string")
            thinking.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise FrontDoorError(f"{where}.{i}: content block type {kind!r} is not supported by this model")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(block["text"] for block in _blocks(system, "system") if block["type"] == "text")


def _tools(tools: Any) -> list[dict[str, Any]]:
    _expect(isinstance(tools, list), "tools: must be a list")
    converted = []
    for i, tool in enumerate(tools):
        _expect(
            isinstance(tool, dict) and isinstance(tool.get("name"), str), f"tools.{i}.name: required string"
        )
        schema = tool.get("input_schema")
        if schema is None:  # a server tool (web_search_...): only Anthropic itself can run it
            raise FrontDoorError(
                f"tools.{i}: tool type {tool.get('type')!r} is only available on Anthropic models"
            )
        _expect(isinstance(schema, dict), f"tools.{i}.input_schema: must be an object")
        function = {"name": tool["name"], "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: Any, request: dict[str, Any]) -> None:
    _expect(isinstance(choice, dict), "tool_choice: must be an object")
    kind = choice.get("type")
    if kind == "tool":
        _expect(isinstance(choice.get("name"), str), "tool_choice.name: required string")
        request["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind) if isinstance(kind, str) else None
        _expect(mapped is not None, "tool_choice.type: must be one of auto, any, tool, none")
        request["tool_choice"] = mapped
    if choice.get("disable_parallel_tool_use") is True:
        request["parallel_tool_calls"] = False


def _reasoning_effort(thinking: Any) -> str | None:
    _expect(isinstance(thinking, dict), "thinking: must be an object")
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    _expect(_is_int(budget) and budget > 0, "thinking.budget_tokens: must be a positive integer")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def messages_to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request -> the equivalent OpenAI chat request (validated)."""
    _expect(isinstance(body, dict), "request body must be a JSON object")
    model = body.get("model")
    _expect(isinstance(model, str) and bool(model), "model: required string")
    max_tokens = body.get("max_tokens")
    _expect(_is_int(max_tokens) and max_tokens > 0, "max_tokens: required positive integer")
    messages = body.get("messages")
    _expect(isinstance(messages, list) and bool(messages), "messages: required non-empty list")

    converted: list[dict[str, Any]] = []
    if body.get("system") is not None:
        system = _system_text(body["system"])
        if system:
            converted.append({"role": "system", "content": system})
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        _expect(isinstance(message, dict), f"{where}: must be an object")
        role = message.get("role")
        _expect("content" in message, f"{where}.content: required")
        if role == "user":
            converted.extend(_user_messages(message["content"], f"{where}.content"))
        elif role == "assistant":
            converted.append(_assistant_message(message["content"], f"{where}.content"))
        else:
            raise FrontDoorError(f"{where}.role: must be 'user' or 'assistant'")

    request: dict[str, Any] = {"model": model, "messages": converted, "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            _expect(_is_number(body[key]), f"{key}: must be a number")
            request[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        _expect(
            isinstance(stops, list) and all(isinstance(s, str) for s in stops),
            "stop_sequences: must be a list of strings",
        )
        if stops:
            request["stop"] = stops
    if body.get("tools"):
        request["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], request)
    if body.get("thinking") is not None:
        effort = _reasoning_effort(body["thinking"])
        if effort:
            request["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        request["user"] = metadata["user_id"]
    stream = body.get("stream", False)
    _expect(isinstance(stream, bool), "stream: must be a boolean")
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}  # the final message_delta needs the counts
    return request


# ----------------------------------------------------------------------------------- response conversion


def _anthropic_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage: OpenAI's prompt_tokens includes cached tokens, Anthropic's
    input_tokens does not, so the cached part moves to cache_read_input_tokens."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens") if isinstance(details, dict) else 0)
    written = token_count(usage.get("cache_creation_input_tokens"))  # an Anthropic provider's, kept by its adapter
    result = {
        "input_tokens": max(0, token_count(usage.get("prompt_tokens")) - cached - written),
        "output_tokens": token_count(usage.get("completion_tokens")),
    }
    if cached or written:
        result["cache_read_input_tokens"] = cached
        result["cache_creation_input_tokens"] = written
    return result



def _tool_input(arguments: Any) -> dict[str, Any]:
    """Arguments string -> tool input. A model's broken JSON becomes {} rather than failing the whole
    answer: Anthropic clients type ``input`` as an object, and the text is useless to them anyway."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _signed_thinking(blocks: Any) -> list[dict[str, Any]]:
    """The well-formed entries of ``thinking_blocks`` (what the Anthropic adapter carries)."""
    out = []
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
            out.append({"type": "thinking", "thinking": block["thinking"], "signature": str(block.get("signature") or "")})
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            out.append({"type": "redacted_thinking", "data": block["data"]})
    return out


def openai_to_messages_response(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> an Anthropic message; ``model`` is the name the client asked for."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    signed = _signed_thinking(message.get("thinking_blocks"))
    if signed:
        content.extend(signed)  # an Anthropic provider's blocks, signatures and all
    elif isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": resp.get("id"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(resp.get("usage")),
    }


# -------------------------------------------------------------------------------------------- streaming


class OpenAIToAnthropicStream:
    """OpenAI chunk dicts in, Anthropic SSE events ``(name, data)`` out.

    Blocks open and close strictly in order (thinking, text, tool_use...). The stop reason is held until
    usage arrives after it (OpenAI's include_usage chunk comes after the finish chunk) or until end(),
    so the single ``message_delta`` carries real token counts; anything after ``message_stop`` is dropped.
    """

    def __init__(self, model: str, message_id: str | None = None) -> None:
        self.model = model
        self.message_id = message_id
        self.started = False
        self.finished = False
        self.next_index = 0  # next Anthropic content block index
        self.open: tuple[str, int] | None = None  # (kind: thinking|text|tool, OpenAI tool index or -1)
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> Anthropic block index
        self.pending: dict[int, dict[str, Any]] = {}  # calls that began while another was streaming
        self.stop_reason: str | None = None
        self.usage: dict[str, int] | None = None

    def _start(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        self.started = True
        if self.message_id is None:
            self.message_id = chunk.get("id") or "msg_fastgw"
        usage = {"input_tokens": self.usage["input_tokens"] if self.usage else 0, "output_tokens": 0}
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.next_index - 1})]

    def _open(self, kind: str, block: dict[str, Any], tool: int = -1) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self.open = (kind, tool)
        index = self.next_index
        self.next_index += 1
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        return events

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self.next_index - 1, "delta": delta},
        )

    def _tool_calls(self, calls: Any) -> list[tuple[str, dict[str, Any]]]:
        """The first tool call streams live; a call that begins while another one's block is open
        is held whole until the answer finishes, so arguments that arrive interleaved (some
        compatible servers send parallel calls that way; OpenAI sends them one after the other)
        are never lost to a block that was already closed."""
        events: list[tuple[str, dict[str, Any]]] = []
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, dict):
                continue
            tool = call.get("index") if isinstance(call.get("index"), int) else 0
            function = call.get("function") or {}
            arguments = function.get("arguments") if isinstance(function.get("arguments"), str) else ""
            held = self.pending.get(tool)
            if held is not None:
                held["arguments"] += arguments
                continue
            if tool not in self.tool_blocks:
                block = {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{tool}",
                    "name": function.get("name") or "",
                }
                if self.open is not None and self.open[0] == "tool":
                    self.pending[tool] = {**block, "arguments": arguments}
                    continue
                self.tool_blocks[tool] = self.next_index
                events += self._open("tool", {**block, "input": {}}, tool)
            # Blocks cannot reopen: arguments for a tool whose block text closed are dropped.
            if arguments and self.open == ("tool", tool):
                events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _flush_pending(self) -> list[tuple[str, dict[str, Any]]]:
        """The held tool calls, each as a whole block, in call order."""
        events: list[tuple[str, dict[str, Any]]] = []
        for tool in sorted(self.pending):
            block = self.pending.pop(tool)
            arguments = block.pop("arguments")
            self.tool_blocks[tool] = self.next_index
            events += self._open("tool", {**block, "input": {}}, tool)
            if arguments:
                events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _thinking_blocks(self, blocks: Any) -> list[tuple[str, dict[str, Any]]]:
        """Whole thinking blocks from the Anthropic adapter: the signature closes the thinking block
        its text streamed into (one is opened when none is); redacted blocks are one block each."""
        events: list[tuple[str, dict[str, Any]]] = []
        for block in _signed_thinking(blocks):
            if block["type"] == "redacted_thinking":
                events += self._open("redacted", block)
                events += self._close()
                continue
            if self.open is None or self.open[0] != "thinking":
                events += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                if block["thinking"]:
                    events.append(self._delta({"type": "thinking_delta", "thinking": block["thinking"]}))
            if block["signature"]:
                events.append(self._delta({"type": "signature_delta", "signature": block["signature"]}))
            events += self._close()
        return events

    def _finish(self) -> list[tuple[str, dict[str, Any]]]:
        self.finished = True
        usage = self.usage or {"input_tokens": 0, "output_tokens": 0}
        delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}
        events = self._flush_pending()
        return [
            *events,
            *self._close(),
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def chunk(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One OpenAI chunk -> the Anthropic events it completes."""
        if self.finished:
            return []  # duplicate usage chunks and the like after message_stop
        has_usage = isinstance(chunk.get("usage"), dict)
        if has_usage:
            self.usage = _anthropic_usage(chunk["usage"])
        events = [] if self.started else self._start(chunk)
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self.open is None or self.open[0] != "thinking":
                events += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            events.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
        events += self._thinking_blocks(delta.get("thinking_blocks"))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.open is None or self.open[0] != "text":
                events += self._open("text", {"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": text}))
        events += self._tool_calls(delta.get("tool_calls"))
        reason = choice.get("finish_reason")
        if reason and self.stop_reason is None:
            self.stop_reason = STOP_REASONS.get(reason, "end_turn")
            events += self._flush_pending()
            events += self._close()
        if self.stop_reason is not None and has_usage:
            events += self._finish()  # usage in or after the finishing chunk: the counts are final
        return events

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        """The OpenAI stream ended ([DONE] or clean EOF): close whatever is still open."""
        if self.finished:
            return []
        events = [] if self.started else self._start({})
        return events + self._finish()

"""Google Gemini (Generative Language API): OpenAI chat and embeddings to and from Gemini's shapes.

Written against the defects found in Higress's converter (research/higress.md section 2): zero
values are sent (``is not None``, never truthiness), ``stop`` may be a string, function calls
in answers become ``tool_calls``, ``MAX_TOKENS`` means ``length``, and every mapping is a
fixed table, so the same input always gives the same output.

Choices worth knowing:

- Tool parameters and ``json_schema`` response formats go out as ``parametersJsonSchema`` and
  ``responseJsonSchema``: those take plain JSON Schema, whereas ``parameters``/``responseSchema``
  take an OpenAPI subset that rejects ``additionalProperties``, which OpenAI strict schemas require.
- Gemini calls usually carry no ids, so tool calls get a fresh ``call_<24 hex>`` (unique, as
  OpenAI's are; Gemini's own ``functionCall.id`` is kept when it sends one). A tool result is
  matched back to its function name through the latest earlier assistant message that made a
  call with that id, so ids a client reuses across turns still resolve.
- A prompt Gemini blocks (``promptFeedback.blockReason``, no candidates) becomes a normal answer
  with empty content, finish_reason ``content_filter`` and the reason in ``message.refusal``:
  the same signal an OpenAI client gets from a filtered answer, rather than an error that would
  make the engine fail over to another provider with the same prompt.
- Thought parts (``thought: true``) are reasoning, reported as ``reasoning_content`` as
  DeepSeek does, never mixed into ``content``; ``completion_tokens`` counts them, as OpenAI's does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import quote

from fastgw.ai.providers.base import (
    Adapter,
    ConversionError,
    ProviderError,
    StreamConverter,
    UnsupportedOperation,
    UpstreamCall,
    function_tools,
)
from fastgw.ai.providers.openai import JSON_CONTENT, decode_object, encode_json, error_text, static_headers

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
"""Gemini finishReason -> OpenAI finish_reason; any other reason (OTHER, LANGUAGE, ...) is "stop"."""

TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

GENERATION_FIELDS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("n", "candidateCount"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("seed", "seed"),
)
"""OpenAI request field -> generationConfig field, copied whenever present, zeros included."""

URL_MIME_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}
"""fileData mimeType by URL extension: a fixed table, not the host's mimetypes database."""


# ------------------------------------------------------------------------------------------- request


def _media_part(url: Any, where: str) -> dict[str, Any]:
    """An image_url: base64 data URIs go inline, http(s)/gs URLs by reference (fileData)."""
    if not isinstance(url, str):
        raise ConversionError("must be a url string", where)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not data:
            raise ConversionError("data URLs must be data:<media type>;base64,<data>", where)
        return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}
    if url.startswith(("https://", "http://", "gs://")):
        extension = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
        mime = URL_MIME_TYPES.get(extension)
        return {"fileData": {"fileUri": url, **({"mimeType": mime} if mime else {})}}
    raise ConversionError(f"unsupported url scheme: {url[:40]!r}", where)


def _content_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI message content (a string or a list of parts) -> Gemini parts; empty text is dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise ConversionError("must be a string or a list of parts", where)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                parts.append({"text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_media_part(image.get("url") if isinstance(image, dict) else image, f"{where}[{i}].image_url.url"))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise ConversionError("needs base64 data and a format", f"{where}[{i}].input_audio")
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}})
        elif kind == "file" and isinstance(part.get("file"), dict) and isinstance(part["file"].get("file_data"), str):
            parts.append(_media_part(part["file"]["file_data"], f"{where}[{i}].file.file_data"))
        else:
            raise ConversionError(f"gemini cannot take content part {kind!r}", f"{where}[{i}].type")
    return parts


def _text_of(content: Any) -> str:
    """A tool result's content as text (a string, or the text parts of a list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content)


def _function_response(name: str, content: Any) -> dict[str, Any]:
    """Gemini wants the result as an object: a JSON-object result goes as is, anything else wrapped."""
    text = _text_of(content)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return {
        "functionResponse": {
            "name": name,
            "response": value if isinstance(value, dict) else {"content": text},
        }
    }


def _function_calls(tool_calls: Any, names: dict[str, str], where: str) -> list[dict[str, Any]]:
    """Assistant tool_calls -> functionCall parts; records id -> name for the results that follow."""
    if not isinstance(tool_calls, list):
        raise ConversionError("must be a list", where)
    parts = []
    for i, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ConversionError("a tool call needs function.name", f"{where}[{i}]")
        raw = function.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except (ValueError, RecursionError):
            raise ConversionError(f"tool call arguments are not valid JSON: {raw[:80]!r}", f"{where}[{i}].function.arguments") from None
        if not isinstance(args, dict):
            raise ConversionError("tool call arguments must be a JSON object for gemini", f"{where}[{i}].function.arguments")
        if isinstance(call.get("id"), str):
            names[call["id"]] = function["name"]
        parts.append({"functionCall": {"name": function["name"], "args": args}})
    return parts


def _contents(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages -> (contents, systemInstruction parts).

    System (and developer) messages are all kept, in order, as the system instruction. Messages
    that map to the same Gemini role in a row are merged into one content: Gemini wants the
    results of parallel calls together in one turn.
    """
    if not isinstance(messages, list) or not messages:
        raise ConversionError("must be a non-empty list", "messages")
    names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system += _content_parts(message.get("content"), f"{where}.content")
            continue
        if role == "user":
            parts = _content_parts(message.get("content"), f"{where}.content")
        elif role == "assistant":
            parts = _content_parts(message.get("content"), f"{where}.content")
            if message.get("tool_calls"):
                parts += _function_calls(message["tool_calls"], names, f"{where}.tool_calls")
            role = "model"
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise ConversionError(f"refers to no earlier tool call: {str(call_id)[:80]!r}", f"{where}.tool_call_id")
            role, parts = "user", [_function_response(name, message.get("content"))]
        elif role == "function" and isinstance(message.get("name"), str):  # the legacy function role
            role, parts = "user", [_function_response(message["name"], message.get("content"))]
        else:
            raise ConversionError(f"gemini cannot take a message with role {role!r}", f"{where}.role")
        if not parts:
            continue  # Gemini refuses contents without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    return contents, system


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for _, function in function_tools(tools, "Gemini"):
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description") is not None:
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
        return {"functionCallingConfig": {"mode": TOOL_CHOICE_MODES[choice]}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [function["name"]]}}
    raise ConversionError(f"unsupported value {str(choice)[:80]!r}", "tool_choice")


def _generation_config(request: dict[str, Any]) -> dict[str, Any]:
    config = {
        target: request[source] for source, target in GENERATION_FIELDS if request.get(source) is not None
    }
    limit = request.get("max_completion_tokens")
    if limit is None:
        limit = request.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = request.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ConversionError("must be a string or a list of strings", "stop")
        config["stopSequences"] = stop
    response_format = request.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = response_format.get("json_schema")  # type: ignore[union-attr]
        if not isinstance(spec, dict):
            raise ConversionError("must be an object", "response_format.json_schema")
        schema = spec.get("schema")  # optional in OpenAI's API: JSON of any shape then
        if schema is not None and not isinstance(schema, dict):
            raise ConversionError("must be a JSON Schema object", "response_format.json_schema.schema")
        config["responseMimeType"] = "application/json"
        if schema is not None:
            config["responseJsonSchema"] = schema
    elif kind not in (None, "text") or (response_format is not None and kind is None):
        raise ConversionError(f"unsupported type {kind!r}", "response_format.type")
    return config


def chat_body(request: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request -> a GenerateContentRequest."""
    contents, system = _contents(request.get("messages"))
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.get("tools"):
        body["tools"] = _tools(request["tools"])
    if request.get("tool_choice") is not None:
        body["toolConfig"] = _tool_config(request["tool_choice"])
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    if options.get("safety_settings"):
        body["safetySettings"] = options["safety_settings"]
    return body


def embeddings_body(request: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request -> a BatchEmbedContentsRequest (text inputs only)."""
    if request.get("encoding_format") not in (None, "float", "base64"):
        raise ConversionError("must be 'float' or 'base64'", "encoding_format")
    inputs = request.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise ConversionError("gemini embeds text: must be a string or a list of strings", "input")
    extra = {"outputDimensionality": request["dimensions"]} if request.get("dimensions") is not None else {}
    return {
        "requests": [
            {"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra} for t in inputs
        ]
    }


# ------------------------------------------------------------------------------------------ response


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key, 0)
    if isinstance(value, float) and value.is_integer():  # 1.2e1 is JSON's 12 too
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProviderError(f"usageMetadata.{key} is not an integer")
    return value


def convert_usage(meta: Any) -> dict[str, Any] | None:
    """usageMetadata -> OpenAI usage; thinking tokens are completion tokens, also itemised."""
    if not isinstance(meta, dict):
        return None
    prompt, thoughts = _count(meta, "promptTokenCount"), _count(meta, "thoughtsTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(meta, "totalTokenCount") or prompt + completion,
    }
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    cached = _count(meta, "cachedContentTokenCount")
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _call_id(call: dict[str, Any]) -> str:
    """Gemini's id for a call when it gives one, else a fresh one: clients key results by id."""
    given = call.get("id")
    return given if isinstance(given, str) and given else f"call_{uuid.uuid4().hex[:24]}"


def _split_parts(candidate: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """A candidate's parts -> (text, thoughts, tool calls).

    Parts OpenAI's chat message cannot carry (inline images, executable code) are skipped.
    """
    if not isinstance(candidate, dict):
        raise ProviderError("candidate is not an object")
    content = candidate.get("content") or {}  # absent when the candidate was blocked
    parts = (content.get("parts") or []) if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise ProviderError("candidate content has no parts list")
    text, thoughts, calls = [], [], []
    for part in parts:
        if not isinstance(part, dict):
            raise ProviderError("content part is not an object")
        call = part.get("functionCall")
        if call is not None:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ProviderError("functionCall part has no name")
            arguments = encode_json(call.get("args") or {}).decode()
            calls.append(
                {
                    "id": _call_id(call),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": arguments},
                }
            )
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(thoughts), calls


def _index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index", position)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ProviderError("candidate index is not a non-negative integer")
    return index


def _finish_reason(raw: Any, made_calls: bool) -> str:
    reason = FINISH_REASONS.get(raw, "stop") if isinstance(raw, str) else "stop"
    return "tool_calls" if made_calls and reason == "stop" else reason


def _block_reason(obj: dict[str, Any]) -> str | None:
    feedback = obj.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return str(reason) if reason else None


def _candidates(obj: dict[str, Any]) -> list[Any]:
    candidates = obj.get("candidates", [])
    if not isinstance(candidates, list):
        raise ProviderError("'candidates' is not a list")
    return candidates


def chat_response(obj: dict[str, Any], model: str, created: int, fallback_id: str) -> dict[str, Any]:
    """A GenerateContentResponse -> an OpenAI chat.completion."""
    choices = []
    for position, candidate in enumerate(_candidates(obj)):
        text, thoughts, calls = _split_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": _index(candidate, position),
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    if not choices:
        reason = _block_reason(obj)
        if reason is None:
            raise ProviderError("gemini response has neither candidates nor a block reason")
        message = {"role": "assistant", "content": "", "refusal": f"prompt blocked by gemini: {reason}"}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    response: dict[str, Any] = {
        "id": f"chatcmpl-{obj.get('responseId') or fallback_id}",
        "object": "chat.completion",
        "created": created,
        "model": obj.get("modelVersion") or model,
        "choices": choices,
    }
    usage = convert_usage(obj.get("usageMetadata"))
    if usage is not None:
        response["usage"] = usage
    return response


def embeddings_response(obj: dict[str, Any], model: str) -> dict[str, Any]:
    """A BatchEmbedContentsResponse -> an OpenAI embeddings list. Gemini reports no token counts
    for embeddings, so usage is zero rather than a guess."""
    embeddings = obj.get("embeddings")
    if not isinstance(embeddings, list) or not all(
        isinstance(e, dict) and isinstance(e.get("values"), list)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in e["values"])
        for e in embeddings
    ):
        raise ProviderError("gemini embeddings response has no valid 'embeddings' list")
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": e["values"]} for i, e in enumerate(embeddings)
        ],
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def google_error(status: int, body: bytes) -> tuple[str, str | None]:
    """Google's ``{"error": {"code", "message", "status"}}`` (also wrapped in a list, as
    non-SSE streams send it): the status name (e.g. RESOURCE_EXHAUSTED) says more than the
    numeric code, so it is the code reported. Never raises."""
    message, code = error_text(status, body)
    try:
        obj = json.loads(body)
        error = (obj[0] if isinstance(obj, list) else obj)["error"]
        if isinstance(error.get("status"), str):
            code = error["status"]
    except (ValueError, UnicodeDecodeError, LookupError, TypeError, AttributeError):
        pass
    return message, code


class GeminiStream(StreamConverter):
    """Gemini SSE events (each a whole GenerateContentResponse) -> OpenAI chunks under one id.

    The first delta of each candidate carries the role; an event with a finishReason is followed
    by a finish chunk (empty delta) for that candidate; once every candidate that spoke has
    finished, the stream is done and a last ``choices: []`` chunk carries the usage, the shape
    OpenAI uses for ``stream_options.include_usage``.
    """

    def __init__(self, model: str) -> None:
        self.done = False
        self.usage = None
        self.model = model
        self.id = ""
        self.created = int(time.time())
        self.tool_index: dict[int, int] = {}  # per choice: tool calls so far (the delta's index)
        self.open: set[int] = set()  # choices that started and have not finished
        self.seen: set[int] = set()

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def _choice(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def event(self, name: str | None, data: str) -> list[dict[str, Any]]:
        data = data.strip()
        if not data or self.done:
            return []
        obj = decode_object(data, "gemini stream event")
        if obj.get("error"):
            message, code = google_error(200, data.encode())
            raise ProviderError(f"stream error ({code}): {message}")
        if not self.id:
            self.id = f"chatcmpl-{obj.get('responseId') or uuid.uuid4().hex}"
            self.model = obj.get("modelVersion") or self.model
        usage = convert_usage(obj.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        candidates = _candidates(obj)
        chunks: list[dict[str, Any]] = []
        if not candidates:
            reason = _block_reason(obj)
            if reason is None:
                return []
            delta = {"role": "assistant", "content": "", "refusal": f"prompt blocked by gemini: {reason}"}
            chunks += [self._choice(0, delta, None), self._choice(0, {}, "content_filter")]
        for position, candidate in enumerate(candidates):
            text, thoughts, calls = _split_parts(candidate)
            index = _index(candidate, position)
            delta: dict[str, Any] = {}
            if index not in self.seen:
                self.seen.add(index)
                self.open.add(index)
                delta["role"] = "assistant"
            if thoughts:
                delta["reasoning_content"] = thoughts
            if text:
                delta["content"] = text
            if calls:
                first = self.tool_index.get(index, 0)
                delta["tool_calls"] = [{"index": first + k, **call} for k, call in enumerate(calls)]
                self.tool_index[index] = first + len(calls)
            if delta:
                chunks.append(self._choice(index, delta, None))
            if candidate.get("finishReason") and index in self.open:
                self.open.discard(index)
                finish = _finish_reason(candidate["finishReason"], index in self.tool_index)
                chunks.append(self._choice(index, {}, finish))
        if not self.open:
            self.done = True
            if self.usage is not None:
                chunks.append({**self._chunk([]), "usage": self.usage})
        return chunks


class GeminiAdapter(Adapter):
    """The Gemini API; options ``api_version`` (default v1beta) and ``safety_settings`` (sent as is)."""

    type = "gemini"

    def default_base_url(self) -> str:
        return "https://generativelanguage.googleapis.com"

    def _path(self, model: str, method: str) -> str:
        version = self.options.get("api_version") or "v1beta"
        model = model.removeprefix("models/")
        return f"{self.base_path}/{version}/models/{quote(model, safe='')}:{method}"

    def probe(self, api_key: str | None) -> UpstreamCall:
        version = self.options.get("api_version") or "v1beta"
        headers = [(b"x-goog-api-key", api_key.encode("latin-1"))] if api_key else []
        return UpstreamCall(b"GET", f"{self.base_path}/{version}/models".encode(), headers, b"")

    def build(self, op: str, request: dict[str, Any], model: str, api_key: str | None) -> UpstreamCall:
        if op == "chat":
            method = "streamGenerateContent?alt=sse" if request.get("stream") is True else "generateContent"
            body = chat_body(request, self.options)
        elif op == "embeddings":
            method, body = "batchEmbedContents", embeddings_body(request, model.removeprefix("models/"))
        else:
            raise UnsupportedOperation(f"gemini does not serve {op}")
        headers = [JSON_CONTENT]
        if api_key:
            headers.append((b"x-goog-api-key", api_key.encode("latin-1")))
        return UpstreamCall(
            b"POST",
            self._path(model, method).encode(),
            headers + static_headers(self.options),
            encode_json(body),
        )

    def convert_response(self, op: str, status: int, body: bytes, model: str) -> dict[str, Any]:
        obj = decode_object(body, f"gemini {op} response")
        if op == "embeddings":
            return embeddings_response(obj, model)
        if op != "chat":
            raise UnsupportedOperation(f"gemini does not serve {op}")
        return chat_response(obj, model, int(time.time()), uuid.uuid4().hex)

    def stream(self, op: str, model: str) -> StreamConverter:
        if op != "chat":
            raise UnsupportedOperation(f"gemini does not stream {op}")
        return GeminiStream(model)

    def error(self, status: int, body: bytes) -> tuple[str, str | None]:
        return google_error(status, body)

"""Small fake providers written from the providers' public API documentation, not from fastgw/mock.

* Anthropic Messages API (docs.anthropic.com/en/api/messages, .../messages-streaming, extended
  thinking, prompt caching, "JSON output via tools"): ``POST /v1/messages``, plain and SSE.
* Gemini API (ai.google.dev/api/generate-content, /api/embeddings): ``:generateContent``,
  ``:streamGenerateContent?alt=sse``, ``:batchEmbedContents``; function calls carry no id.
* OpenAI (platform.openai.com/docs/api-reference/chat, /embeddings): chat plain and stream, embeddings
  as floats or base64 of little-endian float32.

Each writes valid JSON in a style of its own (spaces after separators as Python's json.dumps does,
keys in documented order), streams in pieces that cut events in two, and records every request it
got (``server.requests``: (path, headers, parsed body)) so tests can check what the gateway sent.
Anthropic's fake also refuses what the real API refuses (a forced tool with thinking on, a thinking
block whose signature it did not issue), so conversions that lose data fail loudly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CACHE_READ, CACHE_WRITE = 100, 20  # every Anthropic answer reports these prompt-cache counts
EMBEDDING = [0.125, -0.25, 0.5, 3.0]  # exact in float32, so base64 round trips compare equal
THINKING = "The user wants an answer; think briefly."


def signature_of(thinking: str) -> str:
    """What this fake signs a thinking block with (the real API's signatures are opaque too)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:16]


def sample_for(schema: Any) -> Any:
    """A value conforming to a (simple) JSON Schema: what a model forced through a tool returns."""
    if not isinstance(schema, dict):
        return {}
    kind = schema.get("type", "object")
    if kind == "object":
        return {name: sample_for(sub) for name, sub in (schema.get("properties") or {}).items()} or {"answer": 42}
    return {"string": "forty-two", "integer": 42, "number": 4.2, "boolean": True, "array": []}.get(kind)


class FakeProvider(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.server.requests.append((self.path, dict(self.headers), body))
        try:
            self.route(body)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # The real APIs validate every parameter and answer 400 invalid_request_error; a fake
            # that crashed instead would be taken for a failing provider (and trip its breaker).
            self.json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": repr(exc)}})

    def route(self, body: dict[str, Any]) -> None:
        if self.path == "/v1/messages":
            self.anthropic(body)
        elif self.path.startswith("/v1beta/models/"):
            self.gemini(body)
        elif self.path == "/v1/chat/completions":
            self.openai_chat(body)
        elif self.path == "/v1/embeddings":
            self.openai_embeddings(body)
        else:
            self.json(404, {"error": {"message": f"no route {self.path}"}})

    # -- writing --------------------------------------------------------------------------

    def json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, indent=1).encode()  # whitespace and newlines: valid, not compact
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def sse(self, events: list[str]) -> None:
        """Chunked, in pieces that cut events in the middle (as TCP may)."""
        data = "".join(events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = max(1, len(data) // 5) + 7
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    # -- Anthropic ------------------------------------------------------------------------

    def anthropic_error(self, message: str) -> None:
        self.json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})

    def anthropic(self, body: dict[str, Any]) -> None:
        if not isinstance(body.get("max_tokens"), int):
            return self.anthropic_error("max_tokens: Field required")
        thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
        choice = body.get("tool_choice") or {}
        if thinking and choice.get("type") in ("any", "tool"):
            return self.anthropic_error("Thinking may not be enabled when tool_choice forces tool use.")
        for message in body.get("messages", []):
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if block.get("type") == "thinking" and block.get("signature") != signature_of(block.get("thinking", "")):
                    return self.anthropic_error("Invalid `signature` in `thinking` block")
        blocks: list[dict[str, Any]] = []
        if thinking:
            blocks.append({"type": "thinking", "thinking": THINKING, "signature": signature_of(THINKING)})
        if choice.get("type") == "tool":
            tool = next((t for t in body.get("tools", []) if t.get("name") == choice.get("name")), None)
            if tool is None:  # Anthropic answers a forced tool that is not in `tools` with a 400
                return self.anthropic_error(f"tool_choice: tool '{choice.get('name')}' not found in tools")
            blocks.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": tool["name"],
                           "input": sample_for(tool.get("input_schema"))})
            stop = "tool_use"
        else:
            blocks.append({"type": "text", "text": "Hello from Claude."})
            stop = "end_turn"
        usage = {"input_tokens": 11, "cache_creation_input_tokens": CACHE_WRITE,
                 "cache_read_input_tokens": CACHE_READ, "output_tokens": 7}
        message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
                   "model": body.get("model"), "content": blocks, "stop_reason": stop, "stop_sequence": None,
                   "usage": usage}
        if not body.get("stream"):
            return self.json(200, message)
        events = [("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}})]
        events.append(("ping", {"type": "ping"}))
        for index, block in enumerate(blocks):
            if block["type"] == "thinking":
                start = {"type": "thinking", "thinking": ""}
                deltas = [{"type": "thinking_delta", "thinking": THINKING[:10]},
                          {"type": "thinking_delta", "thinking": THINKING[10:]},
                          {"type": "signature_delta", "signature": block["signature"]}]
            elif block["type"] == "tool_use":
                start = {**block, "input": {}}
                text = json.dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": text[:5]},
                          {"type": "input_json_delta", "partial_json": text[5:]}]
            else:
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": "Hello from"}, {"type": "text_delta", "text": " Claude."}]
            events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
            events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": 7}}))
        events.append(("message_stop", {"type": "message_stop"}))
        self.sse([f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events])

    # -- Gemini ---------------------------------------------------------------------------

    def gemini(self, body: dict[str, Any]) -> None:
        model, _, method = self.path.removeprefix("/v1beta/models/").partition(":")
        if method.startswith("batchEmbedContents"):
            embeddings = [{"values": EMBEDDING} for _ in body.get("requests", [])]
            return self.json(200, {"embeddings": embeddings})
        config = body.get("generationConfig") or {}
        declarations = [d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        if declarations:
            parts = [{"functionCall": {"name": d["name"], "args": {"city": "Paris"}}} for d in declarations[:2]]
        elif config.get("responseMimeType") == "application/json":
            parts = [{"text": json.dumps(sample_for(config.get("responseJsonSchema") or {"type": "object"}))}]
        else:
            parts = [{"text": "Hello from Gemini."}]
        usage = {"promptTokenCount": 9, "candidatesTokenCount": 5, "totalTokenCount": 14, "cachedContentTokenCount": 4}
        response = {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": usage, "modelVersion": model, "responseId": uuid.uuid4().hex[:12]}
        if method.startswith("generateContent"):
            return self.json(200, response)
        self.sse([f"data: {json.dumps(response)}\r\n\r\n"])  # one event, CRLF line ends (valid SSE)

    # -- OpenAI ---------------------------------------------------------------------------

    def openai_chat(self, body: dict[str, Any]) -> None:
        n = body.get("n") or 1
        completion = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": body.get("model"),
                      "choices": [{"index": i, "message": {"role": "assistant", "content": "Hello from OpenAI."},
                                   "logprobs": None, "finish_reason": "stop"} for i in range(n)],
                      "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12,
                                "prompt_tokens_details": {"cached_tokens": 0}}}
        if not body.get("stream"):
            return self.json(200, completion)
        chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": body.get("model")}
        events = [{**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": "Hello from OpenAI."},
                                         "finish_reason": "stop"}]} for i in range(n)]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": completion["usage"]})
        self.sse([f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"])

    def openai_embeddings(self, body: dict[str, Any]) -> None:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        as_base64 = body.get("encoding_format") == "base64"
        vector: Any = base64.b64encode(struct.pack("<4f", *EMBEDDING)).decode() if as_base64 else EMBEDDING
        self.json(200, {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": vector}
                                                   for i in range(len(inputs))],
                        "model": body.get("model"), "usage": {"prompt_tokens": 2, "total_tokens": 2}})


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeProvider)
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def bodies(self, path_part: str) -> list[dict[str, Any]]:
        return [body for path, _, body in self.requests if path_part in path]

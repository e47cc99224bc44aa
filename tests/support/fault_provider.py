"""A provider that misbehaves on cue: a raw asyncio HTTP/1.1 server whose answers are scripted
from the providers' public API documentation, not from ``fastgw.mock``.

Each request is answered by the next :class:`Reply` of the script (the last one repeats), or by a
function of the recorded request. Bodies go out as they are given, piece by piece (each piece its
own write and TCP segment), so stream events and JSON can be split at any boundary; a stream
may end cleanly without its end marker, or the connection may be dropped mid-body.

The helpers below build documented wire formats:

* OpenAI chat streams: ``data: {chat.completion.chunk}`` events, ``finish_reason`` in the last
  choice chunk, then (with ``stream_options.include_usage``) a chunk with ``choices: []`` and
  ``usage``, then ``data: [DONE]`` (platform.openai.com/docs/api-reference/chat-streaming).
* Anthropic Messages streams: ``message_start``, ``content_block_start`` /
  ``content_block_delta`` (``text_delta``, ``input_json_delta``) / ``content_block_stop``,
  ``message_delta`` (``stop_reason``, usage), ``message_stop``, with ``ping`` events between
  (docs.anthropic.com/en/docs/build-with-claude/streaming).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict/list (JSON), bytes, or a list of bytes pieces (written one by one)
    headers: dict[str, str] = field(default_factory=dict)
    piece_delay: float = 0.005  # between pieces, so each is its own read at the gateway
    cut: bool = False  # drop the connection after the pieces instead of ending the body

    def pieces(self) -> list[bytes]:
        if isinstance(self.body, list) and all(isinstance(p, bytes) for p in self.body):
            return self.body
        if isinstance(self.body, bytes):
            return [self.body]
        if self.body is None:
            return []
        return [json.dumps(self.body).encode()]


class FaultProvider:
    """Start with ``FaultProvider()``; ``script(...)`` the answers; read ``requests``; ``close()``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: list[Reply | Callable[[Recorded], Reply]] = [Reply(200, {})]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)
        self.url = f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        self._script = list(replies)
        self.requests.clear()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the server -----------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    def _next(self, request: Recorded) -> Reply:
        index = min(len(self.requests) - 1, len(self._script) - 1)
        reply = self._script[index]
        return reply(request) if callable(reply) else reply

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Recorded(method, target, headers, body, time.monotonic())
                self.requests.append(request)
                reply = self._next(request)
                if not await self._answer(writer, reply):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        """Write one answer, chunked, piece by piece; False when the connection must close."""
        is_json = not isinstance(reply.body, (bytes, list)) or (
            isinstance(reply.body, list) and not all(isinstance(p, bytes) for p in reply.body))
        content_type = "application/json" if is_json else "text/event-stream"
        head = [f"HTTP/1.1 {reply.status} X", f"content-type: {content_type}", "transfer-encoding: chunked"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        for piece in reply.pieces():
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(reply.piece_delay)
        if reply.cut:
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


# -- documented wire formats ----------------------------------------------------------------


def sse(payload: Any, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()


def split_every(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into pieces of ``size`` bytes: boundaries land anywhere, mid-event and mid-UTF-8."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def openai_chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
    chunk = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def openai_stream(texts: list[str], *, done: bool = True, usage: bool = True, finish: str | None = "stop",
                  tool_calls: list[dict] | None = None) -> bytes:
    """An OpenAI chat stream: a role chunk, one chunk per text, optional tool-call deltas
    (each ``{"index", "id"?, "name"?, "arguments"}``), the finish chunk, the usage chunk, [DONE]."""
    events = [sse(openai_chunk({"role": "assistant", "content": ""}))]
    events += [sse(openai_chunk({"content": t})) for t in texts]
    for call in tool_calls or ():
        entry: dict = {"index": call["index"]}
        if "id" in call:
            entry.update(id=call["id"], type="function")
        function = {"arguments": call["arguments"]}
        if "name" in call:
            function["name"] = call["name"]
        entry["function"] = function
        events.append(sse(openai_chunk({"tool_calls": [entry]})))
    if finish:
        events.append(sse(openai_chunk({}, finish)))
    if usage:
        chunk = openai_chunk({}, None, USAGE)
        chunk["choices"] = []
        events.append(sse(chunk))
    if done:
        events.append(sse("[DONE]"))
    return b"".join(events)


def openai_completion(text: str = "rescued", model: str = "gpt-4o-mini") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": USAGE}


def openai_error(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_message(text: str = "rescued", model: str = "claude-sonnet-4-5") -> dict:
    return {"id": "msg_01fault", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 3}}


def anthropic_error(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_011fault"}


def anthropic_stream(blocks: list[dict], *, stop: bool = True, stop_reason: str = "end_turn",
                     json_pieces: int = 7) -> bytes:
    """An Anthropic stream of ``blocks`` (``{"type": "text", "text"}`` or ``{"type": "tool_use",
    "id", "name", "input"}``); tool input JSON is sent in ``json_pieces`` input_json_delta parts."""
    events = [sse({"type": "message_start", "message": {
        "id": "msg_01fault", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1}}}, "message_start")]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(sse({"type": "content_block_start", "index": index,
                               "content_block": {"type": "text", "text": ""}}, "content_block_start"))
            events.append(sse({"type": "ping"}, "ping"))
            for word in block["text"].split(" "):
                events.append(sse({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "text_delta", "text": word + " "}}, "content_block_delta"))
        else:
            events.append(sse({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}, "content_block_start"))
            text = json.dumps(block["input"], ensure_ascii=False)
            step = max(1, -(-len(text) // json_pieces))
            for i in range(0, len(text), step):
                events.append(sse({"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": text[i : i + step]}}, "content_block_delta"))
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events.append(sse({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                       "usage": {"output_tokens": 15}}, "message_delta"))
    if stop:
        events.append(sse({"type": "message_stop"}, "message_stop"))
    return b"".join(events)

"""A slow streaming provider, written from the public API references (not from fastgw/mock).

* OpenAI Chat Completions streaming (platform.openai.com/docs/api-reference/chat-streaming):
  ``data: {chat.completion.chunk}`` events, the first delta carrying the role, a last chunk
  with ``finish_reason``, with ``stream_options.include_usage`` a final chunk with empty
  ``choices`` and ``usage``, then ``data: [DONE]``.
* Anthropic Messages streaming (docs.anthropic.com/en/api/messages-streaming):
  ``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``
  (``text_delta``) per word, ``content_block_stop``, ``message_delta`` (stop_reason and
  output usage), ``message_stop``.

Each event waits ``delay`` seconds, so a stream of ``words`` words lasts about
``words * delay``; ``stall`` delays the response head. Only streams are served (a request
without ``"stream": true`` is answered 400 after the stall). Valid forms vary on purpose: JSON written compact or spaced, key order,
and events split across two writes (chunk boundaries inside an event). One asyncio loop in
a thread serves any number of concurrent streams.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

WORD = "tick"


def answer_text(words: int) -> str:
    """The complete answer a client must receive."""
    return " ".join([WORD] * words)


def _dumps(payload: dict, n: int) -> str:
    if n % 2:
        return json.dumps(payload, separators=(",", ":"))
    return json.dumps(dict(reversed(list(payload.items()))), indent=None)  # spaced, other key order


class SlowProvider:
    """Serve on a free loopback port until :meth:`stop`; ``url`` is the base (no ``/v1``)."""

    def __init__(self, words: int = 20, delay: float = 0.1, stall: float = 0.0) -> None:
        self.words = words
        self.delay = delay
        self.stall = stall  # before the response head: a provider still thinking
        self.streams_started = 0
        self.streams_finished = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=512))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
                if not body.get("stream"):
                    self.streams_started += 1
                    await asyncio.sleep(self.stall)
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 66\r\n\r\n"
                                 b'{"error":{"message":"stream only","type":"invalid_request_error"}}')
                    continue
                if path.endswith("/chat/completions"):
                    events = self._openai(body)
                elif path.endswith("/messages"):
                    events = self._anthropic(body)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    continue
                await self._stream(writer, events)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, events: list[str]) -> None:
        self.streams_started += 1
        await asyncio.sleep(self.stall)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for n, event in enumerate(events):
            await asyncio.sleep(self.delay)
            data = event.encode()
            pieces = [data[: len(data) // 2], data[len(data) // 2 :]] if n % 3 == 2 else [data]
            for piece in pieces:
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.streams_finished += 1

    def _openai(self, body: dict) -> list[str]:
        created = int(time.time())
        base = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": created, "model": body["model"]}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        for i in range(self.words):
            text = WORD if i == 0 else " " + WORD
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [],
                           "usage": {"prompt_tokens": 5, "completion_tokens": self.words, "total_tokens": 5 + self.words}})
        return [f"data: {_dumps(chunk, n)}\n\n" for n, chunk in enumerate(chunks)] + ["data: [DONE]\n\n"]

    def _anthropic(self, body: dict) -> list[str]:
        def event(name: str, payload: dict, n: int) -> str:
            return f"event: {name}\ndata: {_dumps(payload, n)}\n\n"

        message = {"id": "msg_slow", "type": "message", "role": "assistant", "content": [], "model": body["model"],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}
        out = [event("message_start", {"type": "message_start", "message": message}, 0),
               event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}}, 1),
               event("ping", {"type": "ping"}, 2)]
        for i in range(self.words):
            text = WORD if i == 0 else " " + WORD
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": text}}, i))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}, 0))
        out.append(event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                           "usage": {"output_tokens": self.words}}, 1))
        out.append(event("message_stop", {"type": "message_stop"}, 0))
        return out

"""The answer guard covers every choice: a client asking ``n: 2`` must not get its second
answer unguarded. The provider is a loopback fake writing OpenAI's documented shapes for
``n`` > 1 (one choice per streamed chunk, interleaved by ``index``; all choices in one answer)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.harness import Client, Services

ANSWERS = ["all fine here", "well, darn it"]


class TwoChoiceProvider:
    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        request = json.loads(await reader.readexactly(length))
        base = {"id": "chatcmpl-1", "created": 1, "model": "gpt-4o"}
        if request.get("stream"):
            events = []
            words = [answer.split(" ") for answer in ANSWERS]
            for step in range(max(map(len, words))):
                for index, answer in enumerate(words):
                    if step < len(answer):
                        piece = answer[step] + (" " if step < len(answer) - 1 else "")
                        chunk = {**base, "object": "chat.completion.chunk",
                                 "choices": [{"index": index, "delta": {"content": piece}, "finish_reason": None}]}
                        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
            for index in range(len(ANSWERS)):
                chunk = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": index, "delta": {}, "finish_reason": "stop"}]}
                events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            body, kind = b"".join(events) + b"data: [DONE]\n\n", b"text/event-stream"
        else:
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                       for i, text in enumerate(ANSWERS)]
            body = json.dumps({**base, "object": "chat.completion", "choices": choices,
                               "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}}).encode()
            kind = b"application/json"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n%b" % (kind, len(body), body))
        await writer.drain()
        writer.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("action", ["mask", "block"])
def test_every_choice_of_an_n_2_answer_is_guarded(twins, stream, action):
    async def go() -> dict[int, tuple[str, str | None]]:
        provider = TwoChoiceProvider()
        url = await provider.start()
        config = {"providers": [{"name": "p", "type": "openai-compatible", "base_url": url}],
                  "models": [{"name": "m", "targets": [{"provider": "p"}]}],
                  "guard": {"rules": [{"name": "tidy", "terms": ["darn"], "action": action, "apply_to": ["response"]}]}}
        svc = Services(config, asyncio.get_running_loop())
        client = Client(svc)
        client.request("POST", "/v1/chat/completions",
                       {"model": "m", "n": 2, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        response = await client.response()
        provider.close()
        svc.close()
        assert response.status == 200
        got: dict[int, tuple[str, str | None]] = {}
        if not stream:
            for choice in response.json()["choices"]:
                got[choice["index"]] = (choice["message"]["content"], choice["finish_reason"])
            return got
        for data in response.events():
            if data == "[DONE]":
                continue
            for choice in json.loads(data)["choices"]:
                text, finish = got.get(choice["index"], ("", None))
                got[choice["index"]] = (text + (choice["delta"].get("content") or ""), choice["finish_reason"] or finish)
        return got

    got = asyncio.run(go())
    assert all("darn" not in text for text, _ in got.values())
    if action == "mask":
        assert got[1][0] == "well, **** it" and got[0] == ("all fine here", "stop")
    else:
        assert got[1][1] == "content_filter"

"""The built-in mock LLM: pure replies, the real OpenAI SDK against a real server, and raw-socket failure modes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import openai
import pytest

from fastgw.mock.core import (
    JSON_BODY,
    JSON_REPLY,
    MockLLM,
    answer_text,
    embed_vector,
    pattern_bytes,
)
from fastgw.mock.server import start_server

ROOT = Path(__file__).resolve().parents[2]
Headers = tuple[tuple[str, str], ...]
Answer = tuple[int, dict[str, str], bytes]
READY = re.compile(r"mock-llm listening on http://127\.0\.0\.1:(\d+) \(workers (\d+)\)")


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    """Start `python -m fastgw mock-llm --port 0 ...` and wait for its ready line."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastgw", "mock-llm", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    match = READY.fullmatch(line.strip())
    if match is None:
        proc.kill()
        pytest.fail(f"mock-llm did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, int(match.group(1))


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(5)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    proc, port = spawn("--models", "gpt-4o-mini")
    yield port
    assert stop(proc) == 0


@pytest.fixture
def client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-mock", max_retries=0, timeout=5)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def recv_all(sock: socket.socket) -> bytes:
    """Everything until the server closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class H11Client:
    """Several requests on one connection, parsed by h11 (an independent HTTP implementation)."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, method: str, target: str, headers: Headers = (), body: bytes = b"") -> None:
        fields = [("Host", "mock"), *headers, ("Content-Length", str(len(body)))]
        out = self.conn.send(h11.Request(method=method, target=target, headers=fields))
        out += self.conn.send(h11.Data(data=body)) if body else b""
        self.sock.sendall(out + self.conn.send(h11.EndOfMessage()))

    def receive(self) -> Answer:
        status, headers, body = 0, {}, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, headers, body

    def request(self, method: str, target: str, headers: Headers = (), body: bytes = b"") -> Answer:
        self.send(method, target, headers, body)
        return self.receive()


CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Say something"}]}


def chat_request(extra_headers: str = "", **fields: object) -> bytes:
    body = json.dumps({**CHAT, **fields}).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nContent-Length: {len(body)}\r\n{extra_headers}\r\n"
    ).encode() + body


def close(got: object, want: list[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(got, want, strict=True))  # type: ignore[call-overload]


def sse_events(chunked_body: bytes) -> list[bytes]:
    """Decode a chunked body into its chunks (one SSE event each); stop at a truncation."""
    events, rest = [], chunked_body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            events.append(b"<end>")
            break
        events.append(rest[:size])
        rest = rest[size + 2 :]
    return events


# ------------------------------------------------------------------------------------------- pure core


def test_unknown_flavor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown mock-llm flavor 'nope'; known: anthropic, azure, .*openai"):
        MockLLM(flavor="nope")


def test_pure_replies_and_server_wide_defaults() -> None:
    mock = MockLLM()
    assert mock.respond("GET", "/json", "", {}, b"") is JSON_REPLY  # the pre-built fast path
    stalled = mock.respond("GET", "/json", "", {"x-mock-stall-ms": "250"}, b"")
    assert stalled is not JSON_REPLY and stalled.body == JSON_BODY and stalled.first_byte_delay == 0.25

    failing = MockLLM(fail_status=503, stall_ms=100)
    reply = failing.respond("POST", "/v1/chat/completions", "", {}, json.dumps(CHAT).encode())
    assert reply.status == 503 and reply.first_byte_delay == 0.1
    assert json.loads(reply.body)["error"]["type"] == "server_error"
    assert failing.respond("GET", "/json", "", {"x-mock-status": "200"}, b"").status == 200  # header wins

    cutting = MockLLM(chunks=4, cut_after=2, chunk_delay_ms=5)
    reply = cutting.respond(
        "POST", "/v1/chat/completions", "", {}, json.dumps({**CHAT, "stream": True}).encode()
    )
    assert reply.action == "cut" and len(reply.events) == 2 and reply.chunk_delay == 0.005

    bad = mock.respond("GET", "/json", "", {"x-mock-stall-ms": "soon"}, b"")
    assert bad.status == 400 and json.loads(bad.body)["error"]["code"] == "invalid_mock_parameter"
    assert mock.respond("GET", "/json", "", {"x-mock-close": "1"}, b"").action == "close"


# ----------------------------------------------------------------------------------- the OpenAI SDK


def test_sdk_chat_plain_and_stream_agree(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(**CHAT)
    assert (
        plain.id.startswith("chatcmpl-") and plain.object == "chat.completion" and plain.model == "mock-gpt"
    )
    assert plain.choices[0].message.content == answer_text(8) and plain.choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens == 8
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + 8

    chunks = list(client.chat.completions.create(**CHAT, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)

    with_usage = list(
        client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    )
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 8
    assert with_usage[-2].choices[0].finish_reason == "stop"


def test_sdk_async_and_per_request_chunks(port: int) -> None:
    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        plain = await client.chat.completions.create(**CHAT, extra_headers={"x-mock-chunks": "3"})
        assert plain.choices[0].message.content == answer_text(3) == "This is a"
        stream = await client.chat.completions.create(
            **CHAT, stream=True, extra_headers={"x-mock-chunks": "3"}
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text == "This is a"
        await client.close()

    asyncio.run(main())


def test_sdk_completions_embeddings_models_tools(client: openai.OpenAI) -> None:
    legacy = client.completions.create(model="babbage-002", prompt="Hello")
    assert legacy.object == "text_completion" and legacy.choices[0].text == answer_text(8)
    streamed = client.completions.create(model="babbage-002", prompt="Hello", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == answer_text(8)

    # This SDK asks for base64 (float32) unless told otherwise: compare at float32 precision.
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=8)
    assert [d.index for d in emb.data] == [0, 1] and close(emb.data[0].embedding, embed_vector("a", 8))
    assert math.isclose(sum(v * v for v in emb.data[1].embedding), 1.0, rel_tol=1e-6)
    assert client.embeddings.create(model="e", input="a", encoding_format="float").data[
        0
    ].embedding == embed_vector("a")
    packed = client.embeddings.create(model="e", input="a", encoding_format="base64").data[0].embedding
    assert close(struct.unpack("<16f", base64.b64decode(packed)), embed_vector("a"))

    assert {m.id for m in client.models.list()} == {"mock-gpt", "gpt-4o-mini"}
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    forced = {"type": "function", "function": {"name": "lookup"}}
    call = client.chat.completions.create(**CHAT, tools=tools, tool_choice=forced)
    assert call.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.choices[0].message.tool_calls[0].function.arguments) == {
        "mock": True,
        "tool": "lookup",
    }


def test_sdk_sees_injected_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(**CHAT, extra_headers={"x-mock-status": "503"})
    assert info.value.status_code == 503
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**CHAT, extra_headers={"x-mock-status": "429"})
    assert limited.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(**CHAT, extra_headers={"x-mock-close": "1"})


# ------------------------------------------------------------------------------ raw HTTP / failure modes


def test_error_shapes(port: int) -> None:
    http = H11Client(port)
    for target, body, status, code in [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "missing_required_parameter"),
        ("/v1/chat/completions", b'{"model": "m"}', 400, "missing_required_parameter"),
        ("/v1/nothing-here", b"{}", 404, "unknown_url"),
    ]:
        got, headers, answer = http.request("POST", target, (("Content-Type", "application/json"),), body)
        error = json.loads(answer)["error"]
        assert (got, error["code"], error["type"]) == (status, code, "invalid_request_error")
        assert set(error) >= {"message", "type", "code"} and headers["content-type"] == "application/json"


def test_keep_alive_and_pipelining_in_order(port: int) -> None:
    http = H11Client(port)
    for _ in range(5):
        assert http.request("GET", "/json") == (
            200,
            {"content-type": "application/json", "content-length": str(len(JSON_BODY))},
            JSON_BODY,
        )
    # Pipelined: the slow answer is owed first, so /json must wait behind it, never overtake it.
    sock = connect(port)
    sock.sendall(
        b"GET /slow?ms=150 HTTP/1.1\r\nHost: m\r\n\r\nGET /json HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    data = recv_all(sock)
    assert data.index(b'"slept_ms":150') < data.index(JSON_BODY) and data.count(b"HTTP/1.1 200 OK") == 2


def test_echo_reflects_request(port: int) -> None:
    body = "héllo wörld".encode()
    status, _, answer = H11Client(port).request(
        "PUT", "/echo/deep/path?x=1&y=2", (("X-Forwarded-For", "10.0.0.1"), ("X-Mixed-Case", "Val")), body
    )
    echo = json.loads(answer)
    assert status == 200 and echo["method"] == "PUT" and echo["path"] == "/echo/deep/path"
    assert echo["query"] == "x=1&y=2" and echo["body"] == "héllo wörld" and echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert ["X-Mixed-Case", "Val"] in echo["headers"] and ["X-Forwarded-For", "10.0.0.1"] in echo["headers"]


def test_expect_100_continue(port: int) -> None:
    sock = connect(port)
    sock.sendall(
        b"POST /echo HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    )
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"hello")
    assert json.loads(recv_all(sock).partition(b"\r\n\r\n")[2])["body"] == "hello"


def test_cut_stream_is_a_truncated_chunked_body(port: int) -> None:
    sock = connect(port)
    sock.sendall(chat_request("x-mock-cut-after: 3\r\n", stream=True))
    head, _, body = recv_all(sock).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head and b"cache-control: no-cache" in head
    events = sse_events(body)
    assert (
        len(events) == 3 and all(e.startswith(b"data: {") for e in events) and not body.endswith(b"0\r\n\r\n")
    )

    sock = connect(port)
    sock.sendall(chat_request("Connection: close\r\nx-mock-chunks: 2\r\n", stream=True))
    events = sse_events(recv_all(sock).partition(b"\r\n\r\n")[2])
    assert events[-2:] == [b"data: [DONE]\n\n", b"<end>"] and len(events) == 2 + 2 + 2  # role, 2 words, stop


def test_close_garbage_and_stall(port: int) -> None:
    sock = connect(port)
    sock.sendall(b"GET /json HTTP/1.1\r\nHost: m\r\nx-mock-close: 1\r\n\r\n")
    assert recv_all(sock) == b""

    sock = connect(port)
    sock.sendall(b"GET /json HTTP/1.1\r\nHost: m\r\nx-mock-garbage: 1\r\n\r\n")
    junk = recv_all(sock)
    assert junk and not junk.startswith(b"HTTP/")

    started = time.monotonic()
    status, _, _ = H11Client(port).request("GET", "/json", (("x-mock-stall-ms", "300"),))
    assert status == 200 and 0.3 <= time.monotonic() - started < 2


def test_chunk_delay_sends_each_event_when_due(port: int) -> None:
    sock = connect(port)
    started = time.monotonic()
    sock.sendall(
        chat_request("Connection: close\r\nx-mock-chunks: 2\r\nx-mock-chunk-delay-ms: 80\r\n", stream=True)
    )
    first = sock.recv(65536)
    first_at = time.monotonic() - started
    rest = recv_all(sock)
    total = time.monotonic() - started
    assert b"data: {" in first and first_at < 0.07
    events = sse_events((first + rest).partition(b"\r\n\r\n")[2])
    assert len(events) == 5 + 1 and 4 * 0.08 <= total < 3  # role, 2 words, stop, [DONE]: 4 gaps


def test_bytes_sse_http10_and_connection_close(port: int) -> None:
    http = H11Client(port)
    assert http.request("GET", "/bytes?n=200000")[2] == pattern_bytes(200000)
    status, headers, body = http.request("GET", "/bytes?n=200000&chunked=1")
    assert headers["transfer-encoding"] == "chunked" and body == pattern_bytes(200000)
    status, headers, body = http.request("GET", "/sse?n=3")
    assert headers["content-type"] == "text/event-stream" and body.count(b"data: ") == 3

    sock = connect(port)
    sock.sendall(b"GET /sse?n=2 HTTP/1.0\r\n\r\n")
    head, _, body = recv_all(sock).partition(b"\r\n\r\n")
    assert (
        b"transfer-encoding" not in head and body == b'id: 1\ndata: {"seq":1}\n\nid: 2\ndata: {"seq":2}\n\n'
    )

    sock = connect(port)
    sock.sendall(b"GET /json HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
    assert recv_all(sock).endswith(b"connection: close\r\n\r\n" + JSON_BODY)  # then EOF

    sock = connect(port)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    assert recv_all(sock).startswith(b"HTTP/1.1 400 Bad Request")


def test_start_server_in_process() -> None:
    async def main() -> None:
        server = await start_server("127.0.0.1", 0, MockLLM(chunks=2))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(chat_request() + chat_request("Connection: close\r\n", stream=True))
        data = await asyncio.wait_for(reader.read(), 5)
        plain = data.split(b"\r\n\r\n")[1].split(b"HTTP/1.1")[0]
        assert json.loads(plain)["choices"][0]["message"]["content"] == "This is"
        assert data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
        writer.close()
        server.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------- processes


def _worker_pids(port: int, connections: int = 24) -> set[int]:
    """Each reply id embeds the pid of the worker that answered it."""
    pids = set()
    for _ in range(connections):
        sock = connect(port)
        sock.sendall(chat_request("Connection: close\r\n"))
        reply = json.loads(recv_all(sock).partition(b"\r\n\r\n")[2])
        pids.add(int(re.match(r"chatcmpl-mock([0-9a-f]+)x", reply["id"]).group(1), 16))
    return pids


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: set[int], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_workers_share_the_port_and_stop_cleanly() -> None:
    proc, port = spawn("--workers", "2")
    pids = _worker_pids(port)
    assert len(pids) == 2 and proc.pid not in pids
    assert stop(proc) == 0 and _wait_gone(pids)


def test_workers_die_with_a_killed_parent() -> None:
    proc, port = spawn("--workers", "2")
    pids = _worker_pids(port)
    proc.kill()
    proc.wait(5)
    assert _wait_gone(pids)

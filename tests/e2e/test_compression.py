"""Response compression through real `fastgw run` processes, compiled and pure.

Plain routes (a threaded upstream) and AI answers (an OpenAI-compatible provider written
from OpenAI's public streaming docs) are read by raw sockets, the `openai` SDK and httpx's
decoders. Streams are gated: the provider sends event i+1 only after the client decoded
event i, so a gateway that held compressed bytes back would stall the test.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import openai
import pytest
import zstandard

from tests.support.gateway import Gateway, RawClient

WORDS = ["Streams", " stay", " live", " when", " every", " event", " is", " flushed", "."]
GATE_TIMEOUT = 20.0  # generous: the machine is shared


class Gates:
    """Per-stream permissions for the provider to send its next event (keyed by the
    request's ``user`` field, which the gateway passes through)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[threading.Event]] = {}
        self.sent: dict[str, int] = {}

    def open(self, key: str) -> None:
        with self.lock:
            self.events[key] = [threading.Event() for _ in WORDS]
            self.events[key][0].set()
            self.sent[key] = 0

    def allow(self, key: str, index: int) -> None:
        if index < len(WORDS):
            self.events[key][index].set()

    def wait(self, key: str, index: int) -> bool:
        gate = self.events.get(key)
        return gate is None or gate[index].wait(GATE_TIMEOUT)


GATES = Gates()


def _chunk_event(index: int, delta: dict, finish: str | None = None) -> bytes:
    # Key order and whitespace vary, as real servers' do.
    body = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    text = json.dumps(body, separators=(",", ":") if index % 2 else (", ", ": "))
    return b"data: " + text.encode() + b"\n\n"


class Provider(BaseHTTPRequestHandler):
    """POST /v1/chat/completions as OpenAI documents it. Under /gz/ it gzips its answers
    although the request asked for identity (servers that ignore Accept-Encoding)."""

    protocol_version = "HTTP/1.1"
    seen_accept_encoding: list[str | None] = []

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Provider.seen_accept_encoding.append(self.headers.get("Accept-Encoding"))
        encode = self.path.startswith("/gz/")
        if not request.get("stream"):
            text = " ".join(["A long answer that compresses well."] * 200)
            body = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
                               "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant",
                               "content": text}, "logprobs": None, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 5, "completion_tokens": 1400, "total_tokens": 1405}}).encode()
            if encode:
                body = gzip.compress(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if encode:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        key = request.get("user", "")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if encode:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        coder = zlib.compressobj(6, zlib.DEFLATED, 31) if encode else None

        def send(data: bytes) -> None:
            if coder is not None:
                data = coder.compress(data) + coder.flush(zlib.Z_SYNC_FLUSH)
            if data:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
                self.wfile.flush()

        for i, word in enumerate(WORDS):
            if not GATES.wait(key, i):
                return  # the client never saw the previous event: end without [DONE] (the test fails)
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            GATES.sent[key] = i + 1  # before the write: the client may decode it at once
            send(_chunk_event(i, delta))
        tail = _chunk_event(1, {}, "stop")
        if (request.get("stream_options") or {}).get("include_usage"):
            tail += b'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,' \
                    b'"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,' \
                    b'"total_tokens":14}}\n\n'
        send(tail + b"data: [DONE]\n\n")
        if coder is not None:
            rest = coder.flush()
            self.wfile.write(b"%x\r\n%b\r\n" % (len(rest), rest))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


JSON_BODY = json.dumps({"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(400)]}).encode()
SMALL_BODY = b'{"ok":true}'
PNG_BODY = bytes(range(256)) * 40
PRE_GZ = gzip.compress(JSON_BODY)


class Upstream(BaseHTTPRequestHandler):
    """A plain service: JSON big and small, an image, a pre-gzipped body, a gated SSE feed."""

    protocol_version = "HTTP/1.1"
    seen_accept_encoding: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        Upstream.seen_accept_encoding.append(self.headers.get("Accept-Encoding"))
        path = self.path.split("?")[0].removeprefix("/off")
        if path == "/events":
            self._events(self.path.partition("key=")[2])
            return
        headers = {"Content-Type": "application/json; charset=utf-8", "ETag": '"v1"'}
        body = JSON_BODY
        if path == "/small":
            body = SMALL_BODY
        elif path == "/png":
            headers["Content-Type"] = "image/png"
            body = PNG_BODY
        elif path == "/pre-gz":
            headers["Content-Encoding"] = "gzip"
            body = PRE_GZ
        elif path == "/no-transform":
            headers["Cache-Control"] = "no-transform"
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self, key: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, word in enumerate(WORDS):
            if not GATES.wait(key, i):
                return
            data = b"event: word\ndata: %b\n\n" % word.encode()
            GATES.sent[key] = i + 1
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module", params=["compiled", "pure"])
def gw(request, tmp_path_factory):
    provider = _serve(Provider)
    upstream = _serve(Upstream)
    p_url = f"http://127.0.0.1:{provider.server_address[1]}"
    u_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    config = {
        "compression": {"algorithms": ["zstd", "br", "gzip"], "min_size": "1k",
                        "types": ["application/json", "text/event-stream", "text/*"],
                        "levels": {"zstd": 3, "br": 4, "gzip": 5}},
        "providers": [{"name": "openai", "type": "openai", "base_url": p_url + "/v1", "api_keys": ["sk-test"]},
                      {"name": "encoding", "type": "openai", "base_url": p_url + "/gz/v1", "api_keys": ["sk-test"]}],
        "models": [{"name": "gpt-4o-mini", "targets": [{"provider": "openai"}]},
                   {"name": "gzip-only", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}],
                    "compression": {"algorithms": ["gzip"], "levels": {"gzip": 9}}},
                   {"name": "uncompressed", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}],
                    "compression": False},
                   {"name": "encoded-upstream", "targets": [{"provider": "encoding", "model": "gpt-4o-mini"}]}],
        "routes": [{"name": "off", "match": {"path": "/off"}, "upstream": u_url, "compression": False},
                   {"name": "svc", "upstream": u_url}],
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("gw"), pure=request.param == "pure", workers=1)
    yield gateway
    gateway.stop()
    provider.shutdown()
    upstream.shutdown()


def decoder(coding: str):
    """An incremental decoder for one coding: ``feed(bytes) -> bytes``."""
    if coding == "gzip":
        return zlib.decompressobj(31).decompress
    if coding == "br":
        return brotli.Decompressor().process
    return zstandard.ZstdDecompressor().decompressobj().decompress


def get(gw: Gateway, path: str, accept: str | None) -> tuple[int, dict, bytes]:
    client = RawClient(gw.port)
    try:
        extra = f"Accept-Encoding: {accept}\r\n" if accept is not None else ""
        client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        return client.read_response()
    finally:
        client.close()


def chat(gw: Gateway, accept: str | None, model: str = "gpt-4o-mini", stream: bool = False, user: str = "u",
         sock: socket.socket | None = None) -> socket.socket:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
                       "user": user}).encode()
    extra = f"Accept-Encoding: {accept}\r\n" if accept is not None else ""
    sock = sock or socket.create_connection(("127.0.0.1", gw.port), timeout=GATE_TIMEOUT)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer x\r\n%bContent-Length: %d\r\n\r\n%b" % (extra.encode(), len(body), body))
    return sock


def whole(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One whole response read from ``sock``, which is closed after."""
    client = RawClient.__new__(RawClient)
    client.sock, client.buf = sock, b""
    try:
        return client.read_response()
    finally:
        sock.close()


class ChunkReader:
    """Reads a chunked body one chunk at a time, as it arrives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed early")
        self.buf += data

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        return int(lines[0].split()[1]), headers

    def chunk(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        size_line, rest = self.buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            self._fill()
            rest = self.buf.split(b"\r\n", 1)[1]
        self.buf = rest[size + 2 :]
        return rest[:size]


# -- AI answers ------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["zstd", "br", "gzip"])
def test_an_ai_stream_is_compressed_and_each_event_decodes_before_the_next_is_sent(gw, coding):
    key = f"raw-{coding}-{time.monotonic_ns()}"
    GATES.open(key)
    sock = chat(gw, f"{coding}, identity;q=0.1", stream=True, user=key)
    reader = ChunkReader(sock)
    status, headers = reader.head()
    assert status == 200 and headers["content-encoding"] == coding and headers["vary"] == "Accept-Encoding"
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    decode = decoder(coding)
    text, wire = b"", b""
    for i, word in enumerate(WORDS):
        needle = json.dumps(word).encode()
        while needle not in text:
            piece = reader.chunk()
            assert piece, "the stream ended early"
            wire += piece
            text += decode(piece)
        assert GATES.sent[key] == i + 1  # decoded before the provider was allowed the next event
        GATES.allow(key, i + 1)
    while True:
        piece = reader.chunk()
        if not piece:
            break
        wire += piece
        text += decode(piece)
    sock.close()
    assert text.endswith(b"data: [DONE]\n\n") and b'"usage"' not in text  # metered usage stays hidden
    assert b"Streams" not in wire  # the wire carried compressed bytes only


def test_the_openai_sdk_reads_a_compressed_stream_live(gw):
    key = f"sdk-{time.monotonic_ns()}"
    GATES.open(key)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    seen = []
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True, user=key) as response:
        assert response.headers["content-encoding"] == "br"  # the SDK offers gzip, deflate, br; zstd is first here
        for chunk in response.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
                assert GATES.sent[key] == len(seen)
                GATES.allow(key, len(seen))
    assert "".join(seen) == "".join(WORDS)


def test_a_model_overrides_the_algorithms_and_can_turn_compression_off(gw):
    key = f"override-{time.monotonic_ns()}"
    GATES.open(key)
    for i in range(1, len(WORDS)):
        GATES.allow(key, i)
    reader = ChunkReader(chat(gw, "zstd, br, gzip", model="gzip-only", stream=True, user=key))
    status, headers = reader.head()
    assert headers["content-encoding"] == "gzip"
    body = b""
    while piece := reader.chunk():
        body += piece
    reader.sock.close()
    assert zlib.decompress(body, 31).endswith(b"data: [DONE]\n\n")

    status, headers, body = whole(chat(gw, "zstd, br, gzip", model="uncompressed"))
    assert status == 200 and "content-encoding" not in headers and "vary" not in headers
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("A long answer")


@pytest.mark.parametrize(("accept", "expected"), [
    ("gzip, deflate, br, zstd", "zstd"),  # the server's order breaks the tie
    ("gzip;q=1.0, br;q=0.9, zstd;q=0.5", "gzip"),  # the client's q-values come first
    ("identity;q=0, *", "zstd"),
    ("*;q=0, br", "br"),
    ("deflate", None),
    (None, None),
])
def test_a_whole_ai_answer_negotiates_and_keeps_an_exact_content_length(gw, accept, expected):
    status, headers, body = whole(chat(gw, accept))
    assert status == 200 and headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body)
    if expected is None:
        assert "content-encoding" not in headers
        answer = json.loads(body)
    else:
        assert headers["content-encoding"] == expected
        decode = decoder(expected)
        answer = json.loads(decode(body))
        assert len(body) < 2000  # 7 KB of repetitive text
    assert answer["choices"][0]["message"]["content"].startswith("A long answer")
    assert set(Provider.seen_accept_encoding) == {"identity"}  # the gateway asks for what it can read


def test_a_provider_that_encodes_anyway_is_decoded_for_the_framer_and_re_encoded(gw):
    key = f"encoded-{time.monotonic_ns()}"
    GATES.open(key)
    reader = ChunkReader(chat(gw, "zstd", model="encoded-upstream", stream=True, user=key))
    status, headers = reader.head()
    assert status == 200 and headers["content-encoding"] == "zstd"
    decode = decoder("zstd")
    text = b""
    for i, word in enumerate(WORDS):
        while json.dumps(word).encode() not in text:
            text += decode(reader.chunk())
        GATES.allow(key, i + 1)
    while piece := reader.chunk():
        text += decode(piece)
    reader.sock.close()
    assert text.endswith(b"data: [DONE]\n\n")

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(model="encoded-upstream", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content.startswith("A long answer") and answer.usage.total_tokens == 1405


# -- plain routes --------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["zstd", "br", "gzip"])
def test_a_plain_json_answer_is_compressed_with_chunked_framing_and_a_weak_etag(gw, coding):
    status, headers, body = get(gw, "/json", f"{coding};q=0.9, identity")
    assert status == 200 and headers["content-encoding"] == coding and headers["vary"] == "Accept-Encoding"
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    assert headers["etag"] == 'W/"v1"'
    assert decoder(coding)(body) == JSON_BODY and len(body) < len(JSON_BODY) // 4
    assert Upstream.seen_accept_encoding[-1] == f"{coding};q=0.9, identity"  # forwarded as the client sent it


def test_plain_answers_that_are_not_compressed(gw):
    status, headers, body = get(gw, "/small", "gzip")  # below min_size
    assert body == SMALL_BODY and "content-encoding" not in headers and headers["vary"] == "Accept-Encoding"
    assert headers["content-length"] == str(len(SMALL_BODY))
    status, headers, body = get(gw, "/png", "gzip")  # not a listed type
    assert body == PNG_BODY and "content-encoding" not in headers and "vary" not in headers
    status, headers, body = get(gw, "/no-transform", "gzip")
    assert body == JSON_BODY and "content-encoding" not in headers
    status, headers, body = get(gw, "/json", None)  # no Accept-Encoding: identity
    assert body == JSON_BODY and "content-encoding" not in headers and headers["etag"] == '"v1"'
    status, headers, body = get(gw, "/off/json", "gzip")  # the route turns it off
    assert body == JSON_BODY and "content-encoding" not in headers and "vary" not in headers


def test_an_already_encoded_upstream_body_is_never_compressed_twice(gw):
    status, headers, body = get(gw, "/pre-gz", "gzip, br")  # the client takes gzip: passed through as is
    assert headers["content-encoding"] == "gzip" and body == PRE_GZ and headers["content-length"] == str(len(PRE_GZ))
    assert headers["etag"] == '"v1"'
    status, headers, body = get(gw, "/pre-gz", "zstd")  # it does not: decoded, re-encoded
    assert headers["content-encoding"] == "zstd" and decoder("zstd")(body) == JSON_BODY
    status, headers, body = get(gw, "/pre-gz", "identity")  # nothing it takes: decoded
    assert "content-encoding" not in headers and body == JSON_BODY


def test_a_plain_event_stream_is_flushed_per_upstream_read(gw):
    key = f"plain-{time.monotonic_ns()}"
    GATES.open(key)
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=GATE_TIMEOUT)
    sock.sendall(f"GET /events?key={key} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n".encode())
    reader = ChunkReader(sock)
    status, headers = reader.head()
    assert headers["content-encoding"] == "gzip"
    decode, text = decoder("gzip"), b""
    for i, word in enumerate(WORDS):
        while b"data: %b\n\n" % word.encode() not in text:
            text += decode(reader.chunk())
        assert GATES.sent[key] == i + 1
        GATES.allow(key, i + 1)
    while piece := reader.chunk():
        text += decode(piece)
    sock.close()
    assert text.count(b"event: word\n") == len(WORDS)


def test_an_http_10_client_gets_a_close_delimited_compressed_body(gw):
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=GATE_TIMEOUT)
    sock.sendall(b"GET /json HTTP/1.0\r\nAccept-Encoding: br\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: br" in head and b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert brotli.decompress(body) == JSON_BODY


# -- cached replays and the Anthropic front door --------------------------------------------


@pytest.mark.parametrize("build", ["compiled", "pure"])
def test_a_cached_stream_replay_and_an_anthropic_stream_are_compressed(tmp_path, build):
    import anthropic

    config = {
        "compression": {"min_size": 0},
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 6}}],
        "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
        "cache": {"ttl": "5m"},
    }
    gw = Gateway(config, tmp_path, workers=1, pure=build == "pure")
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        texts, states = [], []
        for _ in range(2):
            with client.chat.completions.with_streaming_response.create(
                    model="m", messages=[{"role": "user", "content": "cache me"}], stream=True) as response:
                assert response.headers["content-encoding"] == "br"
                states.append(response.headers.get("x-fastgw-cache"))
                texts.append("".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices))
        assert states == ["miss", "hit"] and texts[0] == texts[1] and texts[0]

        claude = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, timeout=20)
        with claude.messages.with_streaming_response.create(
                model="m", max_tokens=50, messages=[{"role": "user", "content": "hello"}], stream=True) as response:
            assert response.headers["content-encoding"] == "br"
            kinds = [event.type for event in response.parse()]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    finally:
        gw.stop()

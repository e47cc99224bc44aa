"""A loopback upstream whose responses stay open until the test lets them finish.

It answers OpenAI chat completions as streams (the chunk format of OpenAI's API reference,
"The chat completion chunk object": ``chat.completion.chunk`` objects, a ``delta`` per
choice, ``finish_reason`` on the last, then ``data: [DONE]``) and any other path as a plain
chunked body. Each response sends its head and a first piece at once, then waits for
:meth:`release` — so a test sees exactly how many requests are in flight upstream.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HeldUpstream:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.served = 0
        self.gate = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                model = json.loads(body or b"{}").get("model", "m")
                held._serve(self, "text/event-stream", _chat_events(model))

            def do_GET(self) -> None:
                held._serve(self, "text/plain", [b"first piece\n", b"last piece\n"])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _serve(self, handler: BaseHTTPRequestHandler, content_type: str, pieces: list[bytes]) -> None:
        with self.lock:
            self.in_flight += 1
            self.served += 1
            self.most = max(self.most, self.in_flight)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            _chunk(handler, pieces[0])
            self.gate.wait(60)
            for piece in pieces[1:]:
                _chunk(handler, piece)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the gateway went away (a killed gateway in a test)
        finally:
            with self.lock:
                self.in_flight -= 1

    def release(self) -> None:
        """Let every held response (and every later one) finish."""
        self.gate.set()

    def hold(self) -> None:
        """Hold responses again from now on."""
        self.gate = threading.Event()

    def wait_in_flight(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_flight == count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.in_flight} in flight upstream, expected {count}")

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def _chat_events(model: str) -> list[bytes]:
    base = {"id": "chatcmpl-held", "object": "chat.completion.chunk", "created": 1733000000, "model": model}

    def event(delta: dict, finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    first = event({"role": "assistant", "content": ""}, None) + event({"content": "Hello"}, None)
    return [first, event({"content": " there"}, None) + event({}, "stop") + b"data: [DONE]\n\n"]

"""The OpenAI-compatible front door: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` and ``/v1/models``, resolved through the config's ``models`` table.

Built once per generation. A request's body is collected (it is JSON and bounded by
``http.max_body_size``), its ``model`` resolved to the failover chain of targets, and the
first target's provider answers. The in-process ``mock`` provider answers here without a
network hop; network providers are the AI proxy's job (provider adapters), which this
front door reports clearly as not available rather than guessing.
"""

from __future__ import annotations

import fnmatch
import json
import time
from typing import Any

from fastgw.mock_llm import MockLLM, MockReply
from fastgw.proxy import replies

AI_PATHS = frozenset({b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings", b"/v1/models"})
SSE_HEADERS = b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"


class ModelTable:
    """Public model name -> ordered targets; exact names first, then wildcards in config order."""

    def __init__(self, models: list[dict[str, Any]]) -> None:
        self.exact = {m["name"]: m["targets"] for m in models if "*" not in m["name"]}
        self.patterns = [(m["name"], m["targets"]) for m in models if "*" in m["name"]]
        self.names = [m["name"] for m in models]

    def resolve(self, name: str) -> list[dict[str, Any]] | None:
        targets = self.exact.get(name)
        if targets is not None:
            return targets
        for pattern, targets in self.patterns:
            if fnmatch.fnmatchcase(name, pattern):
                return targets
        return None


class AIFrontDoor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.models = ModelTable(config["models"])
        self.providers = {p["name"]: p for p in config["providers"]}
        self.mocks = {
            p["name"]: MockLLM(**_mock_options(p.get("options", {}))) for p in config["providers"] if p["type"] == "mock"
        }
        created = int(time.time())
        self.models_body = json.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "fastgw"}
                    for name in self.models.names
                    if "*" not in name
                ],
            }
        ).encode()

    def handles(self, path: bytes) -> bool:
        return path in AI_PATHS

    def start(self, conn, head) -> AIExchange:
        return AIExchange(self, conn, head)


def _mock_options(options: dict[str, Any]) -> dict[str, Any]:
    allowed = ("chunks", "chunk_delay_ms", "fail_status", "stall_ms", "cut_after")
    return {k: options[k] for k in allowed if k in options}


class AIExchange:
    """One front-door request on a client connection (the connection calls these hooks)."""

    __slots__ = ("door", "conn", "head", "body", "reply", "next_event", "timer", "cancelled")

    def __init__(self, door: AIFrontDoor, conn, head) -> None:
        self.door = door
        self.conn = conn
        self.head = head
        self.body: list[bytes] = []
        self.reply: MockReply | None = None
        self.next_event = 0
        self.timer = None
        self.cancelled = False

    def on_body(self, chunk) -> None:
        self.body.append(bytes(chunk))

    def on_request_end(self) -> None:
        if self.cancelled:
            return
        head = self.head
        if head.path == b"/v1/models":
            if head.method != b"GET":
                self._error(405, "use GET for /v1/models")
                return
            self._send(replies.simple_response(200, self.door.models_body, keep_alive=self.conn.keep_alive))
            self.conn.finish_exchange()
            return
        if head.method != b"POST":
            self._error(405, f"use POST for {head.path.decode()}")
            return
        raw = b"".join(self.body)
        try:
            request = json.loads(raw)
        except ValueError:
            self._error(400, "request body is not valid JSON")
            return
        if not isinstance(request, dict):
            self._error(400, "request body must be a JSON object")
            return
        model = request.get("model")
        if not isinstance(model, str) or not model:
            self._error(400, "'model' is required and must be a string", code="missing_model")
            return
        targets = self.door.models.resolve(model)
        if targets is None:
            self._error(404, f"model '{model}' is not served by this gateway", code="model_not_found")
            return
        target = targets[0]
        provider = self.door.providers[target["provider"]]
        mock = self.door.mocks.get(provider["name"])
        if mock is None:
            self._error(
                501,
                f"provider type '{provider['type']}' needs the AI proxy adapters, not available in this build",
                code="provider_not_available",
            )
            return
        request["model"] = target["model"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        self.reply = mock.respond(
            "POST", head.path.decode(), head.query.decode("latin-1"), headers, json.dumps(request).encode()
        )
        self._play()

    # -- playing a mock reply with its timing and failure modes --------------------------

    def _play(self) -> None:
        reply = self.reply
        if reply.first_byte_delay > 0:
            self.timer = self.conn.loop.call_later(reply.first_byte_delay, self._play_head)
        else:
            self._play_head()

    def _play_head(self) -> None:
        self.timer = None
        reply = self.reply
        conn = self.conn
        if self.cancelled:
            return
        if reply.action == "close":
            conn.abort_exchange()
            return
        if reply.action == "garbage":
            self._send(b"\x00garbage, not HTTP\r\n\r\n")
            conn.abort_exchange()
            return
        if reply.events is None:
            content_type, extra = _split_headers(reply.headers)
            self._send(
                replies.simple_response(
                    reply.status, reply.body or b"", content_type=content_type, keep_alive=conn.keep_alive, extra=extra
                )
            )
            conn.finish_exchange()
            return
        head = [replies.status_line(reply.status), b"\r\n", replies.SERVER_HEADER, replies.DATE.header(), SSE_HEADERS]
        head.append(b"Transfer-Encoding: chunked\r\n" if conn.keep_alive else b"Connection: close\r\n")
        head.append(b"\r\n")
        self._send(b"".join(head))
        self._play_events()

    def _play_events(self) -> None:
        self.timer = None
        if self.cancelled:
            return
        reply = self.reply
        events = reply.events
        chunked = self.conn.keep_alive
        out = []
        while self.next_event < len(events):
            event = events[self.next_event]
            self.next_event += 1
            out.append(b"%x\r\n%b\r\n" % (len(event), event) if chunked else event)
            if reply.chunk_delay > 0 and self.next_event < len(events):
                self._send(b"".join(out))
                self.timer = self.conn.loop.call_later(reply.chunk_delay, self._play_events)
                return
        if reply.action == "cut":
            self._send(b"".join(out))
            self.conn.abort_exchange()
            return
        if chunked:
            out.append(b"0\r\n\r\n")
        self._send(b"".join(out))
        self.conn.finish_exchange()

    def _send(self, data: bytes) -> None:
        self.conn.write_local(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        self.conn.local_reply(status, message, code=code)

    # -- connection hooks ---------------------------------------------------------------

    def resume(self) -> None:
        """The client drained its buffer; mock events are small, nothing is held back."""

    def cancel(self) -> None:
        self.cancelled = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _split_headers(headers: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    """Content-Type apart (simple_response writes it), the rest as header lines."""
    content_type = b"application/json"
    lines = []
    for name, value in headers:
        if name.lower() == "content-type":
            content_type = value.encode()
        else:
            lines.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
    return content_type, b"".join(lines)

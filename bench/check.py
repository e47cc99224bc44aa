"""One real request before every measurement: the answer must be right, or the figures mean nothing.

wrk counts responses and their status only. A proxy that answers 200 with a truncated stream, an
empty body or the wrong provider's answer would look fast, so each target is first asked once with
`http.client` (an independent parser) and the answer is checked here.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

import bodies


class CheckFailed(RuntimeError):
    """The answer is not what the scenario expects; the message says what differed."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(host: str, port: int, request: bodies.Request, timeout: float = 10.0) -> Response:
    """Send `request` once on a fresh connection and read the whole answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", request.path, body=request.body, headers=request.headers)
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    return Response(resp.status, headers, body)


def _require(ok: bool, what: str, resp: Response) -> None:
    if not ok:
        raise CheckFailed(f"{what}; got status {resp.status}, headers {resp.headers}, body {resp.body[:600]!r}")


def exact(resp: Response, upstream_path: str) -> dict[str, Any]:
    """The upstream's own bytes: what direct must answer, and what a plain relay must pass on unchanged."""
    content_type = bodies.UPSTREAM_PATHS[upstream_path][0]
    _require(resp.status == 200, "status is not 200", resp)
    _require(resp.headers.get("content-type") == content_type, f"content-type is not {content_type!r}", resp)
    _require(resp.body == bodies.upstream_body(upstream_path), f"body differs from the {upstream_path} answer", resp)
    return {"status": 200, "bytes": len(resp.body), "content_type": content_type, "same_bytes": True}


def _decode(resp: Response, coding: str) -> bytes:
    """The body of a compressed answer: the coding asked for, a Vary, and bytes that decode."""
    import zlib

    import zstandard

    _require(resp.status == 200, "status is not 200", resp)
    _require(resp.headers.get("content-encoding") == coding, f"content-encoding is not {coding!r}", resp)
    _require("accept-encoding" in resp.headers.get("vary", "").lower(), "no Vary: Accept-Encoding", resp)
    try:
        return (zlib.decompress(resp.body, 31) if coding == "gzip"
                else zstandard.ZstdDecompressor().decompressobj().decompress(resp.body))
    except Exception as exc:  # zlib.error, ZstdError: the body is not what it claims
        raise CheckFailed(f"the {coding} body does not decode ({exc})") from None


def decoded(resp: Response, upstream_path: str, coding: str) -> dict[str, Any]:
    """A compressed relay: the upstream's bytes once decoded."""
    plain = _decode(resp, coding)
    _require(plain == bodies.upstream_body(upstream_path), f"decoded body differs from the {upstream_path} answer",
             resp)
    return {"status": 200, "bytes": len(resp.body), "decoded_bytes": len(plain), "coding": coding,
            "ratio": round(len(resp.body) / len(plain), 3)}


def openai_sse_coded(resp: Response, coding: str) -> dict[str, Any]:
    """A compressed AI stream: once decoded, everything `openai_sse` checks."""
    plain = _decode(resp, coding)
    stream = openai_sse(Response(resp.status, resp.headers, plain))
    return {**stream, "bytes": len(resp.body), "decoded_bytes": len(plain), "coding": coding,
            "ratio": round(len(resp.body) / len(plain), 3)}


def openai_json(resp: Response) -> dict[str, Any]:
    """A chat.completion carrying the whole answer and its usage (converted or passed through)."""
    _require(resp.status == 200, "status is not 200", resp)
    _require(resp.headers.get("content-type", "").startswith("application/json"), "not application/json", resp)
    try:
        answer = json.loads(resp.body)
    except ValueError as exc:
        raise CheckFailed(f"body is not JSON ({exc}): {resp.body[:600]!r}") from None
    _require(answer.get("object") == "chat.completion", "object is not chat.completion", resp)
    content = answer["choices"][0]["message"]["content"]
    _require(content == bodies.answer_text(), "content is not the upstream's answer", resp)
    _require((answer.get("usage") or {}).get("completion_tokens") == bodies.CHUNKS,
             f"usage.completion_tokens is not {bodies.CHUNKS}", resp)
    return {"status": 200, "bytes": len(resp.body), "content_chars": len(content), "usage": answer["usage"]}


def openai_sse(resp: Response, rechunked: bool = False) -> dict[str, Any]:
    """A chat.completion.chunk stream: CHUNKS content chunks making the whole answer, a `stop`
    finish, the usage chunk the client asked for (include_usage), and `[DONE]`.

    `rechunked`: an answer-side guard holds back the tail of a delta that could start a term and
    sends it with the next one, so the deltas are cut differently (the text must still be whole)."""
    _require(resp.status == 200, "status is not 200", resp)
    _require(resp.headers.get("content-type", "").startswith("text/event-stream"), "not text/event-stream", resp)
    try:
        stream = bodies.parse_openai_stream(resp.body)
    except (ValueError, KeyError) as exc:
        raise CheckFailed(f"stream does not parse ({exc}): {resp.body[:600]!r}") from None
    _require(stream["content_chunks"] == bodies.CHUNKS or rechunked and stream["content_chunks"] > 0,
             f"{stream['content_chunks']} content chunks, not {bodies.CHUNKS}", resp)
    _require(stream["text"] == bodies.answer_text(), "streamed text is not the upstream's answer", resp)
    _require(stream["finish_reasons"] == ["stop"], f"finish reasons {stream['finish_reasons']}", resp)
    _require(stream["usage_chunk"] is not None, "no usage chunk, though the client asked include_usage", resp)
    _require(stream["usage_chunk"].get("completion_tokens") == bodies.CHUNKS,
             f"usage chunk's completion_tokens is not {bodies.CHUNKS}", resp)
    _require(stream["done_marker"], "no [DONE]", resp)
    return {"status": 200, "bytes": len(resp.body), "events": stream["events"],
            "content_chunks": stream["content_chunks"], "usage_chunk": stream["usage_chunk"], "done_marker": True,
            "transfer_encoding": resp.headers.get("transfer-encoding")}


def openai_sse_guarded(resp: Response) -> dict[str, Any]:
    return openai_sse(resp, rechunked=True)

"""Responses the gateway writes itself: pre-built status lines, a cached Date, JSON errors.

Errors are OpenAI-shaped (``{"error": {"message", "type", "code"}}``) on every path, so an
SDK client shows a readable message whatever went wrong, and plain HTTP clients get JSON.
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from http import HTTPStatus

STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}".encode() for s in HTTPStatus
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    501: "invalid_request_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
    505: "invalid_request_error",
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown" % status


class DateCache:
    """``Date`` header bytes, formatted at most once per second (uvicorn's trick)."""

    __slots__ = ("_second", "_header")

    def __init__(self) -> None:
        self._second = -1
        self._header = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._header


DATE = DateCache()
SERVER_HEADER = b"Server: fastgw\r\n"


def error_body(
    status: int, message: str, code: str | None = None, err_type: str | None = None, param: str | None = None
) -> bytes:
    """OpenAI's error object, all four fields (``param`` names the request field at fault, or null)."""
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": err_type or ERROR_TYPES.get(status, "error"),
                "param": param,
                "code": code,
            }
        }
    ).encode()


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    keep_alive: bool = True,
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length body, as one buffer."""
    parts = [
        status_line(status),
        b"\r\n",
        SERVER_HEADER,
        DATE.header(),
        b"Content-Type: ",
        content_type,
        b"\r\nContent-Length: %d\r\n" % len(body),
        extra,
    ]
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    keep_alive: bool = True,
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    return simple_response(
        status,
        error_body(status, message, code),
        keep_alive=keep_alive,
        extra=extra,
        head_only=head_only,
    )

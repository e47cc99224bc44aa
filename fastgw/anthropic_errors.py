"""Anthropic's error types by HTTP status: the one table for the gateway's Anthropic front door
(``fastgw/ai/anthropic_front.py``) and the mock's Anthropic flavor (``fastgw/mock/flavors/anthropic.py``).

A module of its own with no imports: the mock must not load AI runtime code to name an error, and the AI
code must not import the mock for it.
"""

from __future__ import annotations

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_TYPES = frozenset(ERROR_TYPES.values())


def error_type(status: int, code: str | None = None) -> str:
    """The error ``type`` Anthropic answers ``status`` with; ``code`` wins when it is itself one of the types
    (e.g. ``overloaded_error``)."""
    if code in _TYPES:
        return code  # type: ignore[return-value]
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")

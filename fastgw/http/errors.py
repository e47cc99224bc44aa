"""The error type and end-of-message sentinel shared by both parser twins.

They live here, in plain Python, so that ``fastgw.http.parser`` and the compiled
``fastgw._c.http_parser`` raise the same class and return the same ``END`` object:
callers write one ``except ParseError`` and one ``is END`` whichever twin is in use.
"""

from __future__ import annotations

__all__ = ["END", "ParseError"]


class ParseError(Exception):
    """Malformed or over-limit HTTP input; ``status`` is what the server should answer.

    400/431/501/505 come from the request parser; the response parser always uses 502
    because a broken upstream is the gateway's problem to report, not the client's.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class _End:
    """Type of ``END``: a named singleton so that ``repr`` reads well and pickling keeps identity."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"

    def __reduce__(self) -> str:
        return "END"


END = _End()

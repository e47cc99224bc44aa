"""What a limit check answers: allowed or refused, and the headers either way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Decision:
    """The answer to :meth:`Limiter.reserve`; ``headers`` go on the response either way.

    Never changed once made (:data:`ALLOWED` is shared); not frozen only because a frozen
    dataclass costs a microsecond and a half per answer on the limited request's path.
    """

    allowed: bool
    status: int = 200
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reservation: Any = None  # a limiter Reservation, or a concurrency Holding
    rule: str = ""  # on a refusal: the rule that refused, and its kind (tokens, requests, quota)
    kind: str = ""


ALLOWED = Decision(True)

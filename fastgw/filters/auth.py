"""Consumer authentication: API keys and JWTs, checked from the head alone.

Runs in ``on_request_headers``, so a caller without valid credentials gets its 401 before
a byte of the body is read (the connection then closes, since the unread body cannot be
skipped). On the AI front door anonymous callers pass when the config allows them (no
consumers and no issuers, or ``auth.anonymous``); on a plain route that names ``auth``
a consumer is required unless ``optional: true``.
"""

from __future__ import annotations

from typing import Any

from fastgw.auth import AuthFailure
from fastgw.filters.api import Filter, Phase, Status
from fastgw.server.stream import Stream


class Auth(Filter):
    stateless = True
    name = "auth"
    phase = Phase.AUTHN

    def __init__(self, options: dict[str, Any] | None = None, env: Any = None, *, anonymous: bool | None = None) -> None:
        super().__init__(options, env)
        self.authenticator = env.authenticator
        self.optional = bool(self.options.get("optional", False)) if anonymous is None else anonymous

    def on_request_headers(self, s: Stream) -> Status:
        consumer = self.authenticator.authenticate(s.head.get)
        if isinstance(consumer, AuthFailure):
            return s.reply(consumer.status, consumer.message, consumer.code)
        if consumer is None and not self.optional:
            return s.reply(401, "this route needs credentials: send 'Authorization: Bearer <key>' or 'x-api-key'",
                           "missing_api_key")
        s.consumer = consumer
        return Status.CONTINUE

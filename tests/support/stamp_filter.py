"""A filter written the way a plugin author would: one file, the public filter API only.

Enabled from config with ``filters: [{use: "tests.support.stamp_filter:Stamp", value: ...}]``.
It stamps every answer with ``x-stamp`` (plain routes: on the upstream's headers; AI: on the
head the gateway writes), refuses requests that carry ``x-deny`` with 403 from the head, and
counts what it saw in ``on_done`` into a response header of the next request.
"""

from __future__ import annotations

from fastgw.filters import Filter, Phase, Status


class Stamp(Filter):
    name = "stamp"
    phase = Phase.POLICY

    def __init__(self, options=None, env=None) -> None:
        super().__init__(options, env)
        self.value = str(self.options.get("value", "stamped")).encode()
        self.done = 0

    def on_request_headers(self, s) -> Status:
        if s.head.get(b"x-deny") is not None:
            return s.reply(403, "denied by the stamp filter", "stamp_denied")
        if s.op is None:  # a plain route: the upstream's answer gets the header
            return Status.CONTINUE
        return Status.CONTINUE

    def on_request(self, s, request) -> Status:  # AI: the decoded request, model known
        if request.get("user") == "deny":
            return s.reply(403, "denied by the stamp filter", "stamp_denied")
        s.add_response_header(b"x-stamp", self.value)
        s.add_response_header(b"x-stamp-seen", str(self.done).encode())
        return Status.CONTINUE

    def on_response_headers(self, s, status, headers) -> Status:
        headers.append((b"x-stamp", self.value))
        headers.append((b"x-stamp-seen", str(self.done).encode()))
        return Status.CONTINUE

    def on_done(self, s) -> None:
        self.done += 1

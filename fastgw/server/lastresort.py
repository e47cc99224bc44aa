"""The last resort: an exception no layer caught ends its exchange well-formed, counted, logged once.

Filters, adapters and converters answer what they can (a 400 naming the field, a 502 for a bad
provider answer); anything that still escapes is a gateway bug. The connection and the AI handler
catch it at their entry points and call :func:`report`, then answer 500 (or end a started stream
with the dialect's error event) instead of letting asyncio drop the connection.
"""

from __future__ import annotations

import itertools
import os
import sys
import traceback

from fastgw.obs.metrics import GATEWAY

_ids = itertools.count(1)


def report(where: str, exc: BaseException) -> str:
    """Count the error (fastgw_internal_errors_total{where}) and log one line; returns the request id
    quoted to the client, so a user's report finds the log line."""
    request_id = f"{os.getpid():x}-{next(_ids)}"
    GATEWAY.internal_errors.inc((where,))
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    detail = str(exc).replace("\n", " ")[:200]
    sys.stderr.write(f"fastgw: internal error in {where} (request {request_id}){at}: {type(exc).__name__}: {detail}\n")
    return request_id


def message(request_id: str) -> str:
    return f"internal gateway error (request {request_id})"

"""How a config generation travels from the supervisor to its workers through shared memory.

``marshal`` rather than JSON: the blob is plain data (dicts, lists, strings, numbers), it
never leaves the machine, and both ends are the same interpreter (workers are forked from
the supervisor). Decoding a 10,000-route config takes a fraction of ``json.loads``'s time,
and every worker decodes each push. ``marshal`` builds no objects beyond these types.
"""

from __future__ import annotations

import marshal
from typing import Any

WIRE_VERSION = 1


def encode_generation(number: int, config: dict[str, Any]) -> bytes:
    return marshal.dumps((WIRE_VERSION, number, config))


def decode_generation(blob: bytes) -> tuple[int, dict[str, Any]]:
    version, number, config = marshal.loads(blob)
    if version != WIRE_VERSION:
        raise ValueError(f"generation blob version {version}, expected {WIRE_VERSION}")
    return number, config

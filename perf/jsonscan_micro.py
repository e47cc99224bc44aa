"""Micro-benchmark of the JSON top-level-key scanner: ns per call, against a full decode.

Run from the repo root: python -m perf.jsonscan_micro (build first: python setup.py build_ext --inplace).
Cases: a typical OpenAI content chunk with ``"usage":null`` (what include_usage puts in every
chunk: the scan proves USAGE_NONE and the decode is skipped) and the final usage chunk
(USAGE_OBJECT | CHOICES_EMPTY), each scanned by the compiled and the pure twin (and by the
pure twin's token walk, its reference, which it runs only on texts with a backslash), and
decoded by json.loads and orjson.loads for comparison.
"""

from __future__ import annotations

import json
import timeit

import orjson

from fastgw import jsonscan as py_scan

CONTENT = json.dumps({
    "id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1731000000,
    "model": "gpt-4o-mini", "system_fingerprint": "fp_0123456789",
    "choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": None}],
    "usage": None,
}, separators=(",", ":")).encode()
USAGE = json.dumps({
    "id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1731000000,
    "model": "gpt-4o-mini", "system_fingerprint": "fp_0123456789", "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}, separators=(",", ":")).encode()


def ns_per_call(fn, arg, number: int) -> float:
    """Best of 7 runs of ``fn(arg)``, timeit's own loop: nothing but the call is timed."""
    timer = timeit.Timer("fn(arg)", globals={"fn": fn, "arg": arg})
    return min(timer.repeat(number=number, repeat=7)) / number * 1e9


def main() -> None:
    from fastgw._c import jsonscan as c_scan

    overhead = ns_per_call(len, CONTENT, 1_000_000)  # the cheapest C call there is, for scale
    rows = [
        ("scan_chunk (Cython)", c_scan.scan_chunk, 1_000_000),
        ("usage_state (Cython)", c_scan.usage_state, 1_000_000),
        ("scan_chunk (pure Python)", py_scan.scan_chunk, 50_000),
        ("  its token walk alone", lambda data: py_scan._walk(data.decode("latin-1")), 10_000),
        ("json.loads", json.loads, 100_000),
        ("orjson.loads", orjson.loads, 200_000),
    ]
    assert c_scan.scan_chunk(CONTENT) == py_scan.USAGE_NONE
    assert c_scan.scan_chunk(USAGE) == py_scan.USAGE_OBJECT | py_scan.CHOICES_EMPTY
    print(f"content chunk: {len(CONTENT)} bytes; usage chunk: {len(USAGE)} bytes; "
          f"a call of len() takes {overhead:.0f} ns")
    print(f"{'ns per call':<28}{'content':>10}{'usage':>10}")
    for name, fn, number in rows:
        print(f"{name:<28}{ns_per_call(fn, CONTENT, number):>10.0f}{ns_per_call(fn, USAGE, number):>10.0f}")


if __name__ == "__main__":
    main()

"""Micro-benchmark of the SSE framer twins: ns per feed, pure Python vs Cython.

Run from the repo root: python -m perf.sse_micro (build first: python setup.py build_ext --inplace).
Cases: one OpenAI chunk per feed (what an upstream read usually holds, and the path the
compiled twin is tuned for), a 50-event stream in one feed, the same stream split into
1460-byte reads (a TCP segment each, so events straddle feeds), and serialize_event.
"""

from __future__ import annotations

import json
import timeit

from fastgw import sse as py_sse

CHUNK = b"data: " + json.dumps({
    "id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1731000000,
    "model": "gpt-4o-mini", "system_fingerprint": "fp_0123456789",
    "choices": [{"index": 0, "delta": {"content": " world"}, "logprobs": None, "finish_reason": None}],
}, separators=(",", ":")).encode() + b"\n\n"
STREAM = CHUNK * 49 + b"data: [DONE]\n\n"
SEGMENTS = [STREAM[i:i + 1460] for i in range(0, len(STREAM), 1460)]
DATA = json.loads(CHUNK[6:])


def bench(mod, number: int = 200_000) -> dict[str, float]:
    parser = mod.SSEParser()
    feed = parser.feed
    serialize = mod.serialize_event
    text = json.dumps(DATA, separators=(",", ":"))

    def one_event() -> None:
        feed(CHUNK)

    def stream_whole() -> None:
        feed(STREAM)

    def stream_segments() -> None:
        for segment in SEGMENTS:
            feed(segment)

    def one_serialize() -> None:
        serialize(text)

    out = {}
    for name, fn, n in (("1 event/feed", one_event, number), ("50 events, 1 feed", stream_whole, number // 50),
                        ("50 events, 1460B reads", stream_segments, number // 50),
                        ("serialize_event", one_serialize, number)):
        out[name] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9
    return out


def main() -> None:
    from fastgw._c import sse as c_sse

    print(f"one event: {len(CHUNK)} bytes; stream: 50 events, {len(STREAM)} bytes, {len(SEGMENTS)} reads")
    py = bench(py_sse, 40_000)
    c = bench(c_sse)
    print(f"{'case (ns per feed call / per stream)':<38}{'py ns':>10}{'c ns':>10}{'speed-up':>10}")
    for name in py:
        print(f"{name:<38}{py[name]:>10.0f}{c[name]:>10.0f}{py[name] / c[name]:>9.1f}x")


if __name__ == "__main__":
    main()

"""Micro-benchmark of the HTTP parser twins: ns per parsed message, pure Python vs Cython.

Run from the repo root: python -m perf.parser_micro (build first: python setup.py build_ext --inplace).
Measures the keep-alive steady state: one parser, one feed per message, events pulled
until None, which is what the server and the upstream client do per request.
"""

from __future__ import annotations

import timeit

from fastgw.http import parser as py_parser

REQUEST = (
    b"POST /v1/chat/completions?stream=true HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"User-Agent: python-httpx/0.27.0\r\n"
    b"Accept: application/json\r\n"
    b"Content-Type: application/json\r\n"
    b"Authorization: Bearer sk-0123456789abcdef0123456789abcdef\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Sun, 22 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 64\r\n"
    b"Connection: keep-alive\r\n"
    b"X-Request-Id: 5f0c1a2b3c4d5e6f\r\n"
    b"\r\n" + b"x" * 64
)
HEADERS = [(b"Host", b"api.example.com"), (b"User-Agent", b"python-httpx/0.27.0"), (b"Accept", b"*/*"),
           (b"Content-Type", b"application/json"), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")]
DROP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"})


def bench(mod, number: int = 100_000) -> dict[str, float]:
    req = mod.RequestParser()
    resp = mod.ResponseParser()

    def one_request() -> None:
        req.feed(REQUEST)
        while req.next_event() is not None:
            pass

    def one_response() -> None:
        resp.start(b"POST")
        resp.feed(RESPONSE)
        while resp.next_event() is not None:
            pass

    def one_serialize() -> None:
        mod.serialize_head(b"POST /v1/chat/completions HTTP/1.1", HEADERS, DROP, b"X-Forwarded-For: 10.0.0.1\r\n")

    out = {}
    for name, fn in (("request", one_request), ("response", one_response), ("serialize_head", one_serialize)):
        best = min(timeit.repeat(fn, number=number, repeat=5))
        out[name] = best / number * 1e9
    return out


def main() -> None:
    from fastgw._c import http_parser as c_parser

    print(f"request head: {len(REQUEST)} bytes, 6 headers; response: {len(RESPONSE)} bytes incl. 64-byte body")
    py = bench(py_parser, 20_000)
    c = bench(c_parser)
    print(f"{'case':<16}{'py ns/op':>12}{'c ns/op':>12}{'speed-up':>10}")
    for name in py:
        print(f"{name:<16}{py[name]:>12.0f}{c[name]:>12.0f}{py[name] / c[name]:>9.1f}x")


if __name__ == "__main__":
    main()

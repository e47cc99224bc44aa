"""Garbage flood: does hostile input grow a worker's memory or its logs?

Starts ``fastgw run`` (one worker) in front of nothing (routes to a closed port), sends
``--rounds`` x ``--count`` garbage requests of several classes over fresh connections, and
prints the worker's RSS before and after each round and what the gateway wrote to stderr.

    PYTHONPATH=$PWD python3 perf/garbage_flood.py --rounds 3 --count 5000 [--pure]
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.gateway import Gateway, free_port  # noqa: E402


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(12)
    if kind >= 8:  # well-framed requests whose content is garbage: the AI door, upgrades, pipelines
        body = rng.choice([rng.randbytes(rng.randrange(1, 2048)), b'{"model": "m", "messages": [{"role": 1}]}',
                           b'{"model": "m", "messages": "x", "stream": true}', b'{"model": ' + b"[" * 5000])
        if kind == 8:
            return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        if kind == 9:
            return b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        if kind == 10:
            return b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + body
        return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + body
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:
        return b"G\x00T / HTTP/1.1\r\n\r\n"
    if kind == 2:
        return b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    if kind == 3:
        return b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    if kind == 4:
        return b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n"
    if kind == 5:
        return b"GET / HTTP/1.1\r\n" + b"X-%d: y\r\n" * 0 + b"".join(b"H%d: v\r\n" % i for i in range(300)) + b"\r\n"
    if kind == 6:
        return b"GET /%s HTTP/1.1\r\nHost: bad host\r\n\r\n" % rng.randbytes(8).hex().encode()
    return b"GET / HTTP/9.9\r\nHost: x\r\n\r\n"


def send(port: int, data: bytes) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    except OSError:
        pass


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--pure", action="store_true")
    args = ap.parse_args()
    config = {"http": {"max_header_size": "16k"},
              "providers": [{"name": "mock", "type": "mock"}],
              "models": [{"name": "m", "targets": [{"provider": "mock", "model": "m"}]}],
              "routes": [{"match": {"path": "/"}, "upstream": f"http://127.0.0.1:{free_port()}"}]}
    gw = Gateway(config, Path(tempfile.mkdtemp()), workers=1, pure=args.pure)
    try:
        pid = gw.status()["workers"][0]["pid"]
        rng = random.Random(10)
        print(f"worker {pid} RSS before: {rss_kib(pid)} KiB")
        with ThreadPoolExecutor(16) as pool:
            for r in range(args.rounds):
                batch = [garbage(rng) for _ in range(args.count)]
                list(pool.map(lambda d: send(gw.port, d), batch))
                time.sleep(1)
                print(f"after round {r + 1} ({args.count} requests): {rss_kib(pid)} KiB")
        err = gw.stderr_text()
        print(f"stderr: {len(err.splitlines())} lines, {err.count('Traceback')} tracebacks")
        print(err[-2000:])
    finally:
        gw.stop()


if __name__ == "__main__":
    main()

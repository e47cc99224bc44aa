"""CPU of the Python glue per request, without sockets: `python perf/glue_micro.py [plain|plain-sse|plain-limit|ai-json|ai-sse] [N]`.

A real connection object over a fake client transport, and a real pooled upstream connection
over a fake transport that answers each request at once with the bench's pre-built answer, so
only fastgw's own code runs (no syscalls, no event-loop waits): a steadier figure than the
bench's for comparing two versions of the request path (run it from each checkout).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bodies  # noqa: E402

from fastgw.ai.health import ProviderHealth  # noqa: E402
from fastgw.config import load_text  # noqa: E402
from fastgw.generation import Generation, Resources  # noqa: E402
from fastgw.limits.local import LocalLimitStore  # noqa: E402
from fastgw.obs.accesslog import AccessLog  # noqa: E402
from fastgw.proxy.upstream import PoolSet, UpstreamConnection  # noqa: E402
from fastgw.server.admission import Admission  # noqa: E402


class Transport(asyncio.Transport):
    def __init__(self, on_write=None) -> None:
        super().__init__()
        self.written = 0
        self.on_write = on_write

    def write(self, data) -> None:
        self.written += len(data)
        if self.on_write is not None:
            self.on_write(data)

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default

    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool:
        return False


class Services:
    """Both the WorkerServices of the pipeline and the worker attributes 0.4.0's protocol read."""

    def __init__(self, generation: Generation, loop) -> None:
        self.generation = generation
        self.loop = loop
        self.access_log = AccessLog(None, worker=0)
        self.usage_sink = None
        self.upstream_errors = self.rejected = 0
        self.active_requests = 0
        self.admission = Admission()

    def current_generation(self):
        return self.generation

    def connection_opened(self, conn) -> None: ...
    def connection_closed(self, conn) -> None: ...
    def request_started(self) -> None: ...
    def request_finished(self) -> None: ...
    def count_upstream_error(self) -> None: ...
    def count_rejected(self) -> None: ...


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "plain"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    import uvloop  # as a worker runs

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    if scenario in ("plain", "plain-sse", "plain-limit"):
        config = "routes: [{name: up, upstream: 'http://127.0.0.1:9'}]\n"
        if scenario == "plain-limit":  # what bench/run.py's concurrency scenario adds
            config += "limits: [{name: in-flight, match: {routes: [up]}, key: [ip], concurrency: 100000}]\n"
        request = bodies.PLAIN_REQUESTS["sse" if scenario == "plain-sse" else "json"]
        answer = bodies.openai_sse() if scenario == "plain-sse" else bodies.openai_json()
    else:
        stream = scenario == "ai-sse"
        config = ("providers: [{name: p, type: openai, base_url: 'http://127.0.0.1:9/v1', api_keys: [k]}]\n"
                  "models: [{name: bench, targets: [{provider: p, model: gpt-4o-mini}]}]\n")
        request = bodies.chat("/v1/chat/completions", "bench", stream=stream)
        answer = bodies.openai_sse() if stream else bodies.openai_json()
    content_type = b"text/event-stream" if scenario.endswith("sse") else b"application/json"
    response = b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n%b" % (
        content_type, len(answer), answer)
    generation = Generation(1, load_text(config), Resources(PoolSet(loop), ProviderHealth(),
                                                             LocalLimitStore(slots=64, quota_slots=32)))
    services = Services(generation, loop)
    pool = next(iter(services.generation.routes)).endpoints[0].pool if scenario.startswith("plain") else \
        next(iter(services.generation.ai.providers.values())).pool
    upstream = UpstreamConnection(pool)
    pending: list[bytes] = []
    upstream.connection_made(Transport(on_write=lambda data: pending.append(data)))
    pool.release(upstream)
    try:
        from fastgw.server.connection import HttpConnection as Conn
    except ImportError:  # 0.4.0
        from fastgw.proxy.downstream import HttpServerProtocol as Conn
    conn = Conn(services)
    client = Transport()
    conn.connection_made(client)
    head = [f"POST {request.path} HTTP/1.1", "Host: bench"] + [f"{k}: {v}" for k, v in request.headers.items()]
    raw = ("\r\n".join([*head, f"Content-Length: {len(request.body)}"]) + "\r\n\r\n").encode() + request.body

    def one() -> None:
        conn.data_received(raw)
        assert pending, "the request did not reach the upstream"
        pending.clear()
        upstream.data_received(response)

    for _ in range(2000):
        one()
    before = client.written
    start = time.process_time()
    for _ in range(n):
        one()
    spent = time.process_time() - start
    assert client.written > before
    print(json.dumps({"scenario": scenario, "requests": n, "cpu_us_per_request": round(spent / n * 1e6, 2)}))


if __name__ == "__main__":
    main()

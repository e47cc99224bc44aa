"""Request limits on plain routes named in ``match.routes``, across two gateways sharing Redis."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.gateway import Gateway
from tests.support.held_upstream import HeldUpstream
from tests.support.redis_server import RedisServer

BURST = 6


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    yield server
    server.kill()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_request_limit_on_a_named_route_is_cluster_wide_with_headers_and_retry_after(tmp_path, redis_server, pure):
    upstream = HeldUpstream()
    upstream.release()  # answers at once
    config = {
        "redis": redis_server.url,
        "routes": [
            {"name": "api-reports", "match": {"path": "/reports"}, "upstream": upstream.url},
            {"name": "web", "match": {"path": "/"}, "upstream": upstream.url},
        ],
        "limits": [
            {
                "name": f"reports-{'pure' if pure else 'compiled'}",
                "match": {"routes": ["api-*"]},
                "key": ["header:x-tenant"],
                "requests": {"per_minute": BURST},
            }
        ],
    }
    gateways = [Gateway(config, tmp_path, workers=2, pure=pure) for _ in range(2)]
    try:
        seen = []
        for i in range(BURST):
            status, headers, body = get(gateways[i % 2].port, "/reports/q1", {"x-tenant": "acme"})
            assert status == 200 and body.endswith(b"last piece\n")
            seen.append(int(headers["x-ratelimit-remaining-requests"]))
            assert headers["x-ratelimit-limit-requests"] == str(BURST)
        assert seen == list(range(BURST - 1, -1, -1))  # one budget across both gateways and four workers
        status, headers, body = get(gateways[0].port, "/reports/q2", {"x-tenant": "acme"})
        assert status == 429, body
        error = json.loads(body)
        assert "rate limit" in json.dumps(error) and "rate_limit_exceeded" in json.dumps(error)
        assert 1 <= int(headers["retry-after"]) <= 60 // BURST + 1
        assert headers["x-ratelimit-remaining-requests"] == "0"
        # Another tenant has its own budget; an unnamed route is not limited at all.
        assert get(gateways[1].port, "/reports/q2", {"x-tenant": "globex"})[0] == 200
        for _ in range(BURST + 2):
            status, headers, _ = get(gateways[0].port, "/home", {"x-tenant": "acme"})
            assert status == 200 and "x-ratelimit-limit-requests" not in headers
    finally:
        for gw in gateways:
            gw.stop()
        upstream.stop()

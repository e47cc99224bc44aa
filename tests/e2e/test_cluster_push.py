"""``fastgw push --redis``: one push reaches every node of a cluster."""

from __future__ import annotations

import subprocess
import sys
import time

import yaml

from tests.support.gateway import ROOT, Gateway, MockLLMProcess


def cluster_config(redis_url: str, marker: str, upstream: MockLLMProcess) -> dict:
    return {
        "redis": redis_url,
        "routes": [{"name": marker, "match": {"path": "/"}, "upstream": upstream.url}],
    }


def push(path, redis_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "push", "-c", str(path), "--redis", redis_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def route_names(gw: Gateway) -> list[str]:
    import json
    import urllib.request

    with urllib.request.urlopen(gw.admin + "/config", timeout=5) as response:
        return [route["name"] for route in json.load(response)["routes"]]


def wait_for(check, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_push_through_redis_reaches_every_node_and_late_joiners(tmp_path, redis_server, mock_llm):
    upstream = mock_llm()
    nodes = [Gateway(cluster_config(redis_server.url, "local", upstream), tmp_path, workers=1) for _ in range(2)]
    try:
        new = tmp_path / "new.yaml"
        new.write_text(yaml.safe_dump(cluster_config(redis_server.url, "pushed", upstream)))
        result = push(new, redis_server.url)
        assert result.returncode == 0, result.stderr
        assert "config version 1" in result.stdout
        for gw in nodes:
            wait_for(lambda gw=gw: route_names(gw) == ["pushed"])
            gw.wait_ready(1, generation=2)

        bad = tmp_path / "bad.yaml"
        bad.write_text("routes: [{match: {path: {regex: '(oops'}}, upstream: 'http://x'}]\n")
        result = push(bad, redis_server.url)
        assert result.returncode == 1 and "routes[0].match.path" in result.stderr  # never reaches Redis

        late = Gateway(cluster_config(redis_server.url, "local", upstream), tmp_path, workers=1)
        nodes.append(late)
        wait_for(lambda: route_names(late) == ["pushed"])  # adopts the cluster's latest push at startup

        redis_server.kill()  # Redis gone (and, without persistence, its data with it)
        time.sleep(0.5)
        assert all(route_names(gw) == ["pushed"] for gw in nodes)  # the running config stays
        redis_server.start()
        again = tmp_path / "again.yaml"
        again.write_text(yaml.safe_dump(cluster_config(redis_server.url, "after-restart", upstream)))
        result = push(again, redis_server.url)
        assert result.returncode == 0 and "config version 1" in result.stdout  # the counter restarted
        for gw in nodes:
            wait_for(lambda gw=gw: route_names(gw) == ["after-restart"], timeout=15)
    finally:
        for gw in nodes:
            gw.stop()

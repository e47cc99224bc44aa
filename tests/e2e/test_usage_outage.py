"""Usage records survive a Redis outage under load, and a gateway restart during it.

Every successful AI request must appear exactly once in the usage stream after Redis is
back: records that Redis could not take wait in each worker's spool on disk.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai
import redis

from tests.support.gateway import Gateway
from tests.support.redis_server import RedisServer

STREAM = "fastgw:usage"


def config(redis_url: str, spool: Path) -> dict:
    return {
        "redis": redis_url,
        "log": {"usage_stream": STREAM, "spool": {"dir": str(spool), "max_bytes": "16m"}},
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 4}}],
        "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
        "limits": [{"name": "budget", "quota": {"tokens": 100_000_000}, "on_redis_down": "open"}],
    }


class Load:
    """Four client threads sending chat requests until stopped; counts the answers that succeeded."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ok = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        client = openai.OpenAI(base_url=self.gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        while not self._stop.is_set():
            try:
                answer = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
                assert answer.usage.total_tokens > 0
                with self._lock:
                    self.ok += 1
            except openai.APIError:
                with self._lock:
                    self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def stream_records(server: RedisServer) -> list[dict]:
    client = redis.Redis.from_url(server.url)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(STREAM)]


def wait_for_records(server: RedisServer, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    records = stream_records(server)
    while len(records) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        records = stream_records(server)
    return records


def metric(gw: Gateway, event: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(gw.admin + "/metrics", timeout=5).read().decode()
    line = next((x for x in text.splitlines() if x.startswith(f'fastgw_usage_spool_total{{event="{event}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


def test_a_frozen_redis_under_load_loses_no_usage_record(tmp_path, redis_server: RedisServer) -> None:
    gw = Gateway(config(redis_server.url, tmp_path / "spool"), tmp_path)
    try:
        load = Load(gw)
        time.sleep(1.0)
        redis_server.freeze()  # hung: commands time out, and Redis runs them when it wakes up
        time.sleep(4.0)
        redis_server.thaw()
        time.sleep(1.0)
        load.stop()
        assert load.ok > 50 and load.failed == 0
        records = wait_for_records(redis_server, load.ok)
        ids = [r["id"] for r in records]
        assert len(ids) == load.ok and len(set(ids)) == load.ok  # every answer once, none twice
        time.sleep(1.2)  # metrics are published once a second
        assert metric(gw, "spooled") > 0 and metric(gw, "replayed") == metric(gw, "spooled")
        assert metric(gw, "dropped") == 0
        print(f"frozen Redis under load: {load.ok} answers, {len(ids)} records, "
              f"{metric(gw, 'spooled'):g} spooled and replayed, 0 dropped")
    finally:
        assert gw.stop() == 0


def test_usage_records_survive_a_gateway_restart_during_a_redis_outage(tmp_path, redis_server: RedisServer) -> None:
    spool = tmp_path / "spool"
    redis_server.kill()  # down before the first request: the stream starts empty either way
    first = Gateway(config(redis_server.url, spool), tmp_path)
    load = Load(first)
    time.sleep(2.0)
    load.stop()
    assert first.stop() == 0  # SIGTERM during the outage: what is queued goes to the spool
    served = load.ok
    assert served > 20 and load.failed == 0
    assert sum(f.stat().st_size for f in spool.iterdir()) > 0

    second = Gateway(config(redis_server.url, spool), tmp_path)
    try:
        load = Load(second)
        time.sleep(1.0)
        redis_server.start()  # back: both runs' records are replayed by the second
        time.sleep(1.5)
        load.stop()
        served += load.ok
        assert load.failed == 0
        records = wait_for_records(redis_server, served)
        ids = [r["id"] for r in records]
        assert len(ids) == served and len(set(ids)) == served
        # open quota: what the outage served uncounted is charged to the ledger once Redis is back,
        # and what was served after is charged as usual: the ledger holds every token once
        time.sleep(0.5)  # the last settlements run in the background
        used = float(redis.Redis.from_url(redis_server.url).hget("fastgw:quota:budget:anonymous", "used") or 0)
        assert used == sum(int(r["total_tokens"]) for r in records)
        print(f"outage across a restart: {served} answers, {len(ids)} records, quota ledger {used:g} tokens")
    finally:
        assert second.stop() == 0
    assert all(f.stat().st_size == 0 for f in spool.iterdir())  # replayed and truncated

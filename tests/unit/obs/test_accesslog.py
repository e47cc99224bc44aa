"""The JSON access log, the ``log`` config key and the Redis usage stream."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fastgw.config import ConfigError, load_text
from fastgw.obs.accesslog import AccessLog, UsageSink, clean_target
from fastgw.obs.metrics import Gateway, Registry
from tests.support.gateway import free_port

PLANTED = "sk-planted-0123456789abcdef"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_line_shape_plain_and_ai(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), worker=3)
    log.write(client_ip="10.0.0.1", method=b"GET", target=b"/health?x=1", status=200, duration=0.0123456,
              bytes_out=42, route="health", now=1714564800.5)
    log.write(client_ip="::1", method="POST", target="/v1/chat/completions", status=200, duration=2.5, bytes_out=900,
              consumer="team", route="ai", model="gpt-4o", served_model="gpt-4o-2024", provider="openai",
              attempts=2, stream=True, prompt_tokens=10, completion_tokens=20, total_tokens=30,
              tokens_estimated=False, cost=0.0015, ttft=0.25)
    log.write(client_ip="::1", method="POST", target="/v1/chat/completions", status=502, duration=0.1, bytes_out=80,
              error='provider "x" answered 503')
    log.close()
    plain, ai, failed = lines(path)
    assert plain == {"ts": "2024-05-01T12:00:00.500Z", "worker": 3, "client_ip": "10.0.0.1", "method": "GET",
                     "path": "/health?x=1", "status": 200, "duration_ms": 12.346, "bytes_out": 42, "route": "health"}
    assert list(ai) == ["ts", "worker", "client_ip", "method", "path", "status", "duration_ms", "bytes_out",
                        "consumer", "route", "model", "served_model", "provider", "attempts", "stream",
                        "prompt_tokens", "completion_tokens", "total_tokens", "tokens_estimated", "cost", "ttft_ms"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ai["ts"])
    assert (ai["stream"], ai["tokens_estimated"], ai["ttft_ms"], ai["duration_ms"]) == (True, False, 250.0, 2500.0)
    assert failed["error"] == 'provider "x" answered 503' and "consumer" not in failed


def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), worker=0)
    for target in (f"/v1beta/models/g:generateContent?key={PLANTED}&alt=sse",
                   f"/x?API_KEY={PLANTED}", f"/x?token={PLANTED}&a=1", f"/x?api%5Fkey={PLANTED}"):
        log.write(client_ip="1.2.3.4", method="POST", target=target, status=200, duration=0.1, bytes_out=1)
    log.write(client_ip="1.2.3.4", method="POST", target="/x", status=401, duration=0.1, bytes_out=1,
              error=f"upstream said: invalid header Authorization: Bearer {PLANTED}")
    log.close()
    text = path.read_text()
    assert PLANTED not in text and "planted" not in text
    assert [entry["path"] for entry in lines(path)][:3] == ["/v1beta/models/g:generateContent?alt=sse", "/x", "/x?a=1"]
    assert clean_target("/p?keyword=1&key") == "/p?keyword=1"


def test_control_characters_stay_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), worker=0)
    log.write(client_ip="1.2.3.4", method="GET", target=b"/a\nb\r\x00\xff", status=400, duration=0, bytes_out=0)
    log.close()
    (entry,) = lines(path)
    assert entry["path"] == "/a\nb\r\x00\\xff"


def test_one_write_per_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AccessLog(str(tmp_path / "access.log"), worker=0)
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    for i in range(5):
        log.write(client_ip="1.2.3.4", method="GET", target=f"/{i}", status=200, duration=0.001, bytes_out=i)
    assert len(writes) == 5 and all(data.endswith(b"\n") and data.count(b"\n") == 1 for data in writes)


def test_processes_appending_to_one_file_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    pids = []
    for worker in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                log = AccessLog(str(path), worker=worker)  # each worker opens the file itself
                for i in range(400):
                    log.write(client_ip="1.2.3.4", method="GET", target=f"/{i}/" + "x" * 6000, status=200,
                              duration=0.001, bytes_out=i, error="e" * 900)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert status == 0
    entries = lines(path)  # every line parses
    assert len(entries) == 1600
    for worker in range(4):
        assert sorted(e["bytes_out"] for e in entries if e["worker"] == worker) == list(range(400))


def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    metrics = Gateway(Registry())
    log = AccessLog(str(tmp_path / "access.log"), worker=0, metrics=metrics)
    os.close(log._fd)  # the fd goes bad under the log
    log.write(client_ip="1.2.3.4", method="GET", target="/", status=200, duration=0, bytes_out=0)
    assert metrics.log_dropped.values == {("access", "write_error"): 1}
    log._fd = -1


def test_off_and_reconfigure(tmp_path: Path) -> None:
    log = AccessLog(None, worker=0)
    assert not log.enabled
    log.write(client_ip="1.2.3.4", method="GET", target="/", status=200, duration=0, bytes_out=0)
    log.configure(str(tmp_path / "a.log"))
    log.write(client_ip="1.2.3.4", method="GET", target="/a", status=200, duration=0, bytes_out=0)
    log.configure(str(tmp_path / "b.log"))
    log.write(client_ip="1.2.3.4", method="GET", target="/b", status=200, duration=0, bytes_out=0)
    log.configure(None)
    assert not log.enabled
    assert [e["path"] for e in lines(tmp_path / "a.log")] == ["/a"]
    assert [e["path"] for e in lines(tmp_path / "b.log")] == ["/b"]


# -- config -------------------------------------------------------------------------------------


def test_log_config(tmp_path: Path) -> None:
    default_spool = {"dir": os.path.abspath("fastgw-spool"), "max_bytes": 256 * 1024 * 1024}
    assert load_text("{}")["log"] == {"access": None, "usage_stream": None, "usage_maxlen": 100_000,
                                      "spool": default_spool}
    config = load_text(
        f"redis: redis://127.0.0.1:6379/0\nlog: {{access: {tmp_path}/a.log, usage_stream: 'fastgw:usage', usage_maxlen: 500,"
        f" spool: {{dir: {tmp_path}/spool, max_bytes: 1m}}}}"
    )
    assert config["log"] == {"access": f"{tmp_path}/a.log", "usage_stream": "fastgw:usage", "usage_maxlen": 500,
                             "spool": {"dir": f"{tmp_path}/spool", "max_bytes": 1024 * 1024}}
    assert load_text("log: {access: stderr}")["log"]["access"] == "stderr"
    assert load_text("log: {access: off}")["log"]["access"] is None
    with pytest.raises(ConfigError) as caught:
        load_text(f"log: {{access: {tmp_path}/missing/a.log, usage_stream: s, usage_maxlen: 0, acces: x,"
                  f" spool: {{dir: {tmp_path}/missing/spool, max_bytes: 0}}}}")
    errors = "\n".join(caught.value.errors)
    for needle in ("log.access: directory", "log.usage_stream: needs the top-level 'redis'",
                   "log.usage_maxlen: must be >= 1", "log.acces: unknown key; did you mean 'access'?",
                   "log.spool.dir: directory", "log.spool.max_bytes: must be > 0"):
        assert needle in errors


# -- usage stream ---------------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make setup installs it)")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.kill()
        proc.wait()


def test_usage_records_reach_the_stream(redis_url: str) -> None:
    metrics = Gateway(Registry())

    async def main() -> None:
        sink = UsageSink(redis_url, "fastgw:usage", maxlen=1000, worker=1, metrics=metrics)
        sink.start()
        sink.record(consumer="team", model="gpt", provider="openai", prompt_tokens=10, completion_tokens=5,
                    estimated=False, cost=0.25, served_model="gpt-2024", now=1714564800.0)
        for _ in range(4):
            sink.record(consumer="bot", model="claude", provider="anthropic", prompt_tokens=1, completion_tokens=2,
                        estimated=True, cost=0.0)
        await asyncio.sleep(0.05)
        sink.record(consumer="late", model="gpt", provider="openai", prompt_tokens=0, completion_tokens=0,
                    estimated=False, cost=0)
        await sink.close()

    asyncio.run(main())
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entries = [fields for _, fields in client.xrange("fastgw:usage")]
    client.close()
    assert len(entries) == 6
    assert len({entry.pop("id") for entry in entries}) == 6  # the record id consumers may dedupe on
    assert entries[0] == {"ts": "2024-05-01T12:00:00.000Z", "worker": "1", "consumer": "team", "model": "gpt",
                          "provider": "openai", "prompt_tokens": "10", "completion_tokens": "5",
                          "total_tokens": "15", "estimated": "0", "cost": "0.25", "served_model": "gpt-2024"}
    assert entries[1]["estimated"] == "1" and entries[-1]["consumer"] == "late"
    assert metrics.redis_errors.values == {} and metrics.log_dropped.values == {}


def test_usage_stream_is_trimmed(redis_url: str) -> None:
    async def main() -> None:
        sink = UsageSink(redis_url, "usage", maxlen=10, worker=0, queue_size=5000, metrics=Gateway(Registry()))
        sink.start()
        for _ in range(3000):
            sink.record(consumer="c", model="m", provider="p", prompt_tokens=1, completion_tokens=1,
                        estimated=False, cost=0)
        await sink.close()

    asyncio.run(main())
    client = redis.Redis.from_url(redis_url)
    length = client.xlen("usage")
    client.close()
    assert 10 <= length < 500  # MAXLEN ~ trims whole stream nodes (100 entries each by default)


def test_usage_without_redis_and_without_a_spool_drops_and_counts() -> None:
    metrics = Gateway(Registry())

    async def main() -> None:
        sink = UsageSink(f"redis://127.0.0.1:{free_port()}/0", "usage", maxlen=10, worker=0, queue_size=50,
                         batch=10, retry_delay=0.01, metrics=metrics)
        sink.start()
        started = time.monotonic()
        for _ in range(200):  # the request path never waits for Redis
            sink.record(consumer="c", model="m", provider="p", prompt_tokens=1, completion_tokens=1,
                        estimated=False, cost=0)
        assert time.monotonic() - started < 0.05
        assert len(sink._queue) == 50
        await asyncio.sleep(0.3)
        await sink.close(timeout=0.5)

    asyncio.run(main())
    assert metrics.log_dropped.values[("usage", "queue_full")] == 150
    assert metrics.log_dropped.values[("usage", "redis_error")] == 50
    assert metrics.redis_errors.values[("usage",)] >= 1

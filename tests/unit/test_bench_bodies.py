"""The bench's pre-built upstream answers and client requests are what they claim to be (no processes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bodies  # noqa: E402
import check  # noqa: E402
import targets  # noqa: E402


def test_openai_stream_parses_and_has_the_usage_chunk():
    raw = bodies.openai_sse()
    assert raw.endswith(b"data: [DONE]\n\n")
    frames = raw.split(b"\n\n")[:-1]
    assert all(f.startswith(b"data: ") and b"\n" not in f for f in frames)
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI sends them with include_usage
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == bodies.CHUNKS
    stream = bodies.parse_openai_stream(raw)
    assert stream["content_chunks"] == bodies.CHUNKS == 50
    assert stream["text"] == bodies.answer_text()
    assert stream["done_marker"] and stream["finish_reasons"] == ["stop"]


def test_anthropic_stream_follows_the_messages_event_flow():
    stream = bodies.parse_anthropic_stream(bodies.anthropic_sse())
    assert stream["names"] == ["message_start", "content_block_start", "ping",
                               *["content_block_delta"] * bodies.CHUNKS,
                               "content_block_stop", "message_delta", "message_stop"]
    assert stream["text"] == bodies.answer_text()
    assert stream["usage"] == {"output_tokens": bodies.CHUNKS}


def test_json_answers_carry_the_whole_text():
    openai = json.loads(bodies.openai_json())
    assert openai["object"] == "chat.completion"
    assert openai["choices"][0]["message"]["content"] == bodies.answer_text()
    assert openai["usage"]["total_tokens"] == openai["usage"]["prompt_tokens"] + bodies.CHUNKS
    anthropic = json.loads(bodies.anthropic_json())
    assert anthropic["type"] == "message" and anthropic["content"][0]["text"] == bodies.answer_text()


def test_requests_are_the_sdk_bodies():
    assert json.loads(bodies.chat_request("m", stream=False)) == {"model": "m", "messages": bodies.PROMPT}
    assert bodies.chat_request("m", stream=True) == (
        b'{"model":"m","stream":true,"messages":[{"role":"user","content":"Hello!"}],'
        b'"stream_options":{"include_usage":true}}')
    env = bodies.PLAIN_REQUESTS["sse"].env()
    assert env["BENCH_PATH"] == "/sse/v1/chat/completions"
    assert "Authorization: Bearer " + bodies.CLIENT_KEY in env["BENCH_HEADERS"].split("\n")


def test_guard_terms_never_match_the_answer():
    terms = bodies.guard_terms(targets.GUARD_TERMS)
    assert len(set(terms)) == 1000
    text = bodies.answer_text().lower()
    assert not [t for t in terms if t in text]


def test_upstream_config_rebuilds_every_body():
    """nginx reads each body back from `set` pieces under its 4 KiB token limit: undo the quoting."""
    conf = targets.upstream_locations(bodies.CHUNKS)
    for path in bodies.UPSTREAM_PATHS:
        block = conf.split(f"location = {path} {{")[1].split("}\n")[0]
        pieces = [line.split("'", 1)[1].rsplit("'", 1)[0] for line in block.splitlines()
                  if line.strip().startswith(("set $b", "return 200 '"))]
        assert all(len(p) < 4000 for p in pieces)
        quoted = "".join(pieces)
        assert b"\\" not in bodies.upstream_body(path)  # so undoing \n and \' is enough
        text = quoted.replace("\\n", "\n").replace("\\'", "'")  # the bodies hold no backslashes
        assert text.encode() == bodies.upstream_body(path)


def test_checks_reject_a_short_stream():
    good = check.Response(200, {"content-type": "text/event-stream"}, bodies.openai_sse())
    assert check.openai_sse(good)["content_chunks"] == bodies.CHUNKS
    short = check.Response(200, {"content-type": "text/event-stream"}, bodies.openai_sse(bodies.CHUNKS - 1))
    with pytest.raises(check.CheckFailed):
        check.openai_sse(short)


def test_compression_checks_decode_and_refuse_a_mislabelled_body():
    import gzip

    import zstandard

    path = "/sse/v1/chat/completions"
    plain = bodies.upstream_body(path)
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip", "vary": "Accept-Encoding"}
    assert check.decoded(check.Response(200, headers, gzip.compress(plain)), path, "gzip")["decoded_bytes"] == len(plain)
    packed = zstandard.ZstdCompressor().compress(plain)
    zstd = check.openai_sse_coded(check.Response(200, {**headers, "content-encoding": "zstd"}, packed), "zstd")
    assert zstd["content_chunks"] == bodies.CHUNKS
    with pytest.raises(check.CheckFailed, match="content-encoding"):
        check.decoded(check.Response(200, {**headers, "content-encoding": "br"}, packed), path, "zstd")
    with pytest.raises(check.CheckFailed, match="does not decode"):
        check.decoded(check.Response(200, headers, plain), path, "gzip")


def test_nginx_gzip_and_fastgw_compression_are_set_alike(tmp_path):
    conf = targets.render_nginx_conf("nginx.conf.tmpl", tmp_path, 1, 1, upstream_port=2, gzip=targets.nginx_gzip())
    assert "gzip_comp_level 5;" in conf and "gzip_types application/json text/event-stream;" in conf
    assert "gzip_min_length 1024;" in conf and "gzip_proxied any;" in conf
    from fastgw.config import load_text

    line = targets.compression_line()
    spec = load_text(line + "\n", env={})["compression"]
    assert spec["levels"]["gzip"] == 5 and spec["min_size"] == 1024
    assert spec["types"] == ["application/json", "text/event-stream"]


def test_wrk_report_gives_the_bytes_read():
    import wrk

    report = ("Running 2s test @ http://127.0.0.1:1/x\n  1 threads and 32 connections\n"
              "  Latency Distribution\n     50%   11.37ms\n     99%   25.90ms\n"
              "  5530 requests in 2.00s, 5.52MB read\nRequests/sec:   2765.00\nTransfer/sec:      2.76MB\n")
    result = wrk.parse(report)
    assert result.requests == 5530 and result.read_bytes == pytest.approx(5.52 * (1 << 20))

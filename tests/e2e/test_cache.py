"""The response cache through real gateways: exact and semantic hits, isolation, replay, Redis."""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.support.gateway import Gateway, send_json

KEY_A, KEY_B = "sk-cache-team-a", "sk-cache-team-b"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class WordHashEmbeddings:
    """An OpenAI-compatible /v1/embeddings server: a bag of hashed words, normalised.

    Texts with the same words (a paraphrase by reordering or punctuation) are close; texts
    sharing few words are far. Deterministic, so the tests can rely on its distances.
    """

    DIMS = 64

    def __init__(self) -> None:
        dims = self.DIMS

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
                data = []
                for i, text in enumerate(inputs):
                    vector = [0.0] * dims
                    for word in re.findall(r"\w+", text.lower()):
                        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dims] += 1.0
                    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
                    data.append({"object": "embedding", "index": i, "embedding": [v / norm for v in vector]})
                send_json(self, {"object": "list", "data": data, "model": request.get("model")})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/embeddings"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def embeddings():
    server = WordHashEmbeddings()
    yield server
    server.server.shutdown()


def cache_config(cache: dict, redis_url: str | None = None) -> dict:
    config = {
        "providers": [{"name": "mock", "type": "mock", "options": {"chunks": 6}}],
        "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-gpt"}]}],
        "consumers": [{"name": "team-a", "api_keys": [KEY_A]}, {"name": "team-b", "api_keys": [KEY_B]}],
        "cache": cache,
    }
    if redis_url:
        config["redis"] = redis_url
    return config


def ask(client: openai.OpenAI, messages=QUESTION, **headers: str):
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages, extra_headers=headers)
    return raw.headers.get("x-fastgw-cache"), raw.parse().choices[0].message.content


def client_for(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("pure", [False, True])
def test_exact_hits_isolation_bypass_and_stream_replay(tmp_path, pure):
    gw = Gateway(cache_config({"ttl": "5m"}), tmp_path, workers=1, pure=pure)
    try:
        a = client_for(gw, KEY_A)
        status, first = ask(a)
        assert status == "miss"
        assert ask(a) == ("hit", first)
        assert ask(client_for(gw, KEY_B))[0] == "miss"  # another consumer never sees team-a's answers
        assert ask(a, **{"Cache-Control": "no-cache"})[0] == "miss"
        assert ask(a, **{"x-fastgw-cache": "bypass"})[0] is None
        other = [{"role": "user", "content": "Something else entirely"}]
        assert ask(a, other)[0] == "miss"

        stream = a.chat.completions.with_raw_response.create(model="m", messages=QUESTION, stream=True)
        assert stream.headers["x-fastgw-cache"] == "hit"
        chunks = list(stream.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first
        assert chunks[-1].choices[0].finish_reason == "stop"
    finally:
        assert gw.stop() == 0


def test_semantic_hit_for_a_paraphrase_and_miss_for_another_question(tmp_path, embeddings):
    semantic = {"embeddings_url": embeddings.url, "model": "word-hash", "threshold": 0.9}
    gw = Gateway(cache_config({"key": "last_user_message", "semantic": semantic}), tmp_path, workers=1)
    try:
        a = client_for(gw, KEY_A)
        status, first = ask(a)
        assert status == "miss"
        paraphrase = [{"role": "user", "content": "what is THE capital of france"}]
        assert ask(a, paraphrase) == ("semantic-hit", first)
        unrelated = [{"role": "user", "content": "How do volcanoes form under the ocean?"}]
        assert ask(a, unrelated)[0] == "miss"
        assert ask(client_for(gw, KEY_B), paraphrase)[0] == "miss"  # scoped per consumer
    finally:
        assert gw.stop() == 0


def test_redis_cache_is_shared_by_two_gateways(tmp_path, redis_server, embeddings):
    semantic = {"embeddings_url": embeddings.url, "model": "word-hash", "threshold": 0.9}
    config = cache_config({"store": "redis", "key": "last_user_message", "semantic": semantic}, redis_server.url)
    first_gw = Gateway(config, tmp_path, workers=2)
    second_gw = Gateway(config, tmp_path, workers=2)
    try:
        status, answer = ask(client_for(first_gw, KEY_A))
        assert status == "miss"
        assert ask(client_for(second_gw, KEY_A)) == ("hit", answer)
        paraphrase = [{"role": "user", "content": "The capital of France: what is it?"}]
        assert ask(client_for(second_gw, KEY_A), paraphrase) == ("semantic-hit", answer)
    finally:
        first_gw.stop()
        second_gw.stop()


def test_default_store_is_shared_by_the_workers_of_a_node(tmp_path, embeddings):
    semantic = {"embeddings_url": embeddings.url, "model": "word-hash", "threshold": 0.9}
    gw = Gateway(cache_config({"key": "last_user_message", "semantic": semantic}), tmp_path, workers=2)
    paraphrase = [{"role": "user", "content": "what is THE capital of france"}]
    try:
        status, first = ask(client_for(gw, KEY_A))
        assert status == "miss"
        for _ in range(10):  # a client per request: a new connection, answered by either worker
            with client_for(gw, KEY_A) as client:
                assert ask(client) == ("hit", first)
            with client_for(gw, KEY_A) as client:
                assert ask(client, paraphrase) == ("semantic-hit", first)
        deadline = time.monotonic() + 5  # the per-worker counters are published with the heartbeat
        while not all(w["requests_total"] for w in gw.status()["workers"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [bool(w["requests_total"]) for w in gw.status()["workers"]] == [True, True]  # both answered
        supervisor = gw.status()["pid"]
        node_files = glob.glob(f"/dev/shm/fastgw-{os.getuid()}/cache-{supervisor}-*.sqlite*")
        assert node_files  # the node's one file (and its -wal, -shm), named by the supervisor
    finally:
        assert gw.stop() == 0
    assert not [path for path in node_files if os.path.exists(path)]  # removed with the node (it is memory)


def test_route_scope_shares_answers_across_consumers_of_a_model(tmp_path):
    gw = Gateway(cache_config({"scope": "route"}), tmp_path, workers=1)
    try:
        status, answer = ask(client_for(gw, KEY_A))
        assert status == "miss"
        assert ask(client_for(gw, KEY_B)) == ("hit", answer)  # same model (the AI front door's route)
    finally:
        assert gw.stop() == 0


@pytest.mark.parametrize("pure", [False, True])
def test_a_streamed_answer_is_cached_and_replayed_on_the_anthropic_front_door(tmp_path, pure):
    """The Anthropic SDK streams a question (a miss, stored from the stream), then asks it again
    streamed and plain: both are hits, rendered as Anthropic messages with the same text."""
    import anthropic

    gw = Gateway(cache_config({"ttl": "5m"}), tmp_path, workers=1, pure=pure)
    try:
        client = anthropic.Anthropic(base_url=gw.url, api_key=KEY_A, max_retries=0)
        question = [{"role": "user", "content": "What is the tallest mountain?"}]
        statuses, texts = [], []
        for _ in range(2):
            with client.messages.with_streaming_response.create(
                    model="m", max_tokens=50, messages=question, stream=True) as raw:
                statuses.append(raw.headers.get("x-fastgw-cache"))
                events = list(raw.parse())
            texts.append("".join(e.delta.text for e in events if e.type == "content_block_delta"))
            assert events[-1].type == "message_stop"
            delta = next(e for e in events if e.type == "message_delta")
            assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens > 0
        plain = client.messages.with_raw_response.create(model="m", max_tokens=50, messages=question)
        assert statuses == ["miss", "hit"] and plain.headers["x-fastgw-cache"] == "hit"
        assert texts[0] and texts[1] == texts[0] == plain.parse().content[0].text
    finally:
        assert gw.stop() == 0

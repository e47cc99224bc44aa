"""The AI response cache: keys, stores (node file and a real Redis), semantic index, SSE replay.

The semantic tests run against a fake OpenAI-compatible embeddings server written here:
a text's vector is the sum of one random unit direction per distinct word (seeded by the
word's hash), so paraphrases made of the same words are close and unrelated text is far.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgw.cache import CachedAnswer, CacheUnavailable, open_cache
from fastgw.cache.keys import cache_key, cache_mode, cacheable, scope_value, semantic_scope, storable
from fastgw.cache.replay import assemble, replay_stream, served
from fastgw.cache.semantic import SemanticIndex, _Rows
from fastgw.cache.store import CacheRedis, NodeStore, RedisStore, node_path
from fastgw.config.cache import cache
from fastgw.config.fields import Issues
from fastgw.sse import SSEParser

DIM = 64


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def spec(**overrides: Any) -> dict:
    issues = Issues()
    out = cache(overrides, issues, "redis://127.0.0.1:1/0")
    assert issues.errors == []
    assert out is not None
    return out


def chat(*messages: tuple[str, Any], **params: Any) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": r, "content": c} for r, c in messages], **params}


def answer(text: str = "Paris is the capital of France.", question: str = "q") -> CachedAnswer:
    response = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    }
    return CachedAnswer(response, time.time(), question, response["usage"])


# -- config -------------------------------------------------------------------------------


def test_config_defaults_and_normalisation() -> None:
    assert spec() == {
        "key": "all_messages",
        "params": ["temperature", "tools", "response_format"],
        "ttl": 3600.0,
        "scope": "consumer",
        "store": "memory",
        "max_entries": 10000,
        "semantic": None,
    }
    issues = Issues()
    assert cache(None, issues, None) is None
    out = cache(
        {
            "key": "last_user_message",
            "params": ["max_tokens"],
            "ttl": "90s",
            "store": "redis",
            "semantic": {
                "embeddings_url": "http://127.0.0.1:9000/v1/embeddings/",
                "model": "m",
                "timeout": "250ms",
            },
        },
        issues,
        "redis://127.0.0.1:6379/0",
    )
    assert issues.errors == []
    assert out is not None
    assert out["ttl"] == 90.0 and out["params"] == ["max_tokens"]
    assert out["semantic"] == {
        "embeddings_url": "http://127.0.0.1:9000/v1/embeddings",
        "model": "m",
        "api_key": None,
        "threshold": 0.92,
        "timeout": 0.25,
    }


def test_config_errors_name_the_field() -> None:
    issues = Issues()
    cache(
        {
            "key": "everything",
            "params": ["temperature", "messages", "temperature"],
            "store": "redis",
            "tll": "1h",
            "semantic": {"embeddings_url": "ftp://x", "threshold": 1.5},
        },
        issues,
        None,
    )
    assert issues.errors == [
        "cache.tll: unknown key; did you mean 'ttl'?",
        "cache.key: expected one of all_messages, last_user_message; found string 'everything'",
        "cache.params[1]: 'messages' cannot be chosen (model and messages are always in the key; "
        "streams share entries)",
        "cache.params[2]: duplicate parameter 'temperature'",
        "cache.semantic.embeddings_url: expected an http:// or https:// URL with a host",
        "cache.semantic.threshold: expected a number greater than 0 and at most 1, found number 1.5",
        "cache.semantic.model: required",
        "cache.store: 'redis' needs the top-level 'redis' URL to be set",
    ]


# -- keys ---------------------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


def test_key_ignores_json_key_order_and_number_spelling() -> None:
    s = spec()
    a = chat(("system", "Be brief."), ("user", "Capital of France?"), temperature=1, tools=TOOLS)
    b = json.loads(json.dumps(a)[::-1][::-1])  # a copy, with its dicts rebuilt in reverse order below
    b = {k: b[k] for k in reversed(list(b))}
    b["messages"] = [{k: m[k] for k in reversed(list(m))} for m in b["messages"]]
    b["tools"] = [{"function": TOOLS[0]["function"], "type": "function"}]
    b["temperature"] = 1.0
    assert cache_key(a, "gpt-4o", "consumer:alice", s) == cache_key(b, "gpt-4o", "consumer:alice", s)
    assert cache_key(a, "gpt-4o", "consumer:alice", s)[1] == "Capital of France?"


def test_key_holds_only_the_chosen_params() -> None:
    s = spec(params=["temperature"])
    base = chat(("user", "hi"), temperature=0)
    key = cache_key(base, "m", "global", s)[0]
    assert cache_key({**base, "temperature": 0.5}, "m", "global", s)[0] != key
    assert cache_key({**base, "max_tokens": 9, "stream": True, "user": "x"}, "m", "global", s)[0] == key
    assert (
        cache_key({**base, "max_tokens": 9}, "m", "global", spec(params=["temperature", "max_tokens"]))[0]
        != key
    )
    assert cache_key(base, "other-model", "global", s)[0] != key


def test_last_user_message_versus_all_messages() -> None:
    one = chat(
        ("system", "Answer in French."), ("user", "hello"), ("assistant", "bonjour"), ("user", "Capital?")
    )
    two = chat(("system", "Answer in German."), ("user", "Capital?"))
    last, every = spec(key="last_user_message"), spec(key="all_messages")
    assert cache_key(one, "m", "global", last) == cache_key(two, "m", "global", last)
    assert cache_key(one, "m", "global", every)[0] != cache_key(two, "m", "global", every)[0]
    assert cache_key(one, "m", "global", every)[1] == "Capital?"
    # A paraphrase of the question shares the semantic partition only under the same history.
    paraphrase = {**one, "messages": one["messages"][:-1] + [{"role": "user", "content": "The capital?"}]}
    assert semantic_scope(one, "m", "global", every) == semantic_scope(paraphrase, "m", "global", every)
    assert semantic_scope(one, "m", "global", every) != semantic_scope(two, "m", "global", every)
    assert semantic_scope(one, "m", "global", last) == semantic_scope(two, "m", "global", last)


def test_scopes_keep_tenants_apart() -> None:
    s = spec()
    request = chat(("user", "What is our revenue?"))
    scopes = [
        scope_value(s, "alice", "r1"),
        scope_value(s, "bob", "r1"),
        scope_value(s, None, "r1"),
        scope_value(spec(scope="route"), "alice", "r1"),
        scope_value(spec(scope="route"), "alice", "r2"),
        scope_value(spec(scope="global"), "alice", "r1"),
    ]
    assert scopes == ["consumer:alice", "consumer:bob", "consumer", "route:r1", "route:r2", "global"]
    keys = {cache_key(request, "m", scope, s)[0] for scope in scopes}
    assert len(keys) == len(scopes)
    assert scope_value(spec(scope="global"), "alice", "r1") == scope_value(spec(scope="global"), "bob", "r2")


def test_question_text_only_for_plain_text() -> None:
    s = spec()
    parts = chat(("user", [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]))
    image = chat(
        (
            "user",
            [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x"}}],
        )
    )
    assert cache_key(parts, "m", "global", s)[1] == "a\nb"
    assert cache_key(image, "m", "global", s)[1] == ""


def test_bypass_headers_cacheable_and_storable() -> None:
    def headers(**values: str) -> Callable[[bytes], bytes | None]:
        given = {k.replace("_", "-").encode(): v.encode() for k, v in values.items()}
        return given.get

    assert cache_mode(headers()) == (True, True)
    assert cache_mode(headers(x_fastgw_cache="BYPASS")) == (False, False)
    assert cache_mode(headers(cache_control="no-cache")) == (False, True)
    assert cache_mode(headers(cache_control="private, max-age = 0")) == (False, True)
    assert cache_mode(headers(cache_control="no-store")) == (True, False)

    request = chat(("user", "hi"))
    assert cacheable(request)
    assert not cacheable(chat(("system", "no user message")))
    assert not cacheable({**request, "n": 2})
    assert not cacheable({**request, "tool_choice": "required"})
    assert not cacheable({**request, "tool_choice": {"type": "function", "function": {"name": "f"}}})
    assert cacheable({**request, "tool_choice": "auto"})

    good = answer().response
    assert storable(request, good)
    assert not storable({**request, "tool_choice": "required"}, good)
    for finish in ("length", "tool_calls", "content_filter", None):
        assert not storable(request, {**good, "choices": [{**good["choices"][0], "finish_reason": finish}]})
    tool_call = {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}
    assert not storable(request, {**good, "choices": [{**good["choices"][0], "message": tool_call}]})
    assert not storable(request, {"error": {"message": "overloaded"}})


# -- stores -------------------------------------------------------------------------------


def node_store(tmp_path: Path, ttl: float = 60, max_entries: int = 100, **options: Any) -> NodeStore:
    return NodeStore(ttl, max_entries, str(tmp_path / "node.sqlite"), **options)


def test_node_store_is_shared_with_ttl_and_bound(tmp_path: Path) -> None:
    now = [100.0]
    one = node_store(tmp_path, ttl=10, max_entries=2, clock=lambda: now[0])
    two = node_store(tmp_path, ttl=10, max_entries=2, clock=lambda: now[0])  # another worker

    async def scenario() -> None:
        await one.put("a", answer("A"))
        got = await two.get("a")
        assert got is not None and got.response["choices"][0]["message"]["content"] == "A"
        got.response["choices"] = []  # a hit is the caller's own copy
        assert (await one.get("a")).response["choices"]  # type: ignore[union-attr]
        now[0] += 1
        await two.put("b", answer("B"))
        now[0] += 1
        await one.put("c", answer("C"))  # over the bound: the oldest stored (a) goes
        assert await two.get("a") is None
        assert await one.get("b") is not None and await two.get("c") is not None
        now[0] += 1
        await one.put("b", answer("B2"))  # a replaced entry counts once and lives ttl again
        assert (await two.get("b")).response["choices"][0]["message"]["content"] == "B2"  # type: ignore[union-attr]
        now[0] += 9.5
        assert await two.get("c") is None and await one.get("b") is not None  # TTL on read
        count = one._connection().execute("SELECT count(*) FROM answers").fetchone()[0]
        assert count <= 2
        for store in (one, two):
            await store.close()

    run(scenario())


def test_node_store_reconnects_after_fork_and_derives_the_path(tmp_path: Path) -> None:
    store = node_store(tmp_path)
    run(store.put("parent", answer("P")))  # the parent holds an open connection
    read, write = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # a worker: its own connection, and the node's file named by its parent
            code = 1
            try:
                found = run(store.get("parent"))
                run(store.put(f"child-{os.getpid()}", answer("C")))
                os.write(write, (node_path() + "\n").encode())
                code = 0 if found is not None else 2
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write)
    assert [os.waitpid(pid, 0)[1] for pid in children] == [0, 0]
    with os.fdopen(read) as pipe:
        paths = pipe.read().split()
    assert len(paths) == 2 and paths[0] == paths[1]  # the same file for both workers...
    assert os.path.basename(paths[0]).startswith(f"cache-{os.getpid()}-")  # ...named by their parent
    assert oct(os.stat(os.path.dirname(paths[0])).st_mode & 0o777) == "0o700"
    assert all(run(store.get(f"child-{pid}")) is not None for pid in children)
    run(store.close())


def test_redis_store_round_trip_ttl_and_sharing(redis_server) -> None:
    async def scenario() -> None:
        one = RedisStore(CacheRedis(redis_server.url), ttl=0.3)
        two = RedisStore(CacheRedis(redis_server.url), ttl=0.3)
        stored = answer("shared", question="Capital of France?")
        await one.put("k1", stored)
        got = await two.get("k1")  # another node sees it
        assert got == stored
        ttl_ms = await one.redis.call("PTTL", "fastgw:cache:a:k1")
        assert 0 < ttl_ms <= 300
        assert await two.get("missing") is None
        await asyncio.sleep(0.4)
        assert await one.get("k1") is None
        await one.close()
        await two.close()

    run(scenario())


def test_redis_down_is_a_fast_cache_unavailable(redis_server) -> None:
    async def scenario() -> None:
        store = RedisStore(CacheRedis(redis_server.url, retry_interval=0.2), ttl=60)
        await store.put("k", answer())
        redis_server.kill()
        with pytest.raises(CacheUnavailable):
            await store.get("k")
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):  # no new connection attempt within retry_interval
            await store.get("k")
        assert time.monotonic() - started < 0.01
        redis_server.start()
        await asyncio.sleep(0.25)
        assert await store.get("k") is None  # back (empty: the server kept nothing)
        await store.close()

    run(scenario())


# -- semantic -----------------------------------------------------------------------------


def word_vector(text: str) -> list[float]:
    total = np.zeros(DIM)
    for word in set(re.findall(r"[a-z0-9]+", text.lower())):
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        direction = np.random.default_rng(seed).standard_normal(DIM)
        total += direction / np.linalg.norm(direction)
    return total.tolist()


@asynccontextmanager
async def embeddings_server(delay: float = 0.0, status: int = 200) -> AsyncIterator[dict]:
    """An OpenAI-compatible /v1/embeddings endpoint on a free port (keep-alive, Content-Length)."""
    state: dict[str, Any] = {"connections": 0, "requests": [], "delay": delay}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                request = json.loads(await reader.readexactly(length))
                state["requests"].append((head, request))
                await asyncio.sleep(state["delay"])
                body = json.dumps(
                    {
                        "object": "list",
                        "data": [
                            {"object": "embedding", "index": 0, "embedding": word_vector(request["input"])}
                        ],
                        "model": request["model"],
                    }
                ).encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%b" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state["url"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/embeddings"
    try:
        yield state
    finally:
        server.close()


def semantic_spec(url: str, **overrides: Any) -> dict:
    return {
        "embeddings_url": url,
        "model": "fake-embed",
        "api_key": "sk-test",
        "threshold": 0.9,
        "timeout": 1.0,
    } | overrides


def test_semantic_nearest_threshold_scopes_and_expiry(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embeddings_server() as server:
            now = [1000.0]
            vectors = node_store(tmp_path, clock=lambda: now[0])
            index = SemanticIndex(
                semantic_spec(server["url"]), ttl=60, max_entries=100, vectors=vectors, clock=lambda: now[0]
            )
            question = await index.embed("What is the capital of France?")
            assert len(question) == DIM
            await index.add("alice", question, "key-france")
            await index.add("alice", await index.embed("How do I bake sourdough bread?"), "key-bread")

            paraphrase = await index.embed("the capital of France: what is it")  # same words
            near = await index.embed("What is the capital of France today?")  # one word more
            unrelated = await index.embed("Explain quantum entanglement simply")
            assert await index.nearest("alice", paraphrase) == "key-france"
            assert await index.nearest("alice", near, threshold=0.85) == "key-france"
            assert await index.nearest("alice", near, threshold=0.99) is None
            assert await index.nearest("alice", unrelated) is None
            assert await index.nearest("bob", paraphrase) is None  # another partition

            now[0] += 61
            assert await index.nearest("alice", paraphrase) is None  # expired with the store's TTL

            head, body = server["requests"][0]
            assert head.startswith(b"POST /v1/embeddings HTTP/1.1\r\n")
            assert b"Authorization: Bearer sk-test\r\n" in head
            assert body == {"model": "fake-embed", "input": "What is the capital of France?"}
            assert server["connections"] == 1  # kept alive across the five embeddings
            await index.close()

    run(scenario())


def test_vector_rows_stay_bounded() -> None:
    rows = _Rows(4)
    rng = np.random.default_rng(1)
    for i in range(50):
        v = rng.standard_normal(4).astype(np.float32)
        rows.add(v / np.linalg.norm(v), f"k{i}", expires=1e9, now=0.0, max_entries=10)
    assert rows.count <= 10 and len(rows.matrix) <= 16
    assert rows.keys[-1] == "k49" and "k0" not in rows.keys  # the oldest went first
    target = rows.matrix[rows.keys.index("k45")].copy()
    assert rows.nearest(target, 0.0) == (pytest.approx(1.0), "k45")


def test_semantic_index_shared_through_redis(redis_server) -> None:
    async def scenario() -> None:
        async with embeddings_server() as server:
            s = spec(store="redis", ttl=60, semantic=semantic_spec(server["url"]))
            store_a, index_a = open_cache(s, redis_server.url)
            store_b, index_b = open_cache(s, redis_server.url)
            assert index_a is not None and index_b is not None
            request = chat(("user", "What is the capital of France?"))
            key, question = cache_key(request, "gpt-4o", "consumer:alice", s)
            partition = semantic_scope(request, "gpt-4o", "consumer:alice", s)

            assert (
                await index_b.nearest(partition, await index_b.embed("capital of France?")) is None
            )  # loads empty
            await store_a.put(key, answer("Paris.", question))
            await index_a.add(partition, await index_a.embed(question), key)

            found = await index_b.nearest(
                partition, await index_b.embed("France: what is the capital of it?")
            )
            assert found == key  # instance b reads a's vector incrementally
            assert (await store_b.get(found)).response["choices"][0]["message"]["content"] == "Paris."  # type: ignore[union-attr]
            assert await index_b.nearest("other-partition", await index_b.embed(question)) is None

            await index_b.add(partition, await index_b.embed("How do I bake sourdough bread?"), "bread")
            assert (
                await index_a.nearest(partition, await index_a.embed("bake sourdough bread how do I"))
                == "bread"
            )
            assert (
                await index_a.nearest(partition, await index_a.embed(question)) == key
            )  # no duplicates confuse it
            assert index_a._scopes[partition].count == 2
            stream_ttl = await store_a.redis.call("PTTL", f"fastgw:cache:v:fake-embed:{partition}")  # type: ignore[attr-defined]
            assert 0 < stream_ttl <= 60_000
            for closing in (store_a, index_a, store_b, index_b):
                await closing.close()

    run(scenario())


def test_semantic_index_shared_by_the_workers_of_a_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with embeddings_server() as server:
            now = [1000.0]
            stores, indexes = [], []
            for _ in range(2):  # two workers, one node file
                store = node_store(tmp_path, max_entries=3, clock=lambda: now[0])
                stores.append(store)
                indexes.append(
                    SemanticIndex(
                        semantic_spec(server["url"]),
                        ttl=60,
                        max_entries=3,
                        vectors=store,
                        clock=lambda: now[0],
                    )
                )
            a, b = indexes
            question = "What is the capital of France?"
            assert await b.nearest("p", await b.embed(question)) is None  # b loads the empty partition
            await stores[0].put("france", answer("Paris.", question))
            await a.add("p", await a.embed(question), "france")
            found = await b.nearest("p", await b.embed("France: what is the capital of it?"))
            assert found == "france"  # b caught up with a's vector
            assert (await stores[1].get(found)).response["choices"][0]["message"]["content"] == "Paris."  # type: ignore[union-attr]
            assert await b.nearest("other", await b.embed(question)) is None

            for i in range(8):  # more than max_entries: both matrices and the table stay bounded
                await b.add("p", await b.embed(f"question number {i} about topic {i}"), f"k{i}")
            assert await a.nearest("p", await a.embed("question number 7 about topic 7")) == "k7"
            assert await a.nearest("p", await a.embed(question)) is None  # the oldest went first
            assert a._scopes["p"].count <= 3 and b._scopes["p"].count <= 3
            db = stores[0]._connection()
            assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] <= 3 + 1
            now[0] += 61
            assert await b.nearest("p", await b.embed("question number 7 about topic 7")) is None  # expired
            for closing in (*stores, *indexes):
                await closing.close()

    run(scenario())


def test_embeddings_timeout_and_errors_are_cache_unavailable(tmp_path: Path) -> None:
    vectors = node_store(tmp_path)

    async def scenario() -> None:
        async with embeddings_server(delay=0.5) as server:
            index = SemanticIndex(
                semantic_spec(server["url"], timeout=0.05), ttl=60, max_entries=10, vectors=vectors
            )
            started = time.monotonic()
            with pytest.raises(CacheUnavailable, match="did not answer within 0.05s"):
                await index.embed("slow")
            assert time.monotonic() - started < 0.3
            server["delay"] = 0.0
            assert len(await index.embed("fast again")) == DIM  # the abandoned connection was not reused
            await index.close()
        async with embeddings_server(status=500) as server:
            index = SemanticIndex(semantic_spec(server["url"]), ttl=60, max_entries=10, vectors=vectors)
            with pytest.raises(CacheUnavailable, match="answered 500"):
                await index.embed("x")
            await index.close()
        index = SemanticIndex(
            semantic_spec(server["url"]), ttl=60, max_entries=10, vectors=vectors
        )  # nothing listens now
        with pytest.raises(CacheUnavailable, match="failed"):
            await index.embed("x")

    run(scenario())


def test_nearest_speed_10k_vectors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Brute force over 10k rows: print the time (see the module docstring of semantic.py)."""
    rng = np.random.default_rng(0)
    timings = {}
    for dim in (384, 1536):
        index = SemanticIndex(
            semantic_spec("http://127.0.0.1:9/v1/embeddings"),
            ttl=3600,
            max_entries=10_000,
            vectors=node_store(tmp_path),
        )
        vectors = rng.standard_normal((10_000, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = index._scopes["p"] = _Rows(dim)
        for i, v in enumerate(vectors):
            rows.add(v, f"k{i}", expires=1e12, now=0.0, max_entries=10_000)

        async def measure(index: SemanticIndex = index, probe: np.ndarray = vectors[1234]) -> float:
            assert await index.nearest("p", probe) == "k1234"
            started = time.perf_counter()
            for _ in range(20):
                await index.nearest("p", probe)
            return (time.perf_counter() - started) / 20

        timings[dim] = run(measure())
    with capsys.disabled():
        print(
            "\nnearest() over 10k vectors: "
            + ", ".join(f"{d} dims {t * 1000:.2f} ms" for d, t in timings.items())
        )
    assert timings[384] < 0.05


# -- replay -------------------------------------------------------------------------------


def test_replay_stream_is_valid_openai_sse() -> None:
    text = "Paris is the capital of France. It has been since 987 — ünïcode and emoji 🎉 included."
    stored = answer(text)
    events = replay_stream(stored, "my-alias", include_usage=True)
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    parsed = SSEParser().feed(b"".join(events))
    assert len(parsed) == len(events) and parsed[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in parsed[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] != stored.response["id"]
    assert all(c["model"] == "my-alias" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert "".join(pieces) == text and max(map(len, pieces)) <= 20 and len(pieces) > 3
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == stored.usage
    assert all(c["usage"] is None for c in chunks[:-1])

    plain = [json.loads(e[6:]) for e in replay_stream(stored, "m")[:-1]]
    assert all("usage" not in c for c in plain)
    rebuilt = assemble(plain)  # a streamed answer is stored the same way
    assert rebuilt is not None and rebuilt["choices"][0]["message"] == {"role": "assistant", "content": text}
    ChatCompletion.model_validate(rebuilt)
    assert storable(chat(("user", "q")), rebuilt)

    hit = served(stored, "my-alias")
    ChatCompletion.model_validate(hit)
    assert (
        hit["model"] == "my-alias"
        and hit["id"] != stored.response["id"]
        and hit["choices"] == stored.response["choices"]
    )


def test_assemble_refuses_incomplete_or_tool_call_streams() -> None:
    chunks = [json.loads(e[6:]) for e in replay_stream(answer("hello"), "m")[:-1]]
    assert assemble(chunks[:-1]) is None  # no finish reason: the stream broke off
    tool = {
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c"}]}, "finish_reason": None}]
    }
    assert assemble(chunks[:1] + [tool] + chunks[1:]) is None

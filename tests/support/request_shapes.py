"""Hypothesis strategies for documented request shapes, and a mutator that breaks them.

OpenAI chat requests (platform.openai.com/docs/api-reference/chat/create: roles, content parts,
tool calls, tools, response_format, reasoning_effort...), embeddings requests, and ``mutated(s)``:
a drawn value with one to three nodes replaced by arbitrary JSON or deleted. Shared by the in-process
converter fuzz test and the e2e sample sent through a real gateway.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5000) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
names = st.sampled_from(["get_weather", "f", "lookup", "fastgw_json_answer"])
ids = st.text("abcdef0123456789_", min_size=1, max_size=10).map(lambda s: "call_" + s)
arguments = st.one_of(
    st.dictionaries(st.sampled_from(["city", "n"]), st.text(max_size=5) | st.integers(), max_size=2).map(json.dumps),
    st.just(""), st.text(max_size=10),
)
urls = st.sampled_from(["https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo=", "data:image/png,xx",
                        "gs://bucket/a.pdf", "ftp://x/y", "data:;base64,", ""])

# ----------------------------------------------------------------------------- OpenAI requests

text_part = st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=10))
image_part = st.builds(lambda u, d: {"type": "image_url", "image_url": {"url": u, **({"detail": d} if d else {})}},
                       urls, st.sampled_from([None, "low", "auto"]))
audio_part = st.builds(lambda d, f: {"type": "input_audio", "input_audio": {"data": d, "format": f}},
                       st.text(max_size=8), st.sampled_from(["wav", "mp3"]))
file_part = st.builds(lambda u: {"type": "file", "file": {"file_data": u, "filename": "a.pdf"}}, urls)
content = st.one_of(st.text(max_size=12), st.lists(st.one_of(text_part, image_part, audio_part, file_part), max_size=3))
tool_call = st.builds(lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}},
                      ids, names, arguments)
thinking_block = st.one_of(
    st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, st.text(max_size=8), st.text(max_size=8)),
    st.builds(lambda d: {"type": "redacted_thinking", "data": d}, st.text(max_size=8)),
)
message = st.one_of(
    st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["system", "developer", "user"]), content),
    st.builds(lambda c, calls, blocks: {"role": "assistant", "content": c,
                                        **({"tool_calls": calls} if calls else {}),
                                        **({"thinking_blocks": blocks} if blocks else {})},
              st.none() | st.text(max_size=10), st.lists(tool_call, max_size=2), st.lists(thinking_block, max_size=2)),
    st.builds(lambda i, c: {"role": "tool", "tool_call_id": i, "content": c}, ids, st.text(max_size=10)),
)
tool = st.builds(lambda n, p: {"type": "function", "function": {"name": n, "description": "d",
                                                                **({"parameters": p} if p else {})}},
                 names, st.none() | st.just({"type": "object", "properties": {"city": {"type": "string"}}}))
response_format = st.one_of(
    st.just({"type": "text"}), st.just({"type": "json_object"}),
    st.builds(lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": True}},
              st.sampled_from([{"type": "object", "properties": {"a": {"type": "integer"}}}, {"type": "array"}])),
)
OPTIONAL = {
    "n": st.integers(0, 3),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(-1, 5000),
    "max_completion_tokens": st.integers(1, 5000),
    "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=2),
    "tools": st.lists(tool, min_size=1, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]),
    "parallel_tool_calls": st.booleans(),
    "response_format": response_format,
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "extreme"]),
    "stream": st.booleans(),
    "user": st.text(max_size=5),
    "seed": st.integers(0, 10),
}


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "m", "messages": draw(st.lists(message, min_size=1, max_size=4))}
    for key in draw(st.sets(st.sampled_from(sorted(OPTIONAL)), max_size=5)):
        request[key] = draw(OPTIONAL[key])
    return request


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*path, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, documented: st.SearchStrategy) -> Any:
    """A documented value with one to three nodes replaced by arbitrary JSON (or keys deleted)."""
    value = json.loads(json.dumps(draw(documented)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(value) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return value

"""Front-door dialect encoders: the templated chunk encoder must equal plain JSON encoding."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.dialects import OpenAIStream, sse_data

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
chunks = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["chatcmpl-1", "msg_\"quoted\"", "x"]),
        "object": st.just("chat.completion.chunk"),
        "created": st.integers(0, 2**40),
        "model": st.sampled_from(["m", "gpt-4o", "claude-é"]),
        "choices": st.lists(
            st.fixed_dictionaries(
                {"index": st.integers(0, 3), "delta": st.one_of(
                    st.fixed_dictionaries({"content": texts}),
                    st.fixed_dictionaries({"role": st.just("assistant"), "content": texts}),
                    st.fixed_dictionaries({"content": st.none()}),
                )},
                optional={"logprobs": st.none(), "finish_reason": st.sampled_from([None, "stop", "length"])},
            ),
            min_size=0,
            max_size=2,
        ),
    },
    optional={"usage": st.fixed_dictionaries({"total_tokens": st.integers(0, 10)})},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(chunks, min_size=1, max_size=6))
def test_templated_chunks_equal_json_encoding(stream_chunks):
    encoder = OpenAIStream()  # one encoder for the whole sequence: its cached template must never go stale
    for chunk in stream_chunks:
        assert encoder.chunk(chunk) == sse_data(chunk)


def test_text_is_escaped_like_json():
    encoder = OpenAIStream()
    base = {"id": "a", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    for text in ("plain", 'quote " and \\ backslash', "new\nline\ttab", "\x00\x1f", "😀 é", "\u2028"):
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        assert encoder.chunk(chunk) == sse_data(chunk)


@settings(max_examples=300, deadline=None)
@given(text=texts, ascii_only=st.booleans(), finished=st.booleans())
def test_delta_content_reads_exactly_what_json_would(text, ascii_only, finished):
    from fastgw.filters.guard import delta_content

    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None,
                          "finish_reason": "stop" if finished else None}]}
    raw = b"data: " + json.dumps(chunk, ensure_ascii=ascii_only, separators=(",", ":")).encode() + b"\n\n"
    found = delta_content(raw)
    if finished:
        assert found is None  # a finishing chunk takes the full parse
        return
    if text in ("delta", "finish_reason"):  # the key's bytes twice: not provably one choice, full parse
        assert found is None
        return
    assert found is not None
    decoded, start, end = found
    assert decoded == text
    assert json.loads(raw[start:end]) == text  # the literal's exact position, for splicing

"""Azure OpenAI adapter and mock flavor: deployment paths, api-key auth, filter chunks and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from fastgw.ai.providers import adapter_for
from fastgw.ai.providers.base import Adapter, ProviderError, UnsupportedOperation
from fastgw.mock.core import answer_text
from tests.unit.ai.providers.test_openai import (
    CHUNKS,
    convert_stream,
    finish_reasons,
    send,
    sse_events,
    start_mocks,
    streamed_text,
)


def make(base_url: str | None = "https://contoso.openai.azure.com", **options: object) -> Adapter:
    return adapter_for({"name": "azure-test", "type": "azure", "base_url": base_url, "options": options})


def test_deployment_path_api_version_and_api_key() -> None:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "x": [1]}
    adapter = make(
        api_version="2025-01-01-preview", deployments={"gpt-4o": "prod gpt4o/eu"}, headers={"X-Team": "a"}
    )
    call = adapter.build("chat", request, "gpt-4o", "azure-key")
    assert (adapter.host, adapter.port) == ("contoso.openai.azure.com", 443)
    assert (
        call.path == b"/openai/deployments/prod%20gpt4o%2Feu/chat/completions?api-version=2025-01-01-preview"
    )
    assert call.headers == [
        (b"content-type", b"application/json"),
        (b"api-key", b"azure-key"),
        (b"x-team", b"a"),
    ]
    assert json.loads(call.body) == request
    default = make()
    assert default.build("embeddings", {"input": "x"}, "text-embedding-3-small", "k").path == (
        b"/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    )
    assert default.build("completions", {"prompt": "x"}, "davinci", "k").path.startswith(
        b"/openai/deployments/davinci/completions?"
    )
    with pytest.raises(ProviderError, match="base_url"):
        make(None)
    with pytest.raises(UnsupportedOperation):
        default.stream("embeddings", "m")


RECORDED_AZURE_STREAM = b"""data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}

data: {"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1733470000,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_04751d0b65"}

data: {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hi"},"finish_reason":null,"index":0,"logprobs":null}],"created":1733470000,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_04751d0b65"}

data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"length","index":0,"logprobs":null}],"created":1733470000,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_04751d0b65"}

data: {"choices":[],"created":1733470000,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","usage":{"completion_tokens":1,"prompt_tokens":9,"total_tokens":10}}

data: [DONE]

"""


def test_stream_drops_prompt_filter_chunks_and_keeps_usage() -> None:
    chunks, converter = convert_stream(make(), "chat", "gpt-4o", RECORDED_AZURE_STREAM)
    assert [c["id"] for c in chunks] == ["chatcmpl-AbC"] * 4  # the id-less filter chunk is gone
    assert streamed_text(chunks) == "Hi" and finish_reasons(chunks) == ["length"]
    assert converter.done and converter.usage == {
        "completion_tokens": 1,
        "prompt_tokens": 9,
        "total_tokens": 10,
    }


RECORDED_CONTENT_FILTER = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
        "policy. Please modify your prompt and retry.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": {"filtered": False, "severity": "safe"},
                "jailbreak": {"filtered": True, "detected": True},
                "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": True, "severity": "medium"},
            },
        },
    }
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            json.dumps(RECORDED_CONTENT_FILTER).encode(),
            (
                RECORDED_CONTENT_FILTER["error"]["message"] + " (filtered: jailbreak, violence)",
                "content_filter",
            ),
        ),
        (
            b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}',
            ("The API deployment for this resource does not exist.", "DeploymentNotFound"),
        ),
        (b'{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}', None),
        (
            b'{"error":{"code":"content_filter","message":"Filtered","innererror":"odd"}}',
            ("Filtered", "content_filter"),
        ),
        (b"<html>Bad gateway</html>", ("<html>Bad gateway</html>", None)),
    ],
)
def test_error_bodies(body: bytes, expected: tuple[str, str | None] | None) -> None:
    message, code = make().error(400, body)
    if expected is None:
        assert (message, code) == ("Access denied due to invalid subscription key.", "401")
    else:
        assert (message, code) == expected


# -------------------------------------------------------------------------------- against the mock


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    for ports in start_mocks("azure"):
        yield ports["azure"]


def test_round_trip_plain_and_streamed(port: int) -> None:
    adapter = make(f"http://127.0.0.1:{port}", deployments={"gpt-4o": "my-deployment"})
    request = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    status, body = send(adapter, adapter.build("chat", request, "gpt-4o", "azure-key"))
    assert status == 200, body
    answer = adapter.convert_response("chat", status, body, "gpt-4o")
    assert answer["choices"][0]["message"]["content"] == answer_text(CHUNKS)
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] == CHUNKS
    assert answer["prompt_filter_results"][0]["prompt_index"] == 0  # Azure's annotations survive

    streaming = {**request, "stream": True, "stream_options": {"include_usage": True}}
    status, body = send(adapter, adapter.build("chat", streaming, "gpt-4o", "azure-key"))
    assert json.loads(sse_events(body)[0][1])["choices"] == []  # the mock opens like Azure does
    chunks, converter = convert_stream(adapter, "chat", "gpt-4o", body)
    assert all(c["choices"] or c.get("usage") for c in chunks)
    assert streamed_text(chunks) == answer_text(CHUNKS) and finish_reasons(chunks) == ["stop"]
    assert converter.done and converter.usage["completion_tokens"] == CHUNKS

    status, body = send(adapter, adapter.build("embeddings", {"input": ["a", "b"]}, "emb", "azure-key"))
    assert len(adapter.convert_response("embeddings", status, body, "emb")["data"]) == 2


def test_round_trip_refusals(port: int) -> None:
    adapter = make(f"http://127.0.0.1:{port}")
    request = {"messages": [{"role": "user", "content": "please filterme now"}]}
    status, body = send(adapter, adapter.build("chat", request, "gpt-4o", "azure-key"))
    message, code = adapter.error(status, body)
    assert status == 400 and code == "content_filter" and message.endswith("(filtered: violence)")

    status, body = send(
        adapter, adapter.build("chat", {"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o", None)
    )
    assert status == 401 and adapter.error(status, body)[1] == "401"

    call = adapter.build("chat", {"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o", "azure-key")
    call.path = call.path.split(b"?")[0]
    status, body = send(adapter, call)
    assert status == 400 and "api-version" in adapter.error(status, body)[0]

    call.path = b"/openai/models?api-version=2024-10-21"
    status, body = send(adapter, call)
    assert (status, adapter.error(status, body)[1]) == (404, "DeploymentNotFound")

    call = adapter.build("chat", {"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o", "mock-429-key")
    status, body = send(adapter, call)
    assert (status, adapter.error(status, body)[1]) == (429, "429")


def test_azure_sdk_against_the_mock(port: int) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{port}",
        api_key="azure-key",
        api_version="2024-10-21",
        max_retries=0,
        timeout=5,
    )
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="my-deployment", messages=messages)
    assert reply.choices[0].message.content == answer_text(CHUNKS)
    chunks = list(client.chat.completions.create(model="my-deployment", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer_text(CHUNKS)
    assert chunks[0].choices == [] and chunks[0].prompt_filter_results  # what the SDK really sees from Azure
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="my-deployment", messages=[{"role": "user", "content": "filterme"}]
        )
    assert refused.value.code == "content_filter"

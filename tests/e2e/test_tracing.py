"""OpenTelemetry traces through a real gateway: an OTLP/HTTP receiver gets the GenAI spans.

The receiver decodes ``ExportTraceServiceRequest`` protobufs (opentelemetry-proto), as a
collector would. The fake provider follows OpenAI's public chat-completions API (a 401 error
body for a bad key; a streamed answer whose last chunk carries ``usage``); the plain upstream
echoes the ``traceparent`` it got.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.gateway import http_json, send_json

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP traces endpoint keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ReceiverHandler)

    def wait(self, predicate, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for s in self.spans if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no span matched; received {self.spans}")


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "kind": span.kind, "status": span.status.code,
                        "attributes": {a.key: _value(a.value) for a in span.attributes}, "resource": resource,
                    })
        with self.server.lock:
            self.server.spans.extend(spans)
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class Upstream(ThreadingHTTPServer):
    """An OpenAI-compatible provider (401 for the key ``sk-revoked``) and a plain echo route."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []  # (authorization, traceparent)
        super().__init__(("127.0.0.1", 0), UpstreamHandler)


class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802  (the plain route)
        self.server.seen.append((self.path, self.headers.get("traceparent")))
        send_json(self, {"traceparent": self.headers.get("traceparent")})

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.headers.get("Authorization"), self.headers.get("traceparent")))
        if self.headers.get("Authorization") == "Bearer sk-revoked":
            send_json(self, {"error": {"message": "Incorrect API key provided: sk-revo****", "type": "invalid_request_error",
                                       "param": None, "code": "invalid_api_key"}}, status=401)
            return
        created = int(time.time())
        if not request.get("stream"):
            send_json(self, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            })
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": created, "model": request["model"]}
        events = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
        ]
        for event in events:
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        data = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data))

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve(Receiver())


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    yield from _serve(Upstream())


def traced_config(upstream: Upstream, endpoint: str, ratio: float = 1.0) -> dict:
    base = f"http://127.0.0.1:{upstream.server_address[1]}"
    return {
        "tracing": {"otlp_endpoint": endpoint, "sample_ratio": ratio, "service_name": "gw-under-test"},
        "providers": [
            {"name": "revoked", "type": "openai-compatible", "base_url": base + "/v1", "api_keys": ["sk-revoked"]},
            {"name": "backup", "type": "openai", "base_url": base + "/v1", "api_keys": ["sk-good"]},
        ],
        "models": [{"name": "gpt-4o", "targets": [{"provider": "revoked"}, {"provider": "backup", "model": "gpt-4o-2024"}]}],
        "routes": [{"name": "plain", "match": {"path": {"prefix": "/plain"}}, "upstream": base}],
    }


def _parent_id(traceparent: str) -> tuple[str, str, str]:
    version, trace_id, parent, flags = traceparent.split("-")
    assert version == "00"
    return trace_id, parent, flags


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_ai_request_traced_with_genai_attributes_and_propagated_context(
    gateway, receiver: Receiver, upstream: Upstream, pure: bool, stream: bool
) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    gw = gateway(traced_config(upstream, endpoint), workers=1, pure=pure)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    headers = {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01", "tracestate": "vendor=1"}
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True, extra_headers=headers))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    else:
        answer = client.chat.completions.create(model="gpt-4o", messages=messages, extra_headers=headers)
        assert answer.choices[0].message.content == "hello"

    request_span = receiver.wait(lambda s: s["kind"] == 2)[0]  # SPAN_KIND_SERVER
    assert request_span["trace_id"] == TRACE_ID and request_span["parent"] == CLIENT_SPAN
    assert request_span["name"] == "chat gpt-4o"
    assert request_span["resource"]["service.name"] == "gw-under-test"
    attrs = request_span["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.response.model"] == "gpt-4o-2024"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["fastgw.provider"] == "backup"
    assert attrs["gen_ai.usage.input_tokens"] == 7
    assert attrs["gen_ai.usage.output_tokens"] == (3 if stream else 2)
    assert attrs["http.response.status_code"] == 200 and attrs["fastgw.attempts"] == 2
    if stream:
        assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    else:
        assert "gen_ai.response.time_to_first_chunk" not in attrs

    receiver.wait(lambda s: s["kind"] == 3 and s["attributes"]["fastgw.attempt"] == 2)  # SPAN_KIND_CLIENT
    attempts = sorted((s for s in receiver.spans if s["kind"] == 3), key=lambda s: s["attributes"]["fastgw.attempt"])
    assert [s["attributes"]["fastgw.provider"] for s in attempts] == ["revoked", "backup"]
    assert all(s["trace_id"] == TRACE_ID and s["parent"] == request_span["span_id"] for s in attempts)
    revoked, backup = attempts
    assert revoked["status"] == 2 and revoked["attributes"]["http.response.status_code"] == 401  # STATUS_CODE_ERROR
    assert revoked["attributes"]["error.type"] == "upstream_auth_failed"  # the gateway's code for a refused key
    assert revoked["attributes"]["gen_ai.provider.name"] == "openai-compatible"
    assert backup["status"] != 2 and backup["attributes"]["gen_ai.request.model"] == "gpt-4o-2024"

    # Each provider got the traceparent of its own attempt span, in the client's trace.
    sent = {auth: _parent_id(tp) for auth, tp in upstream.seen}
    assert sent["Bearer sk-revoked"] == (TRACE_ID, revoked["span_id"], "01")
    assert sent["Bearer sk-good"] == (TRACE_ID, backup["span_id"], "01")


def test_plain_route_propagates_and_sampling_follows_config_and_caller(gateway, receiver: Receiver, upstream: Upstream) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    gw = gateway(traced_config(upstream, endpoint, ratio=0.0), workers=1)
    # ratio 0: a new trace is not recorded, but its (unsampled) context still goes upstream.
    status, body = http_json("GET", gw.url + "/plain/a")
    assert status == 200
    trace_id, _, flags = _parent_id(body["traceparent"])
    assert int(flags, 16) & 1 == 0 and trace_id != TRACE_ID  # not sampled (0x02 may say the id is random)
    # A caller that sampled its trace is honoured whatever the ratio.
    status, body = http_json("GET", gw.url + "/plain/b", headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
    assert status == 200
    span = receiver.wait(lambda s: s["attributes"].get("http.route") == "plain")[0]
    assert span["name"] == "GET plain" and span["trace_id"] == TRACE_ID and span["parent"] == CLIENT_SPAN
    assert span["attributes"]["url.path"] == "/plain/b" and span["attributes"]["http.response.status_code"] == 200
    trace_id, parent, flags = _parent_id(body["traceparent"])
    assert (trace_id, parent, int(flags, 16) & 1) == (TRACE_ID, span["span_id"], 1)
    time.sleep(2)  # past the export delay: the unsampled request never shows up
    assert [s["attributes"]["url.path"] for s in receiver.spans] == ["/plain/b"]


def test_a_stalled_collector_never_holds_requests(gateway, upstream: Upstream) -> None:
    """The collector accepts connections and never answers: requests go on being answered."""
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(64)
    try:
        endpoint = f"http://127.0.0.1:{stalled.getsockname()[1]}/v1/traces"
        gw = gateway(traced_config(upstream, endpoint), workers=1)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        for i in range(30):
            assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": str(i)}])
            assert http_json("GET", gw.url + f"/plain/{i}", timeout=10)[0] == 200
            time.sleep(0.05)  # spread over several export rounds, each of which hangs on the collector
    finally:
        stalled.close()



def test_redis_round_trips_are_child_spans(gateway, receiver: Receiver, upstream: Upstream, redis_server) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    config = traced_config(upstream, endpoint) | {
        "redis": redis_server.url,
        "cache": {"store": "redis"},
        "limits": [{"name": "tpm", "match": {"models": ["gpt-4o"]}, "tokens": {"per_minute": 100000}}],
    }
    gw = gateway(config, workers=1)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(2):  # a miss, then a hit from Redis
        answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                extra_headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        assert answer.choices[0].message.content == "hello"
    receiver.wait(lambda s: s["kind"] == 2 and s["attributes"].get("fastgw.cache") == "hit")
    requests = {s["span_id"]: s for s in receiver.spans if s["kind"] == 2}
    lookups = receiver.wait(lambda s: s["name"] == "cache lookup")
    assert sorted(s["attributes"]["fastgw.cache"] for s in lookups) == ["hit", "miss"]
    assert all(s["attributes"]["db.system.name"] == "redis" and s["parent"] in requests for s in lookups)
    limits = receiver.wait(lambda s: s["name"] == "EVALSHA limits")
    assert limits and all(s["parent"] in requests and s["attributes"]["fastgw.limit.allowed"] for s in limits)


def test_a_push_changing_the_tracing_section_takes_effect(gateway, receiver: Receiver, upstream: Upstream) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    config = traced_config(upstream, endpoint)
    gw = gateway(config, workers=1)
    assert http_json("GET", gw.url + "/plain/one")[0] == 200
    receiver.wait(lambda s: s["attributes"].get("url.path") == "/plain/one")
    config["tracing"] = {**config["tracing"], "service_name": "renamed"}
    assert gw.push(config)[0] == 200
    gw.wait_ready(1, generation=2)
    assert http_json("GET", gw.url + "/plain/two")[0] == 200
    span = receiver.wait(lambda s: s["attributes"].get("url.path") == "/plain/two")[0]
    assert span["resource"]["service.name"] == "renamed"
    del config["tracing"]
    assert gw.push(config)[0] == 200
    gw.wait_ready(1, generation=3)
    status, body = http_json("GET", gw.url + "/plain/three")
    assert status == 200 and body["traceparent"] is None  # off: nothing added upstream

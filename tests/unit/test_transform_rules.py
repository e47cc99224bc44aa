"""Per-route transforms: config validation and header, query and JSON body rewriting."""

from __future__ import annotations

import json

import pytest
import yaml

from fastgw.config.fields import Issues
from fastgw.config.prompts import transform
from fastgw.transform import Transform, TransformError


def normalise(text: str) -> tuple[dict, list[str]]:
    issues = Issues()
    spec = transform(yaml.safe_load(text), "routes[0].transform", issues)
    return spec, issues.errors


def build(text: str) -> Transform:
    spec, errors = normalise(text)
    assert errors == []
    return Transform(spec)


# -- headers -----------------------------------------------------------------------------------


def test_request_headers_add_remove_rename_case_insensitive() -> None:
    t = build("request: {headers: {add: {X-Env: prod}, remove: [X-Debug], rename: {x-old: x-new}}}")
    headers = [
        (b"Host", b"h"),
        (b"x-env", b"client"),
        (b"X-DEBUG", b"1"),
        (b"X-Old", b"o"),
        (b"X-New", b"client-new"),
        (b"Accept", b"*/*"),
    ]
    assert t.request_headers(headers) == [
        (b"Host", b"h"),
        (b"x-new", b"o"),
        (b"Accept", b"*/*"),
        (b"x-env", b"prod"),
    ]
    # Without the old name, a client's header under the new name stays.
    assert t.request_headers([(b"x-new", b"n")]) == [(b"x-new", b"n"), (b"x-env", b"prod")]


def test_response_headers_and_unconfigured_parts_are_untouched() -> None:
    t = build("response: {headers: {add: {x-served-by: fastgw}, remove: [server]}}")
    headers = [(b"Server", b"nginx"), (b"Content-Type", b"text/plain")]
    assert t.response_headers(headers) == [(b"Content-Type", b"text/plain"), (b"x-served-by", b"fastgw")]
    assert t.request_headers(headers) is headers
    assert t.request_target(b"/a?b=1") == b"/a?b=1"
    assert t.needs_body is False and t.request_body(b"not json") == b"not json"
    body = {"a": 1}
    assert t.apply_body_dict(body) is body


# -- query ---------------------------------------------------------------------------------


def test_query_rules_keep_order_and_encoding() -> None:
    t = build(
        'request: {query: {add: {api-version: "2024-10-21", note: "a b&c"}, remove: [debug, "x y"], rename: {old: new}}}'
    )
    target = b"/v1/chat?a=%2F1+2&debug=1&flag&x+y=3&old=%C3%A9&&api-version=1&new=z&b=~"
    assert t.request_target(target) == (
        b"/v1/chat?a=%2F1+2&flag&new=%C3%A9&&b=~&api-version=2024-10-21&note=a%20b%26c"
    )
    assert t.request_target(b"/p") == b"/p?api-version=2024-10-21&note=a%20b%26c"
    only = build("request: {query: {remove: [debug]}}")
    assert only.request_target(b"/p?debug=1&debug") == b"/p"
    assert only.request_target(b"/p?de%62ug=1&keep") == b"/p?keep"  # names compare decoded


# -- body ----------------------------------------------------------------------------------


BODY = """
request:
  body:
    set: {temperature: 0.2, metadata.team: a, tags: [x]}
    default: {max_tokens: 512, metadata.env: prod}
    remove: [user, metadata.secret, missing.deep]
    rename: {maxTokens: max_tokens, options.seed: seed}
"""


def test_body_rules_with_dotted_paths() -> None:
    t = build(BODY)
    assert t.needs_body
    body = {
        "model": "m",
        "temperature": 1,
        "user": "u",
        "maxTokens": 10,
        "options": {"seed": 7, "n": 1},
        "metadata": {"secret": "s", "env": "dev"},
    }
    before = json.dumps(body)
    out = t.apply_body_dict(body)
    assert out == {
        "model": "m",
        "temperature": 0.2,
        "max_tokens": 10,
        "options": {"n": 1},
        "seed": 7,
        "metadata": {"env": "dev", "team": "a"},
        "tags": ["x"],
    }
    assert json.dumps(body) == before  # the caller's dict and nested objects are untouched
    out["tags"].append("y")
    assert t.apply_body_dict({})["tags"] == ["x"]  # config values are never shared
    assert t.apply_body_dict({}) == {
        "temperature": 0.2,
        "metadata": {"team": "a", "env": "prod"},
        "tags": ["x"],
        "max_tokens": 512,
    }


def test_request_body_bytes() -> None:
    t = build(BODY)
    out = json.loads(t.request_body('{"model": "m", "user": "u", "x": "é"}'.encode()))
    assert out["x"] == "é" and "user" not in out and out["max_tokens"] == 512
    assert t.request_body(b"") == b""  # a GET through a body-rewriting route
    assert json.loads(t.request_body(b'{"x": "\\ud800"}'))["x"] == "\ud800"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the request body is not valid JSON"),
        (b"\xff", "the request body is not valid JSON"),
        (b"[1, 2]", "the request body must be a JSON object"),
        (b'{"metadata": "text"}', "cannot set 'metadata.team': 'metadata' is not an object"),
    ],
)
def test_bad_bodies_are_400(body: bytes, message: str) -> None:
    with pytest.raises(TransformError) as info:
        build(BODY).request_body(body)
    assert info.value.status == 400 and info.value.message == message


# -- config ----------------------------------------------------------------------------------


def test_normalised_defaults() -> None:
    spec, errors = normalise("{}")
    empty = {"add": {}, "remove": [], "rename": {}}
    assert errors == []
    assert spec == {
        "request": {
            "headers": empty,
            "query": empty,
            "body": {"set": {}, "default": {}, "remove": [], "rename": {}},
        },
        "response": {"headers": empty},
    }
    spec, _ = normalise("request: {headers: {add: {X-Port: 8080}}}")
    assert spec["request"]["headers"]["add"] == {"x-port": "8080"}


def test_config_errors_have_field_paths() -> None:
    _, errors = normalise(
        """
request:
  headers: {add: {content-length: "1", x-a: "a\\r\\nb"}, remove: [x-a, "bad name", Host], rename: {X-B: x-c, x-d: x-c}}
  query: {add: {"": x, k: [1]}, remove: [k], colour: 1}
  body: {set: {a..b: 1, c: .nan, d: 1}, default: {d: 2}, remove: [d, d], rename: {e: 5}}
response:
  headers: {add: [x]}
  body: {}
"""
    )
    path = "routes[0].transform"
    assert errors == [
        f"{path}.response.body: unknown key; expected one of: headers",
        f"{path}.request.headers.add.content-length: 'content-length' is managed by the proxy and cannot be rewritten",
        f"{path}.request.headers.add.x-a: a header value must be printable ASCII (no line breaks)",
        f"{path}.request.headers.remove[0]: 'x-a' is already used by {path}.request.headers.add.x-a",
        f"{path}.request.headers.remove[1]: expected a header name, found string 'bad name'",
        f"{path}.request.headers.remove[2]: 'host' is managed by the proxy and cannot be rewritten; use upstream.host_header",
        f"{path}.request.headers.rename.x-d: 'x-c' is already used by {path}.request.headers.rename.X-B",
        f"{path}.request.query.colour: unknown key; expected one of: add, remove, rename",
        f"{path}.request.query.add.: expected a parameter name, found string ''",
        f"{path}.request.query.add.k: expected a string or a number, found list",
        f"{path}.request.query.remove[0]: 'k' is already used by {path}.request.query.add.k",
        f"{path}.request.body.set.a..b: expected a field path like 'metadata.team', found string 'a..b'",
        f"{path}.request.body.set.c: must be JSON: strings, numbers, booleans, null, lists and mappings "
        "(Out of range float values are not JSON compliant)",
        f"{path}.request.body.default.d: also in {path}.request.body.set, which always overrides a default",
        f"{path}.request.body.rename.e: expected a field path like 'metadata.team', found integer 5",
        f"{path}.response.headers.add: expected a mapping, found list",
    ]

"""Router semantics, checked against a brute-force linear reference."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.config import load_text
from fastgw.router import Router


def route(path: str | tuple[str, str] = "/", host: str | None = None, methods=None, headers=None) -> dict:
    kind, value = ("prefix", path) if isinstance(path, str) else path
    return {
        "match": {
            "host": host,
            "path": {"type": kind, "value": value},
            "methods": methods,
            "headers": headers or {},
        }
    }


def reference(
    routes: list[dict], method: bytes, host: bytes, path: bytes, headers: dict[bytes, bytes]
) -> int | None:
    """The obvious linear scan the router must agree with."""
    name = host.decode().lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif ":" in name:
        name = name.rpartition(":")[0]
    name = name.removesuffix(".")
    for i, r in enumerate(routes):
        m = r["match"]
        want_host = m["host"]
        if want_host is not None:
            if want_host.startswith("*."):
                if not name.endswith(want_host[1:]):
                    continue
            elif name != want_host:
                continue
        kind, value = m["path"]["type"], m["path"]["value"].encode()
        if kind == "exact" and path != value:
            continue
        if kind == "prefix" and not path.startswith(value):
            continue
        if kind == "regex" and not re.search(value, path):
            continue
        if m["methods"] is not None and method.decode() not in m["methods"]:
            continue
        if any(headers.get(k.encode()) != v.encode() for k, v in m["headers"].items()):
            continue
        return i
    return None


def match(router: Router, method: bytes, host: bytes, path: bytes, headers: dict[bytes, bytes] | None = None):
    return router.match(method, host, path, (headers or {}).get)


def build(routes: list[dict]) -> Router:
    return Router(routes, list(range(len(routes))))


# -- semantics -----------------------------------------------------------------------------


def test_first_route_in_config_order_wins() -> None:
    router = build([route("/api"), route(("exact", "/api/x")), route("/")])
    assert match(router, b"GET", b"h", b"/api/x") == 0  # prefix /api listed first beats the exact
    assert match(router, b"GET", b"h", b"/other") == 2
    router = build([route(("exact", "/api/x")), route("/api")])
    assert match(router, b"GET", b"h", b"/api/x") == 0
    assert match(router, b"GET", b"h", b"/api/y") == 1


def test_no_match_returns_none() -> None:
    router = build([route("/api"), route(("exact", "/x"), host="a.com")])
    assert match(router, b"GET", b"h", b"/nope") is None
    assert match(router, b"GET", b"b.com", b"/x") is None
    assert build([]).match(b"GET", b"h", b"/", {}.get) is None


def test_exact_prefix_and_regex_paths() -> None:
    router = build(
        [route(("exact", "/e")), route("/p/"), route(("regex", r"^/r/\d+$")), route(("regex", "z"))]
    )
    assert match(router, b"GET", b"", b"/e") == 0
    assert match(router, b"GET", b"", b"/e/") is None
    assert match(router, b"GET", b"", b"/p/") == 1
    assert match(router, b"GET", b"", b"/p/deep/er") == 1
    assert match(router, b"GET", b"", b"/p") is None
    assert match(router, b"GET", b"", b"/r/42") == 2
    assert match(router, b"GET", b"", b"/r/42x") is None
    assert match(router, b"GET", b"", b"/anywhere/z/") == 3  # search: unanchored unless written so


def test_prefix_is_a_plain_string_prefix() -> None:
    router = build([route("/api")])
    assert match(router, b"GET", b"", b"/apiary") == 0


def test_regex_routes_keep_config_order_with_literal_routes() -> None:
    router = build([route("/a/b"), route(("regex", "^/a")), route("/a")])
    assert match(router, b"GET", b"", b"/a/b") == 0
    assert match(router, b"GET", b"", b"/a/c") == 1


def test_host_exact_case_and_port_insensitive() -> None:
    router = build([route(host="api.example.com"), route(host="[::1]"), route()])
    assert match(router, b"GET", b"api.example.com", b"/") == 0
    assert match(router, b"GET", b"API.Example.COM:8443", b"/") == 0
    assert match(router, b"GET", b"api.example.com.", b"/") == 0
    assert match(router, b"GET", b"[::1]:8080", b"/") == 1
    assert match(router, b"GET", b"other.example.com", b"/") == 2
    assert match(router, b"GET", b"", b"/") == 2  # no Host: only host-less routes


def test_wildcard_host_matches_subdomains_not_apex() -> None:
    router = build([route(host="*.example.com"), route(host="example.com")])
    assert match(router, b"GET", b"a.example.com", b"/") == 0
    assert match(router, b"GET", b"a.b.Example.com:80", b"/") == 0
    assert match(router, b"GET", b"example.com", b"/") == 1
    assert match(router, b"GET", b"badexample.com", b"/") is None


def test_exact_host_and_wildcard_follow_config_order() -> None:
    router = build(
        [route("/x", host="*.example.com"), route(host="a.example.com"), route(host="*.example.com")]
    )
    assert match(router, b"GET", b"a.example.com", b"/x") == 0
    assert match(router, b"GET", b"a.example.com", b"/y") == 1
    assert match(router, b"GET", b"b.example.com", b"/y") == 2


def test_methods() -> None:
    router = build([route(methods=["GET", "HEAD"]), route(methods=["POST"])])
    assert match(router, b"GET", b"", b"/") == 0
    assert match(router, b"HEAD", b"", b"/") == 0
    assert match(router, b"POST", b"", b"/") == 1
    assert match(router, b"DELETE", b"", b"/") is None
    assert match(router, b"get", b"", b"/") is None  # methods are case-sensitive on the wire


def test_headers_must_all_match_exactly() -> None:
    router = build(
        [route(headers={"x-canary": "1", "x-team": "a"}), route(headers={"x-canary": "1"}), route()]
    )
    assert match(router, b"GET", b"", b"/", {b"x-canary": b"1", b"x-team": b"a"}) == 0
    assert match(router, b"GET", b"", b"/", {b"x-canary": b"1", b"x-team": b"b"}) == 1
    assert match(router, b"GET", b"", b"/", {b"x-canary": b"10"}) == 2
    assert match(router, b"GET", b"", b"/") == 2


def test_conditions_combine() -> None:
    router = build([route(("regex", "^/v[0-9]/"), host="*.svc.local", methods=["PUT"], headers={"x-a": "b"})])
    good = (b"PUT", b"x.svc.local", b"/v1/items", {b"x-a": b"b"})
    assert match(router, *good) == 0
    for i, bad in enumerate((b"GET", b"svc.local", b"/v/items", {b"x-a": b"c"})):
        assert match(router, *good[:i], bad, *good[i + 1 :]) is None


def test_targets_are_returned_and_lengths_must_agree() -> None:
    router = Router([route("/a"), route("/")], ["A", "B"])
    assert router.match(b"GET", b"", b"/a", {}.get) == "A"
    assert router.match(b"GET", b"", b"/b", {}.get) == "B"
    try:
        Router([route()], [])
    except ValueError:
        pass
    else:
        raise AssertionError("length mismatch accepted")


def test_routes_from_a_loaded_config() -> None:
    config = load_text(
        """
routes:
  - {name: api, match: {host: API.Example.com, path: /api, methods: [get]}, upstream: "http://a:1"}
  - {match: {path: {regex: "^/(img|css)/"}, headers: {X-Tier: 2}}, upstream: "http://b:1"}
  - {match: {path: {exact: /health}}, upstream: "http://c:1"}
""",
        env={},
    )
    router = Router(config["routes"], [r["name"] for r in config["routes"]])
    assert router.match(b"GET", b"api.example.com:8080", b"/api/v1", {}.get) == "api"
    assert router.match(b"GET", b"x", b"/img/a.png", {b"x-tier": b"2"}.get) == "route-1"
    assert router.match(b"GET", b"x", b"/img/a.png", {}.get) is None
    assert router.match(b"GET", b"x", b"/health", {}.get) == "route-2"


# -- scale ---------------------------------------------------------------------------------


def big_route_set(n: int) -> list[dict]:
    routes = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            routes.append(route(("exact", f"/e/{i}")))
        elif kind == 1:
            routes.append(route(f"/p/{i}/", methods=["GET"] if i % 2 else None))
        elif kind == 2:
            routes.append(route(host=f"h{i}.example.com"))
        elif kind == 3:
            routes.append(
                route(("exact", f"/w/{i}"), host=f"*.w{i}.example.com", headers={"x-v": str(i % 3)})
            )
        else:
            routes.append(route(f"/p/{i - 3}/sub", host=f"h{i - 2}.example.com"))
    routes[n // 2] = route(("regex", r"^/rx/\d+$"))
    routes.append(route("/"))
    return routes


def test_ten_thousand_routes_agree_with_reference() -> None:
    routes = big_route_set(10_000)
    router = build(routes)
    rng = random.Random(7)
    for _ in range(150):
        i = rng.randrange(10_000)
        host = rng.choice(
            [f"h{i}.example.com", f"a.w{i}.example.com:81", "nohost.example.com", f"H{i}.EXAMPLE.com"]
        )
        path = rng.choice([f"/e/{i}", f"/p/{i}/x", f"/p/{i}/sub/y", f"/w/{i}", f"/rx/{i}", "/", f"/e/{i}x"])
        method = rng.choice([b"GET", b"POST"])
        headers = {b"x-v": str(rng.randrange(3)).encode()}
        got = match(router, method, host.encode(), path.encode(), headers)
        assert got == reference(routes, method, host.encode(), path.encode(), headers), (method, host, path)


# -- property ------------------------------------------------------------------------------

HOSTS = [None, "a.com", "b.a.com", "*.a.com", "x.org", "*.x.org", "*.b.a.com"]
PATHS = [
    ("prefix", "/"),
    ("prefix", "/a"),
    ("prefix", "/a/"),
    ("exact", "/a"),
    ("exact", "/a/b"),
    ("prefix", "/ab"),
    ("regex", "^/a"),
    ("regex", "b$"),
    ("regex", "^/a/?b"),
    ("exact", "/"),
]

route_strategy = st.builds(
    lambda host, path, methods, header: route(path, host, methods, header),
    st.sampled_from(HOSTS),
    st.sampled_from(PATHS),
    st.one_of(st.none(), st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2, unique=True)),
    st.one_of(st.just({}), st.builds(lambda v: {"x-k": v}, st.sampled_from(["1", "2"]))),
)
request_strategy = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT"]),
    st.sampled_from(
        [b"", b"a.com", b"A.COM:80", b"b.a.com", b"c.b.a.com", b"x.org.", b"y.x.org:8", b"other"]
    ),
    st.sampled_from([b"/", b"/a", b"/a/", b"/a/b", b"/ab", b"/ab/b", b"/b", b"/x/b"]),
    st.dictionaries(st.just(b"x-k"), st.sampled_from([b"1", b"2"])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(route_strategy, max_size=12), st.lists(request_strategy, min_size=1, max_size=8))
def test_router_agrees_with_reference(routes: list[dict], requests: list) -> None:
    router = build(routes)
    for method, host, path, headers in requests:
        assert match(router, method, host, path, headers) == reference(routes, method, host, path, headers)

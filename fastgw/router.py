"""Route matching, compiled once per config generation.

The first route in config order whose host, path, methods and headers all match wins.
Matching never scans the route list: routes are grouped by host key (any host, one exact
host, or one ``*.`` suffix), and inside a group indexed by path (exact paths in a dict,
prefixes in a dict probed once per distinct prefix length, regexes in a list). A request
probes only the groups its host can reach, collects candidate indices, and checks the
remaining conditions in index order. It all runs on the raw bytes of the request.
"""

from __future__ import annotations

import re
from collections.abc import Callable

HeadersGet = Callable[[bytes], "bytes | None"]


class _PathIndex:
    """The routes of one host group, indexed by path."""

    __slots__ = ("exact", "prefixes", "lengths", "regexes")

    def __init__(self) -> None:
        self.exact: dict[bytes, list[int]] = {}
        self.prefixes: dict[bytes, list[int]] = {}
        self.lengths: list[int] = []  # distinct prefix lengths, ascending
        self.regexes: list[tuple[int, re.Pattern[bytes]]] = []  # ascending route index

    def add(self, index: int, path: dict) -> None:
        value = path["value"].encode()
        if path["type"] == "exact":
            self.exact.setdefault(value, []).append(index)
        elif path["type"] == "prefix":
            self.prefixes.setdefault(value, []).append(index)
        else:
            self.regexes.append((index, re.compile(value)))

    def freeze(self) -> None:
        self.lengths = sorted({len(prefix) for prefix in self.prefixes})

    def literal_candidates(self, path: bytes, out: list[int]) -> None:
        """Append the indices whose exact or prefix path matches ``path``."""
        found = self.exact.get(path)
        if found:
            out += found
        prefixes = self.prefixes
        size = len(path)
        for length in self.lengths:
            if length > size:
                break
            found = prefixes.get(path[:length])
            if found:
                out += found


def _host_key(host: bytes) -> bytes:
    """``Example.COM:8080`` -> ``example.com``; ``[::1]:80`` -> ``[::1]``."""
    host = host.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(b":")
    if colon != -1:
        host = host[:colon]
    return host[:-1] if host.endswith(b".") else host


class Router:
    """Maps a request to the target of the first matching route."""

    __slots__ = ("_targets", "_any", "_exact_hosts", "_suffixes", "_checks")

    def __init__(self, routes: list[dict], targets: list) -> None:
        """``routes`` is the normalised ``routes`` config list; ``targets[i]`` is returned for ``routes[i]``."""
        if len(routes) != len(targets):
            raise ValueError("routes and targets differ in length")
        self._targets = list(targets)
        self._any: _PathIndex | None = None
        self._exact_hosts: dict[bytes, _PathIndex] = {}
        self._suffixes: dict[bytes, _PathIndex] = {}  # "*.example.com" -> b".example.com"
        # Per route: None when path and host decide alone, else (methods or None, ((name, value), ...)).
        self._checks: list[tuple[frozenset[bytes] | None, tuple[tuple[bytes, bytes], ...]] | None] = []
        for index, route in enumerate(routes):
            match = route["match"]
            host = match["host"]
            if host is None:
                if self._any is None:
                    self._any = _PathIndex()
                group = self._any
            elif host.startswith("*."):
                group = self._suffixes.setdefault(host[1:].encode(), _PathIndex())
            else:
                group = self._exact_hosts.setdefault(host.encode(), _PathIndex())
            group.add(index, match["path"])
            methods = match["methods"]
            headers = tuple((name.encode(), value.encode()) for name, value in match["headers"].items())
            if methods is None and not headers:
                self._checks.append(None)
            else:
                allowed = None if methods is None else frozenset(method.encode() for method in methods)
                self._checks.append((allowed, headers))
        for group in (self._any, *self._exact_hosts.values(), *self._suffixes.values()):
            if group is not None:
                group.freeze()

    def match(self, method: bytes, host: bytes, path: bytes, headers_get: HeadersGet) -> object | None:
        """The target of the first route matching the request, or None.

        ``host`` is the raw Host header (any case, maybe with a port), ``path`` excludes the
        query, ``headers_get(lower_case_name)`` returns a header's value or None.
        """
        groups = [] if self._any is None else [self._any]
        if host and (self._exact_hosts or self._suffixes):
            key = _host_key(host)
            group = self._exact_hosts.get(key)
            if group is not None:
                groups.append(group)
            if self._suffixes:
                dot = key.find(b".")
                while dot != -1:
                    group = self._suffixes.get(key[dot:])
                    if group is not None:
                        groups.append(group)
                    dot = key.find(b".", dot + 1)
        candidates: list[int] = []
        for group in groups:
            group.literal_candidates(path, candidates)
        if len(candidates) > 1:
            candidates.sort()
        checks = self._checks
        best = len(checks)
        for index in candidates:
            check = checks[index]
            if check is None or _passes(check, method, headers_get):
                best = index
                break
        for group in groups:
            for index, regex in group.regexes:
                if index >= best:
                    break
                if regex.search(path) is not None:
                    check = checks[index]
                    if check is None or _passes(check, method, headers_get):
                        best = index
                        break
        return self._targets[best] if best < len(checks) else None


def _passes(
    check: tuple[frozenset[bytes] | None, tuple[tuple[bytes, bytes], ...]],
    method: bytes,
    headers_get: HeadersGet,
) -> bool:
    methods, headers = check
    if methods is not None and method not in methods:
        return False
    for name, value in headers:
        if headers_get(name) != value:
            return False
    return True

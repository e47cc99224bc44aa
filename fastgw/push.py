"""``fastgw push``: validate a config locally, then publish it to a running gateway.

Local validation first means a typo is reported with its field path without a round
trip, and a broken file never reaches the admin API. The raw file text is sent (not the
normalised dict), so ``${VAR}`` secrets are resolved by the gateway from its own
environment and never travel in the request.

With ``--redis`` the config goes to every node of a cluster at once (see
``workers/cluster.py``); nodes validate it again and keep their running config if it fails.

The admin token (``admin.token`` of the running gateway) comes from ``--token`` or the
``FASTGW_ADMIN_TOKEN`` environment variable and travels as ``Authorization: Bearer``.

Exit codes: 0 pushed, 1 invalid config (local or server-side, or refused as unbuildable),
2 cannot push (admin or Redis unreachable, or the token refused).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
from urllib.parse import urlsplit

DEFAULT_ADMIN = "http://127.0.0.1:9901"
TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastgw push`` (the CLI owns the sub-command itself)."""
    parser.add_argument("-c", "--config", required=True, help="config file to push (YAML or JSON)")
    parser.add_argument(
        "--admin", default=DEFAULT_ADMIN, help=f"admin API URL, or unix:/path of its socket (default {DEFAULT_ADMIN})"
    )
    parser.add_argument("--redis", help="push to every node of a cluster through Redis (redis://...)")
    parser.add_argument(
        "--token", help="the admin API's bearer token (default: the FASTGW_ADMIN_TOKEN environment variable)"
    )


def admin_headers(token: str | None, content_type: str | None = None) -> dict[str, str]:
    """Headers of an admin API call: the bearer token if there is one, and the body's type."""
    token = token if token is not None else os.environ.get("FASTGW_ADMIN_TOKEN") or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return headers | ({"Content-Type": content_type} if content_type else {})


def _fail(message: str, code: int) -> int:
    print(f"fastgw push: {message}", file=sys.stderr)
    return code


def main_from_args(args: argparse.Namespace) -> int:
    """Run ``fastgw push`` with parsed ``args``; returns the exit code."""
    from fastgw.config import ConfigError, load_text

    try:
        with open(args.config, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read {args.config}: {exc}", 1)
    try:
        load_text(text, args.config)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.errors)} error(s), nothing pushed", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1

    if args.redis:
        return _push_to_cluster(args.redis, text, args.config)
    try:
        status, reason, raw = _post_config(args.admin, text.encode(), admin_headers(args.token, "application/yaml"))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return _fail(f"cannot reach the admin API at {args.admin}: {exc}", 2)
    if status != 200:
        return _server_error(status, reason, raw)
    try:
        result = json.loads(raw)
    except ValueError:
        return _fail(f"the admin API at {args.admin} answered 200 without JSON", 2)
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"pushed {args.config}: generation {result['generation']}")
    return 0


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the admin API's Unix socket (``admin: {socket: PATH}``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _post_config(admin: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """``POST /config`` to ``admin`` (``http(s)://host:port[/prefix]`` or ``unix:/path``)."""
    if admin.startswith("unix:"):
        conn: http.client.HTTPConnection = _UnixConnection(admin.removeprefix("unix:"), TIMEOUT)
        path = "/config"
    else:
        parts = urlsplit(admin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host:port or unix:/path")
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = connection(parts.hostname, parts.port, timeout=TIMEOUT)
        path = parts.path.rstrip("/") + "/config"
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, response.reason, response.read()
    finally:
        conn.close()


def _push_to_cluster(url: str, text: str, source: str) -> int:
    """Store the config as the cluster's next version; every node's supervisor applies it."""
    from redis.exceptions import RedisError

    from fastgw.cluster import publish

    try:
        version = publish(url, text, source)
    except RedisError as exc:
        return _fail(f"cannot reach Redis at {url.split('@')[-1]}: {exc}", 2)
    print(f"pushed {source} to the cluster: config version {version} (every node with this redis applies it)")
    return 0


def _server_error(status: int, reason: str, raw: bytes) -> int:
    """Print what the gateway said; 400/413 reject the config and 409 its build (1), anything
    else the push (2)."""
    try:
        error = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return _fail(f"admin API answered {status} {reason}", 2)
    errors = error.get("errors") or []
    print(f"fastgw push: rejected by the gateway ({status}): {error.get('message')}", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)
    return 1 if status in (400, 409, 413) else 2

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
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_ADMIN = "http://127.0.0.1:9901"
TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastgw push`` (the CLI owns the sub-command itself)."""
    parser.add_argument("-c", "--config", required=True, help="config file to push (YAML or JSON)")
    parser.add_argument("--admin", default=DEFAULT_ADMIN, help=f"admin API URL (default {DEFAULT_ADMIN})")
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
    url = args.admin.rstrip("/") + "/config"
    request = urllib.request.Request(
        url, data=text.encode(), method="POST", headers=admin_headers(args.token, "application/yaml")
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            result = json.load(response)
    except urllib.error.HTTPError as exc:
        return _server_error(exc)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return _fail(f"cannot reach the admin API at {args.admin}: {reason}", 2)
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"pushed {args.config}: generation {result['generation']}")
    return 0


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


def _server_error(exc: urllib.error.HTTPError) -> int:
    """Print what the gateway said; 400/413 reject the config and 409 its build (1), anything
    else the push (2)."""
    try:
        error = json.load(exc)["error"]
    except (ValueError, KeyError, TypeError):
        return _fail(f"admin API answered {exc.code} {exc.reason}", 2)
    errors = error.get("errors") or []
    print(f"fastgw push: rejected by the gateway ({exc.code}): {error.get('message')}", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)
    return 1 if exc.code in (400, 409, 413) else 2

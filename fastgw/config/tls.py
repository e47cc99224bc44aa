"""``listen.tls``: TLS termination on the listener.

``listen: {address: 0.0.0.0:443, tls: {certificates: [{hosts: [api.example.com, "*.example.com"],
cert: /etc/fastgw/api.pem, key: /etc/fastgw/api.key}], min_version: "1.2", alpn: [http/1.1]}}``

- ``certificates``: one or more; SNI picks the first whose ``hosts`` match (exact, or ``*.``
  for one label); the first answers clients without SNI. ``cert`` is a PEM chain, ``key``
  its private key; each pair is loaded here, so an unreadable or mismatched file is a check
  error with its field path, and again by each generation (a push re-reads the files).
- ``min_version``: ``"1.2"`` (default) or ``"1.3"``; older versions are never offered.
- ``alpn``: ``[http/1.1]`` (the only protocol served).
- ``session_tickets``: ``{rotate: 1h, key_file: PATH}`` (default ``{rotate: 1h}``) or ``false``.
  Every worker of the node opens every worker's tickets (fastgw.server.tickets); keys rotate
  each ``rotate`` and a ticket stays good for one rotation more. ``key_file`` (32+ random
  bytes, e.g. ``openssl rand 80``) shares the keys with other nodes that read the same file;
  without it each start makes a fresh random seed. ``false`` turns resumption by ticket off.

Certificates swap on a push; turning TLS on or off needs a restart (the listener is bound
at start).

Normalised: ``{certificates: [{hosts, cert, key}], min_version, alpn, session_tickets: {rotate, key_file}
| None}`` with absolute paths.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

from fastgw.config.fields import Issues, duration, join, mapping, one_of, sequence, text, text_list

TLS_KEYS = ("certificates", "min_version", "alpn", "session_tickets")
TICKET_KEYS = ("rotate", "key_file")
MIN_SEED = 32
CERT_KEYS = ("hosts", "cert", "key")
_HOST = re.compile(r"(\*\.)?([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}\Z")


def tls_section(value: Any, issues: Issues) -> dict | None:
    if value is None:
        return None
    given = mapping(value, "listen.tls", issues, TLS_KEYS) or {}
    out: dict[str, Any] = {
        "min_version": one_of("1.2", "1.3")(str(given.get("min_version", "1.2")), "listen.tls.min_version", issues),
        "alpn": text_list(given.get("alpn", ["http/1.1"]), "listen.tls.alpn", issues),
        "certificates": [],
        "session_tickets": _session_tickets(given.get("session_tickets", {}), issues),
    }
    for protocol in out["alpn"]:
        if protocol != "http/1.1":
            issues.add("listen.tls.alpn", f"only http/1.1 is served, not {protocol!r}")
    entries = sequence(given.get("certificates"), "listen.tls.certificates", issues) or []
    if not entries and "certificates" in given:
        issues.add("listen.tls.certificates", "needs at least one certificate")
    elif "certificates" not in given:
        issues.add("listen.tls.certificates", "is required")
    for i, entry in enumerate(entries):
        path = f"listen.tls.certificates[{i}]"
        spec = _certificate(entry, path, issues)
        if spec is not None:
            out["certificates"].append(spec)
    return out


def _session_tickets(value: Any, issues: Issues) -> dict | None:
    path = "listen.tls.session_tickets"
    if value is False:
        return None
    given = mapping(value, path, issues, TICKET_KEYS) or {}
    rotate = duration()(given["rotate"], join(path, "rotate"), issues) if "rotate" in given else 3600.0
    out = {"rotate": rotate, "key_file": None}
    if rotate is not None and rotate < 1:
        issues.add(join(path, "rotate"), "must be at least 1s")
    if "key_file" in given:
        name = text(given["key_file"], join(path, "key_file"), issues)
        if name is not None:
            out["key_file"] = os.path.abspath(name)
            try:
                with open(out["key_file"], "rb") as handle:
                    size = len(handle.read(MIN_SEED))
            except OSError as exc:
                issues.add(join(path, "key_file"), f"cannot read {out['key_file']}: {exc.strerror}")
            else:
                if size < MIN_SEED:
                    issues.add(join(path, "key_file"), f"needs at least {MIN_SEED} random bytes, found {size}")
    return out


def _certificate(value: Any, path: str, issues: Issues) -> dict | None:
    given = mapping(value, path, issues, CERT_KEYS)
    if given is None:
        return None
    hosts = text_list(given.get("hosts", []), join(path, "hosts"), issues)
    for host in hosts:
        if not _HOST.match(host):
            issues.add(join(path, "hosts"), f"{host!r} is not a host name (or *.domain)")
    files = {}
    for key in ("cert", "key"):
        name = text(given.get(key), join(path, key), issues) if key in given else None
        if key not in given:
            issues.add(join(path, key), "is required")
        elif name is not None:
            files[key] = os.path.abspath(name)
            if not os.access(files[key], os.R_OK):
                issues.add(join(path, key), f"cannot read {files[key]}")
    if len(files) < 2 or any(not os.access(f, os.R_OK) for f in files.values()):
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files["cert"], files["key"])
    except (ssl.SSLError, OSError) as exc:
        issues.add(join(path, "cert"), f"cannot load the certificate and key: {exc.strerror or exc}")
        return None
    return {"hosts": hosts, "cert": files["cert"], "key": files["key"]}

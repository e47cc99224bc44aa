"""TLS session tickets: a ticket one worker issued resumes on any worker of the node (even one
forked after the issuer died), on another node reading the same ``key_file``, and no longer once
its key has rotated out. Resumption is read from the client's ``session_reused``."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
import urllib.request

import pytest
import yaml

from tests.e2e.test_tls import EchoUpstream, make_certificate, tls_listen
from tests.support.gateway import ROOT, Gateway

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client(version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def connect(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[bool, ssl.SSLSession]:
    """One request over a new TLS connection: (was the session resumed, the session to resume next).
    TLS 1.3 sends its ticket after the handshake, so a request and its answer come first."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="api.example.test", session=session) as sock:
        sock.sendall(b"GET /api/x HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        return sock.session_reused, sock.session


def resumed_handshakes(gw: Gateway, at_least: int = 6, timeout: float = 10.0) -> float:
    """``fastgw_tls_handshakes_total{resumed="true"}`` once it reaches ``at_least`` (or the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"{gw.admin}/metrics", headers=gw.admin_headers())
        metrics = urllib.request.urlopen(request, timeout=10).read().decode()
        found = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith('fastgw_tls_handshakes_total{resumed="true"}'))
        if found >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def tls_config(tmp_path, upstream, tickets: dict | None = None) -> tuple[dict, dict]:
    cert, key, _ = make_certificate(tmp_path, "api", ["api.example.test"])
    listen = tls_listen([(["api.example.test"], cert, key)])
    if tickets is not None:
        listen["tls"]["session_tickets"] = tickets
    return {"routes": [{"match": {"path": "/api"}, "upstream": upstream.url}]}, listen


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_a_ticket_resumes_on_every_worker_and_on_workers_forked_after_its_issuer_died(tmp_path, version):
    upstream = EchoUpstream()
    routes, listen = tls_config(tmp_path, upstream)
    gw = Gateway(routes, tmp_path, workers=2, listen_options=listen)
    try:
        ctx = client(version)
        reused, ticket = connect(gw.port, ctx)
        assert not reused
        # SO_REUSEPORT spreads new connections over both workers: every one resumes.
        resumed = [connect(gw.port, ctx, ticket)[0] for _ in range(12)]
        assert all(resumed), resumed
        served = {w["pid"] for w in gw.status()["workers"]}
        assert len(served) == 2
        for pid in served:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and ({w["pid"] for w in gw.status()["workers"]} & served
                                               or len(gw.status()["workers"]) < 2):
            time.sleep(0.1)
        gw.wait_ready(2, timeout=30)
        assert not {w["pid"] for w in gw.status()["workers"]} & served
        # no process that issued the ticket is alive, and still it resumes
        assert all(connect(gw.port, ctx, ticket)[0] for _ in range(6))
        assert resumed_handshakes(gw) >= 6  # workers publish their counters each heartbeat
    finally:
        gw.stop()
        upstream.server.shutdown()


def test_nodes_that_read_one_key_file_resume_each_others_tickets(tmp_path):
    upstream = EchoUpstream()
    key_file = tmp_path / "tickets.key"
    key_file.write_bytes(os.urandom(80))
    routes, listen = tls_config(tmp_path, upstream, {"key_file": str(key_file)})
    lone_routes, lone_listen = tls_config(tmp_path, upstream)  # its own random seed
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    first = Gateway(routes, tmp_path / "a", workers=1, listen_options=listen)
    second = Gateway(routes, tmp_path / "b", workers=1, listen_options=listen)
    lone = Gateway(lone_routes, tmp_path / "c", workers=1, listen_options=lone_listen)
    try:
        ctx = client("1.3")
        _, ticket = connect(first.port, ctx)
        assert connect(second.port, ctx, ticket)[0]
        assert not connect(lone.port, ctx, ticket)[0]  # another seed: a full handshake, not an error
    finally:
        for gw in (first, second, lone):
            gw.stop()
        upstream.server.shutdown()


def test_a_ticket_stops_resuming_once_its_key_has_rotated_out(tmp_path):
    upstream = EchoUpstream()
    routes, listen = tls_config(tmp_path, upstream, {"rotate": "1s"})
    gw = Gateway(routes, tmp_path, workers=2, listen_options=listen)
    try:
        ctx = client("1.2")  # TLS 1.2 clients offer a ticket without checking its age
        _, ticket = connect(gw.port, ctx)
        assert connect(gw.port, ctx, ticket)[0]
        time.sleep(2.5)  # two rotations later: neither the current nor the previous key
        reused, fresh = connect(gw.port, ctx, ticket)
        assert not reused
        assert connect(gw.port, ctx, fresh)[0]  # the full handshake gave a ticket of the current key
    finally:
        gw.stop()
        upstream.server.shutdown()


def test_check_names_a_bad_ticket_key_file_and_rotation(tmp_path):
    import subprocess
    import sys

    upstream = EchoUpstream()
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 10)
    try:
        for tickets, expected in (
            ({"key_file": str(short)}, "listen.tls.session_tickets.key_file: needs at least 32 random bytes, found 10"),
            ({"key_file": str(tmp_path / "missing.key")}, "listen.tls.session_tickets.key_file: cannot read"),
            ({"rotate": "0.5s"}, "listen.tls.session_tickets.rotate: must be at least 1s"),
            ({"every": "1h"}, "listen.tls.session_tickets"),
        ):
            routes, listen = tls_config(tmp_path, upstream, tickets)
            path = tmp_path / "gateway.yaml"
            path.write_text(yaml.safe_dump({**routes, "listen": {"address": "127.0.0.1:0", **listen}}))
            done = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode != 0 and expected in done.stdout + done.stderr, (tickets, done.stdout, done.stderr)
    finally:
        upstream.server.shutdown()


def test_the_plain_http_listener_redirects_to_the_tls_one(tmp_path):
    from tests.support.gateway import free_port

    upstream = EchoUpstream()
    routes, listen = tls_config(tmp_path, upstream)
    plain = free_port()
    gw = Gateway(routes, tmp_path, workers=2, listen_options={**listen, "redirect": f"127.0.0.1:{plain}"})

    def ask(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", plain), timeout=10) as sock:
            sock.sendall(head)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer

    try:
        answer = ask(b"GET /api/x?q=1 HTTP/1.1\r\nHost: api.example.test:%d\r\n\r\n" % plain)
        assert answer.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n"), answer
        assert b"\r\nLocation: https://api.example.test:%d/api/x?q=1\r\n" % gw.port in answer
        absolute = ask(b"POST http://api.example.test/api/y HTTP/1.1\r\nHost: other\r\nContent-Length: 3\r\n\r\nabc")
        assert b"\r\nLocation: https://api.example.test:%d/api/y\r\n" % gw.port in absolute
        for bad in (b"GET /api HTTP/1.1\r\n\r\n",  # no Host
                    b"GET /api HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                    b"GET /api HTTP/1.1\r\nHost: evil.test/\"><x\r\n\r\n",
                    b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 9000 + b"\r\n\r\n"):
            assert ask(bad).startswith(b"HTTP/1.1 400 "), bad[:60]
        # the Location it gives leads to the TLS listener, which serves the request
        ctx = client("1.3")
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="api.example.test") as tls:
            tls.sendall(b"GET /api/x?q=1 HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        gw.stop()
        upstream.server.shutdown()


def test_check_refuses_a_redirect_without_tls(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"listen": {"address": "127.0.0.1:0", "redirect": {"address": "127.0.0.1:0",
                                                                                     "status": 200}}}))
    done = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "listen.redirect: needs listen.tls" in out and "listen.redirect.status: expected 301" in out, out

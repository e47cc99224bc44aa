"""TLS termination on the listener: SNI picks the certificate, a push swaps certificates for
new connections while open ones keep theirs, only TLS 1.2+ is offered, the upstream is told
``X-Forwarded-Proto: https``, and ``fastgw check`` names unusable files by field path."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.gateway import Gateway


def make_certificate(directory: Path, name: str, hosts: list[str]) -> tuple[str, str, bytes]:
    """A self-signed certificate for ``hosts``: (cert path, key path, DER bytes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path), cert.public_bytes(serialization.Encoding.DER)


class EchoUpstream:
    """Answers every request with the forwarding headers it was sent."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"proto": self.headers.get("X-Forwarded-Proto")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def client_context(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test compares the certificate it is given instead
    if maximum is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = maximum
    return ctx


class TLSClient:
    """One keep-alive TLS connection: which certificate it got, and GET requests over it."""

    def __init__(self, port: int, server_name: str | None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = client_context().wrap_socket(raw, server_hostname=server_name)
        self.certificate = self.sock.getpeercert(binary_form=True)
        self.file = self.sock.makefile("rb")

    def get(self, path: str = "/api/x") -> dict:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: api.example.test\r\n\r\n".encode())
        status = self.file.readline()
        assert b" 200 " in status, status
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(self.file.read(length))

    def close(self) -> None:
        self.sock.close()


def tls_listen(certificates: list[tuple[list[str], str, str]]) -> dict:
    return {"tls": {"certificates": [{"hosts": hosts, "cert": cert, "key": key} for hosts, cert, key in certificates]}}


@pytest.mark.parametrize("pure", [False, True])
def test_sni_picks_the_certificate_and_a_push_swaps_it_for_new_connections_only(tmp_path, pure):
    upstream = EchoUpstream()
    a_cert, a_key, a_der = make_certificate(tmp_path, "a", ["api.example.test", "*.example.test"])
    b_cert, b_key, b_der = make_certificate(tmp_path, "b", ["other.test"])
    routes = {"routes": [{"match": {"path": "/api"}, "upstream": upstream.url}]}
    gw = Gateway(routes, tmp_path, workers=2, pure=pure,
                 listen_options=tls_listen([(["api.example.test", "*.example.test"], a_cert, a_key),
                                            (["other.test"], b_cert, b_key)]))
    try:
        assert TLSClient(gw.port, "api.example.test").certificate == a_der
        assert TLSClient(gw.port, "www.example.test").certificate == a_der  # the wildcard
        assert TLSClient(gw.port, "other.test").certificate == b_der
        assert TLSClient(gw.port, None).certificate == a_der  # no SNI: the first certificate
        assert TLSClient(gw.port, "unknown.test").certificate == a_der

        held = TLSClient(gw.port, "api.example.test")
        assert held.get() == {"proto": "https"}

        with pytest.raises(ssl.SSLError):  # TLS 1.1 is never offered
            socket_ = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            client_context(maximum=ssl.TLSVersion.TLSv1_1).wrap_socket(socket_, server_hostname="api.example.test")

        # The same path now holds a new certificate; the push re-reads it.
        _, _, new_der = make_certificate(tmp_path, "a", ["api.example.test", "*.example.test"])
        listen = {**gw.config["listen"], **tls_listen([(["api.example.test", "*.example.test"], a_cert, a_key),
                                                        (["other.test"], b_cert, b_key)])}
        status, body = gw.push({**routes, "listen": listen})
        assert status == 200, body
        gw.wait_ready(2, generation=body["generation"])
        for name in ("api.example.test", None):
            assert TLSClient(gw.port, name).certificate == new_der
        assert TLSClient(gw.port, "other.test").certificate == b_der
        # the connection opened before the push still works, on the certificate it shook hands with
        assert held.get() == {"proto": "https"} and held.certificate == a_der
        held.close()
    finally:
        assert gw.stop() == 0
        upstream.server.shutdown()


def test_check_names_unreadable_or_mismatched_certificate_files(tmp_path):
    cert, key, _ = make_certificate(tmp_path, "a", ["api.example.test"])
    other_cert, other_key, _ = make_certificate(tmp_path, "b", ["b.test"])
    config = {"listen": {"address": "127.0.0.1:8443", "tls": {"min_version": "1.0", "certificates": [
        {"hosts": ["api.example.test"], "cert": cert, "key": str(tmp_path / "missing.key")},
        {"hosts": ["bad host"], "cert": cert, "key": other_key},
    ]}}, "routes": [{"match": {"path": "/"}, "upstream": "http://127.0.0.1:9"}]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "fastgw", "check", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "listen.tls.certificates[0].key" in out and "missing.key" in out
    assert "listen.tls.certificates[1].cert" in out  # the key is not this certificate's
    assert "listen.tls.certificates[1].hosts" in out
    assert "listen.tls.min_version" in out


class BodyUpstream:
    """Answers a POST with its body, and ``GET /api/big?n=N`` with N bytes."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self._send(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self) -> None:  # noqa: N802
                self._send(bytes(range(256)) * (int(self.path.rsplit("=", 1)[1]) // 256))

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def read_answer(file) -> bytes:
    status = file.readline()
    assert b" 200 " in status, status
    length = 0
    while (line := file.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return file.read(length)


@pytest.mark.parametrize("pure", [False, True])
def test_large_bodies_keep_alive_and_close_notify_over_tls(tmp_path, pure):
    """Bodies of many TLS records both ways, a slow reader (the gateway's writes pause and resume),
    many requests on one connection, and a client's close_notify: through fastgw's TLS layer."""
    upstream = BodyUpstream()
    cert, key, _ = make_certificate(tmp_path, "a", ["api.example.test"])
    gw = Gateway({"routes": [{"match": {"path": "/api"}, "upstream": upstream.url}]}, tmp_path, pure=pure,
                 listen_options=tls_listen([(["api.example.test"], cert, key)]))
    try:
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        sock = client_context().wrap_socket(raw, server_hostname="api.example.test")
        file = sock.makefile("rb")
        body = bytes(range(251)) * 8000  # ~2 MB: ~120 records each way
        sock.sendall(b"POST /api/echo HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert read_answer(file) == body
        for n in range(30):
            sock.sendall(b"GET /api/big?n=%d HTTP/1.1\r\nHost: api.example.test\r\n\r\n" % (256 * (n + 1)))
            assert read_answer(file) == bytes(range(256)) * (n + 1)
        sock.sendall(b"GET /api/big?n=8388608 HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
        status = file.readline()
        assert b" 200 " in status
        while file.readline() not in (b"\r\n", b""):
            pass
        got = 0
        while got < 8388608:  # slowly at first: the gateway's socket buffer fills and it must wait
            chunk = file.read(min(65536, 8388608 - got))
            assert chunk
            got += len(chunk)
            if got < 1 << 20:
                time.sleep(0.01)
        file.close()
        clear = sock.unwrap()  # close_notify: the gateway answers with its own and closes
        assert clear.recv(10) == b""
        clear.close()
    finally:
        assert gw.stop() == 0
        upstream.server.shutdown()

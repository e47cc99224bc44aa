"""Edge rows beside nginx, one pinned worker each: HTTPS relays and new TLS handshakes, and the
WAF (the OWASP CRS in libmodsecurity) on a plain route.

    python bench/edge.py [--duration 5] [--rows https,handshakes,waf]

Same method as bench/run.py: the proxy (fastgw or nginx) pinned to its own core, wrk and the
pre-built upstream on the other; req/s and CPU µs per request of the proxy's whole process
group, fastgw / nginx as the ratio. Both terminate TLS with the same ECDSA P-256 certificate,
TLS 1.2+ and ECDHE+AEAD suites; `handshakes` sends `Connection: close`, so every request is a
full handshake (wrk never resumes a session). `waf` runs the same rule text in both (fastgw's
generated CRS config, loaded by nginx's ModSecurity connector when it is installed:
Debian's libnginx-mod-http-modsecurity).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import bodies
import targets
import wrk

sys.path.insert(0, str(targets.REPO_ROOT))
from fastgw.waf import rules_text  # noqa: E402  (the repository's own package, for the WAF rule text)

MODSEC_MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
ROWS = ("https", "handshakes", "waf")
CONNECTIONS = {"https": 64, "handshakes": 16, "waf": 64}


def certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "bench.pem", directory / "bench.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


NGINX_SERVER = """
    server {{
        listen {host}:{port}{ssl} reuseport backlog=4096;
        {tls}
        {waf}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
"""


def nginx_conf(prefix: Path, port: int, upstream_port: int, tls: tuple[Path, Path] | None,
               waf_rules: Path | None) -> str:
    base = targets.render_nginx_conf("nginx.conf.tmpl", prefix, 1, port, upstream_port=upstream_port, gzip="")
    tls_lines = ""
    if tls is not None:
        tls_lines = (f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3; "
                     "ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20; ssl_prefer_server_ciphers on; "
                     "ssl_session_cache off; ssl_session_tickets off;")
    waf_lines = f"modsecurity on; modsecurity_rules_file {waf_rules};" if waf_rules else ""
    server = NGINX_SERVER.format(host=targets.HOST, port=port, ssl=" ssl" if tls else "", tls=tls_lines, waf=waf_lines)
    head, _, _ = base.partition("    server {")
    text = head + server + "}\n"
    if waf_rules:
        text = f"load_module {MODSEC_MODULE};\n" + text
    return text


def fastgw_conf(port: int, admin_port: int, upstream_port: int, tls: tuple[Path, Path] | None, waf: bool) -> str:
    listen: dict = {"address": f"{targets.HOST}:{port}"}
    if tls is not None:
        listen["tls"] = {"certificates": [{"hosts": ["bench.test"], "cert": str(tls[0]), "key": str(tls[1])}]}
    route: dict = {"name": "upstream", "match": {"path": "/"}, "upstream": f"http://{targets.HOST}:{upstream_port}"}
    if waf:
        route["waf"] = {"rules": "crs", "paranoia": 1, "mode": "block"}
    return json.dumps({"listen": listen, "admin": f"{targets.HOST}:{admin_port}", "workers": 1, "routes": [route]})


def measure(proc: targets.Process, scheme: str, request: bodies.Request, connections: int,
            duration: float, pins: targets.Pinning) -> dict[str, object]:
    url = f"{scheme}://{targets.HOST}:{proc.info['port']}"
    wrk.run(url, request, connections, 1, 1, pins.prefix("load"))  # warm-up
    before = proc.cpu_seconds()
    result = wrk.run(url, request, connections, 1, duration, pins.prefix("load"))
    cpu = proc.cpu_seconds() - before
    requests = result.requests
    return {"rps": round(requests / result.seconds) if result.seconds else 0,
            "cpu_us_per_req": round(cpu / requests * 1e6, 1) if requests else None,
            "errors": result.errors, "p99_ms": result.p99_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", type=Path, default=targets.BENCH_DIR / "results")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    pins = targets.Pinning.detect()
    results: dict[str, dict[str, object]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="fastgw-edge-") as tmp:
        workdir = Path(tmp)
        tls = certificate(workdir)
        upstream = targets.start_upstream(workdir, pins, bodies.CHUNKS, stack)
        up_port = int(upstream.info["port"])
        json_request = bodies.PLAIN_REQUESTS["json"]
        plan = []
        if "https" in rows:
            plan.append(("https", tls, False, json_request))
        if "handshakes" in rows:
            plan.append(("handshakes", tls, False,
                         bodies.Request(json_request.path, json_request.body, {**json_request.headers, "Connection": "close"})))
        if "waf" in rows:
            plan.append(("waf", None, True, json_request))
        for row, row_tls, waf, request in plan:
            scheme = "https" if row_tls else "http"
            results[row] = {}
            rules_file = None
            if waf:
                rules_file = workdir / "waf.conf"
                rules_file.write_text(rules_text({"rules": "crs", "paranoia": 1, "mode": "block", "exclusions": [],
                                                  "body_limit": 10 * 1024 * 1024}))
            if not waf or MODSEC_MODULE.exists():
                port = targets.free_port()
                conf = nginx_conf(workdir / f"nginx-{row}", port, up_port, row_tls, rules_file)
                try:
                    nginx = targets._start_nginx(workdir, f"nginx-{row}", conf, port, pins.prefix("proxy"), stack,
                                                 {"workers": 1})
                    results[row]["nginx"] = measure(nginx, scheme, request, CONNECTIONS[row], args.duration, pins)
                    nginx.stop()
                except targets.TargetError as exc:
                    results[row]["nginx"] = {"error": str(exc)[:300]}
            else:
                results[row]["nginx"] = {"error": f"{MODSEC_MODULE} is not installed (libnginx-mod-http-modsecurity)"}
            gw = targets.start_gateway(workdir, f"fastgw-{row}",
                                       lambda port, admin, t=row_tls, w=waf: fastgw_conf(port, admin, up_port, t, w),
                                       1, pins, stack)
            results[row]["fastgw"] = measure(gw, scheme, request, CONNECTIONS[row], args.duration, pins)
            gw.stop()
            ours, theirs = results[row]["fastgw"].get("rps"), results[row]["nginx"].get("rps")
            results[row]["ratio"] = round(ours / theirs, 2) if ours and theirs else None
    print(f"{'row':<12}{'fastgw req/s':>14}{'µs/req':>9}{'nginx req/s':>14}{'µs/req':>9}{'ratio':>8}")
    for row, found in results.items():
        f, n = found.get("fastgw", {}), found.get("nginx", {})
        print(f"{row:<12}{f.get('rps', '-'):>14}{f.get('cpu_us_per_req', '-'):>9}"
              f"{n.get('rps', '-'):>14}{n.get('cpu_us_per_req', '-'):>9}{found.get('ratio') or '-':>8}")
        for side in ("fastgw", "nginx"):
            if "error" in found.get(side, {}):
                print(f"  {side}: {found[side]['error']}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"edge-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"pinning": {"proxy": pins.proxy, "load": pins.load}, "rows": results}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

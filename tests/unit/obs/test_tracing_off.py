"""Without a ``tracing`` section the tracing stack is never loaded and no request gets a trace.

(redis-py may load parts of OpenTelemetry's metrics API for its own observability when the
package is installed: only the trace SDK, the exporter and our tracing modules are checked.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from tests.support.harness import Client, Services

    async def main():
        services = Services({"providers": [{"name": "mock", "type": "mock"}],
                             "models": [{"name": "m", "targets": [{"provider": "mock"}]}]}, asyncio.get_running_loop())
        client = Client(services)
        client.request("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        ok = await client.response()
        client.request("POST", "/v1/chat/completions", {"model": "m", "messages": []})
        refused = await client.response()
        services.close()
        print(ok.status, refused.status, "x-request-id" in refused.headers, "x-request-id" in ok.headers)
        tracing = ("fastgw.obs.tracing", "fastgw.filters.trace", "opentelemetry.sdk.trace", "opentelemetry.exporter")
        print(sorted(m for m in sys.modules if m.startswith(tracing)))

    asyncio.run(main())
""")


def test_no_tracing_section_loads_no_sdk_and_builds_no_trace_filter() -> None:
    found = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    statuses, modules = found.stdout.splitlines()
    assert statuses == "200 400 True False"  # an id on the error answer only
    assert modules == "[]"

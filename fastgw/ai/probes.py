"""Active health checks: a worker probes providers that ask for it (``health_check``).

Passive health (breakers) only learns from requests that fail; a probe learns before any
client pays for it, and notices a recovery without risking a client request. Each probe
is the adapter's cheap call (the model list); an answer below 500 means "up". A provider
probed down is skipped by every exchange until a probe sees it up again, which also
closes its open breakers.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

from fastgw.ai.attempts import request_bytes
from fastgw.ai.frontdoor import AIFrontDoor, ProviderRuntime
from fastgw.config.secrets import SCRUBBER


class HealthProber:
    """One probing task per provider with ``health_check``, reconfigured per generation."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.providers: dict[str, ProviderRuntime] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def configure(self, door: AIFrontDoor | None) -> None:
        wanted = {}
        if door is not None:
            wanted = {n: p for n, p in door.providers.items() if p.health_check is not None and p.mock is None}
        for name in list(self.tasks):
            if name not in wanted:
                self.tasks.pop(name).cancel()
        self.providers = wanted
        for name in wanted:
            if name not in self.tasks:
                self.tasks[name] = self.loop.create_task(self._run(name))

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    async def _run(self, name: str) -> None:
        while (provider := self.providers.get(name)) is not None:
            check = provider.health_check
            provider.probed(await probe(provider, check["timeout"]))
            await asyncio.sleep(check["interval"])


async def probe(provider: ProviderRuntime, timeout: float) -> bool:
    """True when the provider answered the probe with a status below 500 within ``timeout``."""
    index = provider.keys.pick()
    call = provider.adapter.probe(provider.keys.key(index) if index is not None else None)
    call.headers.append((b"connection", b"close"))
    adapter = provider.adapter
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                adapter.host,
                adapter.port,
                ssl=ssl.create_default_context() if adapter.scheme == "https" else None,
            ),
            timeout,
        )
        writer.write(request_bytes(call, provider.host_header))
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        return int(status_line.split()[1]) < 500
    except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
        sys.stderr.write(SCRUBBER(f"fastgw: health probe of provider '{provider.name}' failed: {exc!r}\n"))
        return False
    finally:
        if writer is not None:
            writer.close()

"""Active health checks of providers that ask for it (``health_check``), once per node.

Passive health (breakers) only learns from requests that fail; a probe learns before any
client pays for it, and notices a recovery without risking a client request. Each probe
is the adapter's cheap call (the model list); an answer below 500 means "up". A provider
probed down is skipped by every exchange until a probe sees it up again, which also
closes its open breakers.

One worker probes for the node (slot 0, which the supervisor respawns if it dies), as the
supervisor does for plain endpoints: N workers probing would multiply the probes by N. It
writes each verdict into the node's endpoint table (record ``provider:<name>``, registered by
the supervisor); the other workers follow the record. A follower that finds no verdict yet (the
node just started) probes once itself, so no worker serves its first requests blind. Without a
shared record (a trial build, a full table) a worker probes on its own, as before.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time

from fastgw.ai.attempts import request_bytes
from fastgw.ai.frontdoor import AIFrontDoor, ProviderRuntime
from fastgw.config.secrets import SCRUBBER
from fastgw.proxy.endpoint_table import HEALTH_UNKNOWN, HEALTHY, PROVIDER_PREFIX, UNHEALTHY, EndpointTable

FOLLOW_INTERVAL = 0.1
"""How often a following worker reads the node's verdict (one record read)."""


class HealthProber:
    """One task per provider with ``health_check``, reconfigured per generation: a probing one
    in the node's prober (``probes_for_node``), a following one elsewhere."""

    def __init__(self, loop: asyncio.AbstractEventLoop, table: EndpointTable | None = None,
                 probes_for_node: bool = True) -> None:
        self.loop = loop
        self.table = table
        self.probes_for_node = probes_for_node
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
                record = self.table.find(PROVIDER_PREFIX + name) if self.table is not None else None
                if record is not None and not self.probes_for_node:
                    self.tasks[name] = self.loop.create_task(self._follow(name, record))
                else:
                    self.tasks[name] = self.loop.create_task(self._run(name, record))

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    async def _run(self, name: str, record: int | None) -> None:
        while (provider := self.providers.get(name)) is not None:
            check = provider.health_check
            healthy = await probe(provider, check["timeout"])
            provider.probed(healthy)
            if record is not None:
                self.table.set_health(record, HEALTHY if healthy else UNHEALTHY, time.monotonic(),
                                      failed_check=not healthy)
            await asyncio.sleep(check["interval"])

    async def _follow(self, name: str, record: int) -> None:
        applied = HEALTH_UNKNOWN
        while (provider := self.providers.get(name)) is not None:
            verdict = self.table.read(record).health
            if verdict == HEALTH_UNKNOWN:
                if applied == HEALTH_UNKNOWN:  # none yet: probe once rather than serve blind
                    healthy = await probe(provider, provider.health_check["timeout"])
                    provider.probed(healthy)
                    applied = -1  # probed on our own; the node's verdict takes over when it comes
            elif verdict != applied:
                provider.probed(verdict == HEALTHY)
                applied = verdict
            await asyncio.sleep(FOLLOW_INTERVAL)


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

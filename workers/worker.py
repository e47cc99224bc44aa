"""A worker process: one uvloop event loop serving one listener.

The worker reads config generations from shared memory (checked per new request and on
a 100 ms tick, so idle workers pick up a push too), reports a heartbeat and its counters
from inside the event loop (a stalled loop stops the heartbeat, which is the point), and
on SIGTERM stops accepting, lets in-flight exchanges finish up to the drain timeout,
then exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from typing import NoReturn

from fastgw.obs.accesslog import AccessLog
from fastgw.obs.metrics import GATEWAY
from workers.exitcodes import WORKER_BOOT_ERROR, WORKER_CONFIG_ERROR
from workers.shm import STATE_BOOTING, STATE_DRAINING, STATE_READY, ControlBlock

TICK = 0.1
"""How often an idle worker looks for a new generation and writes its heartbeat."""
SWEEP_INTERVAL = 5.0
"""How often expired idle upstream connections are closed."""


def log(message: str) -> None:
    sys.stderr.write(f"fastgw worker {os.getpid()}: {message}\n")
    sys.stderr.flush()


class Worker:
    """State shared by all connections of this process."""

    def __init__(self, slot: int, sock: socket.socket, control: ControlBlock, heartbeat_interval: float) -> None:
        from fastgw.ai.health import ProviderHealth
        from fastgw.generation import Generation
        from fastgw.proxy.upstream import PoolSet

        self.slot = slot
        self.sock = sock
        self.control = control
        self.tick = min(TICK, heartbeat_interval)
        self.loop = asyncio.get_event_loop()
        self.pools = PoolSet(self.loop)
        self.provider_health = ProviderHealth()  # key cool-downs and breakers outlive generations
        self.started = time.monotonic()
        self.connections: set = set()
        self.requests_total = 0
        self.active_requests = 0
        self.upstream_errors = 0
        self.rejected = 0
        self.state = STATE_BOOTING
        self._ticks = 0
        self._stopping: asyncio.Event | None = None
        snapshot = control.read()
        if snapshot is None:
            raise RuntimeError("no config generation published")
        self.seq, _, blob = snapshot
        self._generation_cls = Generation
        self.generation = Generation.from_blob(blob, self.pools, self.provider_health)
        self.prober = None  # started with the loop, in serve()
        self.access_log = AccessLog(self.generation.config["log"]["access"], worker=slot)

    # -- generations -----------------------------------------------------------------

    def current_generation(self):
        """The generation new requests use; loads a newly published one first."""
        if self.control.seq != self.seq:
            self._load_published()
        return self.generation

    def _load_published(self) -> None:
        snapshot = self.control.read()
        if snapshot is None:
            return
        seq, number, blob = snapshot
        self.seq = seq
        if number == self.generation.number:
            return
        try:
            self.generation = self._generation_cls.from_blob(blob, self.pools, self.provider_health)
            if self.prober is not None:
                self.prober.configure(self.generation.ai)
            self.access_log.configure(self.generation.config["log"]["access"])
        except Exception as exc:  # the supervisor validated it; keep serving the old one
            log(f"cannot load generation {number}, still serving {self.generation.number}: {exc!r}")

    # -- counters (called by connections) ------------------------------------------------

    def connection_opened(self, conn) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn) -> None:
        self.connections.discard(conn)

    def request_started(self) -> None:
        self.requests_total += 1
        self.active_requests += 1

    def request_finished(self) -> None:
        self.active_requests -= 1

    # -- lifecycle ------------------------------------------------------------------------

    def _write_record(self) -> None:
        self.control.write_record(
            self.slot,
            pid=os.getpid(),
            generation=self.generation.number,
            heartbeat=time.monotonic(),
            started=self.started,
            requests_total=self.requests_total,
            active_requests=self.active_requests,
            connections=len(self.connections),
            state=self.state,
        )

    def _tick(self) -> None:
        if self.control.seq != self.seq:
            self._load_published()
        self._ticks += 1
        if self._ticks % max(1, round(SWEEP_INTERVAL / self.tick)) == 0:
            self.pools.sweep()
        self._write_record()
        GATEWAY.registry.publish()  # at most once a second: the admin API sums all workers' snapshots
        self.loop.call_later(self.tick, self._tick)

    async def serve(self) -> None:
        from fastgw.proxy.downstream import HttpServerProtocol

        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._stopping.set)
        server = await self.loop.create_server(lambda: HttpServerProtocol(self), sock=self.sock)
        from fastgw.ai.probes import HealthProber

        self.prober = HealthProber(self.loop)
        self.prober.configure(self.generation.ai)
        self.state = STATE_READY
        self._tick()
        await self._stopping.wait()
        await self._drain(server)

    async def _drain(self, server: asyncio.AbstractServer) -> None:
        self.state = STATE_DRAINING
        self._write_record()
        server.close()
        self.prober.stop()
        for conn in list(self.connections):
            conn.start_drain()
        deadline = self.loop.time() + self.generation.drain_timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.connections:
            log(f"drain timeout: closing {len(self.connections)} connections")
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        self.pools.close()
        self._write_record()
        GATEWAY.registry.publish(force=True)


def run_worker(slot: int, sock: socket.socket, control: ControlBlock, heartbeat_interval: float) -> NoReturn:
    """Entry point in the forked child; never returns."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = Worker(slot, sock, control, heartbeat_interval)
    except (KeyError, TypeError, ValueError) as exc:
        log(f"config error at boot: {exc!r}")
        os._exit(WORKER_CONFIG_ERROR)
    except Exception as exc:
        log(f"boot error: {exc!r}")
        os._exit(WORKER_BOOT_ERROR)
    try:
        loop.run_until_complete(worker.serve())
    except Exception as exc:
        log(f"crashed: {exc!r}")
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)

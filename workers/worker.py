"""A worker process: one uvloop event loop serving one listener.

The worker reads config generations from shared memory (checked per new request and on
a 100 ms tick, so idle workers pick up a push too), reports a heartbeat and its counters
from inside the event loop (a stalled loop stops the heartbeat, which is the point).

Draining (on SIGTERM, or while the supervisor's node-drain flag is set by ``POST /drain``):
new connections are refused (:mod:`workers.listener`), keep-alive is declined for new
requests only, and answers in flight finish with their framing. At the drain deadline
(``http.drain_timeout``) what is still open is ended (an AI stream with an error event in
its dialect, see ``HttpConnection.drain_deadline``). On SIGTERM the worker then exits; a
node drain keeps it running, not accepting, until the flag is cleared (``POST /undrain``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from fastgw.config.secrets import SCRUBBER
from fastgw.limits.local import LocalLimitStore
from fastgw.obs.accesslog import AccessLog, UsageSink
from fastgw.obs.board import HEALTH
from fastgw.obs.errorlog import ErrorLog
from fastgw.obs.metrics import GATEWAY
from fastgw.obs.recent import RECENT
from fastgw.obs.spool import Spool
from fastgw.proxy.endpoint_table import EndpointTable
from fastgw.server.admission import Admission
from workers.exitcodes import WORKER_BOOT_ERROR, WORKER_CONFIG_ERROR
from workers.listener import Acceptor
from workers.shm import STATE_BOOTING, STATE_DRAINING, STATE_READY, ControlBlock

if TYPE_CHECKING:
    from fastgw.server.tls import TLSListener

TICK = 0.1
"""How often an idle worker looks for a new generation and writes its heartbeat."""
SWEEP_INTERVAL = 5.0
"""How often expired idle upstream connections are closed."""
GC_YOUNG = 20_000
"""Allocations between collections of the youngest generation (CPython's default: 700)."""
FLUSH_GRACE = 0.5
"""After the drain deadline: how long ended answers may take to reach their clients before
their connections are reset (a client that stopped reading would hold them forever)."""


def log(message: str) -> None:
    """One line to stderr, with the secrets of every generation this worker loaded scrubbed out."""
    sys.stderr.write(f"fastgw worker {os.getpid()}: {SCRUBBER(message)}\n")
    sys.stderr.flush()


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return SCRUBBER(super().format(record))


def _log_through_scrubber() -> None:
    """Library code that uses :mod:`logging` (the moderation hook) writes worker lines too, scrubbed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter(f"fastgw worker {os.getpid()}: %(message)s"))
    logging.getLogger().addHandler(handler)


class Worker:
    """State shared by all connections of this process."""

    def __init__(
        self,
        slot: int,
        sock: socket.socket,
        control: ControlBlock,
        heartbeat_interval: float,
        limit_store: LocalLimitStore | None = None,
        ticket_seed: bytes | None = None,
        redirect_sock: socket.socket | None = None,
        endpoint_table: EndpointTable | None = None,
    ) -> None:
        from fastgw.ai.health import ProviderHealth
        from fastgw.generation import Resources
        from fastgw.proxy.upstream import PoolSet

        self.slot = slot
        self.ticket_seed = ticket_seed
        self.redirect_sock = redirect_sock  # listen.redirect: plain HTTP sent to https
        self.redirects: asyncio.Server | None = None
        self.tickets = None  # fastgw.server.tickets.TicketKeys once a TLS listener shares them
        self.sock = sock
        self.control = control
        self.tick = min(TICK, heartbeat_interval)
        self.loop = asyncio.get_event_loop()
        # Key cool-downs, breakers, warm connections and limit counters outlive generations.
        self.resources = Resources(
            PoolSet(self.loop), ProviderHealth(), limit_store or LocalLimitStore(slots=4096, quota_slots=256)
        )
        if endpoint_table is not None:  # the supervisor's: endpoint states shared by the node
            endpoint_table.bind(slot)
            self.resources.endpoint_table = endpoint_table
        self._redis_url: str | None = None
        self._limit_stats_seen: dict[str, int] = {}
        self.started = time.monotonic()
        self.connections: set = set()
        self.admission = Admission()
        self.requests_total = 0
        self.active_requests = 0
        self.upstream_errors = 0
        self.rejected = 0
        self.state = STATE_BOOTING
        self.failed_generation = 0  # the last generation this worker could not load
        self._ticks = 0
        self._stopping: asyncio.Event | None = None
        self.acceptor: Acceptor | None = None  # made in serve()
        self.draining = False  # new connections are refused; connections close after their exchange
        self.node_drained = False  # following the supervisor's node-drain flag (POST /drain)
        self._drain_task: asyncio.Task | None = None
        snapshot = control.read()
        if snapshot is None:
            raise RuntimeError("no config generation published")
        self.seq, _, blob = snapshot
        self.generation = self._build(blob)
        self.prober = None  # started with the loop, in serve()
        self.access_log = AccessLog(self.generation.config["log"]["access"], worker=slot)
        self.usage_sink: UsageSink | None = None  # started with the loop, in serve()
        self._usage_target: tuple | None = None

    # -- generations -----------------------------------------------------------------

    def current_generation(self):
        """The generation new requests use; loads a newly published one first."""
        if self.control.seq != self.seq:
            self._load_published()
        return self.generation

    def _certificates(self, listener):
        """The current generation's certificates, for a TLS handshake that just arrived."""
        generation = self.current_generation()
        if generation.tls is not None:
            listener.use(generation.tls)
        return generation.tls

    def _build(self, blob: bytes):
        return build_generation(blob, self.resources, self._use_redis)

    def _use_redis(self, url: str | None) -> None:
        """One Redis link per worker, replaced only when a generation changes the URL."""
        if url == self._redis_url:
            return
        from fastgw.limits.cluster import RedisLink

        old = self.resources.redis_link
        self.resources.redis_link = RedisLink(url) if url else None
        self._redis_url = url
        if old is not None:  # requests of the old generation may still settle on it for a while
            self.loop.call_later(60, lambda: self.loop.create_task(old.close()))

    def _load_published(self) -> None:
        snapshot = self.control.read()
        if snapshot is None:
            return
        seq, number, blob = snapshot
        self.seq = seq
        if number == self.generation.number:
            return
        try:
            generation = self._build(blob)
            if self.prober is not None:
                self.prober.configure(generation.ai)
            self.access_log.configure(generation.config["log"]["access"])
            self.generation = generation  # named by the record from now on: the acknowledgement
            self._configure_usage_sink()
        except Exception as exc:  # the supervisor built it too; keep serving the old one, and say why
            from fastgw.extras import describe_failure

            reason = SCRUBBER(describe_failure(exc))
            log(f"cannot load generation {number}, still serving {self.generation.number}: {reason}")
            self.failed_generation = number
            self.control.write_error(self.slot, reason)  # before the record names the generation
            self._write_record()

    # -- fastgw.server.stream.WorkerServices (called by connections) ----------------------

    def connection_opened(self, conn) -> None:
        self.connections.add(conn)
        if self.draining:  # taken from the accept queue as the worker stopped accepting
            conn.start_drain()

    def connection_closed(self, conn) -> None:
        self.connections.discard(conn)

    def request_started(self) -> None:
        self.requests_total += 1
        self.active_requests += 1

    def request_finished(self) -> None:
        self.active_requests -= 1

    def count_upstream_error(self) -> None:
        self.upstream_errors += 1

    def count_rejected(self) -> None:
        self.rejected += 1

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
            failed_generation=self.failed_generation,
        )

    def _tick(self) -> None:
        if self.control.seq != self.seq:
            self._load_published()
        self._ticks += 1
        if self._ticks % max(1, round(SWEEP_INTERVAL / self.tick)) == 0:
            self.resources.pools.sweep()
        self._follow_node_drain()
        self._write_record()
        self._mirror_limit_stats()
        GATEWAY.registry.publish()  # at most once a second: the admin API sums all workers' snapshots
        RECENT.publish()  # the failed requests /diagnose explains, when there are new ones
        if self._ticks % max(1, round(1.0 / self.tick)) == 0:  # once a second: /status, the console
            HEALTH.publish(self.resources.health.report())
        self.loop.call_later(self.tick, self._tick)

    def _configure_usage_sink(self) -> None:
        """The billing stream (``log.usage_stream`` with ``redis``), replaced when its target changes.

        One writer on a spool at a time: a replacement starts once the old sink closed."""
        config = self.generation.config
        log_config = config["log"]
        target = (config["redis"], log_config["usage_stream"], log_config["usage_maxlen"], log_config["spool"])
        if target == self._usage_target:
            return
        same_spool = self._usage_target is not None and self._usage_target[3] == log_config["spool"]
        self._usage_target = target
        old, self.usage_sink = self.usage_sink, None
        if config["redis"] and log_config["usage_stream"]:
            kept = old.spool if old is not None and same_spool else None
            self.usage_sink = UsageSink(
                config["redis"], log_config["usage_stream"], maxlen=log_config["usage_maxlen"], worker=self.slot,
                spool=kept or self._open_spool(log_config["spool"]),
            )
            if old is None:
                self.usage_sink.start()
        if old is not None:
            self.loop.create_task(self._replace_sink(old, self.usage_sink))

    async def _replace_sink(self, old: UsageSink, new: UsageSink | None) -> None:
        await old.close()  # flushes what it still holds (to Redis, or its spool)
        if old.spool is not None and (new is None or new.spool is not old.spool):
            old.spool.close()
        if new is not None and new is self.usage_sink:
            new.start()

    def _open_spool(self, spool_config: dict) -> Spool | None:
        """The slot's spool file; records left in it by an earlier run are replayed first."""
        try:
            spool = Spool(spool_config["dir"], self.slot, spool_config["max_bytes"])
        except OSError as exc:
            log(f"ERROR: no usage spool ({exc}); records will be DROPPED while Redis is unavailable")
            return None
        moved, dropped = spool.absorb_orphans(self.generation.config["workers"])
        if moved:
            log(f"usage spool: took over {moved} record(s) of worker slots this run no longer has")
        if dropped:
            log(f"ERROR: {dropped} usage record(s) DROPPED: the spool {spool.path} is full")
            GATEWAY.usage_spool.inc(("dropped",), dropped)
        if spool.torn:
            log(f"ERROR: the usage spool {spool.path} ended in a record torn by a crash ({spool.torn} bytes); "
                "that record is lost")
            GATEWAY.usage_spool.inc(("dropped",))
        if spool.pending:
            log(f"usage spool {spool.path} holds {spool.size} bytes of records from before; replaying them")
        return spool

    def _mirror_limit_stats(self) -> None:
        """The limiter counts Redis errors and fallbacks in a dict; metrics get the increments."""
        seen = self._limit_stats_seen
        for name, count in self.resources.limit_stats.items():
            delta = count - seen.get(name, 0)
            if delta:
                seen[name] = count
                if name == "redis_errors":
                    GATEWAY.redis_errors.inc(("limits",), delta)
                else:
                    GATEWAY.limit_events.inc((name,), delta)

    def _share_tickets(self, context, spec: dict | None) -> None:
        """Session tickets every worker of the node opens (fastgw.server.tickets); ``None``: off."""
        import ssl

        if spec is None:
            context.options |= ssl.OP_NO_TICKET
            return
        from fastgw.server.tickets import TicketKeys, TicketsUnavailable, read_seed

        seed = self.ticket_seed
        if spec["key_file"]:
            try:
                seed = read_seed(spec["key_file"])
            except (OSError, ValueError) as exc:  # checked at load; gone since: this node's own seed
                log(f"TLS session tickets: cannot use listen.tls.session_tickets.key_file: {exc}")
        if seed is None:  # run without a supervisor: this process's own OpenSSL keys serve
            return
        try:
            self.tickets = TicketKeys(seed, spec["rotate"])
            self.tickets.install(context)
        except TicketsUnavailable as exc:
            log(f"TLS session tickets stay per worker: {exc}")

    def _connection_factory(self, listener: TLSListener | None) -> Callable[[], asyncio.BaseProtocol]:
        """A client connection; behind fastgw's own TLS layer (fastgw.server.tlslayer) on a TLS listener."""
        from fastgw.server.connection import HttpConnection

        if listener is None:
            return lambda: HttpConnection(self)
        from fastgw._speedups import TLSLayer

        context = listener.context
        return lambda: TLSLayer(HttpConnection(self), context, self.loop, self.generation.header_timeout)

    async def serve(self) -> None:

        self._stopping = asyncio.Event()
        self.loop.set_exception_handler(ErrorLog(log).handle)  # no traceback per bad request
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._stopping.set)
        tls = self.generation.config["listen"].get("tls")
        listener = None
        if tls is not None:  # on at start: certificates then follow each generation (fastgw.server.tls)
            from fastgw.server.tls import TLSListener

            listener = TLSListener(tls, lambda: self._certificates(listener))
            listener.use(self.generation.tls)
            self._share_tickets(listener.context, tls["session_tickets"])
        backlog = self.generation.config["listen"]["backlog"]
        self.acceptor = Acceptor(self.loop, self.sock, self._connection_factory(listener), backlog)
        from fastgw.ai.probes import HealthProber

        self.prober = HealthProber(self.loop, self.resources.endpoint_table, probes_for_node=self.slot == 0)
        self.prober.configure(self.generation.ai)
        self._configure_usage_sink()
        redirect = self.generation.config["listen"]["redirect"]
        if self.redirect_sock is not None and redirect is not None:
            from fastgw.server.redirect import RedirectToHttps

            https_port = redirect["https_port"] or self.sock.getsockname()[1]
            self.redirects = await self.loop.create_server(
                lambda: RedirectToHttps(https_port, redirect["status"], self.generation.header_timeout),
                sock=self.redirect_sock, backlog=backlog)
        # What boot built lives as long as the worker: out of the collector's sight. Requests
        # allocate a few short-lived containers each; a larger first generation keeps the
        # collector from walking the young ones every ~700 allocations.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG, 20, 20)
        if self.control.draining:  # respawned while the node is drained: wait for /undrain
            self._start_node_drain()
        else:
            await self.acceptor.start()
            self.state = STATE_READY
        self._tick()
        await self._stopping.wait()
        await self._shutdown()

    # -- draining ------------------------------------------------------------------------

    def _begin_drain(self) -> None:
        """Refuse new connections; every open one closes after its current exchange."""
        self.draining = True
        self.state = STATE_DRAINING
        self.acceptor.stop()
        for conn in list(self.connections):
            conn.start_drain()
        self._write_record()

    def _follow_node_drain(self) -> None:
        """Apply a change of the supervisor's node-drain flag (POST /drain, /undrain)."""
        wanted = self.control.draining
        if wanted == self.node_drained or self._stopping.is_set():
            return
        if wanted:
            self._start_node_drain()
        else:
            self.node_drained = False
            self.draining = False
            if self._drain_task is not None:
                self._drain_task.cancel()
                self._drain_task = None
            self.loop.create_task(self._accept_again())

    def _start_node_drain(self) -> None:
        self.node_drained = True
        self._begin_drain()
        log("node drain: not accepting; requests in flight finish (POST /undrain resumes)")
        self._drain_task = self.loop.create_task(self._settle_connections(self.generation.drain_timeout))

    async def _accept_again(self) -> None:
        await self.acceptor.start()
        if self.node_drained or self._stopping.is_set():  # drained again meanwhile
            self.acceptor.stop()
            return
        self.state = STATE_READY
        self._write_record()
        log("node undrained: accepting again")

    async def _settle_connections(self, timeout: float) -> None:
        """Let exchanges in flight finish for up to ``timeout``; then end what is left."""
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not self.connections:
            return
        log(f"drain deadline: ending {len(self.connections)} connection(s)")
        for conn in list(self.connections):
            conn.drain_deadline()
        grace = self.loop.time() + FLUSH_GRACE
        while self.connections and self.loop.time() < grace:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def _shutdown(self) -> None:
        """SIGTERM: drain (the deadline counts from now, as the supervisor's does), then release all."""
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        self._begin_drain()
        if self.redirects is not None:
            self.redirects.close()
        self.prober.stop()
        await self._settle_connections(self.generation.drain_timeout)
        if self.usage_sink is not None:
            await self.usage_sink.close()
        self.acceptor.close()
        self.resources.pools.close()
        if self.resources.redis_link is not None:
            await self.resources.redis_link.close()
        self.resources.close_tracing()  # the queued spans, bounded by the exporter's timeout
        self._write_record()
        GATEWAY.registry.publish(force=True)
        RECENT.publish(force=True)


def build_generation(blob: bytes, resources, use_redis: Callable[[str | None], None]):
    """A published blob as the :class:`~fastgw.generation.Generation` requests run under."""
    from fastgw.config.wire import decode_generation
    from fastgw.generation import Generation

    number, config = decode_generation(blob)
    SCRUBBER.remember(config)
    use_redis(config.get("redis"))
    return Generation(number, config, resources)


def trial_build(blob: bytes, limit_store: LocalLimitStore) -> None:
    """Build ``blob`` as a worker's boot would, then drop it; raises what a worker would raise.

    Run in a child forked from the supervisor (:mod:`workers.trial`), before the push is published.
    """
    import uvloop

    from fastgw.ai.health import ProviderHealth
    from fastgw.generation import Resources
    from fastgw.limits.cluster import RedisLink
    from fastgw.proxy.upstream import PoolSet

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    resources = Resources(PoolSet(loop), ProviderHealth(), limit_store)

    def use_redis(url: str | None) -> None:
        resources.redis_link = RedisLink(url) if url else None

    generation = build_generation(blob, resources, use_redis)
    AccessLog(generation.config["log"]["access"], worker=0).close()  # the file opens, as for a worker


def run_worker(
    slot: int,
    sock: socket.socket,
    control: ControlBlock,
    heartbeat_interval: float,
    limit_store: LocalLimitStore | None = None,
    ticket_seed: bytes | None = None,
    redirect_sock: socket.socket | None = None,
    endpoint_table: EndpointTable | None = None,
) -> NoReturn:
    """Entry point in the forked child; never returns."""
    _log_through_scrubber()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = Worker(slot, sock, control, heartbeat_interval, limit_store, ticket_seed, redirect_sock,
                        endpoint_table)
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

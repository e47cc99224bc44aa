"""The supervisor: owns config generations, listeners, the admin API and worker lifecycle.

It imports no event loop, proxy or provider code (only ``fastgw.config``, ``workers.*``
and the stdlib), so every fork starts from a small, quiet process. The worker entry is
imported only inside the forked child.

Model (gunicorn's arbiter, simplified):

* signal handlers only wake the main loop (``signal.set_wakeup_fd`` writes the signal
  number into a pipe; nothing is logged or decided inside a handler);
* the main loop wakes at least every 0.2 s to reap children, respawn them with a per-slot
  exponential back-off, and kill workers whose event loop stopped sending heartbeats;
* a worker that exits with a boot or config error before it ever became ready halts the
  supervisor: a fresh fork would fail the same way;
* SIGTERM/SIGINT drain: workers get SIGTERM, finish in-flight requests within
  ``http.drain_timeout``, stragglers get SIGKILL. A second signal cuts the drain to ~1 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastgw.config import load_text
from fastgw.config.secrets import SCRUBBER
from fastgw.config.wire import encode_generation
from fastgw.limits.local import LocalLimitStore
from fastgw.limits.quotas import QuotaAdmin
from fastgw.obs.board import HEALTH
from fastgw.obs.recent import RECENT
from fastgw.proc import die_with_parent
from workers.admin import AdminServer, format_url
from workers.cluster import ConfigFollower
from workers.console import ConsoleHistory
from workers.exitcodes import HALT_CODES, WORKER_BOOT_ERROR
from workers.metrics_shm import MetricsArea, WorkerMetrics
from workers.shm import STATE_DRAINING, STATE_EMPTY, STATE_READY, ControlBlock, WorkerRecord
from workers.sockets import Listeners, bind_listeners, migrate_req_warning
from workers.trial import GenerationRefused, trial_build

HISTORY = 20
"""Generations kept for /config/history and a rollback."""
RECENT_SLOT_SIZE = 256 * 1024
HEALTH_SLOT_SIZE = 128 * 1024
"""Shared memory for one worker's ring of failed requests (pages are touched only when written)."""

WorkerMain = Callable[..., Any]
"""``worker_main(slot, sock, control, heartbeat_interval)``; never returns in a real worker."""

TICK = 0.2
"""Main-loop period: how quickly a dead or stalled worker is noticed (SIGCHLD wakes it sooner)."""
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
BACKOFF_RESET_AFTER = 30.0
"""A worker that stayed up this long crashed for a new reason: its slot's back-off starts over."""
DRAIN_MARGIN = 2.0
"""Extra time beyond ``http.drain_timeout`` for workers to end what the deadline cut, flush
their usage records (to Redis or the spool) and exit."""
DRAIN_ACK_TIMEOUT = 5.0
"""How long ``POST /drain`` and ``/undrain`` wait for every live worker to follow."""
SECOND_SIGNAL_GRACE = 1.0
RESTART_KEYS = ("listen", "workers", "admin")
"""Config keys a pushed generation cannot change: they are bound or forked at startup."""
TRIAL_TIMEOUT = 60.0
"""How long the trial build of a pushed generation may take (10,000 routes take about 2 s)."""
ACK_TIMEOUT = 15.0
"""How long every worker gets to load a published generation, on top of 3x the trial's time."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _bound_part(key: str, config: dict) -> object:
    """What of a restart key is bound at startup: all of it, except the listener's TLS
    certificates, which each generation loads (only TLS on or off is bound)."""
    value = config.get(key)
    if key == "listen" and isinstance(value, dict):
        return {**value, "tls": value.get("tls") is not None}
    return value


def log(message: str) -> None:
    """One line to stderr with a single ``write(2)``.

    No Python-level buffer or lock is involved, so the admin thread may log while the main
    thread forks, and lines from several processes never interleave mid-line. Secrets of
    every config this process read are scrubbed out.
    """
    os.write(2, f"fastgw supervisor: {SCRUBBER(message)}\n".encode())


def _ignore(signum: int, frame: object) -> None:
    """Installed so the signal is caught; the wakeup fd carries it to the main loop."""


def _describe_exit(status: int, kill_reason: str = "") -> str:
    """``exited with code 4 (config error)``, ``was killed by SIGKILL (perhaps out of memory?)``."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        name = HALT_CODES.get(code)
        return f"exited with code {code}" + (f" ({name})" if name else "")
    sig = signal.Signals(-code)
    if kill_reason:
        return f"was killed by {sig.name} ({kill_reason})"
    # Nobody here sent it: the kernel's OOM killer is the usual suspect.
    return f"was killed by {sig.name}" + (" (perhaps out of memory?)" if sig == signal.SIGKILL else "")


@dataclass(slots=True)
class _Slot:
    """What the supervisor knows about one worker slot (the worker writes its own record)."""

    index: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    failures: int = 0
    respawn_at: float = 0.0
    restarts: int = 0
    kill_reason: str = ""


class Supervisor:
    """Runs one gateway: call :meth:`run` from the main thread; it returns the exit code."""

    def __init__(
        self,
        config: dict,
        config_source: str,
        *,
        worker_main: WorkerMain | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.config_source = config_source
        self.generation = 0
        self.last_number = 0  # the last generation number handed out; a refused one is not reused
        self.failed: dict | None = None  # the last refused push: generation, source, reason
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.slots = [_Slot(i) for i in range(config["workers"])]
        self.control = ControlBlock(max_workers=len(self.slots))
        self.metrics = WorkerMetrics(len(self.slots))  # before any fork: workers inherit the mapping
        self.recent_area = MetricsArea(len(self.slots), slot_size=RECENT_SLOT_SIZE)  # each worker's failed requests
        self.health_area = MetricsArea(len(self.slots), slot_size=HEALTH_SLOT_SIZE)  # each worker's providers' health
        self.limit_store = LocalLimitStore(slots=65536, quota_slots=4096)  # one budget per node, not per worker
        self.ticket_seed = os.urandom(32)  # TLS ticket keys every worker derives alike (fastgw.server.tickets)
        self._worker_main = worker_main
        self._listeners: Listeners | None = None
        self._redirects: Listeners | None = None  # listen.redirect's plain-HTTP sockets
        self._admin: AdminServer | None = None
        self.console: ConsoleHistory | None = None
        self.history: deque[tuple[int, float, str, dict]] = deque(maxlen=HISTORY)  # (generation, time, source, config)
        self._push_lock = threading.Lock()
        self._quota_admin: QuotaAdmin | None = None
        self._follower: ConfigFollower | None = None
        self._pid = os.getpid()
        self._wake_r = self._wake_w = -1

    # -- public API used by the admin server ---------------------------------------------

    def recent_failures(self) -> list[dict]:
        """Every worker's recent failed requests (``/diagnose``), oldest first."""
        records = []
        for slot in range(self.recent_area.max_workers):
            found = self.recent_area.read(slot)
            if found is not None:
                records.extend(json.loads(found[2]))
        records.sort(key=lambda record: record["time"])
        return records

    def _provider_health(self, slot: int, pid: int) -> dict | None:
        """The worker's breakers, key cool-downs and probe verdicts (published once a second)."""
        found = self.health_area.read(slot)
        if found is None or found[1] != pid:
            return None
        return json.loads(found[2])

    def status(self) -> dict:
        """Snapshot of the generation and every slot, as served by ``GET /status``."""
        now = time.monotonic()
        workers = []
        for slot in self.slots:
            pid, started = slot.pid, slot.started  # read once: the main thread may respawn meanwhile
            record = self._record(slot.index)
            mine = pid != 0 and record.pid == pid and record.state != STATE_EMPTY
            state = record.state_name if mine else ("booting" if pid else "down")
            workers.append(
                {
                    "slot": slot.index,
                    "pid": pid or None,
                    "state": state,
                    "ready": state == "ready",
                    "generation": record.generation if mine else None,
                    "failed_generation": record.failed_generation or None if mine else None,
                    "load_error": self.control.read_error(slot.index) or None
                    if mine and record.failed_generation
                    else None,
                    "heartbeat_age_s": round(now - record.heartbeat, 3) if mine and record.heartbeat else None,
                    "active_requests": record.active_requests if mine else 0,
                    "connections": record.connections if mine else 0,
                    "requests_total": record.requests_total if mine else 0,
                    "uptime_s": round(now - started, 3) if pid else 0.0,
                    "restarts": slot.restarts,
                    "providers": self._provider_health(slot.index, pid) if mine else None,
                }
            )
        return {"generation": self.generation, "workers": workers, "pid": self._pid, "failed_generation": self.failed}

    @property
    def draining(self) -> bool:
        """The node is drained (``POST /drain``): ``/healthz`` answers 503."""
        return self.control.draining

    def drain(self) -> dict:
        """Drain this node without exiting: every worker stops accepting (new connections are
        refused), answers in flight finish up to ``http.drain_timeout``; returns once every
        live worker follows (or after :data:`DRAIN_ACK_TIMEOUT`)."""
        if not self.control.draining:
            self.control.set_draining(True)
            log("node drain requested: workers stop accepting, /healthz answers 503")
        return self._await_workers(STATE_DRAINING)

    def undrain(self) -> dict:
        """Undo :meth:`drain`: workers accept again and ``/healthz`` answers 200."""
        if self.control.draining:
            self.control.set_draining(False)
            log("node undrain requested: workers accept again")
        return self._await_workers(STATE_READY)

    def _await_workers(self, state: int) -> dict:
        deadline = time.monotonic() + DRAIN_ACK_TIMEOUT
        while True:
            records = [(slot, self._record(slot.index)) for slot in self.slots if slot.pid]
            behind = [slot.index for slot, record in records if record.pid != slot.pid or record.state != state]
            if not behind or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return {"draining": self.control.draining, "workers": len(records) - len(behind), "pending": behind}

    def push_config(self, text: str, source: str) -> tuple[int, list[str]]:
        """Validate ``text``, build it, publish it and see every live worker load it; returns the
        generation and warnings. All or nothing: on any failure the previous generation stays
        live everywhere (``GET /config`` included) and ``GET /status`` says why.

        Raises ``ConfigError`` (invalid), ``BlobTooLarge`` or :class:`GenerationRefused` (409: the
        trial build failed; 500: a worker did not load it, and the workers that did went back).
        Keys in :data:`RESTART_KEYS` keep their running values, with a warning for each change.
        """
        config = load_text(text, source)
        with self._push_lock:
            warnings = []
            for key in RESTART_KEYS:
                if _bound_part(key, config) != _bound_part(key, self.config):
                    warnings.append(f"{key}: cannot change without a restart; keeping the running value")
                    config[key] = self.config.get(key)
            generation = self._commit(config, source)
        log(f"published generation {generation} from {source}")
        return generation, warnings

    def _commit(self, config: dict, source: str) -> int:
        """Build ``config`` as the workers will, publish it and wait for every live worker to
        load it; the new generation's number. Raises :class:`GenerationRefused` with the
        previous generation live everywhere. Call with the push lock held."""
        self.last_number += 1
        generation = self.last_number
        blob = encode_generation(generation, config)
        self.control.check_size(blob)
        started = time.monotonic()
        reason = trial_build(blob, self.limit_store, timeout=TRIAL_TIMEOUT, in_child=self._shed_in_child)
        if reason is not None:
            self._refuse(409, generation, source, f"cannot build generation {generation}: {reason}")
        self.control.publish(generation, blob)
        timeout = ACK_TIMEOUT + 3 * (time.monotonic() - started)
        reason = self._await_generation(generation, timeout)
        if reason is not None:
            self.control.publish(self.generation, encode_generation(self.generation, self.config))
            back = self._await_generation(self.generation, timeout)
            if back is not None:
                log(f"rolling back to generation {self.generation}: {back}")
            self._refuse(500, generation, source, f"generation {generation} was not loaded: {reason}")
        self.config, self.generation = config, generation
        self._quota_admin = None
        self.history.append((generation, time.time(), source, config))
        return generation

    def config_history(self) -> list[dict]:
        """The generations this supervisor published (newest last, at most ``HISTORY``), each
        with the top-level keys it changed from the one before."""
        out, before = [], None
        for generation, published, source, config in list(self.history):
            changed = sorted(k for k in config if before is not None and config[k] != before.get(k))
            out.append({"generation": generation, "published_at": published, "source": source,
                        "changed": changed if before is not None else None})
            before = config
        return out

    def generation_config(self, generation: int) -> dict | None:
        """The normalised config of a generation still in the history (not redacted)."""
        for number, _, _, config in list(self.history):
            if number == generation:
                return config
        return None

    def rollback(self) -> tuple[int, int]:
        """Publish the config of the generation before the live one again, as a new generation;
        returns (new generation, the one restored). ``LookupError`` when there is none."""
        with self._push_lock:
            if len(self.history) < 2:
                raise LookupError("no earlier generation to roll back to")
            restored, _, _, config = self.history[-2]
            generation = self._commit(config, f"rollback to generation {restored}")
        log(f"published generation {generation}: rollback to generation {restored}")
        return generation, restored

    def _refuse(self, status: int, generation: int, source: str, reason: str) -> None:
        """Record and log a refused push (the previous generation stays), then raise it."""
        reason = SCRUBBER(reason)
        self.failed = {"generation": generation, "source": source, "reason": reason}
        log(f"refused {source}: {reason}; generation {self.generation} stays")
        raise GenerationRefused(status, generation, reason)

    def _await_generation(self, generation: int, timeout: float) -> str | None:
        """Wait until every live worker has loaded ``generation`` or failed to; None if all loaded
        it, else why not (each worker that failed, with its error, or did not answer in time).

        Booting workers count (they load it once ready, if they did not boot from it). A worker
        that dies meanwhile is no longer waited for: its replacement boots from the published
        generation.
        """
        waiting = [(slot.index, slot.pid) for slot in self.slots if slot.pid]
        failures = []
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            still = []
            for index, pid in waiting:
                record = self._record(index)
                if self.slots[index].pid != pid or (record.pid == pid and record.generation == generation):
                    continue
                if record.pid == pid and record.failed_generation == generation:
                    failures.append(f"worker {index} (pid {pid}) could not load it: {self.control.read_error(index)}")
                else:
                    still.append((index, pid))
            waiting = still
            if waiting:
                time.sleep(0.01)
        failures += [f"worker {index} (pid {pid}) did not load it within {timeout:.0f}s" for index, pid in waiting]
        return "; ".join(failures) or None

    def _shed_in_child(self) -> None:
        """In a forked trial child: its signals must not wake the supervisor's loop."""
        signal.set_wakeup_fd(-1)
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (returns 0) or a worker cannot boot (returns its code)."""
        try:
            self._open()
        except OSError as exc:
            log(f"cannot start: {exc.strerror or exc}")
            self._close()
            return 1
        self._install_signals()
        try:
            for slot in self.slots:
                self._spawn(slot)
            self._announce()
            return self._supervise()
        finally:
            self._shutdown()
            self._close()

    def _open(self) -> None:
        listen = self.config["listen"]
        reuse_port = listen["reuse_port"]
        warning = migrate_req_warning(reuse_port)
        if warning:
            log(f"warning: {warning}")
        self._publish(1, self.config, str(self.config_source))
        self._remove_stale_node_caches()
        host, port = listen["host"], listen["port"]
        try:
            self._listeners = bind_listeners(
                host, port, slots=len(self.slots), reuse_port=reuse_port, backlog=listen["backlog"]
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {format_url(host, port)}: {exc.strerror}") from None
        redirect = listen["redirect"]
        if redirect is not None:  # plain HTTP beside TLS, answered by the workers (fastgw.server.redirect)
            where = format_url(redirect["host"], redirect["port"])
            try:
                self._redirects = bind_listeners(redirect["host"], redirect["port"], slots=len(self.slots),
                                                 reuse_port=reuse_port, backlog=listen["backlog"])
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen for redirects on {where}: {exc.strerror}") from None
        admin = self.config.get("admin")
        if admin:
            where = f"unix:{admin['socket']}" if admin["socket"] else format_url(admin["host"], admin["port"])
            try:
                self._admin = AdminServer(
                    admin["host"], admin["port"], self, max_body=self.control.slot_size, log=log,
                    token=admin["token"], metrics_public=admin["metrics_public"], socket_path=admin["socket"],
                )
            except OSError as exc:
                raise OSError(exc.errno, f"cannot serve the admin API on {where}: {exc.strerror}") from None
            self._admin.start()
            self.console = ConsoleHistory(self.metrics.collect)  # the /ui charts' last hour
            self.console.start()
        if self.config.get("redis"):  # cluster mode: follow config versions pushed through Redis
            self._follower = ConfigFollower(self.config["redis"], self.push_config, log)
            self._follower.poll(time.monotonic())  # adopt the cluster's latest push before forking

    def _publish(self, generation: int, config: dict, source: str) -> None:
        self.control.publish(generation, encode_generation(generation, config))
        self.config, self.generation = config, generation
        self.history.append((generation, time.time(), source, config))
        self.last_number = max(self.last_number, generation)
        self._quota_admin = None  # rebuilt from this generation's rules on first use

    def quota_admin(self) -> QuotaAdmin:
        """Read and change consumers' quotas (admin API); the rules of the live generation."""
        with self._push_lock:
            if self._quota_admin is None:
                self._quota_admin = QuotaAdmin(self.config["limits"], self.limit_store, self.config.get("redis"))
            return self._quota_admin

    def _announce(self) -> None:
        assert self._listeners is not None
        admin = f"admin {self._admin.url}" if self._admin else "admin off"
        print(f"fastgw listening on {format_url(*self._listeners.address)} (workers {len(self.slots)}, {admin})")
        if self._redirects:
            log(f"redirecting plain HTTP on {format_url(*self._redirects.address)} to https")
        sys.stdout.flush()
        log(f"started (pid {self._pid}, config {self.config_source}, generation {self.generation})")

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, _ignore)

    def _wait(self, timeout: float) -> list[int]:
        """Sleep until a signal arrives or ``timeout`` passes; return the signals received."""
        ready, _, _ = select.select([self._wake_r], [], [], timeout)
        if not ready:
            return []
        try:
            return list(os.read(self._wake_r, 4096))
        except BlockingIOError:
            return []

    def _supervise(self) -> int:
        while True:
            for signum in self._wait(TICK):
                if signum in _STOP_SIGNALS:
                    log(f"received {signal.Signals(signum).name}; stopping")
                    return 0
            halt = self._reap()
            if halt is not None:
                return halt
            self._watch()
            now = time.monotonic()
            if self._follower is not None:
                self._follower.poll(now)
            for slot in self.slots:
                if slot.pid == 0 and slot.respawn_at <= now:
                    if self._spawn(slot):
                        slot.restarts += 1
                        log(f"worker {slot.index} respawned (pid {slot.pid})")

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> bool:
        """Fork a worker for ``slot``; if the fork itself fails, retry after the back-off."""
        self.control.clear_record(slot.index)
        # Unflushed parent output would be written a second time by the child.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            log(f"cannot fork worker {slot.index}: {exc}; retrying in {self._back_off(slot):g}s")
            return False
        if pid == 0:
            self._become_worker(slot.index)
        slot.pid, slot.started, slot.ready, slot.kill_reason = pid, time.monotonic(), False, ""
        return True

    def _back_off(self, slot: _Slot) -> float:
        """Schedule the slot's next fork: 0.1 s, doubling per failure up to 10 s; returns the delay."""
        delay = min(BACKOFF_FIRST * 2**slot.failures, BACKOFF_MAX)
        slot.failures += 1
        slot.respawn_at = time.monotonic() + delay
        return delay

    def _become_worker(self, index: int) -> None:
        """In the forked child: shed the supervisor's state, then run the worker entry; never returns."""
        code = WORKER_BOOT_ERROR
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Ctrl-C reaches the whole process group; the supervisor turns it into SIGTERM
            # so workers drain instead of dying mid-stream.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.close(self._wake_r)
            os.close(self._wake_w)
            # The kernel SIGKILLs this worker when the supervisor dies, even by SIGKILL.
            if not die_with_parent(signal.SIGKILL, self._pid):  # it died before prctl took effect
                os._exit(1)
            if self._admin:
                self._admin.close_in_child()
            assert self._listeners is not None
            self._listeners.close_others(index)
            if self._redirects is not None:
                self._redirects.close_others(index)
            worker_main = self._worker_main
            if worker_main is None:
                from workers.worker import run_worker as worker_main
            self.metrics.bind_worker(index)
            RECENT.bind(self.recent_area, index)
            HEALTH.bind(self.health_area, index)
            worker_main(
                index, self._listeners.for_slot(index), self.control, self.heartbeat_interval,
                limit_store=self.limit_store, ticket_seed=self.ticket_seed,
                redirect_sock=self._redirects.for_slot(index) if self._redirects is not None else None,
            )
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)

    def _record(self, index: int) -> WorkerRecord:
        """The slot's record, read until two reads agree: a worker may be rewriting it."""
        record = self.control.read_record(index)
        for _ in range(3):
            again = self.control.read_record(index)
            if again == record:
                break
            record = again
        return record

    def _find(self, pid: int) -> _Slot | None:
        return next((slot for slot in self.slots if slot.pid == pid), None)

    def _reap(self) -> int | None:
        """Collect dead workers and schedule their respawn; return an exit code to halt with."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            slot = self._find(pid)
            if slot is None:
                continue
            self.metrics.retire(slot.index, pid)  # its counts stay in the totals: counters never go back
            freed = self.limit_store.slots.release_pid(pid)  # it never ran on_done for these
            if freed:
                log(f"worker {slot.index} (pid {pid}) held {freed} concurrency slot(s); freed")
            record = self._record(slot.index)
            ever_ready = slot.ready or (record.pid == pid and record.state in (STATE_READY, STATE_DRAINING))
            code = os.waitstatus_to_exitcode(status)
            how = _describe_exit(status, slot.kill_reason)
            slot.pid = 0
            if code in HALT_CODES and not ever_ready:
                log(f"worker {slot.index} (pid {pid}) {how} before it became ready; halting (see its error above)")
                return code
            if time.monotonic() - slot.started >= BACKOFF_RESET_AFTER:
                slot.failures = 0
            log(f"worker {slot.index} (pid {pid}) {how}; respawning in {self._back_off(slot):g}s")

    def _watch(self) -> None:
        """Note workers that became ready; SIGKILL ready ones whose loop stopped heartbeating."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid == 0 or slot.kill_reason:
                continue
            record = self._record(slot.index)
            if record.pid != slot.pid or record.state not in (STATE_READY, STATE_DRAINING):
                continue  # a drained node's workers still heartbeat
            if not slot.ready and record.state == STATE_READY:
                slot.ready = True
                log(f"worker {slot.index} (pid {slot.pid}) ready, generation {record.generation}")
            age = now - record.heartbeat
            if age > self.heartbeat_timeout:
                log(f"worker {slot.index} (pid {slot.pid}) sent no heartbeat for {age:.1f}s; killing it")
                slot.kill_reason = "heartbeat timeout"
                _kill(slot.pid, signal.SIGKILL)

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """SIGTERM every worker, wait for the drain, SIGKILL stragglers; never leaves orphans."""
        if self._listeners:
            # Workers hold their own copies until they close their servers; once they do,
            # the sockets really close and new connections are refused, not queued.
            self._listeners.close()
            self._listeners = None
        if self._redirects:
            self._redirects.close()
            self._redirects = None
        live = [slot for slot in self.slots if slot.pid]
        drain = float(self.config["http"]["drain_timeout"])
        if live:
            log(f"draining {len(live)} worker(s), up to {drain:g}s")
        for slot in live:
            _kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + drain + DRAIN_MARGIN
        while live and time.monotonic() < deadline:
            for signum in self._wait(0.1):
                cut = time.monotonic() + SECOND_SIGNAL_GRACE
                if signum in _STOP_SIGNALS and deadline > cut:
                    log(f"received {signal.Signals(signum).name} again; cutting the drain short")
                    deadline = cut
            live = [slot for slot in live if not self._reaped(slot)]
        for slot in live:
            log(f"worker {slot.index} (pid {slot.pid}) still running at the end of the drain; killing it")
            _kill(slot.pid, signal.SIGKILL)
        for slot in live:
            os.waitpid(slot.pid, 0)
            slot.pid = 0
        log("stopped")

    def _remove_stale_node_caches(self) -> None:
        """Node-cache files of supervisors that died without cleaning up (SIGKILL) hold memory."""
        from fastgw.cache.nodefile import remove_stale_node_files

        try:
            removed = remove_stale_node_files()
        except OSError as exc:
            log(f"warning: cannot look for stale node-cache files: {exc}")
            return
        if removed:
            log(f"removed {len(removed)} node-cache file(s) left by a gateway that did not stop cleanly")

    def _remove_node_cache(self) -> None:
        """The node's shared response cache lives on tmpfs (memory): remove it with the node."""
        if not (self.config.get("cache") and self.config["cache"]["store"] == "memory"):
            return
        from fastgw.cache.nodefile import node_path

        try:
            path = node_path(os.getpid())
        except OSError:
            return
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)

    def _reaped(self, slot: _Slot) -> bool:
        pid, status = os.waitpid(slot.pid, os.WNOHANG)
        if pid == 0:
            return False
        if status:
            log(f"worker {slot.index} (pid {pid}) {_describe_exit(status)} while draining")
        self.metrics.retire(slot.index, pid)
        slot.pid = 0
        return True

    def _close(self) -> None:
        self._remove_node_cache()
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        if self._admin:
            self._admin.stop()
            self._admin = None
        if self.console is not None:
            self.console.stop()
        self.metrics.close()
        self.recent_area.close()
        self.health_area.close()
        if self._listeners:
            self._listeners.close()
            self._listeners = None
        if self._wake_w != -1:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self.control.close()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # already dead, not yet reaped
        pass


def run(config: dict, config_source: str) -> int:
    """Entry point of ``fastgw run``: serve ``config`` until stopped; returns the exit code."""
    return Supervisor(config, config_source).run()

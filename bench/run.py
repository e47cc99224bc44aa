"""fastgw vs nginx, side by side, in one command: `python bench/run.py [--duration S] [--scenarios LIST]`.

The proxy under test runs alone on one core (taskset); wrk, the pre-built-response upstream (an
nginx answering from memory) and Redis share the other. `direct` (wrk straight at the upstream)
is the ceiling: where it is not at least 1.5x nginx's rate, the upstream side limits the run and
the ratio is flagged as not meaningful. Every proxy's CPU time per request comes from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

import bodies
import check
import overload
import push
import targets
import ttfb
import wrk

HEADROOM = 1.5
"""direct must reach this multiple of a proxy's rate for that proxy's figure to be the proxy's own."""
DISTURBED = 10.0
"""Other processes taking more than this (% of a core) during a measurement make it be taken again."""
LOAD_FULL = 85.0
PROXY_BOUND = 90.0
"""A proxy using less than PROXY_BOUND % of its core while the load core was busier than LOAD_FULL %
was held back by wrk or the upstream: its req/s is not its own (its CPU us/req still is)."""
ABORT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)
AI_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a request through one fastgw config, compared with nginx relaying
    the same shape of answer (`shape`) from the same upstream."""

    name: str
    gateway: str  # the fastgw process serving it: "plain", "plain-compress", "ai" or "ai-full"
    shape: str  # "json" or "sse": the nginx plain relay it is compared with
    upstream_path: str  # the pre-built answer behind it; direct is measured on this path
    request: bodies.Request
    check: str  # "exact" (the upstream's bytes, unchanged), "openai-json", "openai-sse"[-guarded], "decoded"
    what: str
    coding: str = ""  # compression scenarios: the one coding the client accepts
    compare: str = ""  # compression scenarios: the nginx-gzip relay it is compared with

    @property
    def nginx_key(self) -> str:
        return f"relay {self.compare or self.shape}"


def coded(request: bodies.Request, coding: str) -> bodies.Request:
    """The same request accepting only `coding` (the SDK's own header offers gzip, deflate, br)."""
    return bodies.Request(request.path, request.body, {**request.headers, "Accept-Encoding": coding})


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("json", "plain", "json", "/json/v1/chat/completions", bodies.PLAIN_REQUESTS["json"], "exact",
             "plain route, chat.completion JSON answer"),
    Scenario("sse", "plain", "sse", "/sse/v1/chat/completions", bodies.PLAIN_REQUESTS["sse"], "exact",
             "plain route, 50-chunk OpenAI stream"),
    Scenario("ai-json", "ai", "json", "/json/v1/chat/completions", bodies.chat(AI_PATH, "bench-json", False),
             "openai-json", "AI front door, openai provider, JSON"),
    Scenario("ai-sse", "ai", "sse", "/sse/v1/chat/completions", bodies.chat(AI_PATH, "bench-sse", True),
             "openai-sse", "AI front door, openai provider, stream + usage chunk"),
    Scenario("ai-full-json", "ai-full", "json", "/json/v1/chat/completions",
             bodies.chat(AI_PATH, "bench-json", False), "openai-json",
             "ai-json + consumer key + Redis TPM/RPM limits + 1,000-term guard + access log"),
    Scenario("ai-full-sse", "ai-full", "sse", "/sse/v1/chat/completions", bodies.chat(AI_PATH, "bench-sse", True),
             "openai-sse-guarded", "ai-sse + consumer key + Redis TPM/RPM limits + 1,000-term guard + access log"),
    Scenario("ai-convert", "ai", "sse", "/anthropic/v1/messages", bodies.chat(AI_PATH, "bench-claude", True),
             "openai-sse", "Anthropic provider stream converted for an OpenAI client"),
    Scenario("ai-convert-json", "ai", "json", "/anthropic-json/v1/messages",
             bodies.chat(AI_PATH, "bench-claude-json", False), "openai-json",
             "Anthropic provider answer converted for an OpenAI client"),
    Scenario("sse-gzip", "plain-compress", "sse", "/sse/v1/chat/completions",
             coded(bodies.PLAIN_REQUESTS["sse"], "gzip"), "decoded", "plain route, the stream gzip-compressed",
             coding="gzip", compare="sse-gzip"),
    Scenario("sse-zstd", "plain-compress", "sse", "/sse/v1/chat/completions",
             coded(bodies.PLAIN_REQUESTS["sse"], "zstd"), "decoded",
             "plain route, the stream zstd-compressed (nginx: its gzip of the same stream)",
             coding="zstd", compare="sse-gzip"),
    Scenario("json-gzip", "plain-compress", "json", "/json/v1/chat/completions",
             coded(bodies.PLAIN_REQUESTS["json"], "gzip"), "decoded", "plain route, the JSON answer gzip-compressed",
             coding="gzip", compare="json-gzip"),
    Scenario("ai-sse-gzip", "ai-compress", "sse", "/sse/v1/chat/completions",
             coded(bodies.chat(AI_PATH, "bench-sse", True), "gzip"), "openai-sse-coded",
             "ai-sse gzip-compressed (nginx: its gzip relay of the stream)", coding="gzip", compare="sse-gzip"),
    Scenario("ai-sse-zstd", "ai-compress", "sse", "/sse/v1/chat/completions",
             coded(bodies.chat(AI_PATH, "bench-sse", True), "zstd"), "openai-sse-coded",
             "ai-sse zstd-compressed (nginx: its gzip relay of the stream)", coding="zstd", compare="sse-gzip"),
)}
COMPRESSED = tuple(name for name, sc in SCENARIOS.items() if sc.coding)
EXTRAS = ("ttfb", "push", "overload", "concurrency")
ALL = (*SCENARIOS, *EXTRAS)
ALIASES = {"ai-full": ("ai-full-json", "ai-full-sse"), "compression": COMPRESSED, "all": ALL}
CHECKS: dict[str, Callable[[check.Response], dict[str, object]]] = {  # "decoded", "openai-sse-coded": in verify
    "openai-json": check.openai_json, "openai-sse": check.openai_sse, "openai-sse-guarded": check.openai_sse_guarded}


class Abort(BaseException):
    """Ctrl-C/SIGTERM/SIGHUP/time budget: unwinds the stack so every started process is stopped."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="worker processes for nginx and fastgw (default 1)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk measurement (default 10)")
    parser.add_argument("--scenarios", default="all",
                        help=f"comma-separated subset of {','.join(ALL)} (ai-full = both ai-full-*; "
                             "compression = the five *-gzip and *-zstd rows; default: all)")
    parser.add_argument("--out", type=Path, default=targets.BENCH_DIR / "results", help="results directory")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: wrk shares one core with the upstream)")
    parser.add_argument("--warmup", type=float, default=1, help="unrecorded wrk seconds before each run (default 1)")
    parser.add_argument("--json-connections", type=int, default=50, help="connections for JSON scenarios (50)")
    parser.add_argument("--sse-connections", type=int, default=32, help="connections for stream scenarios (32)")
    parser.add_argument("--retries", type=int, default=2,
                        help=f"measure again while other processes take over {DISTURBED:.0f}%% of a core (default 2)")
    parser.add_argument("--ttfb-requests", type=int, default=300, help="sequential streams per target for ttfb")
    parser.add_argument("--push-routes", type=int, default=10_000, help="plain routes in the pushed config")
    parser.add_argument("--token", help="admin token of the gateways it starts (default: FASTGW_ADMIN_TOKEN, "
                        "else a random one)")
    args = parser.parse_args(argv)
    chosen: set[str] = set()
    for name in (s.strip() for s in args.scenarios.split(",") if s.strip()):
        if name not in ALL and name not in ALIASES:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(ALL)} (or ai-full, compression, all)")
        chosen.update(ALIASES.get(name, (name,)))
    args.scenarios = [s for s in ALL if s in chosen]  # canonical order whatever was typed
    if args.workers < 1 or args.duration < 1:
        parser.error("--workers and --duration must be at least 1")
    return args


def ensure_tools() -> None:
    """Install nginx/wrk/redis from apt when missing; fastgw itself must already be set up per the README."""
    missing = [pkg for tool, pkg in (("nginx", "nginx"), ("wrk", "wrk"), ("redis-server", "redis-server"))
               if shutil.which(tool) is None]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        install = [*sudo, "apt-get", "install", "-y", *missing]
        if subprocess.run(install, timeout=600).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update"], check=True, timeout=600)
            subprocess.run(install, check=True, timeout=600)
    probe = subprocess.run([sys.executable, "-c", "import fastgw"], cwd=targets.REPO_ROOT,
                           env=targets.python_env(), capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        sys.exit(f"fastgw is not importable ({probe.stderr.strip().splitlines()[-1:]}); "
                 "run the setup in README.md first (e.g. `pip install -e '.[test]'`).")


def _first_line(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=targets.python_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else None


def machine_info(pins: targets.Pinning) -> dict[str, object]:
    """What a reader needs to compare two result files: cores, pinning, kernel, tool versions, load."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    compiled = _first_line([sys.executable, "-c", "from fastgw import _speedups; print(_speedups.COMPILED)"])
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "pinning": {"proxy_cpu": pins.proxy, "load_cpu": pins.load, "unpinned_reason": pins.reason or None},
        "cpu": cpu,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "redis": _first_line(["redis-server", "--version"]),
        "fastgw_compiled": {"True": True, "False": False}.get(compiled or ""),
        "fastgw_path": _first_line([sys.executable, "-c", "import fastgw; print(fastgw.__file__)"]),
        "loadavg": os.getloadavg(),
    }


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """First signal aborts; later ones are ignored so a second Ctrl-C cannot cut the cleanup short."""
    for sig in ABORT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Abort(f"stopped by {signal.Signals(signum).name}")


def time_budget(args: argparse.Namespace) -> int:
    """A generous upper bound on the whole run; past it the run aborts and cleans up."""
    chosen = [SCENARIOS[s] for s in args.scenarios if s in SCENARIOS]
    wrk_runs = len(chosen) + len({s.upstream_path for s in chosen}) + len({s.nginx_key for s in chosen})
    seconds = 120 + wrk_runs * (1 + args.retries) * (args.duration + args.warmup + 30) + 6 * 90  # 6 starts at most
    seconds += ("ttfb" in args.scenarios) * 4 * 60
    seconds += ("push" in args.scenarios) * (2 * args.duration + 200)
    seconds += ("overload" in args.scenarios) * (2 * (10 * args.duration + 150) + args.duration)
    seconds += ("concurrency" in args.scenarios) * 2 * ((1 + args.retries) * (args.duration + args.warmup) + 60)
    return int(seconds)


# ------------------------------------------------------------------------------------------- measuring

CORE_FIELDS = ("task", "irq", "steal", "idle", "total")


def core_times() -> dict[int, dict[str, int]]:
    """Jiffies per CPU from /proc/stat: `task` (user + nice + system: what processes run, their
    utime/stime), `irq` (irq + softirq: the kernel's network work, in no process's figures),
    `steal` (taken by the hypervisor), `idle` (idle + iowait) and `total`."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            t = [int(v) for v in values[:8]]
            out[int(name[3:])] = {"task": t[0] + t[1] + t[2], "irq": t[5] + t[6], "steal": t[7],
                                  "idle": t[3] + t[4], "total": sum(t)}
    return out


def core_use(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]], cpu: int | None
             ) -> dict[str, float] | None:
    """Percent of one CPU's time in the window per CORE_FIELDS category, plus `busy` (all but idle)
    and `seconds` (its busy time)."""
    if cpu is None or cpu not in before or cpu not in after:
        return None
    delta = {k: after[cpu][k] - before[cpu][k] for k in CORE_FIELDS}
    if not delta["total"]:
        return None
    out = {k: 100.0 * delta[k] / delta["total"] for k in CORE_FIELDS if k != "total"}
    out["busy"] = 100.0 - out["idle"]
    out["seconds"] = (delta["total"] - delta["idle"]) / targets.CLK_TCK
    return out


def children_cpu() -> float:
    """CPU seconds of the runner's reaped children: around a wrk run, that wrk's own CPU."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    """The run's shared state: options, pinning, the upstream, and the results so far."""

    def __init__(self, args: argparse.Namespace, pins: targets.Pinning, workdir: Path, stack: ExitStack) -> None:
        self.args, self.pins, self.workdir, self.stack = args, pins, workdir, stack
        self.upstream: targets.Process | None = None
        self.side: dict[str, targets.Process] = {}  # load-core processes whose CPU each run records
        self.results: dict[str, dict[str, object]] = {}
        self.status: dict[str, object] = {}

    def connections(self, shape: str) -> int:
        return self.args.json_connections if shape == "json" else self.args.sse_connections

    def measure(self, proc: targets.Process, request: bodies.Request, shape: str) -> dict[str, object]:
        """`measure_once`, again (up to --retries times) while other processes took more than
        DISTURBED % of either core; the least disturbed attempt is kept, the others summarised."""
        attempts: list[dict[str, object]] = []
        for _ in range(1 + max(0, self.args.retries)):
            result = self.measure_once(proc, request, shape)
            result["disturbance_pct"] = disturbance(result, proc is self.upstream)
            attempts.append(result)
            if result["disturbance_pct"] <= DISTURBED:  # type: ignore[operator]
                break
            print(f"(disturbed: others took {result['disturbance_pct']:.0f}% of a core, again)", end=" ", flush=True)
        best = min(attempts, key=lambda r: r["disturbance_pct"])  # type: ignore[arg-type, return-value]
        best["attempts"] = [{k: a[k] for k in ("rps", "cpu_us_per_req", "disturbance_pct")} for a in attempts]
        return best

    def measure_once(self, proc: targets.Process, request: bodies.Request, shape: str) -> dict[str, object]:
        """One recorded wrk run after an unrecorded warm-up. Records the CPU of `proc`'s processes
        per request (the figure of the table), the proxy core's whole busy time per request (with
        the kernel's softirq network work, which no process is charged for), what each core did,
        and the load side's CPU per request (wrk, the upstream, Redis when running)."""
        base = f"http://{targets.HOST}:{proc.info['port']}"
        pin, conns, threads = self.pins.prefix("load"), self.connections(shape), self.args.wrk_threads
        if self.args.warmup > 0:
            wrk.run(base, request, conns, threads, self.args.warmup, pin)
        side = {name: p for name, p in self.side.items() if p is not proc and p.alive()}
        cores0, cpu0, wrk0 = core_times(), proc.cpu_by_pid(), children_cpu()
        side0 = {name: p.cpu_seconds() for name, p in side.items()}
        t0 = time.monotonic()
        result = wrk.run(base, request, conns, threads, self.args.duration, pin).as_dict()
        wall = time.monotonic() - t0
        cores1, cpu1, wrk1 = core_times(), proc.cpu_by_pid(), children_cpu()
        side1 = {name: p.cpu_seconds() for name, p in side.items()}
        cpu = sum(cpu1.values()) - sum(cpu0.values())
        leader = cpu1.get(proc.pid, 0.0) - cpu0.get(proc.pid, 0.0)
        requests = int(result["requests"])  # type: ignore[call-overload]

        def per_req(seconds: float) -> float | None:
            return seconds * 1e6 / requests if requests else None

        proxy_core, load_core = core_use(cores0, cores1, self.pins.proxy), core_use(cores0, cores1, self.pins.load)
        result.update({
            "connections": conns,
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_us_per_req": per_req(cpu),
            "cpu_util_pct": 100.0 * cpu / wall,
            # nginx: master / workers; fastgw: supervisor / workers (only workers touch requests)
            "cpu_s_leader": leader,
            "cpu_s_children": cpu - leader,
            "processes": len(cpu1),
            "proxy_core": proxy_core,
            "load_core": load_core,
            "proxy_core_us_per_req": per_req(proxy_core["seconds"]) if proxy_core else None,
            "proxy_core_busy_pct": proxy_core["busy"] if proxy_core else None,
            "load_core_busy_pct": load_core["busy"] if load_core else None,
            "wire_bytes_per_req": result["read_bytes"] / requests if requests and result["read_bytes"] else None,
            "load_side_us_per_req": {"wrk": per_req(wrk1 - wrk0),
                                     **{name: per_req(side1[name] - side0[name]) for name in side}},
        })
        if not proc.alive():
            raise proc.fail("died during the measurement")
        return result

    def verify(self, proc: targets.Process, request: bodies.Request, kind: str, upstream_path: str
               ) -> tuple[check.Response, dict[str, object]]:
        resp = check.fetch(targets.HOST, int(proc.info["port"]), request)  # type: ignore[call-overload]
        if kind == "exact":
            return resp, check.exact(resp, upstream_path)
        if kind == "decoded":
            return resp, check.decoded(resp, upstream_path, request.headers["Accept-Encoding"])
        if kind == "openai-sse-coded":
            return resp, check.openai_sse_coded(resp, request.headers["Accept-Encoding"])
        return resp, CHECKS[kind](resp)

    def record(self, scenario: str, target: str, run: Callable[[], dict[str, object]]) -> None:
        """Run one measurement; a failure is recorded and printed, and the rest of the run goes on."""
        print(f"[{scenario}] {target} ...", end=" ", flush=True)
        try:
            result = run()
        except Exception as exc:  # TargetError, CheckFailed, wrk failures: recorded, the run goes on
            result = {"error": str(exc)}
            print(f"FAILED: {exc}", flush=True)
        else:
            if "rps" in result:
                print(f"{result['rps']:,.0f} req/s, {result['cpu_us_per_req'] or 0:.1f} us CPU/req, "
                      f"errors {result['errors']}", flush=True)
            else:
                print("done", flush=True)
        self.results.setdefault(scenario, {})[target] = result

    def start(self, name: str, start: Callable[[], targets.Process]) -> targets.Process | None:
        """Start one target; a failure is reported and recorded, and the scenarios needing it are skipped."""
        try:
            proc = start()
        except targets.TargetError as exc:
            print(f"!! {name} not started: {exc}", flush=True)
            self.status[name] = {"error": str(exc)}
            return None
        info = {k: v for k, v in proc.info.items() if k != "status"}
        if "status" in proc.info:
            info["worker_pids"] = [w.get("pid") for w in proc.info["status"]["workers"]]  # type: ignore[index]
        print(f"{name}: http://{targets.HOST}:{proc.info['port']} (pid {proc.pid}, cpu {proc.info.get('cpu')})"
              + (f", worker pids {info['worker_pids']}" if "worker_pids" in info else ""), flush=True)
        self.status[name] = {**info, "argv": proc.argv}
        return proc

    @contextmanager
    def running(self, name: str, start: Callable[[], targets.Process]) -> Iterator[targets.Process | None]:
        """A proxy for one phase: started, yielded, and stopped before the next proxy starts, so the
        proxy core only ever runs the proxy being measured."""
        proc = self.start(name, start)
        try:
            yield proc
        finally:
            if proc is not None:
                proc.stop()


def _skip(bench: Bench, scenarios: list[str], target: str, why: str) -> None:
    for name in scenarios:
        bench.results.setdefault(name, {})[target] = {"error": why}


def run_direct(bench: Bench, chosen: list[Scenario]) -> None:
    """wrk straight at the upstream, once per pre-built answer in use: the ceiling of each row."""
    assert bench.upstream is not None
    done: set[str] = set()
    for sc in chosen:
        if sc.upstream_path in done:
            continue
        done.add(sc.upstream_path)
        request = bodies.Request(sc.upstream_path, sc.request.body)

        def one(request: bodies.Request = request, sc: Scenario = sc) -> dict[str, object]:
            _, verified = bench.verify(bench.upstream, request, "exact", sc.upstream_path)  # type: ignore[arg-type]
            return {**bench.measure(bench.upstream, request, sc.shape), "verified": verified}  # type: ignore[arg-type]

        bench.record(f"direct {sc.upstream_path}", "direct", one)


def run_plain_relay(bench: Bench, name: str, proc: targets.Process | None, shapes: list[str]) -> None:
    """nginx or fastgw's plain route, relaying the json and/or sse answer; must pass the bytes
    unchanged, or (compression scenarios) decode to them."""
    for shape in shapes:
        sc = SCENARIOS[shape]
        if proc is None:
            _skip(bench, [f"relay {shape}"], name, f"{name} not running")
            continue

        def one(sc: Scenario = sc, proc: targets.Process = proc) -> dict[str, object]:
            _, verified = bench.verify(proc, sc.request, "decoded" if sc.coding else "exact", sc.upstream_path)
            return {**bench.measure(proc, sc.request, sc.shape), "verified": verified}

        bench.record(f"relay {shape}", name, one)


def run_ttfb(bench: Bench, target: str, proc: targets.Process | None, request: bodies.Request) -> None:
    if proc is None:
        _skip(bench, ["ttfb"], target, f"{target} not running")
        return
    port = int(proc.info["port"])  # type: ignore[call-overload]
    bench.record("ttfb", target, lambda: ttfb.measure(targets.HOST, port, request, bench.args.ttfb_requests, 30))


def run_ai(bench: Bench, proc: targets.Process | None, chosen: list[Scenario], extra: Callable[
        [targets.Process, check.Response], dict[str, object]] | None = None) -> None:
    """AI scenarios on one gateway: check one answer (and `extra` facts), then measure."""
    for sc in chosen:
        if proc is None:
            _skip(bench, [sc.name], "fastgw", f"fastgw ({sc.gateway}) not running")
            continue

        def one(sc: Scenario = sc, proc: targets.Process = proc) -> dict[str, object]:
            resp, verified = bench.verify(proc, sc.request, sc.check, sc.upstream_path)
            if extra is not None:
                verified = {**verified, **extra(proc, resp)}
            return {**bench.measure(proc, sc.request, sc.shape), "verified": verified}

        bench.record(sc.name, "fastgw", one)


def full_features_check(proc: targets.Process, resp: check.Response) -> dict[str, object]:
    """ai-full really runs with its features: rate-limit headers on the answer (limits checked), and
    the live config (admin GET /config) holds the consumer, both limits, 1,000 terms and the log."""
    limits = {k: v for k, v in resp.headers.items() if k.startswith("x-ratelimit-limit-")}
    if not {"x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"} <= set(limits):
        raise check.CheckFailed(f"no x-ratelimit-limit-requests/-tokens headers: limits not applied ({resp.headers})")
    code, raw = targets.http_get(f"http://{targets.HOST}:{proc.info['admin_port']}/config", timeout=5,
                                 headers=targets.admin_headers())
    config = json.loads(raw) if code == 200 else {}
    terms = sum(len(r.get("terms") or []) for r in (config.get("guard") or {}).get("rules") or [])
    live = {"consumers": len(config.get("consumers") or []), "limits": len(config.get("limits") or []),
            "guard_terms": terms, "access_log": (config.get("log") or {}).get("access")}
    if live["consumers"] != 1 or live["limits"] != 2 or terms != targets.GUARD_TERMS or not live["access_log"]:
        raise check.CheckFailed(f"live config lacks ai-full's features: {live}")
    return {"ratelimit_headers": limits, "live_config": live}


def run_scenarios(bench: Bench) -> None:
    args = bench.args
    chosen = [SCENARIOS[s] for s in args.scenarios if s in SCENARIOS]
    want_ttfb, want_push = "ttfb" in args.scenarios, "push" in args.scenarios
    shapes = [shape for shape in ("json", "sse") if shape in {sc.shape for sc in chosen if not sc.coding}]  # nginx relays these
    workdir, pins, stack, workers = bench.workdir, bench.pins, bench.stack, args.workers
    bench.upstream = bench.start("upstream", lambda: targets.start_upstream(workdir, pins, bodies.CHUNKS, stack))
    if bench.upstream is None:
        raise SystemExit("the upstream did not start; nothing can be measured")
    bench.side["upstream"] = bench.upstream
    up_port = int(bench.upstream.info["port"])  # type: ignore[call-overload]
    sse = SCENARIOS["sse"].request

    run_direct(bench, chosen)
    if want_ttfb:
        run_ttfb(bench, "direct", bench.upstream, sse)

    if shapes or want_ttfb:
        with bench.running("nginx", lambda: targets.start_nginx(workdir, workers, up_port, pins, stack)) as nginx:
            run_plain_relay(bench, "nginx", nginx, shapes)
            if want_ttfb:
                run_ttfb(bench, "nginx", nginx, sse)

    plain = [s for s in ("json", "sse") if s in args.scenarios]
    if plain or want_ttfb or want_push:
        render = lambda port, admin: targets.fastgw_plain_config(port, admin, workers, up_port)  # noqa: E731
        with bench.running("fastgw-plain",
                           lambda: targets.start_gateway(workdir, "fastgw-plain", render, workers, pins, stack)) as gw:
            run_plain_relay(bench, "fastgw", gw, plain)
            if want_ttfb:
                run_ttfb(bench, "fastgw", gw, sse)
            if want_push:  # last on this gateway: it leaves the pushed routes in place
                if gw is None:
                    _skip(bench, ["push"], "fastgw", "fastgw-plain not running")
                else:
                    bench.record("push", "fastgw", lambda: push.run(
                        gw, up_port, args.push_routes, settle=max(1.0, args.duration / 2),  # type: ignore[arg-type]
                        threads=args.wrk_threads, pin=pins.prefix("load")))

    compressed = [sc for sc in chosen if sc.coding]
    if compressed:
        gzipped = sorted({sc.compare for sc in compressed})
        with bench.running("nginx-gzip", lambda: targets.start_nginx(workdir, workers, up_port, pins, stack,
                                                                     gzip=True)) as nginx:
            run_plain_relay(bench, "nginx", nginx, gzipped)
    plain_coded = [sc.name for sc in compressed if sc.gateway == "plain-compress"]
    if plain_coded:
        render = lambda port, admin: targets.fastgw_plain_config(port, admin, workers, up_port, compress=True)  # noqa: E731
        with bench.running("fastgw-compress",
                           lambda: targets.start_gateway(workdir, "fastgw-compress", render, workers, pins, stack)) as gw:
            run_plain_relay(bench, "fastgw", gw, plain_coded)
    ai_coded = [sc for sc in compressed if sc.gateway == "ai-compress"]
    if ai_coded:
        render = lambda port, admin: targets.fastgw_ai_config(port, admin, workers, up_port, compress=True)  # noqa: E731
        with bench.running("fastgw-ai-compress",
                           lambda: targets.start_gateway(workdir, "fastgw-ai-compress", render, workers, pins,
                                                         stack)) as gw:
            run_ai(bench, gw, ai_coded)

    ai = [sc for sc in chosen if sc.gateway == "ai"]
    if ai or want_ttfb:
        render = lambda port, admin: targets.fastgw_ai_config(port, admin, workers, up_port)  # noqa: E731
        with bench.running("fastgw-ai",
                           lambda: targets.start_gateway(workdir, "fastgw-ai", render, workers, pins, stack)) as gw:
            run_ai(bench, gw, ai)
            if want_ttfb:
                run_ttfb(bench, "fastgw ai-sse", gw, SCENARIOS["ai-sse"].request)

    full = [sc for sc in chosen if sc.gateway == "ai-full"]
    if full:
        run_full(bench, full, up_port)
    if "overload" in args.scenarios:
        run_overload(bench, up_port)
    if "concurrency" in args.scenarios:
        run_concurrency(bench, up_port)


def run_concurrency(bench: Bench, up_port: int) -> None:
    """What a `concurrency` limit costs per request: the json plain relay with and without one
    (local mode: the node's shared-memory slot table; the limit is never reached)."""
    workdir, pins, stack, workers = bench.workdir, bench.pins, bench.stack, bench.args.workers
    sc = SCENARIOS["json"]
    for limited in (False, True):
        name = f"fastgw-concurrency-{'on' if limited else 'off'}"

        def render(port: int, admin: int, on: bool = limited) -> str:
            text = targets.fastgw_plain_config(port, admin, workers, up_port)
            if on:
                text += ("limits:\n  - {name: in-flight, match: {routes: [upstream]}, key: [ip], "
                         "concurrency: 100000}\n")
            return text

        with bench.running(name, lambda n=name, r=render: targets.start_gateway(workdir, n, r, workers, pins, stack)
                           ) as gw:
            target = "fastgw concurrency limit" if limited else "fastgw without limit"
            if gw is None:
                _skip(bench, ["concurrency"], target, f"{name} not running")
                continue
            bench.record("concurrency", target, lambda g=gw: bench.measure(g, sc.request, sc.shape))


def run_overload(bench: Bench, up_port: int) -> None:
    """The probe's p99 under a 2x low-priority flood, with shedding off then on (bench/overload.py)."""
    args, workdir, pins, stack, workers = bench.args, bench.workdir, bench.pins, bench.stack, bench.args.workers
    saturated: float | None = None
    for shedding in (False, True):
        name = f"fastgw-overload-{'on' if shedding else 'off'}"
        render = lambda port, admin, on=shedding: overload.config(port, admin, workers, up_port, on)  # noqa: E731
        with bench.running(name, lambda n=name, r=render: targets.start_gateway(workdir, n, r, workers, pins, stack)
                           ) as gw:
            target = f"fastgw shedding {'on' if shedding else 'off'}"
            if gw is None:
                _skip(bench, ["overload"], target, f"{name} not running")
                continue
            if saturated is None:  # measured without shedding: what the gateway can serve
                saturated = overload.saturation(gw, 2 * args.json_connections, args.duration, args.wrk_threads,
                                                pins.prefix("load"))
            bench.record("overload", target, lambda g=gw, rate=saturated: overload.measure(
                g, rate, args.duration, args.wrk_threads, pins.prefix("load"), up_port))


def run_full(bench: Bench, full: list[Scenario], up_port: int) -> None:
    """ai-full: Redis on the load core, then the gateway with every feature on."""
    workdir, pins, stack, workers = bench.workdir, bench.pins, bench.stack, bench.args.workers
    redis_url: list[str] = []

    def start_redis() -> targets.Process:
        proc, url = targets.start_redis(workdir, pins, stack)
        redis_url.append(url)
        return proc

    with bench.running("redis", start_redis) as redis:
        if redis is None:
            _skip(bench, [sc.name for sc in full], "fastgw", "redis not running")
            return
        bench.side["redis"] = redis  # its CPU is the load core's, recorded beside wrk's and the upstream's
        terms = workdir / "guard-terms.txt"
        terms.write_text("\n".join(bodies.guard_terms(targets.GUARD_TERMS)) + "\n")
        features = targets.FullFeatures(redis_url[0], terms, workdir / "access.log")
        render = lambda port, admin: targets.fastgw_ai_config(port, admin, workers, up_port, features)  # noqa: E731
        with bench.running("fastgw-ai-full",
                           lambda: targets.start_gateway(workdir, "fastgw-ai-full", render, workers, pins, stack)) as gw:
            run_ai(bench, gw, full, extra=full_features_check)
        del bench.side["redis"]
        if features.access_log.exists():  # one JSON line per request: the log kept up with the load
            lines = sum(1 for _ in features.access_log.open("rb"))
            measured = sum(int(bench.results.get(sc.name, {}).get("fastgw", {}).get("requests", 0)) for sc in full)
            bench.status["fastgw-ai-full"]["access_log_lines"] = lines  # type: ignore[index]
            bench.status["fastgw-ai-full"]["measured_requests"] = measured  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- table

def _get(results: dict[str, dict[str, object]], scenario: str, target: str, key: str) -> float | None:
    value = results.get(scenario, {}).get(target, {})
    return value.get(key) if isinstance(value, dict) and "error" not in value else None  # type: ignore[return-value]


def table_rows(results: dict[str, dict[str, object]], scenarios: list[str], pinned: bool = True
               ) -> list[dict[str, object]]:
    """One row per scenario: req/s and CPU us/request of direct, nginx (the plain relay of the same
    shape) and fastgw, both ratios, and the flags that say when a ratio means nothing."""
    rows: list[dict[str, object]] = []
    for name in (s for s in scenarios if s in SCENARIOS):
        sc = SCENARIOS[name]
        direct_key, nginx_key = f"direct {sc.upstream_path}", sc.nginx_key
        fastgw_key = f"relay {name}" if sc.gateway.startswith("plain") else name
        row: dict[str, object] = {"scenario": name, "what": sc.what, "compared_with": f"nginx {sc.compare or sc.shape}"}
        for target, key in (("direct", direct_key), ("nginx", nginx_key), ("fastgw", fastgw_key)):
            row[f"{target}_rps"] = _get(results, key, target, "rps")
            row[f"{target}_cpu_us"] = _get(results, key, target, "cpu_us_per_req")
            row[f"{target}_errors"] = _get(results, key, target, "errors")
            row[f"{target}_error"] = (results.get(key, {}).get(target) or {}).get("error")  # type: ignore[union-attr]
            for extra in ("p50_ms", "p99_ms", "cpu_util_pct", "proxy_core_busy_pct", "load_core_busy_pct",
                          "proxy_core_us_per_req", "wire_bytes_per_req"):
                row[f"{target}_{extra}"] = _get(results, key, target, extra)
        d, n, f = row["direct_rps"], row["nginx_rps"], row["fastgw_rps"]
        nc, fc = row["nginx_cpu_us"], row["fastgw_cpu_us"]
        row["ratio"] = f / n if n and f is not None else None  # type: ignore[operator]
        row["cpu_ratio"] = fc / nc if nc and fc is not None else None  # type: ignore[operator]
        flags = []
        if d is not None and n is not None and d < HEADROOM * n:  # type: ignore[operator]
            flags.append("upstream-bound: ratio not meaningful")
        elif d is not None and f is not None and d < HEADROOM * f:  # type: ignore[operator]
            flags.append("upstream-bound (fastgw): ratio not meaningful")
        if d is None or n is None or f is None:
            flags.append("incomplete")
        for target in ("nginx", "fastgw"):  # a proxy with CPU to spare while the load core was full
            load, util = row[f"{target}_load_core_busy_pct"], row[f"{target}_cpu_util_pct"]
            if load is not None and util is not None and load >= LOAD_FULL and util < PROXY_BOUND:  # type: ignore[operator]
                flags.append(f"{target} load-bound (load core {load:.0f}%, proxy {util:.0f}%)")
        flags += [f"{target} errors" for target in ("direct", "nginx", "fastgw") if row[f"{target}_errors"]]
        if not pinned:
            flags.append("UNPINNED")
        nb, fb = row["nginx_wire_bytes_per_req"], row["fastgw_wire_bytes_per_req"]
        row["bytes_ratio"] = fb / nb if nb and fb is not None else None  # type: ignore[operator]
        row["flags"] = flags
        row["measurements"] = {"direct": direct_key, "nginx": nginx_key, "fastgw": fastgw_key}
        rows.append(row)
    return rows


def disturbance(result: dict[str, object], direct: bool) -> float:
    """How much of the proxy core or of the load core (the larger, in %) processes other than the
    run's own took during a measurement: the core's busy time minus what ours were charged (a
    process is charged the softirq network work done in its context, so busy, not task, time)."""
    util, core, load = result["cpu_util_pct"], result["proxy_core"], result["load_core"]
    side: dict[str, float | None] = result["load_side_us_per_req"]  # type: ignore[assignment]
    ours = sum(us or 0 for us in side.values()) * float(result["rps"]) / 1e4  # type: ignore[arg-type]
    out = 0.0
    if direct:
        ours += util  # type: ignore[operator]
    elif isinstance(core, dict):
        out = core["busy"] - util  # type: ignore[operator]
    if isinstance(load, dict):
        out = max(out, load["busy"] - ours)
    return max(0.0, out)


def measurement_notes(results: dict[str, dict[str, object]]) -> list[str]:
    """What makes a figure less than it seems, once per measurement: it failed, other processes
    (or the hypervisor) took part of a core, the proxy did not use all of its core, and what the
    load side spent besides wrk and the upstream (Redis)."""
    notes = []
    for key, by_target in results.items():
        for target, result in by_target.items():
            label = f"{target} {key}" if target != key else key
            if not isinstance(result, dict) or "rps" not in result and "error" not in result:
                continue
            if "error" in result:
                notes.append(f"{label}: FAILED: {str(result['error'])[:400]}")
                continue
            util, core = result["cpu_util_pct"], result["proxy_core"]
            others = float(result.get("disturbance_pct") or 0.0)  # type: ignore[arg-type]
            if others > DISTURBED:
                notes.append(f"{label}: other processes took ~{others:.0f}% of a core even after "
                             f"{len(result.get('attempts') or [1])} attempt(s): req/s understated, "  # type: ignore[arg-type]
                             "CPU us/req still valid")
            if target != "direct" and isinstance(core, dict):
                if core["steal"] > 5:
                    notes.append(f"{label}: the hypervisor stole {core['steal']:.0f}% of the proxy core")
                if util < PROXY_BOUND and others <= DISTURBED:  # type: ignore[operator]
                    notes.append(f"{label}: the proxy used {util:.0f}% of its core (idle {core['idle']:.0f}%): "
                                 "not CPU-bound")
            for name, us in (result.get("load_side_us_per_req") or {}).items():  # type: ignore[union-attr]
                if name not in ("wrk", "upstream") and us is not None:
                    notes.append(f"{label}: {name} spent {us:.1f} us per request on the load core "
                                 "(not in the proxy's figure)")
    return notes


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(header: list[str], body: list[list[str]], left: int = 1) -> None:
    """Columns before `left` and a last `flag` column are left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lefts = set(range(left)) | ({len(header) - 1} if header[-1] == "flag" else set())

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in lefts else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in body:
        print(line(row))


def print_tables(rows: list[dict[str, object]], results: dict[str, dict[str, object]]) -> None:
    if rows:
        print_main(rows)
    notes = measurement_notes(results)
    if notes:
        print("\nnotes:\n" + "\n".join(f"  {n}" for n in notes))
    print_extras(results)


def print_main(rows: list[dict[str, object]]) -> None:
    print("\nthroughput (req/s; a stream is one request) and proxy CPU per request (us, from /proc)")
    _print(["scenario", "direct", "nginx", "fastgw", "fastgw/nginx",
            "direct us", "nginx us", "fastgw us", "us fastgw/nginx", "flag"],
           [[str(r["scenario"]), _fmt(r["direct_rps"], ",.0f"), _fmt(r["nginx_rps"], ",.0f"),
             _fmt(r["fastgw_rps"], ",.0f"), _fmt(r["ratio"], ".2f"), _fmt(r["direct_cpu_us"], ".1f"),
             _fmt(r["nginx_cpu_us"], ".1f"), _fmt(r["fastgw_cpu_us"], ".1f"), _fmt(r["cpu_ratio"], ".2f"),
             "; ".join(r["flags"]) or "ok"] for r in rows])  # type: ignore[arg-type]
    print("\nlatency (ms, wrk); proxy core busy us per request (the proxy's CPU plus the kernel's softirq network"
          "\nwork on its core); % of the run: the proxy's own CPU / proxy core busy / load core busy")
    _print(["scenario", "nginx p50", "nginx p99", "fastgw p50", "fastgw p99", "nginx core us", "fastgw core us",
            "nginx cpu/core/load", "fastgw cpu/core/load"],
           [[str(r["scenario"]), _fmt(r["nginx_p50_ms"], ".2f"), _fmt(r["nginx_p99_ms"], ".2f"),
             _fmt(r["fastgw_p50_ms"], ".2f"), _fmt(r["fastgw_p99_ms"], ".2f"),
             _fmt(r["nginx_proxy_core_us_per_req"], ".1f"), _fmt(r["fastgw_proxy_core_us_per_req"], ".1f"),
             *("/".join(_fmt(r[f"{t}_{k}"], ".0f") for k in ("cpu_util_pct", "proxy_core_busy_pct",
                                                              "load_core_busy_pct")) for t in ("nginx", "fastgw"))]
            for r in rows])
    coded = [r for r in rows if r["scenario"] in COMPRESSED]
    if coded:
        print("\ncompression: bytes on the wire per request (what wrk read, heads included) and the targets"
              "\n(>= 0.8x nginx gzip's streams/s at its bytes +-10%; zstd >= 1.2x fastgw gzip's streams/s, smaller)")
        def twin(r: dict[str, object]) -> tuple[str, str]:  # rows of one gateway and shape: gzip vs zstd
            sc = SCENARIOS[str(r["scenario"])]
            return sc.gateway, sc.shape

        gzip_rows = {twin(r): r for r in coded if SCENARIOS[str(r["scenario"])].coding == "gzip"}
        body = []
        for r in coded:
            versus = ""
            if SCENARIOS[str(r["scenario"])].coding == "zstd":
                ref = gzip_rows.get(twin(r), {})
                g, b = ref.get("fastgw_rps"), ref.get("fastgw_wire_bytes_per_req")
                f, fb = r["fastgw_rps"], r["fastgw_wire_bytes_per_req"]
                versus = (f"{f / g:.2f}x gzip's rate, {fb / b:.2f}x its bytes"  # type: ignore[operator]
                          if g and b and f is not None and fb is not None else "-")
            body.append([str(r["scenario"]), _fmt(r["nginx_wire_bytes_per_req"], ",.0f"),
                         _fmt(r["fastgw_wire_bytes_per_req"], ",.0f"), _fmt(r["bytes_ratio"], ".2f"),
                         _fmt(r["ratio"], ".2f"), versus or "-"])
        _print(["scenario", "nginx B/req", "fastgw B/req", "bytes fastgw/nginx", "rate fastgw/nginx", "zstd vs gzip"],
               body)
    legend = [f"  {r['scenario']}: {r['what']}; nginx column: its plain relay of the {r['compared_with'][6:]} answer"
              for r in rows if r["scenario"] not in ("json", "sse")]
    if legend:
        print("\n" + "\n".join(legend))


def print_extras(results: dict[str, dict[str, object]]) -> None:
    if "ttfb" in results:
        print("\nttfb: one connection, sequential streams, time to the first SSE event (ms)")
        base = _get(results, "ttfb", "direct", "p50_ms"), _get(results, "ttfb", "direct", "p99_ms")
        body = []
        for target in results["ttfb"]:
            p50, p99 = _get(results, "ttfb", target, "p50_ms"), _get(results, "ttfb", target, "p99_ms")
            added = [v - b if v is not None and b is not None and target != "direct" else None
                     for v, b in zip((p50, p99), base, strict=True)]
            body.append([target, _fmt(p50, ".3f"), _fmt(p99, ".3f"), _fmt(added[0], ".3f"), _fmt(added[1], ".3f")])
        _print(["target", "p50", "p99", "added p50", "added p99"], body)
    gw_push = results.get("push", {}).get("fastgw", {})
    if isinstance(gw_push, dict) and "live_ms" in gw_push:
        load = gw_push["load"]
        print(f"\npush: {gw_push['routes']} routes, POST answered in {gw_push['post_ms']:.0f} ms, live in every "
              f"worker after {gw_push['live_ms']:.0f} ms; json load meanwhile {load['rps']:,.0f} req/s, "  # type: ignore[index]
              f"errors {load['errors']}")  # type: ignore[index]
    elif isinstance(gw_push, dict) and "error" in gw_push:
        print(f"\npush: {gw_push['error']}")
    if "overload" in results:
        print("\noverload: a normal-priority probe's p99 (ms) while a low-priority flood of a plain route is "
              "offered at 2x the saturating rate (paced wrk)")
        body = []
        for target, r in results["overload"].items():
            if "error" in r:
                body.append([target, "-", "-", "-", "-", "-", "-", "-", r["error"][:60]])  # type: ignore[index]
                continue
            body.append([target, _fmt(r["unloaded_p99_ms"], ".2f"), _fmt(r["loaded_p99_ms"], ".2f"),
                         _fmt(r["p99_ratio"], ".2f"), _fmt(r.get("floor_p99_ms"), ".2f"),
                         _fmt(r.get("p99_ratio_to_floor"), ".2f"),
                         f"{r['flood_rps']:,.0f} of {r['flood_target_rps']:,.0f}",
                         _fmt(100 * (r["flood_shed_share"] or 0), ".0f") + "%",
                         f"{r['probe_shed']}/{r['probe_requests']}"])
        _print(["target", "unloaded p99", "loaded p99", "ratio", "floor p99", "to floor", "flood req/s (target)",
                "flood shed", "probe shed"], body)
        print("floor p99: the probe through the idle gateway while the same flood goes to the upstream "
              "directly (what the shared load core alone adds)")
    if "concurrency" in results:
        print("\nconcurrency: CPU us per request of the json plain relay without and with a `concurrency` "
              "limit on the route (local mode)")
        off = _get(results, "concurrency", "fastgw without limit", "cpu_us_per_req")
        on = _get(results, "concurrency", "fastgw concurrency limit", "cpu_us_per_req")
        body = [[t, _fmt(r.get("rps"), ",.0f"), _fmt(r.get("cpu_us_per_req"), ".1f")]
                for t, r in results["concurrency"].items()]
        _print(["target", "req/s", "us/req"], body)
        if off is not None and on is not None:
            print(f"delta: {on - off:+.1f} us CPU per request")


def write_results(out: Path, report: dict[str, object]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stamp}.json"
    text = json.dumps(report, indent=2, default=str) + "\n"
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.token:
        targets.ADMIN_TOKEN = args.token
    for sig in ABORT_SIGNALS:  # SIGINT too, even if the runner was started with it ignored
        signal.signal(sig, _on_signal)
    ensure_tools()
    pins = targets.Pinning.detect()
    if pins.pinned:
        os.sched_setaffinity(0, {pins.load})  # the runner's own work stays off the proxy core
        print(f"pinning: proxy under test on cpu {pins.proxy}; wrk ({args.wrk_threads} thread(s)), upstream, "
              f"Redis and this runner on cpu {pins.load}", flush=True)
    else:
        print("!" * 100 + f"\n!! NOT PINNED: {pins.reason}. Proxy, wrk and upstream share the CPU, so the ratios "
              "and the upstream-bound flags are much less trustworthy.\n" + "!" * 100, flush=True)
    signal.alarm(time_budget(args))
    started = datetime.now(timezone.utc)
    machine = machine_info(pins)
    with tempfile.TemporaryDirectory(prefix="fastgw-bench-") as tmp, ExitStack() as stack:
        bench = Bench(args, pins, Path(tmp), stack)
        t0 = time.monotonic()
        try:
            run_scenarios(bench)
        finally:
            elapsed = time.monotonic() - t0
    signal.alarm(0)
    rows = table_rows(bench.results, args.scenarios, pins.pinned)
    print_tables(rows, bench.results)
    report = {
        "started_at": started.isoformat(),
        "elapsed_s": round(elapsed, 1),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {**machine, "loadavg_end": os.getloadavg()},
        "targets": bench.status,
        "table": rows,
        "results": bench.results,
    }
    path = write_results(args.out, report)
    print(f"\nresults: {path} (and {args.out / 'latest.json'}); {elapsed:.0f} s")
    try:
        from report import write_report
    except ImportError as exc:  # matplotlib is the bench extra
        print(f"no plots ({exc}): pip install 'fastgw[bench]', then python bench/report.py {path}")
    else:
        if rows:
            print("report: " + ", ".join(str(p) for p in write_report(path).values()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Abort as exc:
        sys.exit(f"aborted ({exc}); all started processes were stopped")

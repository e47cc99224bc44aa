"""fastgw vs nginx, side by side, in one command: `python bench/run.py [--workers N] [--duration S]`.

The machine is small and shared, so absolute numbers drift from run to run; every target is
measured in the same run, one after the other, and the table's last column is fastgw / nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

import push
import targets
import ttfb
import wrk

SCENARIOS = ("json50", "json256", "sse", "ai", "ai-limits", "guard", "ttfb", "push")
TARGETS = ("direct", "nginx", "fastgw")
SSE_CHUNKS = 50  # fixed: scripts/sse.lua asks the mock for the same number
ABORT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)


class Abort(BaseException):
    """Ctrl-C/SIGTERM/SIGHUP/time budget: unwinds the stack so every started process is stopped."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="worker processes for nginx and fastgw (default 1)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk measurement (default 10)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)")
    parser.add_argument("--out", type=Path, default=targets.BENCH_DIR / "results", help="results directory")
    parser.add_argument("--mock-workers", type=int, default=2,
                        help="mock upstream workers, enough that it is not the bottleneck (default 2)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=float, default=1, help="unrecorded wrk seconds before each run (default 1)")
    parser.add_argument("--sse-connections", type=int, default=32, help="connections for the sse scenario")
    parser.add_argument("--ttfb-requests", type=int, default=300, help="sequential streams per target for ttfb")
    parser.add_argument("--push-routes", type=int, default=10_000, help="plain routes in the pushed config")
    args = parser.parse_args(argv)
    chosen = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = sorted(chosen - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    # Canonical order whatever was typed: push must come last, since it leaves 10,000 routes in fastgw.
    args.scenarios = [s for s in SCENARIOS if s in chosen]
    if args.workers < 1 or args.duration < 1:
        parser.error("--workers and --duration must be at least 1")
    return args


def ensure_tools() -> None:
    """Install nginx/wrk from apt when missing; fastgw itself must already be set up per the README."""
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        install = [*sudo, "apt-get", "install", "-y", *missing]
        if subprocess.run(install, timeout=600).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update"], check=True, timeout=600)
            subprocess.run(install, check=True, timeout=600)
    check = subprocess.run([sys.executable, "-c", "import fastgw"], cwd=targets.REPO_ROOT,
                           env=targets.python_env(), capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        sys.exit(f"fastgw is not importable ({check.stderr.strip().splitlines()[-1:]}); "
                 "run the setup in README.md first (e.g. `pip install -e '.[test]'`).")


def _first_line(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else None


def machine_info() -> dict[str, object]:
    """What a reader needs to compare two result files: cores, kernel, tool versions, load."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    compiled = _first_line([sys.executable, "-c", "from fastgw import _speedups; print(_speedups.COMPILED)"])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "fastgw_compiled": {"True": True, "False": False}.get(compiled or ""),
        "loadavg": os.getloadavg(),
    }


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """First signal aborts; later ones are ignored so a second Ctrl-C cannot cut the cleanup short."""
    for sig in ABORT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Abort(f"stopped by {signal.Signals(signum).name}")


def time_budget(args: argparse.Namespace) -> int:
    """A generous upper bound on the whole run; past it the run aborts and cleans up."""
    wrk_runs = sum(s in args.scenarios for s in ("json50", "json256", "sse")) * len(TARGETS)
    seconds = 180 + wrk_runs * (args.duration + args.warmup + 40)
    seconds += ("ttfb" in args.scenarios) * len(TARGETS) * 120
    seconds += ("push" in args.scenarios) * (2 * args.duration + 200)
    return int(seconds)


def measure_wrk(url: str, script: str, connections: int, args: argparse.Namespace,
                proc: targets.Process) -> dict[str, object]:
    """An unrecorded warm-up first, so connection setup and first-request costs stay out of the figures.

    Also records the CPU the target's own processes spent per request during the measured run.
    """
    if args.warmup > 0:
        wrk.run(url, script, connections, args.wrk_threads, args.warmup)
    cpu_before = proc.cpu_seconds()
    result = wrk.run(url, script, connections, args.wrk_threads, args.duration).as_dict()
    cpu = proc.cpu_seconds() - cpu_before
    result["cpu_s"] = cpu
    result["cpu_us_per_req"] = cpu * 1e6 / result["requests"] if result["requests"] else None
    return result


def measure_sse(url: str, port: int, args: argparse.Namespace, proc: targets.Process) -> dict[str, object]:
    """Streams/s from wrk; chunks/s only once a real client saw SSE_CHUNKS content chunks per stream."""
    check = ttfb.count_sse_chunks(targets.HOST, port, SSE_CHUNKS)
    if check["status"] != 200 or check["content_chunks"] != SSE_CHUNKS or not check["done_marker"]:
        raise RuntimeError(f"expected {SSE_CHUNKS} content chunks and [DONE] with status 200, got {check}")
    result = measure_wrk(url, "sse.lua", args.sse_connections, args, proc)
    result["verified"] = check
    result["streams_per_s"] = result["rps"]
    result["chunks_per_s"] = float(result["rps"]) * SSE_CHUNKS
    return result


def measure_ai(port: int, args: argparse.Namespace, proc: targets.Process) -> dict[str, object]:
    """The AI front door (auth + model routing + Anthropic->OpenAI stream conversion), checked first
    with a real client: 50 content chunks and [DONE], like the plain relay it is compared with."""
    check = ttfb.count_sse_chunks(targets.HOST, port, SSE_CHUNKS, model=targets.AI_MODEL, api_key=targets.AI_KEY)
    if check["status"] != 200 or check["content_chunks"] != SSE_CHUNKS or not check["done_marker"]:
        raise RuntimeError(f"expected {SSE_CHUNKS} content chunks and [DONE] with status 200, got {check}")
    result = measure_wrk(f"http://{targets.HOST}:{port}/", "ai.lua", args.sse_connections, args, proc)
    result["verified"] = check
    result["streams_per_s"] = result["rps"]
    return result


def measure(scenario: str, port: int, args: argparse.Namespace, proc: targets.Process) -> dict[str, object]:
    """One non-push scenario against one target."""
    url = f"http://{targets.HOST}:{port}/"
    if scenario == "json50":
        return measure_wrk(url, "json.lua", 50, args, proc)
    if scenario == "json256":
        return measure_wrk(url, "json.lua", 256, args, proc)
    if scenario == "sse":
        return measure_sse(url, port, args, proc)
    return ttfb.measure(targets.HOST, port, args.ttfb_requests, 30, SSE_CHUNKS)


def run_scenarios(args: argparse.Namespace, ports: dict[str, int], procs: dict[str, targets.Process],
                  gateway: targets.Process | None, mock_port: int) -> dict[str, dict[str, object]]:
    """Each scenario, each target in turn; one failure is recorded and the rest still run."""
    results: dict[str, dict[str, object]] = {}
    for scenario in args.scenarios:
        results[scenario] = {}
        if scenario == "push":
            if gateway is None:
                results[scenario]["fastgw"] = {"error": "fastgw not running"}
                print("[push] skipped: fastgw not running", flush=True)
                continue
            print(f"[push] {args.push_routes} routes under json50 load ...", flush=True)
            try:
                results[scenario]["fastgw"] = push.run(gateway, mock_port, args.push_routes,
                                                       settle=max(1.0, args.duration / 2), threads=args.wrk_threads)
            except Exception as exc:  # recorded and printed, other scenarios go on
                results[scenario]["fastgw"] = {"error": str(exc)}
                print(f"  push: {exc}", flush=True)
            continue
        if scenario == "guard":
            # The same streamed chat through the AI front door, with and without the filter.
            for name in ("fastgw-guard-off", "fastgw-guard-on"):
                if name not in ports:
                    results[scenario][name] = {"error": f"{name} not running"}
                    continue
                print(f"[guard] {name} ...", flush=True)
                try:
                    results[scenario][name] = measure_sse(f"http://{targets.HOST}:{ports[name]}/", ports[name],
                                                          args, procs[name])
                except Exception as exc:  # recorded and printed, other scenarios go on
                    results[scenario][name] = {"error": str(exc)}
                    print(f"  {name}: {exc}", flush=True)
            continue
        if scenario in ("ai", "ai-limits"):
            # Compared with nginx relaying the same request shape (the sse scenario) in this run.
            if "nginx" in ports and "nginx" not in results.get("sse", {}):
                print(f"[{scenario}] nginx (plain relay of the same stream) ...", flush=True)
                results.setdefault("sse", {})["nginx"] = measure("sse", ports["nginx"], args, procs["nginx"])
            target = f"fastgw-{scenario}"
            if target not in ports:
                results[scenario]["fastgw"] = {"error": f"{target} not running"}
                continue
            print(f"[{scenario}] fastgw ...", flush=True)
            try:
                results[scenario]["fastgw"] = measure_ai(ports[target], args, procs[target])
            except Exception as exc:  # recorded and printed, other scenarios go on
                results[scenario]["fastgw"] = {"error": str(exc)}
                print(f"  {target}: {exc}", flush=True)
            continue
        for name, port in ports.items():
            if name.startswith(("fastgw-ai", "fastgw-guard")):
                continue
            print(f"[{scenario}] {name} ...", flush=True)
            try:
                results[scenario][name] = measure(scenario, port, args, procs[name])
            except Exception as exc:  # recorded and printed, other targets go on
                results[scenario][name] = {"error": str(exc)}
                print(f"  {name}: {exc}", flush=True)
    return results


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_rows(results: dict[str, dict[str, dict]]) -> list[dict[str, object]]:
    """Rows of (metric, direct, nginx, fastgw, fastgw/nginx); `better` says which way the ratio should go."""
    rows: list[dict[str, object]] = []

    def add(label: str, better: str, values: dict[str, float | None], ratio: bool = True) -> None:
        nginx, fastgw = values.get("nginx"), values.get("fastgw")
        rows.append({"metric": label, "better": better, **{t: values.get(t) for t in TARGETS},
                     "ratio": fastgw / nginx if ratio and nginx and nginx > 0 and fastgw is not None and fastgw >= 0
                     else None})  # a ratio with a negative (noise) difference in it means nothing

    def pick(scenario: str, key: str) -> dict[str, float | None]:
        return {t: r.get(key) for t, r in results.get(scenario, {}).items() if "error" not in r}

    for scenario in ("json50", "json256"):
        if scenario in results:
            add(f"{scenario} req/s", "higher", pick(scenario, "rps"))
            add(f"{scenario} p50 ms", "lower", pick(scenario, "p50_ms"))
            add(f"{scenario} p99 ms", "lower", pick(scenario, "p99_ms"))
            add(f"{scenario} CPU us/req", "lower", pick(scenario, "cpu_us_per_req"))
            add(f"{scenario} errors", "zero", pick(scenario, "errors"), ratio=False)
    if "sse" in results:
        add("sse streams/s", "higher", pick("sse", "streams_per_s"))
        add("sse chunks/s", "higher", pick("sse", "chunks_per_s"))
        add("sse p99 ms (whole stream)", "lower", pick("sse", "p99_ms"))
        add("sse CPU us/stream", "lower", pick("sse", "cpu_us_per_req"))
    if "ai" in results:
        label = "ai streams/s (fastgw: auth+routing+conversion; nginx: plain relay)"
        add(label, "higher", {"nginx": pick("sse", "streams_per_s").get("nginx"), **pick("ai", "streams_per_s")})
        add("ai CPU us/stream", "lower", {"nginx": pick("sse", "cpu_us_per_req").get("nginx"),
                                          **pick("ai", "cpu_us_per_req")})
        add("ai errors", "zero", pick("ai", "errors"), ratio=False)
    if "guard" in results:
        off = results["guard"].get("fastgw-guard-off", {})
        on = results["guard"].get("fastgw-guard-on", {})
        if "streams_per_s" in off and "streams_per_s" in on:
            # Not an nginx comparison: the "nginx" column holds fastgw with the guard off.
            label = f"guard streams/s ({targets.GUARD_TERMS} terms): 'nginx' col = guard off, ratio = on/off"
            rows.append({"metric": label, "better": "higher",
                         "direct": None, "nginx": off["streams_per_s"], "fastgw": on["streams_per_s"],
                         "ratio": on["streams_per_s"] / off["streams_per_s"]})
    if "ai-limits" in results:
        label = "ai-limits streams/s (ai + Redis token/request limits + metrics; nginx: plain relay)"
        add(label, "higher", {"nginx": pick("sse", "streams_per_s").get("nginx"), **pick("ai-limits", "streams_per_s")})
        add("ai-limits CPU us/stream", "lower", {"nginx": pick("sse", "cpu_us_per_req").get("nginx"),
                                                 **pick("ai-limits", "cpu_us_per_req")})
        add("ai-limits errors", "zero", pick("ai-limits", "errors"), ratio=False)
        add("sse errors", "zero", pick("sse", "errors"), ratio=False)
    if "ttfb" in results:
        p50, p99 = pick("ttfb", "p50_ms"), pick("ttfb", "p99_ms")
        add("ttfb p50 ms", "lower", p50)
        add("ttfb p99 ms", "lower", p99)
        for label, values in (("added ttfb p50 ms", p50), ("added ttfb p99 ms", p99)):
            base = values.get("direct")
            add(label, "lower", {t: v - base for t, v in values.items()
                                 if t != "direct" and v is not None and base is not None})
    gw_push = results.get("push", {}).get("fastgw", {})
    if "live_ms" in gw_push:
        add(f"push {gw_push['routes']} routes: POST answered ms", "lower", {"fastgw": gw_push["post_ms"]})
        add(f"push {gw_push['routes']} routes: live in all workers ms", "lower", {"fastgw": gw_push["live_ms"]})
        add("push: errors during load", "zero", {"fastgw": gw_push["load"]["errors"]}, ratio=False)
        add("push: req/s during load", "higher", {"fastgw": gw_push["load"]["rps"]}, ratio=False)
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    header = ["scenario", *TARGETS, "fastgw/nginx", "better"]
    body = [[str(r["metric"]), *(_cell(r[t], ",.0f" if r["better"] == "zero" else ",.2f")  # type: ignore[arg-type]
                                 for t in TARGETS),
             _cell(r["ratio"], ".2f"), str(r["better"])] for r in rows]  # type: ignore[arg-type]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    print("\n" + "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    print("  ".join("-" * w for w in widths))
    for row in body:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))


def write_results(out: Path, report: dict[str, object]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stamp}.json"
    text = json.dumps(report, indent=2, default=str) + "\n"
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path


def start_targets(args: argparse.Namespace, workdir: Path, stack: ExitStack
                  ) -> tuple[dict[str, targets.Process], dict[str, int], targets.Process | None, dict[str, object]]:
    """Mock (required), then nginx and fastgw (each optional: a failure is reported, others still run)."""
    mock = targets.start_mock(workdir, args.mock_workers, SSE_CHUNKS, stack)
    ports = {"direct": int(mock.info["port"])}  # type: ignore[call-overload]
    procs = {"direct": mock}
    print(f"mock upstream: http://{targets.HOST}:{ports['direct']} (pid {mock.pid}, {args.mock_workers} workers)")
    status: dict[str, object] = {"direct": {"port": ports["direct"], "workers": args.mock_workers}}

    def register(name: str, start: Callable[[], targets.Process]) -> targets.Process | None:
        """Start one optional target: a failure is reported and recorded, the others still run."""
        try:
            proc = start()
        except targets.TargetError as exc:
            print(f"!! {name} skipped: {exc}", flush=True)
            status[name] = {"error": str(exc)}
            return None
        ports[name] = int(proc.info["port"])  # type: ignore[call-overload]
        procs[name] = proc
        print(f"{name}: http://{targets.HOST}:{ports[name]} (pid {proc.pid}, {args.workers} workers)", end="")
        if "status" in proc.info:
            pids = [w.get("pid") for w in proc.info["status"]["workers"]]  # type: ignore[index]
            print(f", admin http://{targets.HOST}:{proc.info['admin_port']}, worker pids {pids}", end="")
        print(flush=True)
        status[name] = {k: v for k, v in proc.info.items() if k != "status"}
        return proc

    upstream = ports["direct"]
    register("nginx", lambda: targets.start_nginx(workdir, args.workers, upstream, stack))
    gateway = register("fastgw", lambda: targets.start_fastgw(workdir, args.workers, upstream, stack))
    if "guard" in args.scenarios:
        for guard in (False, True):
            name = "fastgw-guard-on" if guard else "fastgw-guard-off"
            register(name, lambda name=name, guard=guard: targets.start_gateway(
                workdir, name, lambda port, admin: targets.fastgw_stream_config(port, admin, args.workers, upstream, guard),
                args.workers, stack))
    claude_port: int | None = None
    for scenario in (s for s in ("ai", "ai-limits") if s in args.scenarios):

        def start_ai(scenario: str = scenario) -> targets.Process:
            nonlocal claude_port
            if claude_port is None:  # one Anthropic-format mock for both AI scenarios
                claude = targets.start_mock(workdir, args.mock_workers, SSE_CHUNKS, stack, flavor="anthropic")
                claude_port = int(claude.info["port"])  # type: ignore[call-overload]
            redis_url = targets.start_redis(workdir, stack)[1] if scenario == "ai-limits" else None
            return targets.start_gateway(
                workdir, f"fastgw-{scenario}",
                lambda port, admin: targets.fastgw_ai_config(port, admin, args.workers, claude_port, redis_url),
                args.workers, stack)

        register(f"fastgw-{scenario}", start_ai)
    return procs, ports, gateway, status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in ABORT_SIGNALS:  # SIGINT too, even if the runner was started with it ignored
        signal.signal(sig, _on_signal)
    ensure_tools()
    signal.alarm(time_budget(args))
    started = datetime.now(timezone.utc)
    machine = machine_info()
    print(f"fastgw bench: nginx and fastgw with {args.workers} worker(s), mock upstream with {args.mock_workers}, "
          f"wrk with {args.wrk_threads} thread(s): all share the same {machine['nproc']} cores, so read the "
          "fastgw/nginx ratios, not the absolute numbers.", flush=True)
    with tempfile.TemporaryDirectory(prefix="fastgw-bench-") as tmp, ExitStack() as stack:
        procs, ports, gateway, target_status = start_targets(args, Path(tmp), stack)
        t0 = time.monotonic()
        results = run_scenarios(args, ports, procs, gateway, int(ports["direct"]))
        elapsed = time.monotonic() - t0
    signal.alarm(0)
    rows = table_rows(results)  # type: ignore[arg-type]
    print_table(rows)
    report = {
        "started_at": started.isoformat(),
        "elapsed_s": round(elapsed, 1),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {**machine, "loadavg_end": os.getloadavg()},
        "targets": target_status,
        "table": rows,
        "results": results,
    }
    path = write_results(args.out, report)
    print(f"\nresults: {path} (and {args.out / 'latest.json'})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Abort as exc:
        sys.exit(f"aborted ({exc}); all started processes were stopped")

"""Profile one fastgw worker under one bench scenario's load: `python perf/profile.py ai-sse`.

Starts what the bench starts (the pre-built-response upstream and wrk on the load core, fastgw
alone on the proxy core), records the worker with py-spy for `--seconds` under wrk load, and
prints the functions with the most samples: own time (where the CPU goes) and total time
(what each call costs with what it calls). `--native` includes the Cython frames.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bodies  # noqa: E402
import targets  # noqa: E402
import wrk  # noqa: E402

SCENARIOS = {
    "json": ("plain", bodies.PLAIN_REQUESTS["json"]),
    "sse": ("plain", bodies.PLAIN_REQUESTS["sse"]),
    "ai-json": ("ai", bodies.chat("/v1/chat/completions", "bench-json", stream=False)),
    "ai-sse": ("ai", bodies.chat("/v1/chat/completions", "bench-sse", stream=True)),
    "ai-convert": ("ai", bodies.chat("/v1/chat/completions", "bench-claude", stream=True)),
    "ai-full-json": ("full", bodies.chat("/v1/chat/completions", "bench-json", stream=False)),
    "ai-full-sse": ("full", bodies.chat("/v1/chat/completions", "bench-sse", stream=True)),
}


def _function(frame: str) -> str:
    """``name (path/file.py:line)`` -> ``name file.py``: samples summed per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{(name.split() or ['?'])[0]} {where.rsplit('/', 1)[-1].split(':')[0]}" if where else frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    kind, request = SCENARIOS[args.scenario]
    pins = targets.Pinning.detect()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        upstream = targets.start_upstream(work, pins, 50, stack)
        up = upstream.info["port"]
        if kind == "plain":
            def render(port: int, admin: int) -> str:
                return targets.fastgw_plain_config(port, admin, 1, up)
        elif kind == "ai":
            def render(port: int, admin: int) -> str:
                return targets.fastgw_ai_config(port, admin, 1, up)
        else:  # ai-full: Redis limits, a 1,000-term guard and the access log, as the bench runs it
            _, redis_url = targets.start_redis(work, pins, stack)
            terms = work / "terms.txt"
            terms.write_text("\n".join(bodies.guard_terms(targets.GUARD_TERMS)) + "\n")
            features = targets.FullFeatures(redis_url, terms, work / "access.log")

            def render(port: int, admin: int) -> str:
                return targets.fastgw_ai_config(port, admin, 1, up, features)
        gw = targets.start_gateway(work, "fastgw", render, 1, pins, stack)
        worker = gw.info["status"]["workers"][0]["pid"]
        base = f"http://{targets.HOST}:{gw.info['port']}"
        load = subprocess.Popen(wrk.command(base + request.path, 50 if "json" in args.scenario else 32, 1,
                                            args.seconds + 3, pins.prefix("load")),
                                env=__import__("os").environ | request.env(), stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        raw = work / "profile.txt"
        # py-spy reads native stacks only with the worker stopped at each sample (no --nonblocking)
        cmd = ["py-spy", "record", "-f", "raw", "-o", str(raw), "--pid", str(worker), "--duration",
               str(int(args.seconds)), "--rate", "250"] + (["--native"] if args.native else ["--nonblocking"])
        subprocess.run(cmd, check=True, capture_output=True)
        out = load.communicate()[0]
        own: collections.Counter = collections.Counter()
        total: collections.Counter = collections.Counter()
        samples = 0
        for line in raw.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            n = int(count)
            frames = [_function(f) for f in stack_text.split(";")]
            samples += n
            own[frames[-1]] += n
            for frame in set(frames):
                total[frame] += n
        print(out.strip().splitlines()[-3] if out else "")
        print(f"{samples} samples; own time:")
        for frame, n in own.most_common(args.top):
            print(f"  {100 * n / samples:5.1f}%  {frame}")
        print("total time:")
        for frame, n in total.most_common(args.top):
            print(f"  {100 * n / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    main()

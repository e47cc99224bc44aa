"""`fastgw mock-llm`: the sub-command's options and entry point (`fastgw.cli` registers them).

Building the parser loads only `fastgw.mock.core` (for the flavor names); the server and the process
code load when the sub-command runs.
"""

from __future__ import annotations

import argparse
import sys

from fastgw.mock.core import FLAVORS

__all__ = ["add_arguments", "main_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `fastgw mock-llm` options on a (sub-command) parser."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9000, help="port to bind, 0 for any free port (default 9000)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, each with a SO_REUSEPORT listener")
    parser.add_argument("--flavor", default="openai", choices=sorted(FLAVORS), help="API dialect")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks (words) per answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream events")
    parser.add_argument("--fail-status", type=int, default=None, help="answer every request with this status")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="delay before every response head")
    parser.add_argument("--cut-after", type=int, default=None, help="cut every stream after N events")
    parser.add_argument("--models", default="", help="comma-separated extra model ids for /v1/models")


def main_from_args(args: argparse.Namespace) -> int:
    """What `fastgw mock-llm` runs: serve until SIGTERM/SIGINT; 0, or 2 on bad options, 1 if it cannot bind."""
    from fastgw.mock.process import serve

    try:
        serve(
            host=args.host,
            port=args.port,
            workers=args.workers,
            flavor=args.flavor,
            chunks=args.chunks,
            chunk_delay_ms=args.chunk_delay_ms,
            fail_status=args.fail_status,
            stall_ms=args.stall_ms,
            cut_after=args.cut_after,
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        )
    except ValueError as exc:
        print(f"fastgw mock-llm: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"fastgw mock-llm: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0

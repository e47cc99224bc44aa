"""``fastgw``: the one command-line entry point (run, check, push, mock-llm).

A sub-command's code is imported only when it is chosen. Building the parser imports just the
option definitions of ``push`` and ``mock-llm`` (``fastgw.push`` and ``fastgw.mock.cli``: the
stdlib and the pure ``fastgw.mock.core``), so ``fastgw check`` never loads the event loop and
the supervisor stays free of worker code.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_run(args: argparse.Namespace) -> int:
    from fastgw.config import ConfigError, default_config, load_file

    try:
        config = load_file(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(f"fastgw: invalid config {args.config}:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fastgw: cannot read config: {exc}", file=sys.stderr)
        return 2
    # The composition root: the one place the package reaches its process host (workers/).
    from workers.supervisor import run

    return run(config, args.config or "<embedded default>")


def _cmd_check(args: argparse.Namespace) -> int:
    from fastgw.config import check_file

    errors = check_file(args.config)
    if errors:
        print(f"{args.config}: {len(errors)} error(s)", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from fastgw.push import main_from_args

    return main_from_args(args)


def _cmd_mock_llm(args: argparse.Namespace) -> int:
    from fastgw.mock.cli import main_from_args

    return main_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgw", description="fast AI + traffic gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway (supervisor + workers)")
    run.add_argument("-c", "--config", help="config file (default: the embedded mock-gpt config)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check", help="validate a config file and print every error with its field path")
    check.add_argument("-c", "--config", required=True)
    check.set_defaults(func=_cmd_check)

    from fastgw import push

    push_parser = sub.add_parser("push", help="push a new config generation to a running gateway")
    push.add_arguments(push_parser)
    push_parser.set_defaults(func=_cmd_push)

    from fastgw.mock import cli as mock_cli

    mock = sub.add_parser("mock-llm", help="run the built-in mock LLM server")
    mock_cli.add_arguments(mock)
    mock.set_defaults(func=_cmd_mock_llm)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

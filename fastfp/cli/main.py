"""Entry point of the ``fastfp`` command: argument parsing, and user errors without tracebacks."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import fastfp

# Each sub-command module defines add_parser(subparsers) and run(args) -> int.
SUBCOMMANDS = ("demo", "generate", "verify", "fbi", "bench", "info")


# What ``ArgumentParser.add_subparsers()`` returns (argparse keeps its class private).
SubParsers = Any


class UserError(Exception):
    """A mistake of the user's (bad argument, unreadable file): printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastfp",
        description="Fast DNN fingerprinting: characteristic examples (C/RC/RC+GM/LTRC) and FBI.",
    )
    parser.add_argument("--version", action="store_true",
                        help="print the version and the available backends, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"fastfp.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastfp`` command; returns its exit code (0 yes/ok, 1 no, 2 error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"fastfp {fastfp.__version__}")
        print(fastfp.backend.format_report())
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        from fastfp import distributed

        distributed.shutdown()  # under torchrun: leave the process group together (else a no-op)
        return code
    except (UserError, ValueError, TypeError, FileNotFoundError, PermissionError,
            IsADirectoryError, NotADirectoryError) as exc:
        print(f"fastfp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastfp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

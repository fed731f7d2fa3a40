"""Entry point of the ``fastfp`` command: argument parsing, and user errors without tracebacks.

Start-up stays light: nothing here imports torch, and only the sub-command being run is imported
(``fastfp --help`` lists the others from :data:`HELP`), so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# Each sub-command module defines add_parser(subparsers) and run(args) -> int.
SUBCOMMANDS = ("demo", "generate", "verify", "evaluate", "export", "fbi", "bench", "info",
               "convert")

# One line per sub-command for ``fastfp --help``, without importing the sub-command modules.
HELP = {
    "demo": "reproduce both papers' experiments on the embedded digits zoo (tables, PNG, JSON)",
    "generate": "generate characteristic-example fingerprints (C, RC, RC+GM, LTRC)",
    "verify": "decide whether a suspect model is a copy of a fingerprinted one (exit 0 copy, "
              "1 not, 2 error)",
    "evaluate": "robustness / transferability / uniqueness of a fingerprint over given models",
    "export": "write a fingerprint's examples as PNG images for a remote party to answer",
    "fbi": "FBI: fingerprinting with benign inputs (database, detect, identify, distances)",
    "bench": "benchmark fastfp against the baselines a user would write (ratio table)",
    "info": "print the available backends (CUDA, Triton, CuPy, extension)",
    "convert": "upgrade a fingerprint, FBI database or shard written by fastfp 0.1.0",
}

EXIT_ERROR = 2

# What ``ArgumentParser.add_subparsers()`` returns (argparse keeps its class private).
SubParsers = Any


class UserError(Exception):
    """A mistake of the user's (bad argument, unreadable file): printed without a traceback."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the ``--help`` hint included)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands: Sequence[str] = SUBCOMMANDS) -> argparse.ArgumentParser:
    """The ``fastfp`` parser with ``commands`` built in full; the others are listed by name and
    help only, so that their modules are not imported."""
    from fastfp import __version__

    parser = Parser(
        prog="fastfp",
        description="Fast DNN fingerprinting: characteristic examples (C/RC/RC+GM/LTRC) and FBI.",
        epilog="`fastfp info` lists the backends this machine offers; `fastfp COMMAND --help` "
               "describes a command.",
    )
    parser.add_argument("--version", action="version", version=__version__,
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        if name in commands:
            importlib.import_module(f"fastfp.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=HELP[name], add_help=False)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (its first word that is not an option), if any."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in SUBCOMMANDS else None


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads: ``OSError``s by their file and reason."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, UserError):
        text = exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
        text = str(exc) if len(exc.args) == 1 else text
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastfp`` command; returns its exit code (0 yes/ok, 1 no, 2 error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    if not callable(getattr(args, "func", None)):  # a command group without its sub-command
        print(f"fastfp {args.command}: error: give a sub-command (see fastfp {args.command} "
              "--help)", file=sys.stderr)
        return EXIT_ERROR
    try:
        code = int(args.func(args) or 0)
        from fastfp import distributed

        distributed.shutdown()  # under torchrun: leave the process group together (else a no-op)
        return code
    except (UserError, ValueError, TypeError, OSError) as exc:
        # OSError: a missing or unreadable file, a full disk, a read-only folder
        print(f"fastfp {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except (RecursionError, MemoryError, OverflowError) as exc:
        # a last resort: the argument checks refuse such inputs before any work
        print(f"fastfp {args.command}: error: {resource_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        print(f"fastfp {args.command}: error: {resource_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"fastfp {args.command}: interrupted", file=sys.stderr)
        return 130


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (torch reports them as RuntimeError)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or \
        "can't allocate memory" in text or "unable to allocate" in text


def resource_line(exc: BaseException) -> str:
    """The one line for an input too large or too deep to handle."""
    if isinstance(exc, RecursionError):
        return "an input nests too deeply to be read (RecursionError)"
    if out_of_memory(exc):
        first = one_line(exc).split(". ")[0] if str(exc) else ""
        return "out of memory" + (f" ({first[:200]})" if first else "") + \
            ": a size given is too large for this machine"
    return f"a number is too large ({one_line(exc)})"


if __name__ == "__main__":
    sys.exit(main())

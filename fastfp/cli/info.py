"""``fastfp info``: what this machine offers (backends, extension, devices)."""

from __future__ import annotations

import argparse
from typing import Any

from fastfp import backend


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="print the available backends (CUDA, Triton, CuPy, extension)",
                       description="Print what fastfp can use on this machine.")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = backend.report()
    print(backend.format_report(info))
    if args.json:
        from fastfp.io import write_json

        write_json(args.json, info)
    return 0

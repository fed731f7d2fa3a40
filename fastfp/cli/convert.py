"""``fastfp convert``: upgrade a file written by fastfp 0.1.0 to the current sealed format."""

from __future__ import annotations

import argparse

from fastfp.cli.main import HELP, SubParsers

EXAMPLE = """\
examples:
  fastfp convert fp.safetensors                     # upgraded in place (atomically)
  fastfp convert db.safetensors --out db-v2.safetensors

The readers of fastfp refuse the files of fastfp 0.1.0 (fingerprints of format version 1, FBI
databases and shards of 0.1.0) with the command that converts them. The old checksum is verified
where the file has one; the oldest fingerprints carry none, so only convert files you trust.
"""


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("convert", help=HELP["convert"], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Convert a fingerprint, FBI database or shard written by "
                                   "fastfp 0.1.0 to the current sealed container.")
    p.add_argument("path", metavar="PATH", help="the 0.1.0 file")
    p.add_argument("--out", metavar="PATH",
                   help="write the converted file here (must not exist; default: upgrade PATH "
                        "in place)")
    p.add_argument("--json", metavar="PATH", help="also write what was done as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp.io import check_target, convert_legacy, write_json

    if args.json:
        check_target(args.json, name="--json")
    done = convert_legacy(args.path, args.out)
    check = "old checksum verified" if done.checked else "the 0.1.0 file had no checksum to verify"
    print(f"{done.path}: {done.format} format version {done.version} -> {done.out} ({check})")
    if args.json:
        write_json(args.json, {"path": str(done.path), "out": str(done.out),
                               "format": done.format, "version": done.version,
                               "checked": done.checked})
    return 0

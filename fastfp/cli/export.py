"""``fastfp export``: a fingerprint's examples as images for a remote party to answer, and the
sealed ``queries.json`` that ties their answers to the fingerprint (never its labels)."""

from __future__ import annotations

import argparse

from fastfp.cli.main import HELP, SubParsers

EXAMPLE = """\
examples:
  fastfp export fp.safetensors --out queries/
  # the remote party answers each image of queries/ with its label, one row per image in the
  # order of queries.json's "files" (CSV, JSON or .npy); then:
  fastfp verify answers.csv fp.safetensors --queries queries/queries.json
"""


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "export", help=HELP["export"],
        description="Write the examples of a fingerprint as lossless 8-bit PNG files "
                    "(00000.png ...) and a sealed queries.json (the fingerprint's digest, the "
                    "file names in order, shape, normalisation, number of classes; not the "
                    "labels, which stay secret). A fingerprint generated without --quantize 8 "
                    "is rounded to 8 bits (said in a note).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fingerprint", metavar="FP", help="a .safetensors fingerprint")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the images (created)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp import Fingerprint
    from fastfp.cexamples import remote

    fp = Fingerprint.load(args.fingerprint)
    done = remote.export(fp, args.out, name="--out")  # the folder is checked before writing
    if done.rounded:
        print("fastfp export: note: the fingerprint is not 8-bit (generate with --quantize 8): "
              "the PNG files round its examples to 1/255 steps")
    print(f"{len(done.files)} images -> {done.folder} (answer them in the order of "
          f"{done.folder / 'queries.json'})")
    return 0

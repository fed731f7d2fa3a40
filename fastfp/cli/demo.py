"""``fastfp demo``: both papers' experiments on the embedded zoo (no downloads): tables, figures,
JSON."""

from __future__ import annotations

import argparse
import sys

from fastfp.cli.main import SubParsers


def add_parser(sub: SubParsers) -> None:
    from fastfp.demo import help_times

    p = sub.add_parser(
        "demo",
        help="reproduce both papers' experiments on the embedded digits zoo (tables, PNG, JSON)",
        description="Train (once; cached in $FASTFP_CACHE) or load the embedded model zoo, "
                    "fingerprint a protected model with the four characteristic-example methods "
                    "(robustness / transferability / uniqueness tables; each fingerprint records "
                    "the transferability measured as its null rate, for fastfp verify), run FBI "
                    "detection and identification over the zoo's variants, and write figures and "
                    f"a JSON report. {help_times()}")
    p.add_argument("--quick", action="store_true", help="small settings (tests, smoke runs)")
    p.add_argument("--out", default="fastfp-out", metavar="DIR",
                   help="folder for the figures and fingerprints (default: ./fastfp-out); one "
                        "that holds an earlier run's files is refused unless --force")
    p.add_argument("--force", action="store_true",
                   help="remove an earlier run's files from --out first (only the demo's own "
                        "figures, FBI database and fingerprints)")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (schema fastfp.demo/1)")
    p.add_argument("--model", metavar="NAME",
                   help="first protected zoo model, e.g. cnn-s0 (default: cnn-s0); see "
                        "`fastfp.zoo.names()`")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="protected models: N seeds of its architecture")
    p.add_argument("--num", type=int, metavar="N", help="characteristic examples per method")
    p.add_argument("--steps", type=int, metavar="N", help="sign-gradient steps per example")
    p.add_argument("--full-variants", action="store_true",
                   help="FBI over every parameter of the paper's variant list (38 per model; "
                        "slower)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastfp import demo
    from fastfp.io import write_json

    cfg = demo.config(quick=args.quick, model=args.model, seeds=args.seeds, num=args.num,
                      steps=args.steps,
                      full_variants=args.full_variants)
    demo.check_output(args.out, force=args.force)  # an earlier run's files: refused, or --force
    if args.json:  # fail now, not after ten minutes of work
        parent = Path(args.json).expanduser().resolve().parent
        if not parent.is_dir():
            raise FileNotFoundError(f"--json: folder {str(parent)!r} does not exist")
        import os

        if not os.access(parent, os.W_OK):
            raise PermissionError(f"--json: folder {str(parent)!r} is not writable")
    report = demo.run(cfg, args.out, progress=not args.no_progress, figures=not args.no_figures,
                      force=args.force, log=lambda s: print(s, flush=True))
    if args.json:
        write_json(args.json, report)
        print(f"report: {args.json}")
    print(f"figures and fingerprints: {args.out}", file=sys.stderr)
    return 0

"""``fastfp verify``: the accuracy of a model on a fingerprint's target labels."""

from __future__ import annotations

import argparse

from fastfp.cli.main import SubParsers


def add_parser(sub: SubParsers) -> None:
    from fastfp.cli.loader import add_model_args

    p = sub.add_parser(
        "verify", help="accuracy of a model on a fingerprint (high: the fingerprinted model "
                       "or a pruned copy; low: another model)",
        description="Classify a fingerprint's inputs with MODEL and report the fraction that "
                    "lands on the fingerprint's target labels.")
    add_model_args(p)
    p.add_argument("fingerprint", metavar="FINGERPRINT", help="a .safetensors fingerprint")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--json", metavar="PATH", help="also write a JSON report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp import Fingerprint, cexamples
    from fastfp.cexamples import checks
    from fastfp.cli.loader import load_model
    from fastfp.store import check_target

    if args.json:
        check_target(args.json, name="--json")
    fp = Fingerprint.load(args.fingerprint)
    model, name, _ = load_model(args)
    shape = tuple(fp.inputs.shape[1:])
    import torch

    checks.probe(model, torch.zeros(1, *shape), None, checks.model_device(model))
    accuracy = cexamples.verify(model, fp, precision=args.precision)
    print(f"{name}: {accuracy:.3f} of {len(fp)} fingerprint examples classified as their targets "
          f"(fingerprint: {fp.meta.get('method', '?')} of {fp.meta.get('model', '?')})")
    if args.json:
        from fastfp.store import write_json

        write_json(args.json, {"command": "verify", "model": name,
                               "fingerprint": str(args.fingerprint), "num": len(fp),
                               "accuracy": accuracy, "method": fp.meta.get("method"),
                               "source_model": fp.meta.get("model")})
    return 0

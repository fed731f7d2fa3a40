"""``fastfp evaluate``: how good is a fingerprint? Robustness (on pruned copies of the owner's
model), transferability (to other models) and uniqueness (their difference), as in the C-examples
paper (Sect. 4.1)."""

from __future__ import annotations

import argparse

from fastfp.cli.main import HELP, SubParsers

EXAMPLE = """\
examples:
  fastfp evaluate cnn-s0 fp.safetensors --others cnn-s1 --others mlp-s0
  fastfp evaluate owner.safetensors fp.safetensors --arch resnet18 --num-classes 10 \\
      --pruned-rates 0.4 0.6 0.8 --others other.safetensors --json eval.json
"""


def add_parser(sub: SubParsers) -> None:
    from fastfp.cli.loader import add_model_args

    p = sub.add_parser(
        "evaluate", help=HELP["evaluate"],
        description="Evaluate a fingerprint of the owner's MODEL: robustness is its accuracy on "
                    "copies of MODEL pruned by global magnitude pruning at each rate (mean over "
                    "the rates), transferability its mean accuracy on the --others models (loaded "
                    "in a safe format only, as suspects), uniqueness = robustness - "
                    "transferability (higher is better).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, suspect=False)
    p.add_argument("fingerprint", metavar="FP", help="a .safetensors fingerprint of MODEL")
    p.add_argument("--pruned-rates", type=float, nargs="+", metavar="R",
                   help="pruning rates in [0, 1) (default: the paper's 0.4 0.5 0.6 0.7 0.8)")
    p.add_argument("--others", action="append", default=[], metavar="MODEL",
                   help="another model (not a copy) for transferability; repeat for more. "
                        "Loaded as a suspect (same --arch, --num-classes, --device)")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp import Fingerprint, metrics
    from fastfp.cexamples import checks, verify
    from fastfp.cli.loader import load_classifier, load_model
    from fastfp.io import check_target

    if args.json:
        check_target(args.json, name="--json")
    fp = Fingerprint.load(args.fingerprint)
    import torch

    x1 = torch.zeros(1, *fp.inputs.shape[1:])
    classes = fp.meta.get("num_classes")
    owner = load_model(args, suspect=False)
    checks.probe(owner.model, x1, classes, checks.model_device(owner.model))
    others = {spec: load_classifier(args, spec, "--others", tuple(x1.shape[1:]), classes)
              for spec in args.others}
    rates = metrics.PRUNE_RATES if args.pruned_rates is None else args.pruned_rates
    copies = metrics.pruned_copies(owner.model, rates)
    per_rate = metrics.robustness_per_rate(fp, copies=copies)
    robustness = metrics.robustness(fp, copies=copies)
    accuracy = verify(owner.model, fp)
    per_other = {spec: verify(m, fp) for spec, m in others.items()}
    transfer = metrics.transferability(fp, others) if others else None
    unique = metrics.uniqueness(fp, copies=copies, other_models=others) if others else None

    print(f"{owner.name} on {len(fp)} examples ({fp.meta.get('method', '?')}): accuracy "
          f"{accuracy:.3f}")
    print("  robustness      " + "  ".join(f"{r:g}: {v:.3f}" for r, v in per_rate.items())
          + f"  (mean {robustness:.3f})")
    if others:
        print("  transferability " + "  ".join(f"{s}: {v:.3f}" for s, v in per_other.items())
              + f"  (mean {transfer:.3f})")
        print(f"  uniqueness      {unique:.3f}")
    else:
        print("  transferability and uniqueness: give --others MODEL")
    if args.json:
        from fastfp.io import write_json

        write_json(args.json, {"command": "evaluate", "model": owner.name,
                               "fingerprint": str(args.fingerprint), "num": len(fp),
                               "accuracy": accuracy,
                               "robustness_per_rate": {f"{r:g}": v for r, v in per_rate.items()},
                               "robustness": robustness, "transferability_per_model": per_other,
                               "transferability": transfer, "uniqueness": unique})
    return 0

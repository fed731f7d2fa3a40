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
    from fastfp.cli.loader import add_model_args, add_suspect_timeout

    p = sub.add_parser(
        "evaluate", help=HELP["evaluate"],
        description="Evaluate a fingerprint of the owner's MODEL: robustness is its accuracy on "
                    "copies of MODEL pruned by global magnitude pruning at each rate (mean over "
                    "the rates), transferability its mean accuracy on the --others models (loaded "
                    "in a safe format only, as suspects), uniqueness = robustness - "
                    "transferability (higher is better).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, suspect=False)
    add_suspect_timeout(p)
    p.add_argument("fingerprint", metavar="FP", help="a .safetensors fingerprint of MODEL")
    p.add_argument("--pruned-rates", type=float, nargs="+", metavar="R",
                   help="pruning rates in [0, 1) (default: the paper's 0.4 0.5 0.6 0.7 0.8)")
    p.add_argument("--others", action="append", default=[], metavar="SPEC",
                   help="another model (not a copy) for transferability; repeat for more. Any "
                        "suspect spec of `fastfp verify` but an answers file: a file (same "
                        "--arch, --num-classes, --device), a zoo name or a served model "
                        "(--max-queries, --cache, --timeout)")
    p.add_argument("--max-queries", type=int, default=None, metavar="N",
                   help="budget of images sent to each served --others model")
    p.add_argument("--cache", metavar="PATH",
                   help="answer cache of served --others models: a repeated run sends nothing")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds per request to a served model (default 30)")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp import Fingerprint, blackbox, metrics
    from fastfp.cexamples import checks, remote
    from fastfp.cli.loader import check_device, load_model, timeout_of, trust_warnings, zoo_models
    from fastfp.cli.main import UserError
    from fastfp.io import check_target

    # outputs and arguments first, before any model runs or any image is sent
    if args.json:
        check_target(args.json, name="--json")
    if args.cache:
        check_target(args.cache, name="--cache")
    if args.max_queries is not None and args.max_queries < 1:
        raise UserError(f"--max-queries: expected a positive number, got {args.max_queries}")
    if not args.timeout > 0:
        raise UserError(f"--timeout: expected seconds > 0, got {args.timeout}")
    fp = Fingerprint.load(args.fingerprint)
    import torch

    x1 = torch.zeros(1, *fp.inputs.shape[1:])
    classes = fp.meta.get("num_classes")
    owner = load_model(args, suspect=False)
    checks.probe(owner.model, x1, classes, checks.model_device(owner.model))
    with trust_warnings():
        others = {spec: remote.open_suspect(
            spec, fp, arch=args.arch, num_classes=args.num_classes, seed=args.seed,
            trust_code=args.trust_code, device=check_device(args.device), named=zoo_models(),
            timeout=args.timeout, max_queries=args.max_queries, cache=args.cache,
            what=f"--others {spec}", suspect_timeout=timeout_of(args)).suspect
            for spec in args.others}
    rates = metrics.PRUNE_RATES if args.pruned_rates is None else args.pruned_rates
    try:
        e = metrics.evaluate(fp, owner.model, others, rates)
    except blackbox.BudgetExceeded as exc:
        raise UserError(f"--max-queries: {exc}".replace("max_queries: ", "")) from None

    print(f"{owner.name} on {len(fp)} examples ({fp.meta.get('method', '?')}): accuracy "
          f"{e.accuracy:.3f}")
    print("  robustness      " + "  ".join(f"{r:g}: {v:.3f}"
                                           for r, v in e.robustness_per_rate.items())
          + f"  (mean {e.robustness:.3f})")
    if others:
        print("  transferability " + "  ".join(f"{s}: {v:.3f}"
                                               for s, v in e.transferability_per_model.items())
              + f"  (mean {e.transferability:.3f})")
        print(f"  uniqueness      {e.uniqueness:.3f}")
    else:
        print("  transferability and uniqueness: give --others MODEL")
    if args.json:
        from fastfp.io import write_json

        write_json(args.json, {"command": "evaluate", "model": owner.name,
                               "fingerprint": str(args.fingerprint), "num": len(fp),
                               "accuracy": e.accuracy,
                               "robustness_per_rate": {f"{r:g}": v for r, v in
                                                       e.robustness_per_rate.items()},
                               "robustness": e.robustness,
                               "transferability_per_model": e.transferability_per_model,
                               "transferability": e.transferability,
                               "uniqueness": e.uniqueness})
    return 0

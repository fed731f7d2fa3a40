"""``fastfp verify``: is a suspect model a copy of the fingerprinted one? A verdict, with exit codes
like ``grep``: 0 copy, 1 not a copy, 2 error."""

from __future__ import annotations

import argparse
import math

from fastfp.cli.main import HELP, SubParsers

EXAMPLE = """\
examples:
  fastfp verify suspect.onnx fp.safetensors --negative other1.onnx --negative other2.onnx
  fastfp verify suspect.safetensors fp.safetensors --arch resnet18 --num-classes 10 --json v.json

exit status: 0 the suspect is judged a copy, 1 it is not, 2 an error.
"""


def add_parser(sub: SubParsers) -> None:
    from fastfp.cli.loader import add_model_args

    p = sub.add_parser(
        "verify", help=HELP["verify"],
        description="Classify a fingerprint's examples with the suspect MODEL and test its match "
                    "rate against a null rate: that of unrelated --negative models, else the "
                    "transferability recorded in the fingerprint, else chance level (the weakest "
                    "null). One-sided binomial test at --alpha, or a fixed --threshold. The "
                    "suspect (and every negative) is loaded in a safe format only (ONNX, "
                    "safetensors + --arch, zoo name) unless --trust-code.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, suspect=True)
    p.add_argument("fingerprint", metavar="FP", help="a .safetensors fingerprint")
    p.add_argument("--negative", action="append", default=[], metavar="MODEL",
                   help="an unrelated model (not a copy) for the null rate; repeat for more. "
                        "Loaded as MODEL is (same --arch, --num-classes, --device, --trust-code)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--alpha", type=float, default=0.01,
                      help="significance level of the binomial test (default: %(default)s)")
    test.add_argument("--threshold", type=float, metavar="T",
                      help="judge a copy when the match rate is at least T (0..1) instead")
    p.add_argument("--json", metavar="PATH",
                   help="also write the verdict as JSON (match_rate, null_rate, threshold, "
                        "p_value, is_copy)")
    p.set_defaults(func=run)


def null_source(fp, negatives: list) -> str:
    """Where :func:`fastfp.cexamples.verdict` takes its null rate from (its order of choice)."""
    if negatives:
        return f"{len(negatives)} negative model{'s' if len(negatives) > 1 else ''}"
    if fp.meta.get("null_rate") is not None:
        return "the transferability recorded at generation"
    classes = fp.meta.get("num_classes") or int(fp.labels.max()) + 1
    return f"chance level 1/{classes}: the weakest null, pass --negative models"


def run(args: argparse.Namespace) -> int:
    import warnings

    from fastfp import Fingerprint, cexamples
    from fastfp.cexamples import checks
    from fastfp.cli.loader import load_classifier, load_model
    from fastfp.io import check_target

    if args.json:
        check_target(args.json, name="--json")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold: expected a match rate in [0, 1], got {args.threshold}")
    if args.threshold is None and not 0 < args.alpha < 1:
        raise ValueError(f"--alpha: expected a significance level in (0, 1), got {args.alpha}")
    fp = Fingerprint.load(args.fingerprint)
    suspect = load_model(args, suspect=True)
    import torch

    x1 = torch.zeros(1, *fp.inputs.shape[1:])
    classes = fp.meta.get("num_classes")
    checks.probe(suspect.model, x1, classes, checks.model_device(suspect.model))
    negatives = [load_classifier(args, spec, "--negative", tuple(x1.shape[1:]), classes)
                 for spec in args.negative]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the chance-level warning: said in the output instead
        v = cexamples.verdict(suspect.model, fp, negatives=negatives or None,
                              threshold=args.threshold, alpha=args.alpha)
    n = len(fp)
    source = null_source(fp, negatives)
    rule = ("fixed --threshold" if args.threshold is not None
            else f"smallest significant at alpha {args.alpha:g}")
    threshold = "unreachable (no match count is significant)" if math.isinf(v.threshold) \
        else f"{v.threshold:.3f}"
    print(f"{suspect.name} on {n} examples ({fp.meta.get('method', '?')} of "
          f"{fp.meta.get('model', '?')}):")
    print(f"  match rate  {v.match_rate:.3f} ({round(v.match_rate * n)}/{n} on their targets)")
    print(f"  null rate   {v.null_rate:.3f} (from {source})")
    print(f"  threshold   {threshold} ({rule})")
    print(f"  p-value     {v.p_value:.3g}")
    print("COPY" if v.is_copy else "NOT A COPY")
    if args.json:
        from fastfp.io import write_json

        report = v.to_dict()
        report["threshold"] = None if math.isinf(v.threshold) else v.threshold  # JSON has no inf
        write_json(args.json, {"command": "verify", "model": suspect.name,
                               "fingerprint": str(args.fingerprint), "num": n,
                               **report, "alpha": args.alpha if args.threshold is None else None,
                               "null_source": source, "negatives": list(args.negative)})
    return 0 if v.is_copy else 1

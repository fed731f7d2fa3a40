"""``fastfp verify``: is a suspect a copy of the fingerprinted model? A verdict, with exit codes
like ``grep``: 0 copy, 1 not a copy, 2 error."""

from __future__ import annotations

import argparse
import math

from fastfp.cli.main import HELP, SubParsers, UserError

EXAMPLE = """\
examples:
  fastfp verify suspect.onnx fp.safetensors --negative other1.onnx --negative other2.onnx
  fastfp verify suspect.safetensors fp.safetensors --arch resnet18 --num-classes 10 --json v.json
  fastfp verify http://127.0.0.1:8080/v2/models/suspect fp.safetensors --max-queries 100 \\
      --cache answers.jsonl                      # a served model (Open Inference Protocol)
  fastfp export fp.safetensors --out queries/    # images for a remote party, answered in order:
  fastfp verify answers.csv fp.safetensors --queries queries/queries.json

SUSPECT is any spec of `fastfp fbi detect --blackbox`: an Open Inference Protocol URL
http(s)://HOST:PORT/v2/models/NAME[/versions/V] (sent the 8-bit examples, in the model's
declared layout and the fingerprint's normalisation), an ONNX file, a safetensors state dict with
--arch, a zoo name, or an answers file (CSV / JSON / .npy rows, one per exported image) with
--queries. The null is measured on unrelated models: --negative now, or recorded at generation
(`fastfp generate --negative`); without one, give --threshold or --null chance.

exit status: 0 the suspect is judged a copy, 1 it is not, 2 an error.
"""


def add_parser(sub: SubParsers) -> None:
    from fastfp.cli.loader import add_model_args, add_suspect_timeout

    p = sub.add_parser(
        "verify", help=HELP["verify"],
        description="Ask the SUSPECT (a model, a served model or its answers) for the labels of "
                    "a fingerprint's examples and test its match rate against a null rate "
                    "measured on unrelated models: --negative models, else the transferability "
                    "recorded in the fingerprint. One-sided binomial test at --alpha, or a fixed "
                    "--threshold. Files are read in safe formats only (ONNX, safetensors + "
                    "--arch, zoo name, answers) unless --trust-code.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, suspect=True)
    add_suspect_timeout(p)
    p.add_argument("fingerprint", metavar="FP", help="a .safetensors fingerprint")
    p.add_argument("--negative", action="append", default=[], metavar="MODEL",
                   help="an unrelated model (not a copy) for the null rate; repeat for more. "
                        "Opened as SUSPECT is (same --arch, --num-classes, --device, "
                        "--trust-code, --timeout, --cache)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--alpha", type=float, default=0.01,
                      help="significance level of the binomial test (default: %(default)s)")
    test.add_argument("--threshold", type=float, metavar="T",
                      help="judge a copy when the match rate is at least T (0..1) instead")
    p.add_argument("--null", choices=("chance",),
                   help="'chance': test against chance level 1/num_classes, the weakest null, "
                        "when no null was measured (no --negative, none recorded)")
    p.add_argument("--queries", metavar="QUERIES.json",
                   help="SUSPECT is an answers file: the queries.json that `fastfp export` "
                        "wrote (ties its rows to this fingerprint)")
    p.add_argument("--max-queries", type=int, default=None, metavar="N",
                   help="budget of images sent to a served suspect (an error before sending "
                        "when the examples not yet answered exceed it)")
    p.add_argument("--cache", metavar="PATH",
                   help="answer cache of a served suspect (the journal `fastfp fbi --cache` "
                        "keeps): a repeated run sends nothing")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds per request to a served suspect (default 30)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the verdict as JSON (match_rate, null_rate, threshold, "
                        "p_value, is_copy, null, null_models, rounded, sent)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp import Fingerprint, blackbox
    from fastfp.cexamples import remote
    from fastfp.cexamples.verdict import describe_null
    from fastfp.cli.loader import check_device, timeout_of, trust_warnings, zoo_models
    from fastfp.io import check_target

    # outputs and arguments first, before any model runs or any image is sent
    if args.json:
        check_target(args.json, name="--json")
    if args.cache:
        check_target(args.cache, name="--cache")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold: expected a match rate in [0, 1], got {args.threshold}")
    if args.threshold is None and not 0 < args.alpha < 1:
        raise UserError(f"--alpha: expected a significance level in (0, 1), got {args.alpha}")
    if args.max_queries is not None and args.max_queries < 1:
        raise UserError(f"--max-queries: expected a positive number, got {args.max_queries}")
    if not args.timeout > 0:
        raise UserError(f"--timeout: expected seconds > 0, got {args.timeout}")
    device = check_device(args.device)
    fp = Fingerprint.load(args.fingerprint)
    if not args.negative and fp.meta.get("null_rate") is None and args.threshold is None \
            and args.null is None:
        raise UserError("no null rate: the fingerprint records none (generate it with "
                        "--negative) and no --negative is given; or pass --threshold T, or "
                        "--null chance to test against chance level, the weakest null")
    try:
        with trust_warnings():
            c = remote.check(args.model, fp, negatives=args.negative, threshold=args.threshold,
                             alpha=args.alpha, null=args.null, arch=args.arch,
                             num_classes=args.num_classes, seed=args.seed,
                             trust_code=args.trust_code, device=device, named=zoo_models(),
                             queries=args.queries, timeout=args.timeout,
                             max_queries=args.max_queries, cache=args.cache, what="MODEL",
                             negatives_name="--negative", suspect_timeout=timeout_of(args))
    except blackbox.BudgetExceeded as exc:
        raise UserError(f"--max-queries: {exc}".replace("max_queries: ", "")) from None
    for note in c.notes:
        print(f"fastfp verify: note: {note}")
    v, n = c.verdict, len(fp)
    classes = fp.meta.get("num_classes") or int(fp.labels.max()) + 1
    source = describe_null(v, classes)
    rule = ("fixed --threshold" if args.threshold is not None
            else f"smallest significant at alpha {args.alpha:g}")
    threshold = "unreachable (no match count is significant)" if math.isinf(v.threshold) \
        else f"{v.threshold:.3f}"
    print(f"{c.name} on {n} examples ({fp.meta.get('method', '?')} of "
          f"{fp.meta.get('model', '?')}):")
    print(f"  match rate  {v.match_rate:.3f} ({round(v.match_rate * n)}/{n} on their targets)"
          + ("; the examples were rounded to 8 bits for the black box" if v.rounded else ""))
    print(f"  null rate   {v.null_rate:.3f} (from {source})")
    print(f"  threshold   {threshold} ({rule})")
    print(f"  p-value     {v.p_value:.3g}")
    if c.sent.get("images") or c.sent.get("cached"):
        print(f"  sent        {c.sent.get('images', 0)} images in {c.sent.get('queries', 0)} "
              f"requests, {c.sent.get('cached', 0)} answers from the cache")
    print("COPY" if v.is_copy else "NOT A COPY")
    if args.json:
        from fastfp.io import write_json

        report = v.to_dict()
        report["threshold"] = None if math.isinf(v.threshold) else v.threshold  # JSON has no inf
        write_json(args.json, {"command": "verify", "model": c.name,
                               "fingerprint": str(args.fingerprint), "num": n,
                               **report, "alpha": args.alpha if args.threshold is None else None,
                               "null_source": source, "negatives": list(args.negative),
                               "sent": c.sent})
    return 0 if v.is_copy else 1

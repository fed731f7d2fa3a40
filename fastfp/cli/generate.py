"""``fastfp generate``: characteristic-example fingerprints of a model, written as .safetensors."""

from __future__ import annotations

import argparse
import time

from fastfp.cli.loader import add_model_args, load_model
from fastfp.cli.main import SubParsers


def parse_shape(text: str) -> tuple[int, ...]:
    """``C,H,W`` (or ``CxHxW``) as a tuple of 3 ints."""
    from fastfp.cli.main import UserError

    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UserError(f"--input-shape: expected C,H,W such as 3,224,224, got {text!r}") from None
    if len(shape) != 3:
        raise UserError(f"--input-shape: expected 3 numbers C,H,W, got {text!r}")
    return shape


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "generate", help="generate characteristic-example fingerprints (C, RC, RC+GM, LTRC)",
        description="Generate characteristic examples of a model (Wang et al., IJCAI'21) and "
                    "write them as one .safetensors fingerprint. Settings left out take the "
                    "paper's defaults for the input size.")
    add_model_args(p)
    from fastfp.cexamples import METHODS

    p.add_argument("--method", choices=METHODS, default="ltrc", help="default: %(default)s")
    p.add_argument("-n", "--num-examples", "--num", dest="num", type=int, default=100,
                   help="number of examples (default: 100; under torchrun write -n or "
                        "--num-examples: torchrun reads --num as its own --numa-binding)")
    p.add_argument("--out", required=True, metavar="PATH", help="fingerprint file to write")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="input shape (default: the zoo's 1,32,32 or 3,224,224 for --arch)")
    p.add_argument("--num-classes", type=int, help="checked against the model (default: its)")
    p.add_argument("--k", type=int, help="ltrc high-pass band (default: 2 at 32x32, 20 at 224)")
    p.add_argument("--delta", type=float, help="weight-noise bound (default: 0.03 / 0.001)")
    p.add_argument("--q", type=int, default=10, help="noisy copies per step (default: 10)")
    p.add_argument("--alpha", type=float, help="step size (default: 2.5 / steps)")
    p.add_argument("--steps", type=int, default=500, help="default: 500")
    p.add_argument("--eta", type=float, default=1e-6, help="early-stop loss (default: 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument("--batch-size", type=int, help="default: sized to the device memory")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--shard-dir", metavar="DIR",
                   help="generate in per-batch shards in DIR (resumable; implied under torchrun, "
                        "default OUT.shards); rank 0 merges into --out. Same --batch-size, same "
                        "bits")
    p.add_argument("--json", metavar="PATH", help="also write a JSON report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfp import cexamples
    from fastfp import distributed as dd
    from fastfp.cli.main import UserError

    ctx = dd.init()
    if ctx.distributed and args.device is None:
        args.device = str(dd.device_for(ctx))
    from fastfp.store import check_target

    check_target(args.out, name="--out")  # before the work that fills it
    if args.json:
        check_target(args.json, name="--json")
    model, name, shape = load_model(args)
    if args.input_shape:
        shape = parse_shape(args.input_shape)
    if shape is None:
        raise UserError("--input-shape: needed for a model file (e.g. --input-shape 3,224,224)")
    num_classes = args.num_classes
    if num_classes is None:
        import torch

        from fastfp.cexamples import checks

        _, num_classes = checks.probe(model, torch.zeros(1, *shape), None,
                                      checks.model_device(model))
    start = time.perf_counter()
    settings = dict(method=args.method, k=args.k, delta=args.delta, q=args.q, alpha=args.alpha,
                    steps=args.steps, eta=args.eta, seed=args.seed, batch_size=args.batch_size,
                    progress=not args.no_progress, precision=args.precision, model_name=name)
    if ctx.distributed or args.shard_dir:
        from fastfp.cexamples.sharded import generate_sharded

        fp = generate_sharded(model, args.num, shape, num_classes, ctx=ctx,
                              shard_dir=args.shard_dir or f"{args.out}.shards", **settings)
        if fp is None:  # not rank 0: rank 0 merges, saves and reports
            return 0
    else:
        fp = cexamples.generate(model, args.num, shape, num_classes, **settings)
    seconds = time.perf_counter() - start
    fp.save(args.out)
    accuracy = cexamples.verify(model, fp)
    m = fp.meta
    print(f"{args.num} {args.method} examples of {name} ({'x'.join(map(str, shape))}) in "
          f"{seconds:.1f} s -> {args.out}")
    print(f"source-model accuracy on the targets: {accuracy:.3f}; converged (loss < eta): "
          f"{m['converged']}/{len(fp)}; k={m['k']} delta={m['delta']:g} q={m['q']} "
          f"alpha={m['alpha']:g} steps={m['steps']}")
    if args.json:
        from fastfp.store import write_json

        meta = {k: v for k, v in m.items() if k not in ("steps_used", "final_loss")}
        write_json(args.json, {"command": "generate", "out": str(args.out), "num": len(fp),
                               "seconds": seconds, "accuracy": accuracy,
                               "mean_steps_used": sum(m["steps_used"]) / len(fp), **meta})
    return 0

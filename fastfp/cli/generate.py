"""``fastfp generate``: characteristic-example fingerprints of a model, written as .safetensors.

Long runs are checkpointed: every batch of examples is saved as a shard in ``OUT.parts/`` (through
:func:`fastfp.cexamples.sharded.generate_sharded`) as soon as it is done, so a killed run resumes
with the same command and gives the same file; the folder is removed after the merge.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

from fastfp.cli.main import HELP, SubParsers, UserError

EXAMPLE = """\
examples:
  fastfp generate resnet18.safetensors --arch resnet18 --num-classes 10 -n 100 \\
      --quantize 8 --png fp-png/ --out fp.safetensors
  fastfp generate cnn-s0 -n 20 --steps 200 --out fp.safetensors --json gen.json

A killed run resumes from its last finished batch when the same command is run again.
"""

PILOT_STEPS = 2  # steps of the timed first batch behind the up-front estimate


def add_parser(sub: SubParsers) -> None:
    from fastfp.cli.loader import add_model_args

    p = sub.add_parser(
        "generate", help=HELP["generate"],
        description="Generate characteristic examples of a model (Wang et al., IJCAI'21) and "
                    "write them as one .safetensors fingerprint. Settings left out take the "
                    "paper's defaults for the input size. Every batch is checkpointed next to "
                    "--out (OUT.parts/) so that a killed run resumes with the same command.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, suspect=False)  # --seed there also seeds the generation
    p.add_argument("--method", default="ltrc",
                   help="vanilla, rc, rcgm or ltrc (default: %(default)s)")
    p.add_argument("-n", "--num-examples", "--num", dest="num", type=int,
                   help="number of examples (default: 100, or the count of --inputs; under "
                        "torchrun write -n or --num-examples: torchrun reads --num as its own "
                        "--numa-binding)")
    p.add_argument("--out", required=True, metavar="PATH", help="fingerprint file to write")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="input shape (default: the zoo's 1,32,32 or 3,224,224 for --arch)")
    p.add_argument("--inputs", metavar="FILE|DIR",
                   help="start images (num, C, H, W) in [0, 1] as .npy, .npz, .pt or "
                        ".safetensors, uint8 images or a folder of PNG images (default: uniform "
                        "noise from --seed)")
    p.add_argument("--normalize", metavar="imagenet|none|M1,M2,M3/S1,S2,S3",
                   help="the model sees (x - mean) / std, the fingerprint stays in pixels "
                        "(default: the --arch model's pretrained setting, else none)")
    p.add_argument("--quantize", type=int, choices=(8, 16),
                   help="store each example rounded to 8 or 16 bits per pixel")
    p.add_argument("--png", metavar="DIR",
                   help="also write every example as a lossless 8-bit PNG in DIR (implies "
                        "--quantize 8, so the PNG is exactly the example)")
    p.add_argument("--k", type=int, help="ltrc high-pass band (default: 2 at 32x32, 20 at 224)")
    p.add_argument("--delta", type=float, help="weight-noise bound (default: 0.03 / 0.001)")
    p.add_argument("--q", type=int, default=10, help="noisy copies per step (default: 10)")
    p.add_argument("--alpha", type=float, help="step size (default: 2.5 / steps)")
    p.add_argument("--steps", type=int, default=500, help="default: 500")
    p.add_argument("--eta", type=float, default=1e-6, help="early-stop loss (default: 1e-6)")
    p.add_argument("--batch-size", type=int,
                   help="examples per batch (default: 64 with checkpoints, else sized to the "
                        "device memory); a resume needs the same value")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="no per-batch checkpoints (a killed run starts again from nothing)")
    p.add_argument("--shard-dir", metavar="DIR",
                   help="checkpoint folder (default: OUT.parts, removed after the merge; a "
                        "folder given here is kept). Under torchrun every rank writes its batches "
                        "there and rank 0 merges into --out")
    p.add_argument("--negative", action="append", default=[], metavar="MODEL",
                   help="an unrelated reference model (safe formats, as a suspect); its match "
                        "rate is recorded as the fingerprint's null rate for `fastfp verify`; "
                        "repeat for more")
    p.add_argument("--json", metavar="PATH", help="also write a JSON report")
    p.set_defaults(func=run)


def check_outputs(args: argparse.Namespace) -> Path | None:
    """Every output path, before any work: --out, --json and the PNG folder (created)."""
    from fastfp.io import check_target

    check_target(args.out, name="--out")
    if args.json:
        check_target(args.json, name="--json")
    if args.png is None:
        return None
    if args.quantize == 16:
        raise UserError("--png: PNG files hold 8 bits per pixel; use --quantize 8 (or leave it "
                        "out) with --png")
    args.quantize = 8
    folder = Path(args.png)
    if not folder.is_dir():
        check_target(folder, name="--png")  # its parent exists and is writable, no file there
        folder.mkdir()
    check_target(folder / "probe.png", name="--png")
    return folder


def read_inputs(path: str) -> Any:
    """Start images (num, C, H, W) in 0..1 from a tensor file or a folder of PNG images, read as
    the FBI benign inputs are (never a pickle: no code runs)."""
    from fastfp.fbi import answers

    try:
        x, notes = answers.read_inputs(path)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"--inputs: {exc}") from None
    for note in notes:
        print(f"fastfp generate: note: {note}", file=sys.stderr)
    if x.dim() != 4:
        raise UserError(f"--inputs: expected images (num, C, H, W), got shape {tuple(x.shape)}")
    return x


def write_pngs(fp: Any, folder: Path) -> int:
    """Each example as ``NNNNN-labelL.png``: 8 bits per pixel, exactly the (8-bit) example."""
    from fastfp.io import png_bytes, write_bytes

    for i, (data, label) in enumerate(zip(png_bytes(fp.inputs), fp.labels.tolist(), strict=True)):
        write_bytes(folder / f"{i:05d}-label{label}.png", data, name="--png")
    return len(fp.inputs)


def estimate(model: Any, shape: tuple[int, ...], num_classes: int, batch: int, num: int,
             settings: dict, done: int = 0) -> str:
    """``fastfp generate: ~N min for M examples``: a timed batch of :data:`PILOT_STEPS` steps,
    scaled to the run (an upper bound: examples that fit stop early)."""
    from fastfp import cexamples

    pilot = {k: v for k, v in settings.items() if k != "x0"}
    pilot.update(steps=PILOT_STEPS, eta=0.0, progress=False)
    start = time.perf_counter()
    cexamples.generate(model, min(batch, num), shape, num_classes, batch_size=batch, **pilot)
    per_step = (time.perf_counter() - start) / PILOT_STEPS
    batches = math.ceil(num / batch) - done
    minutes = per_step * settings["steps"] * batches / 60
    left = f" ({done} batches already done)" if done else ""
    return f"fastfp generate: ~{minutes:.1f} min for {num} examples at most{left}"


def run(args: argparse.Namespace) -> int:
    from fastfp import distributed as dd
    from fastfp.io import LockTimeout, lock

    ctx = dd.init()
    if ctx.distributed and args.device is None:
        args.device = str(dd.device_for(ctx))
    png_dir = check_outputs(args)  # before the work that fills them
    with contextlib.ExitStack() as stack:
        if ctx.is_main:  # one run per output (its checkpoints too), as `fbi build` does
            try:
                stack.enter_context(lock(args.out, name="--out"))
            except LockTimeout as exc:
                raise UserError(f"{exc}: another run is writing this output; wait for it to "
                                "finish, or choose another --out") from None
        return generate_locked(args, ctx, png_dir)


def generate_locked(args: argparse.Namespace, ctx: Any, png_dir: Path | None) -> int:
    """The work of :func:`run`, under the lock of ``--out``."""
    from fastfp import cexamples
    from fastfp.cexamples.sharded import DEFAULT_BATCH
    from fastfp.cli.loader import load_classifier, load_model, parse_shape
    from fastfp.io import PNG_MODES
    from fastfp.suspects import parse_normalize

    normalize: object = None if args.normalize is None else parse_normalize(args.normalize,
                                                                            "--normalize")
    x0 = None if args.inputs is None else read_inputs(args.inputs)
    loaded = load_model(args, suspect=False)
    model, name = loaded.model, loaded.name
    shape: tuple[int, ...] | None = loaded.input_shape
    if x0 is not None:
        shape = tuple(x0.shape[1:])
    if args.input_shape:
        shape = parse_shape(args.input_shape)
    if shape is None:
        raise UserError("--input-shape: needed for a model file (e.g. --input-shape 3,224,224)")
    if png_dir is not None and shape[0] not in PNG_MODES:
        raise UserError(f"--png: PNG holds 1 or 3 channels, the input has {shape[0]}")
    num = args.num if args.num is not None else (100 if x0 is None else x0.shape[0])
    if args.normalize is None:
        normalize = loaded.normalize  # the --arch model's own pretrained setting
    num_classes = args.num_classes
    if num_classes is None:
        import torch

        from fastfp.cexamples import checks

        _, num_classes = checks.probe(model, torch.zeros(1, *shape), None,
                                      checks.model_device(model))
    settings = dict(method=args.method, k=args.k, delta=args.delta, q=args.q, alpha=args.alpha,
                    steps=args.steps, eta=args.eta, seed=args.seed, precision=args.precision,
                    normalize=normalize, quantize=args.quantize)
    if x0 is not None:
        settings["x0"] = x0
    negatives = [load_classifier(args, spec, "--negative", shape, num_classes, same_arch=False)
                 for spec in args.negative]  # checked before any work
    checkpoint = ctx.distributed or args.shard_dir is not None or not args.no_checkpoint
    parts = Path(args.shard_dir or f"{args.out}.parts")
    batch = args.batch_size or (DEFAULT_BATCH if checkpoint else min(num, DEFAULT_BATCH))
    if ctx.is_main and args.steps > PILOT_STEPS:
        done = len(list(parts.glob("shard-*.safetensors"))) if checkpoint and parts.is_dir() \
            else 0
        print(estimate(model, shape, num_classes, batch, num, settings, done), file=sys.stderr,
              flush=True)
    start = time.perf_counter()
    common = dict(settings, batch_size=args.batch_size, progress=not args.no_progress,
                  model_name=name)
    if checkpoint:
        from fastfp.cexamples.sharded import generate_sharded

        fp = generate_sharded(model, num, shape, num_classes, ctx=ctx, shard_dir=parts, **common)
        if fp is None:  # not rank 0: rank 0 merges, saves and reports
            return 0
    else:
        fp = cexamples.generate(model, num, shape, num_classes, **common)
    seconds = time.perf_counter() - start
    if negatives:
        from fastfp.cexamples.verdict import null_rate_of

        fp.meta.update(null_rate=null_rate_of(fp, negatives), null_models=len(negatives))
    fp.save(args.out)
    if checkpoint and args.shard_dir is None:
        import shutil

        shutil.rmtree(parts)  # merged and saved: the checkpoints are no longer needed
    written = 0 if png_dir is None else write_pngs(fp, png_dir)
    accuracy = cexamples.verify(model, fp)
    m = fp.meta
    print(f"{num} {args.method} examples of {name} ({'x'.join(map(str, shape))}) in "
          f"{seconds:.1f} s -> {args.out}" + (f" (+ {written} PNG in {png_dir})" if written
                                              else ""))
    print(f"source-model accuracy on the targets: {accuracy:.3f}; converged (loss < eta): "
          f"{m['converged']}/{len(fp)}; k={m['k']} delta={m['delta']:g} q={m['q']} "
          f"alpha={m['alpha']:g} steps={m['steps']} normalize={m.get('normalize')} "
          f"quantize={m.get('quantize')}")
    if args.json:
        from fastfp.io import write_json

        meta = {k: v for k, v in m.items() if k not in ("steps_used", "final_loss")}
        write_json(args.json, {"command": "generate", "out": str(args.out), "num": len(fp),
                               "seconds": seconds, "accuracy": accuracy,
                               "png": None if png_dir is None else str(png_dir),
                               "mean_steps_used": sum(m["steps_used"]) / len(fp), **meta})
    return 0

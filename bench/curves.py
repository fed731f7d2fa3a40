"""Scaling curves: how the time of fastfp and of its baseline grows with the work.

One PNG per area (``curves_<area>.png``) with one panel per swept parameter, and all points in
``curves.json``:

- ops: high-pass vs batch size, image size (32..512) and k;
- noise: gradient mean over q noisy weight copies vs q and batch size;
- cexamples: ltrc generation vs q and number of examples;
- fbi: all-pairs Rajski distances vs number of models and L (number of inputs).

The baselines are the same as in the benchmark files (bench/baselines/<area>.py). Points are the
minimum of a few timed calls after a warm-up, the device synchronised inside the timing; once a
call exceeds the per-point budget the larger points of its line are skipped (marked in the JSON).
An area that cannot be drawn on this machine raises :class:`SkipArea` and is skipped with a note.

    python -m fastfp.bench.curves --out DIR [--quick] [--device cpu|cuda] [--only AREA]...
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fastfp

from . import common
from .baselines import cexamples as base_cexamples
from .baselines import dct as base_dct
from .baselines import fbi as base_fbi
from .baselines import noise as base_noise

AREAS = ("ops", "noise", "cexamples", "fbi")


class SkipArea(Exception):
    """This area cannot be drawn on this machine; the message says why."""


@dataclass
class Curve:
    param: str                      # the swept parameter, e.g. "batch", "image size", "k"
    values: list
    # value -> (fastfp_fn, baseline_fn); either may be None (not available at this point)
    make: Callable[[Any], tuple[Callable | None, Callable | None]]
    fixed: str = ""                 # the parameters held fixed, for the panel's title
    points: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Timing


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int, min_total_s: float = 0.1,
              max_repeats: int = 50) -> float:
    """Minimum over at least ``repeats`` calls, more for short calls (until ``min_total_s`` of
    timed work or ``max_repeats``): on a shared machine the minimum of many is the stable figure."""
    sync = common.synchronize
    fn()
    sync(device)  # warm-up: caches, kernel compilation, autotuning
    best, total, count = float("inf"), 0.0, 0
    while count < repeats or (total < min_total_s and count < max_repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        elapsed = time.perf_counter() - start
        best, total, count = min(best, elapsed), total + elapsed, count + 1
    return best


def run_curve(curve: Curve, device: torch.device, repeats: int, budget_s: float,
              progress: Any = None, min_total_s: float = 0.1) -> None:
    """Time every point; stop a line (fastfp or baseline) once one call exceeds ``budget_s``."""
    over = {"fastfp": False, "baseline": False}
    for value in curve.values:
        fast_fn, base_fn = curve.make(value)
        point = {"value": value, "fastfp_s": None, "baseline_s": None, "note": ""}
        for role, fn in (("fastfp", fast_fn), ("baseline", base_fn)):
            if fn is None:
                continue
            if over[role]:
                point["note"] += f"{role} skipped (over {budget_s:g} s per call); "
                continue
            seconds = time_call(fn, device, repeats, min_total_s)
            point[f"{role}_s"] = seconds
            over[role] = seconds > budget_s
        curve.points.append(point)
        if progress is not None:
            progress.update(1)


# ---------------------------------------------------------------------------------------------
# Areas. Each returns its curves, or raises SkipArea.


def ops_curves(device: torch.device, quick: bool) -> list[Curve]:
    cuda = device.type == "cuda"

    def k_for(size):
        return max(2, round(size * 20 / 224))

    def make(batch, size, k):
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(batch, 3, size, size, generator=g, device=device)
        return (lambda: fastfp.highpass(x, k)), (lambda: base_dct.highpass_fft(x, k))

    if quick:
        batches, sizes, ks, side, batch = [1, 4, 16], [32, 64, 128], [0, 2, 8, 16], 64, 4
    elif cuda:
        batches, sizes = [1, 4, 16, 64, 100, 256], [32, 64, 128, 224, 384, 512]
        ks, side, batch = [0, 5, 10, 20, 40, 80], 224, 100
    else:
        batches, sizes, ks, side, batch = [1, 4, 16, 64, 100], [32, 64, 128, 224, 384, 512], \
            [0, 5, 10, 20, 40], 224, 16
    label = "baseline: highpass_fft"
    return [
        Curve("batch", batches, lambda b: make(b, side, k_for(side)),
              f"3x{side}x{side}, k={k_for(side)}; {label}"),
        Curve("image size", sizes, lambda s: make(batch, s, k_for(s)),
              f"batch {batch}, k~20*size/224; {label}"),
        Curve("k", ks, lambda k: make(batch, side, k), f"batch {batch}, 3x{side}x{side}"),
    ]


def noise_curves(device: torch.device, quick: bool) -> list[Curve]:
    side = 32
    model = common.small_cnn(3).to(device)
    delta = 0.03

    def build(batch, q):
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(batch, 3, side, side, generator=g, device=device)
        y = torch.randint(0, 10, (batch,), generator=g, device=device)
        return ((lambda: fastfp.cexamples.gradmean.grad_mean(model, x, y, delta, q, seed=0)),
                (lambda: base_noise.grad_mean_naive(model, x, y, delta, q, 0)))

    qs, batches = ([1, 2, 4, 8], [1, 8, 32]) if quick else ([1, 2, 5, 10, 20], [1, 8, 32, 128])
    label = f"small CNN 3x{side}x{side}; baseline: grad_mean_naive"
    return [Curve("q", qs, lambda q: build(8, q), f"batch 8; {label}"),
            Curve("batch", batches, lambda b: build(b, 4), f"q=4; {label}")]


def cexamples_curves(device: torch.device, quick: bool) -> list[Curve]:
    model = common.small_cnn(1).to(device)
    shape, steps = (1, 32, 32), (3 if quick else 10)

    def build(num, q):
        def fast():
            return fastfp.cexamples.generate(model, num, shape, 10, method="ltrc", q=q,
                                             steps=steps, eta=0.0, progress=False)

        def baseline():
            return base_cexamples.eager_generate(model, num, shape, 10, method="ltrc", q=q,
                                                 steps=steps, eta=0.0, device=device)
        return fast, baseline

    qs, nums = ([1, 2, 4], [1, 4, 16]) if quick else ([1, 2, 5, 10, 20], [1, 4, 16, 64])
    label = f"ltrc, small CNN 1x32x32, {steps} steps; baseline: eager_generate"
    return [Curve("q", qs, lambda q: build(4, q), f"4 examples; {label}"),
            Curve("examples", nums, lambda n: build(n, 2), f"q=2; {label}")]


def fbi_curves(device: torch.device, quick: bool) -> list[Curve]:
    k = 10

    def build(models, length):
        rng = np.random.default_rng(0)
        a, b = (rng.integers(0, k + 1, size=(models, length), dtype=np.int64) for _ in range(2))
        ta, tb = torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)
        # the numpy baseline runs on the host whatever the device, as a user's would
        return ((lambda: fastfp.fbi.pairwise_rajski(ta, tb, k=k)),
                (lambda: base_fbi.pairwise_rajski_bincount(a, b, k + 1)))

    models, lengths = ([10, 50, 200], [10, 100, 1000]) if quick else \
        ([10, 100, 300, 1000], [10, 100, 1000, 10000])
    label = f"k={k}; baseline: pairwise_rajski_bincount"
    return [Curve("models", models, lambda m: build(m, 100), f"m x m pairs, L=100, {label}"),
            Curve("L", lengths, lambda n: build(100, n), f"100 x 100 pairs, {label}")]


BUILDERS = {"ops": ops_curves, "noise": noise_curves, "cexamples": cexamples_curves,
            "fbi": fbi_curves}


# ---------------------------------------------------------------------------------------------
# Output


def plot(area: str, curves: list[Curve], device_name: str, path: str | Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastfp.io import atomic_path

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False)
    for ax, curve in zip(axes[0], curves, strict=True):
        for role, style in (("fastfp", "o-"), ("baseline", "s--")):
            xs = [p["value"] for p in curve.points if p[f"{role}_s"] is not None]
            ys = [p[f"{role}_s"] for p in curve.points if p[f"{role}_s"] is not None]
            if xs:
                ax.plot(xs, ys, style, label=role)
        for p in curve.points:  # speed-up next to each fastfp point
            if p["fastfp_s"] and p["baseline_s"]:
                ax.annotate(f"{p['baseline_s'] / p['fastfp_s']:.2g}x", (p["value"], p["fastfp_s"]),
                            xytext=(0, -11), textcoords="offset points", ha="center", fontsize=7)
        if min(curve.values) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel(curve.param)
        ax.set_ylabel("time per call (s)")
        ax.set_title(curve.fixed, fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fastfp {area}: scaling on {device_name}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run(out_dir: str | Path, areas: tuple[str, ...] = AREAS, *, device: torch.device | None = None,
        quick: bool = False, repeats: int | None = None, budget_s: float | None = None) -> dict:
    """Draw the curves of ``areas`` into ``out_dir``; returns what ``curves.json`` holds."""
    from tqdm import tqdm

    from fastfp.io import write_json

    device = device or common.bench_device()
    name = common.device_name(device)
    repeats = repeats or (3 if quick else 5)
    budget_s = budget_s or (2.0 if quick else 20.0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, dict] = {}
    result = {"device": name, "device_type": device.type, "quick": quick, "areas": drawn}
    for area in areas:
        try:
            curves = BUILDERS[area](device, quick)
        except SkipArea as exc:
            print(f"curves {area}: skipped: {exc}")
            drawn[area] = {"skipped": str(exc)}
            continue
        with tqdm(total=sum(len(c.values) for c in curves), desc=f"curves {area}",
                  leave=False) as bar:
            for curve in curves:
                run_curve(curve, device, repeats, budget_s, bar)
        png = out / f"curves_{area}.png"
        plot(area, curves, name, png)
        drawn[area] = {"png": png.name, "curves": [
            {"param": c.param, "fixed": c.fixed, "points": c.points} for c in curves]}
        print(format_area(area, curves))
        print(f"curves {area}: wrote {png}")
    write_json(out / "curves.json", result)
    return result


def format_area(area: str, curves: list[Curve]) -> str:
    lines = [f"curves {area}:"]
    for c in curves:
        cells = []
        for p in c.points:
            f, b = p["fastfp_s"], p["baseline_s"]
            ratio = f"{b / f:.2g}x" if f and b else "-"
            cells.append(f"{p['value']}: {_ms(f)} vs {_ms(b)} ({ratio})")
        lines.append(f"  {c.param:<11} " + "; ".join(cells))
    return "\n".join(lines)


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastfp.bench.curves",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", metavar="DIR", default="bench-results")
    parser.add_argument("--quick", action="store_true", help="small shapes, few points")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--only", action="append", choices=AREAS, metavar="AREA")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("curves: error: --device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device) if args.device else None
    run(args.out, tuple(args.only or AREAS), device=device, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

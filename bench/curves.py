"""Scaling curves: how the time of fastfp and of its baseline grows with the work.

One PNG per area (``curves_<area>.png``) with one panel per swept parameter, and all points in
``curves.json``:

- ops: high-pass vs batch size, image size (32..512) and k;
- noise: gradient mean over q noisy weight copies vs q and batch size;
- cexamples: ltrc generation vs q and number of examples;
- fbi: all-pairs Rajski distances vs number of models and L (number of inputs).

The baselines are the same as in the benchmark files (bench/baselines/<area>.py, falling back
to the reference twins in fastfp.reference where an area's baselines module lacks one). An area
whose fastfp API or baseline does not exist is skipped with a note. Points are the minimum of a
few timed calls after a warm-up, the device synchronised inside the timing; once a baseline call
exceeds the per-point budget its larger points are skipped (marked in the JSON).

    python bench/curves.py --out DIR [--quick] [--device cpu|cuda] [--only AREA]...
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
AREAS = ("ops", "noise", "cexamples", "fbi")


class SkipArea(Exception):
    """This area cannot be drawn here (API or baseline missing); the message says why."""


@dataclass
class Curve:
    param: str                      # the swept parameter, e.g. "batch", "image size", "k"
    values: list
    # value -> (fastfp_fn, baseline_fn); either may be None (not available at this point)
    make: Callable[[object], tuple[Callable | None, Callable | None]]
    fixed: str = ""                 # the parameters held fixed, for the panel's title
    points: list = field(default_factory=list)


def _sibling(name: str):
    key = f"_fastfp_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def baselines(area: str):
    """bench/baselines/<area>.py as a module, or ``None`` when the area has not written one."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # bench/baselines is imported as the package `baselines`
    try:
        return importlib.import_module(f"baselines.{area}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"baselines.{area}", "baselines"):
            return None
        raise


def pick(module, *names):
    """The first attribute of ``module`` among ``names`` (``None`` if module or names missing)."""
    for name in names:
        if module is not None and callable(getattr(module, name, None)):
            return getattr(module, name)
    return None


# ---------------------------------------------------------------------------------------------
# Timing


def time_call(fn, device, repeats: int, min_total_s: float = 0.1, max_repeats: int = 50) -> float:
    """Minimum over at least ``repeats`` calls, more for short calls (until ``min_total_s`` of
    timed work or ``max_repeats``): on a shared machine the minimum of many is the stable figure."""
    sync = _sibling("common").synchronize
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


def run_curve(curve: Curve, device, repeats: int, budget_s: float, progress=None,
              min_total_s: float = 0.1) -> None:
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


def _small_cnn(channels: int, classes: int = 10):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(32 * 16, classes)).eval()


def ops_curves(device, quick: bool) -> list[Curve]:
    import torch

    import fastfp
    from fastfp.reference import dct as ref

    names = ("highpass_fft", "fft_highpass", "torch_dct_highpass", "highpass_torch_dct")
    fft = pick(baselines("dct"), *names) or pick(baselines("ops"), *names)
    baseline = fft or ref.highpass  # torch-dct-style FFT DCT, else the dense-matrix twin
    cuda = device.type == "cuda"

    def k_for(size):
        return max(2, round(size * 20 / 224))

    def make(batch, size, k):
        def build(_=None):
            g = torch.Generator(device=device).manual_seed(0)
            x = torch.rand(batch, 3, size, size, generator=g, device=device)
            return (lambda: fastfp.highpass(x, k)), (lambda: baseline(x, k))
        return build

    if quick:
        batches, sizes, ks, side, batch = [1, 4, 16], [32, 64, 128], [0, 2, 8, 16], 64, 4
    elif cuda:
        batches, sizes = [1, 4, 16, 64, 100, 256], [32, 64, 128, 224, 384, 512]
        ks, side, batch = [0, 5, 10, 20, 40, 80], 224, 100
    else:
        batches, sizes, ks, side, batch = [1, 4, 16, 64, 100], [32, 64, 128, 224, 384, 512], \
            [0, 5, 10, 20, 40], 224, 16
    label = f"baseline: {getattr(baseline, '__name__', 'baseline')}"
    return [
        Curve("batch", batches, lambda b: make(b, side, k_for(side))(),
              f"3x{side}x{side}, k={k_for(side)}; {label}"),
        Curve("image size", sizes, lambda s: make(batch, s, k_for(s))(),
              f"batch {batch}, k~20*size/224; {label}"),
        Curve("k", ks, lambda k: make(batch, side, k)(), f"batch {batch}, 3x{side}x{side}"),
    ]


def noise_curves(device, quick: bool) -> list[Curve]:
    import torch

    import fastfp
    from fastfp.reference import noise as ref

    if not hasattr(fastfp.noise, "grad_mean"):
        raise SkipArea("fastfp.noise.grad_mean is not available")
    base = baselines("noise")
    naive = pick(base, "grad_mean_naive", "naive_grad_mean", "grad_mean_loop", "grad_mean")
    baseline = naive or ref.grad_mean
    side = 32
    model = _small_cnn(3).to(device)
    delta = 0.03

    def build(batch, q):
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(batch, 3, side, side, generator=g, device=device)
        y = torch.randint(0, 10, (batch,), generator=g, device=device)
        return ((lambda: fastfp.noise.grad_mean(model, x, y, delta, q, seed=0)),
                (lambda: baseline(model, x, y, delta, q, 0)))

    qs, batches = ([1, 2, 4, 8], [1, 8, 32]) if quick else ([1, 2, 5, 10, 20], [1, 8, 32, 128])
    label = f"small CNN 3x{side}x{side}; baseline: {getattr(baseline, '__name__', '?')}"
    return [Curve("q", qs, lambda q: build(8, q), f"batch 8; {label}"),
            Curve("batch", batches, lambda b: build(b, 4), f"q=4; {label}")]


def cexamples_curves(device, quick: bool) -> list[Curve]:
    import fastfp

    cex = fastfp.cexamples
    if not hasattr(cex, "generate"):
        raise SkipArea("fastfp.cexamples.generate is not available")
    base = baselines("cexamples")
    eager = pick(base, "eager_generate", "generate_eager", "pgd_generate", "generate")
    if eager is None:
        raise SkipArea("bench/baselines/cexamples.py has no eager generation baseline yet")
    model = _small_cnn(1).to(device)
    shape, steps = (1, 32, 32), (3 if quick else 10)

    def build(num, q):
        def fast():
            return cex.generate(model, num, shape, 10, method="ltrc", q=q, steps=steps,
                                eta=0.0, progress=False)

        def baseline():
            return _call_eager(eager, model, num, shape, q, steps, device)
        return fast, baseline

    qs, nums = ([1, 2, 4], [1, 4, 16]) if quick else ([1, 2, 5, 10, 20], [1, 4, 16, 64])
    label = f"ltrc, small CNN 1x32x32, {steps} steps; baseline: {eager.__name__}"
    return [Curve("q", qs, lambda q: build(4, q), f"4 examples; {label}"),
            Curve("examples", nums, lambda n: build(n, 2), f"q=2; {label}")]


def _call_eager(eager, model, num, shape, q, steps, device):
    # The eager baseline's keyword names follow fastfp.cexamples.generate where it can.
    import inspect

    params = inspect.signature(eager).parameters
    kwargs = {name: value for name, value in (("method", "ltrc"), ("q", q), ("steps", steps),
                                               ("eta", 0.0), ("num_classes", 10),
                                               ("device", device)) if name in params}
    if "input_shape" in params:
        kwargs["input_shape"] = shape
    if "num" in params:
        kwargs["num"] = num
    return eager(model, **kwargs)


def fbi_curves(device, quick: bool) -> list[Curve]:
    import numpy as np
    import torch

    import fastfp

    fast_fn = getattr(fastfp.fbi, "pairwise_rajski", None)
    if fast_fn is None:
        raise SkipArea("fastfp.fbi.pairwise_rajski is not available yet")
    bincount = pick(baselines("fbi"), "pairwise_rajski_bincount", "rajski_bincount")
    if bincount is None:
        raise SkipArea("bench/baselines/fbi.py has no vectorised numpy bincount baseline yet")
    k = 10

    def build(models, length):
        rng = np.random.default_rng(0)
        a, b = (rng.integers(0, k + 1, size=(models, length), dtype=np.int64) for _ in range(2))
        ta, tb = torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)
        # the numpy baseline runs on the host whatever the device, as a user's would
        return (lambda: fast_fn(ta, tb, k=k)), (lambda: bincount(a, b, k + 1))

    models, lengths = ([10, 50, 200], [10, 100, 1000]) if quick else \
        ([10, 100, 300, 1000], [10, 100, 1000, 10000])
    label = f"k={k}; baseline: {bincount.__name__}"
    return [Curve("models", models, lambda m: build(m, 100), f"m x m pairs, L=100, {label}"),
            Curve("L", lengths, lambda n: build(100, n), f"100 x 100 pairs, {label}")]


BUILDERS = {"ops": ops_curves, "noise": noise_curves, "cexamples": cexamples_curves,
            "fbi": fbi_curves}


# ---------------------------------------------------------------------------------------------
# Output


def plot(area: str, curves: list[Curve], device_name: str, path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastfp.store import atomic_path

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False)
    for ax, curve in zip(axes[0], curves):
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


def run(out_dir, areas=AREAS, *, device=None, quick=False, repeats=None, budget_s=None) -> dict:
    """Draw the curves of ``areas`` into ``out_dir``; returns what ``curves.json`` holds."""
    from tqdm import tqdm

    from fastfp.store import write_json

    common = _sibling("common")
    device = device or common.bench_device()
    name = common.device_name(device)
    repeats = repeats or (3 if quick else 5)
    budget_s = budget_s or (2.0 if quick else 20.0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": name, "device_type": device.type, "quick": quick, "areas": {}}
    for area in areas:
        try:
            curves = BUILDERS[area](device, quick)
        except SkipArea as exc:
            print(f"curves {area}: skipped: {exc}")
            result["areas"][area] = {"skipped": str(exc)}
            continue
        with tqdm(total=sum(len(c.values) for c in curves), desc=f"curves {area}",
                  leave=False) as bar:
            for curve in curves:
                run_curve(curve, device, repeats, budget_s, bar)
        png = out / f"curves_{area}.png"
        plot(area, curves, name, png)
        result["areas"][area] = {"png": png.name, "curves": [
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/curves.py", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--out", metavar="DIR", default="bench-results")
    parser.add_argument("--quick", action="store_true", help="small shapes, few points")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--only", action="append", choices=AREAS, metavar="AREA")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("curves: error: --device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device) if args.device else None
    run(args.out, tuple(args.only or AREAS), device=device, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of the demo (matplotlib, Agg backend, imported lazily; every file written atomically).

Each function takes plain arrays / dicts and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PathArg = str | os.PathLike[str]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed, never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: PathArg) -> Path:
    from .io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def grid_columns(labels: Mapping[str, np.ndarray], classes: int = 10
                 ) -> tuple[list[int], dict[str, list[int | None]]]:
    """The targets shown by :func:`cexample_grid` and, per method, the index of its first example
    of each target (``None`` when it has none).

    Columns are targets, not positions: fitted fingerprints drop the examples the model does not
    classify as their label, so the i-th example of two methods can have different targets.
    """
    targets = sorted({int(t) for v in labels.values() for t in np.asarray(v).ravel()})[:classes]
    picks: dict[str, list[int | None]] = {}
    for m, v in labels.items():
        v = np.asarray(v).ravel()
        picks[m] = [int(np.flatnonzero(v == t)[0]) if (v == t).any() else None for t in targets]
    return targets, picks


def cexample_grid(images: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                  path: PathArg, per_method: int = 10, title: str | None = None) -> Path:
    """Rows = methods, columns = target classes (the first ``per_method`` targets): each cell is
    the method's first C-example of that target (C=1 grey, C=3 RGB), so a column compares the
    methods on the same target; a method without an example of a target leaves its cell blank."""
    plt = _plt()
    methods = list(images)
    targets, picks = grid_columns(labels, per_method)
    cols = len(targets)
    fig, axes = plt.subplots(len(methods), cols, figsize=(1.1 * cols + 0.8, 1.15 * len(methods)
                                                          + 0.9), squeeze=False)
    for r, m in enumerate(methods):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            i = picks[m][c]
            if i is None:
                ax.text(0.5, 0.5, "no\nexample", ha="center", va="center", fontsize=7, color="grey",
                        transform=ax.transAxes)
                for side in ax.spines.values():
                    side.set_visible(False)
            else:
                img = np.asarray(images[m][i], dtype=np.float32)
                if img.shape[0] == 1:
                    ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            if r == 0:
                ax.set_title(f"target {targets[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(m, fontsize=9)
    fig.suptitle(title or "Characteristic examples: one per target class and method")
    return _save(fig, path)


def dct_spectra(images: Mapping[str, np.ndarray], path: PathArg) -> Path:
    """Mean log-magnitude of the orthonormal 2-D DCT-II of the C-examples, one panel per method
    (LTRC's high-pass empties the low-frequency corner i + j <= k, except DC)."""
    from scipy.fft import dctn

    plt = _plt()
    methods = list(images)
    specs = {}
    for m in methods:
        x = np.asarray(images[m], dtype=np.float64)
        mag = np.abs(dctn(x, type=2, norm="ortho",
                          axes=(-2, -1))).mean(axis=tuple(range(x.ndim - 2)))
        specs[m] = np.log10(np.maximum(mag, 1e-3))  # floor: the removed band would squash the scale
    # One colour scale for every panel, so the methods compare at a glance.
    lo = min(s.min() for s in specs.values())
    hi = max(s.max() for s in specs.values())
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods) + 1, 3.2), squeeze=False,
                             layout="constrained")
    for i, (ax, m) in enumerate(zip(axes[0], methods, strict=True)):
        im = ax.imshow(specs[m], cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(m)
        ax.set_xlabel("j (horizontal frequency)")
        if i == 0:
            ax.set_ylabel("i (vertical frequency)")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02, label="log10 mean |DCT|")
    fig.suptitle("log10 mean |DCT| of the C-examples")
    return _save(fig, path)


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: PathArg,
               title: str = "FBI detection ROC") -> Path:
    """``curves``: label -> (fpr, tpr, auc)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance")
    ax.axvline(0.05, color="grey", lw=0.8, ls="--", label="5 % FPR (operating point)")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _place_labels(ax: Any, texts: Sequence[tuple[str, float, float]], fontsize: float = 7) -> None:
    """Annotate each (text, x, y) data point at the first of eight offsets around it whose box
    stays inside the axes and overlaps no label placed before and no other point (greedy; the
    least overlap otherwise)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform([(x, y) for _, x, y in texts]) if texts else []
    r = 6.0  # marker radius in pixels, kept free of labels
    ax_box = ax.get_window_extent(renderer)
    frame = (ax_box.x0, ax_box.y0, ax_box.x1, ax_box.y1)
    markers = [(px - r, py - r, px + r, py + r) for px, py in points]
    # Offsets in points, clear of the point's own marker (up to 11 pt wide).
    offsets = [(7, 4, "left", "bottom"), (7, -4, "left", "top"), (-7, 4, "right", "bottom"),
               (-7, -4, "right", "top"), (0, 8, "center", "bottom"), (0, -8, "center", "top"),
               (9, 0, "left", "center"), (-9, 0, "right", "center")]
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return max(w, 0.0) * max(h, 0.0)

    for k, (label, x, y) in enumerate(texts):
        best, best_cost = None, float("inf")
        for dx, dy, ha, va in offsets:
            t = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha,
                            va=va, fontsize=fontsize, zorder=4,  # over the lines, readable
                            bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.4})
            e = t.get_window_extent(renderer)
            box = (e.x0, e.y0, e.x1, e.y1)
            inside = overlap(box, frame)  # a label leaving the axes counts as an overlap
            cost = (box[2] - box[0]) * (box[3] - box[1]) - inside + sum(
                overlap(box, o) for o in placed) + sum(
                overlap(box, mk) for j, mk in enumerate(markers) if j != k)
            if cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (t, box), cost
            else:
                t.remove()
            if cost == 0:
                break
        assert best is not None
        placed.append(best[1])


def tradeoff(points: Mapping[str, Sequence[tuple[float, float, float]]], path: PathArg,
             title: str = "Uniqueness trade-off over delta") -> Path:
    """Robustness vs transferability per method as delta varies (C-examples paper, Fig. 4).
    ``points``: method -> list of (delta, robustness, transferability); a method with one point
    (e.g. vanilla, delta 0) is drawn as a single marker. Uniqueness is the height above the
    diagonal; each point is labelled with its delta (and its method where several coincide)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.8))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="uniqueness = 0")
    markers = "osD^vP*X"
    at: dict[tuple[float, float], list[str]] = {}  # points drawn at the same place share a label
    for i, (m, pts) in enumerate(points.items()):
        pts = sorted(pts)
        t = [p[2] for p in pts]
        r = [p[1] for p in pts]
        # Hollow markers of different shapes stay visible when several methods coincide.
        ax.plot(t, r, marker=markers[i % len(markers)], ls="none" if len(pts) == 1 else "-",
                ms=11 - 1.2 * (i % 4), mfc="none", mew=1.5, label=m)
        for d, rr, tt in pts:
            at.setdefault((round(tt, 3), round(rr, 3)), []).append(f"{m} \u03b4={d:g}")
    texts = [(lines[0].rpartition(" ")[2] if len(lines) == 1 else "\n".join(lines), x, y)
             for (x, y), lines in at.items()]
    # Robustness is usually close to 1: zoom on it, but keep the transferability axis whole.
    low = min((p[1] for pts in points.values() for p in pts), default=0.0)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(max(0.0, low - 0.1) - 0.01, 1.02)
    ax.set_xlabel("transferability (other seeds of the architecture)")
    ax.set_ylabel("robustness (pruned copies)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _place_labels(ax, texts)
    return _save(fig, path)


def _family_blocks(families: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, stop, family) of each run of equal names (families sorted into diagonal blocks)."""
    blocks = []
    start = 0
    for i in range(1, len(families) + 1):
        if i == len(families) or families[i] != families[start]:
            blocks.append((start, i, families[start]))
            start = i
    return blocks


def heatmap(dist: np.ndarray, families: Sequence[str], path: PathArg,
            title: str = "Rajski distance between models", names: Sequence[str] | None = None
            ) -> Path:
    """Pairwise distances with rows/columns grouped by family (sort them first so each family is
    one diagonal block, outlined). Ticks: one per model from ``names`` when given (up to 60),
    else one per family."""
    plt = _plt()
    dist = np.asarray(dist)
    n = len(families)
    if dist.shape != (n, n):
        raise ValueError(f"dist: expected a {n} x {n} matrix for {n} families entries, got shape "
                         f"{dist.shape}")
    side = min(max(6.0, 3.5 + 0.12 * n), 20.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(dist, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03,
                 label="Rajski distance D  (0: same outputs, 1: independent outputs)")
    blocks = _family_blocks(families)
    for start, *_ in blocks[1:]:  # family boundaries
        ax.axhline(start - 0.5, color="white", lw=0.6)
        ax.axvline(start - 0.5, color="white", lw=0.6)
    if names is not None and n <= 60:
        ticks, labels = [float(i) for i in range(n)], list(names)
    else:
        ticks = [(start + stop - 1) / 2 for start, stop, _ in blocks]
        labels = [f for _, _, f in blocks]
    size = 6 if len(ticks) > 20 else 8
    ax.set_xticks(ticks, labels, rotation=90, fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)
    ax.set_title(title)
    return _save(fig, path)


def family_styles(families: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """One (colour, marker) per family, all distinct: ten well-separated colours (tab10), then
    the next marker shape. Paired palettes (tab20) would give two unrelated families the light and
    dark shade of one hue."""
    plt = _plt()
    colours = plt.get_cmap("tab10").colors
    shapes = "osD^vP*Xhp<>"
    names = list(dict.fromkeys(families))
    if len(names) > len(colours) * len(shapes):
        raise ValueError(f"families: at most {len(colours) * len(shapes)} families can get a "
                         f"distinct style, got {len(names)}")
    return {f: (colours[i % len(colours)], shapes[i // len(colours)])
            for i, f in enumerate(names)}


def embedding(xy: np.ndarray, families: Sequence[str], path: PathArg,
              title: str = "t-SNE of the models from their Rajski distances") -> Path:
    """A 2-D embedding of the models (``xy``: n x 2), one colour and marker per family, with a
    legend naming them (outside the axes, so it covers no point)."""
    plt = _plt()
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape != (len(families), 2):
        raise ValueError(f"xy: expected shape ({len(families)}, 2), one row per families entry, "
                         f"got {xy.shape}")
    styles = family_styles(families)
    fam = np.asarray(families)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for f, (colour, shape) in styles.items():
        rows = fam == f
        ax.scatter(xy[rows, 0], xy[rows, 1], s=40, color=colour, marker=shape, label=f,
                   edgecolors="black", linewidths=0.3)
    ax.legend(title="family", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), ncol=1 if len(styles) <= 25 else 2, frameon=False)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)

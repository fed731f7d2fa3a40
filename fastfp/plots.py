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
    from .store import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def cexample_grid(images: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                  path: PathArg, per_method: int = 8) -> Path:
    """Rows = methods, columns = the first ``per_method`` C-examples (C=1 grey, C=3 RGB)."""
    plt = _plt()
    methods = list(images)
    cols = min(per_method, min(len(v) for v in images.values()))
    fig, axes = plt.subplots(len(methods), cols, figsize=(1.3 * cols, 1.4 * len(methods)),
                             squeeze=False)
    for r, m in enumerate(methods):
        for c in range(cols):
            ax = axes[r][c]
            img = np.asarray(images[m][c], dtype=np.float32)
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"label {int(labels[m][c])}", fontsize=7)
            if c == 0:
                ax.set_ylabel(m, fontsize=9)
    fig.suptitle("Characteristic examples per method")
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
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.axvline(0.05, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def tradeoff(points: Mapping[str, Sequence[tuple[float, float, float]]], path: PathArg) -> Path:
    """Robustness vs transferability per method as delta varies (C-examples paper, Fig. 4).
    ``points``: method -> list of (delta, robustness, transferability)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for m, pts in points.items():
        pts = sorted(pts)
        t = [p[2] for p in pts]
        r = [p[1] for p in pts]
        ax.plot(t, r, "o-", label=m)
        for d, rr, tt in pts:
            ax.annotate(f"{d:g}", (tt, rr), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lim = [0, 1.02]
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("transferability (other models)")
    ax.set_ylabel("robustness (pruned copies)")
    ax.set_title("Uniqueness trade-off over delta (labels: delta)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def heatmap(dist: np.ndarray, families: Sequence[str], path: PathArg,
            title: str = "Rajski distance between models") -> Path:
    """Pairwise distances, rows/columns grouped by family (family names on the axes)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(dist, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ticks, names = [], []
    start = 0
    for i in range(1, len(families) + 1):
        if i == len(families) or families[i] != families[start]:
            ticks.append((start + i - 1) / 2)
            names.append(families[start])
            start = i
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=6)
    ax.set_title(title)
    return _save(fig, path)

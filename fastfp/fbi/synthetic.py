"""Synthetic output databases for tests, benchmarks and demos (no model needed).

Each family has a vanilla model whose top-1 is right with probability ``accuracy`` (else a
random class) and whose remaining top-k labels are random distinct classes; its variants copy
the vanilla output and, per input, redraw it with probability ``noise`` (the "noisy channel" of
section IV-A). Different families are independent.
"""

from __future__ import annotations

import numpy as np

from fastfp import _validate

from .database import Database


def _random_output(rng, truth, num_classes, k, accuracy):
    first = truth if rng.random() < accuracy else int(rng.integers(num_classes))
    others = [c for c in rng.permutation(num_classes)[: k + 1].tolist() if c != first][: k - 1]
    return [first] + others


def synthetic_database(
    n_families: int = 4,
    family_size: int = 3,
    num_inputs: int = 200,
    *,
    num_classes: int = 10,
    k: int = 3,
    accuracy: float = 0.7,
    noise: float = 0.2,
    ground_truth: bool = True,
    seed: int = 0,
) -> Database:
    """A database of n_families x family_size models named ``f{i}`` (vanilla) and ``f{i}v{j}``."""
    n_families = _validate.integer("n_families", n_families, lo=1)
    family_size = _validate.integer("family_size", family_size, lo=1)
    num_inputs = _validate.integer("num_inputs", num_inputs, lo=1)
    num_classes = _validate.integer("num_classes", num_classes, lo=2)
    k = _validate.integer("k", k, lo=1, hi=num_classes)
    rng = np.random.default_rng(_validate.integer("seed", seed, lo=0))
    truth = rng.integers(num_classes, size=num_inputs)
    rows, names, fams = [], [], []
    for f in range(n_families):
        vanilla = [_random_output(rng, int(t), num_classes, k, accuracy) for t in truth]
        for j in range(family_size):
            if j == 0:
                out = vanilla
            else:
                out = [
                    _random_output(rng, int(t), num_classes, k, accuracy)
                    if rng.random() < noise
                    else v
                    for v, t in zip(vanilla, truth, strict=True)
                ]
            rows.append(out)
            names.append(f"f{f}" if j == 0 else f"f{f}v{j}")
            fams.append(f"f{f}")
    return Database(
        np.asarray(rows, dtype=np.int64),
        names,
        fams,
        k=k,
        num_classes=num_classes,
        ground_truth=truth if ground_truth else None,
    )

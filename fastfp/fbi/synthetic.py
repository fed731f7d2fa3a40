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


def paper_database(
    n_families: int = 35,
    n_variants: int = 1046,
    num_inputs: int = 20_000,
    *,
    num_classes: int = 1000,
    strengths: tuple[float, float] = (0.05, 0.9),
    seed: int = 0,
) -> Database:
    """A top-1 database of the FBI paper's shape (section IV-D: 35 vanilla ImageNet models and
    1,046 variants, 1,081 models, on 20,000 inputs), without any model.

    Each input has a difficulty and five confusable classes; a vanilla model is right with
    probability sigmoid(ability - difficulty) (accuracies about 0.55..0.80), else it names a
    confusable class (or, one time in five, any class). A variant copies its vanilla model's
    label except on a fraction of the inputs (its strength, uniform in ``strengths``), where
    it answers afresh with a slightly lower ability; variants losing more than 15 % relative
    accuracy are redrawn (the paper's filter). The default strengths put the All selection's
    TPR at 5 % FPR near the paper's (83.4, Table III). Family sizes vary around 30. Names:
    ``fam07`` for a vanilla model, ``v0123-fam07`` for a variant.
    """
    n_families = _validate.integer("n_families", n_families, lo=2)
    n_variants = _validate.integer("n_variants", n_variants, lo=0)
    num_inputs = _validate.integer("num_inputs", num_inputs, lo=1)
    num_classes = _validate.integer("num_classes", num_classes, lo=7)
    if not isinstance(strengths, (tuple, list)) or len(strengths) != 2:
        raise TypeError("strengths: expected a (low, high) pair of fractions")
    lo, hi = (_validate.real("strengths", v, lo=0.0, hi=1.0) for v in strengths)
    if lo > hi:
        raise ValueError(f"strengths: low {lo} exceeds high {hi}")
    rng = np.random.default_rng(_validate.integer("seed", seed, lo=0))
    N = num_inputs
    truth = rng.integers(num_classes, size=N)
    difficulty = rng.normal(0.0, 1.5, size=N)
    confusers = (truth[:, None] + rng.integers(1, num_classes, size=(N, 5))) % num_classes
    weights = np.cumsum([0.4, 0.25, 0.15, 0.1, 0.1])

    def answer(ability: float, n: int, idx: np.ndarray) -> np.ndarray:
        right = rng.random(n) < 1.0 / (1.0 + np.exp(difficulty[idx] - ability))
        wrong = confusers[idx, np.searchsorted(weights, rng.random(n) * weights[-1])]
        anywhere = rng.random(n) < 0.2
        wrong = np.where(anywhere, rng.integers(num_classes, size=n), wrong)
        return np.where(right, truth[idx], wrong)

    every = np.arange(N)
    extra = rng.multinomial(max(0, n_variants - 10 * n_families), [1 / n_families] * n_families)
    sizes = (
        np.minimum(extra + 10, n_variants)
        if n_variants >= 10 * n_families
        else np.bincount(np.arange(n_variants) % n_families, minlength=n_families)
    )
    rows, names, fams = [], [], []
    v = 0
    for f in range(n_families):
        ability = rng.uniform(0.4, 1.9)
        vanilla = answer(ability, N, every)
        acc = float(np.mean(vanilla == truth))
        rows.append(vanilla)
        names.append(f"fam{f:02d}")
        fams.append(f"fam{f:02d}")
        for _ in range(int(sizes[f])):
            while True:
                strength = rng.uniform(lo, hi)
                redo = np.flatnonzero(rng.random(N) < strength)
                out = vanilla.copy()
                out[redo] = answer(ability - rng.uniform(0.0, 0.6), redo.size, redo)
                if np.mean(out == truth) >= 0.85 * acc:
                    break
            rows.append(out)
            names.append(f"v{v:04d}-fam{f:02d}")
            fams.append(f"fam{f:02d}")
            v += 1
    topk = np.stack(rows)[:, :, None]
    return Database(topk, names, fams, k=1, num_classes=num_classes, ground_truth=truth)

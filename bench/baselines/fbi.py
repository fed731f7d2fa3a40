"""Baselines for the FBI engine: what a user writes without fastfp.

- :func:`rajski_pairs_sklearn`: a loop over model pairs calling
  ``sklearn.metrics.mutual_info_score``
  (through the literal twin :func:`fastfp.reference.fbi.rajski_distance`): the natural first code;
  too slow for 10^6 pairs, so the benchmark times a sample of pairs and extrapolates.
- :func:`pairwise_rajski_bincount`: the vectorised numpy version, one ``np.bincount`` over the
  combined codes ``u * K + v`` of a chunk of pairs, then ``xlogy``.
- :func:`detection_scores_loop`: eq. (7) input by input with the literal twin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy

from fastfp.reference import fbi as ref


def rajski_pairs_sklearn(A: ArrayLike, B: ArrayLike,
                         pairs: Iterable[tuple[int, int]]) -> list[float]:
    A, B = np.asarray(A), np.asarray(B)
    return [ref.rajski_distance(A[i].tolist(), B[j].tolist()) for i, j in pairs]


def _row_entropy(X: np.ndarray, K: int) -> np.ndarray:
    m, L = X.shape
    counts = np.bincount((X + K * np.arange(m)[:, None]).ravel(), minlength=m * K).reshape(m, K)
    return math.log(L) - xlogy(counts, counts).sum(1) / L


def pairwise_rajski_bincount(A: ArrayLike, B: ArrayLike, K: int,
                             chunk_pairs: int = 1 << 17) -> np.ndarray:
    A, B = np.asarray(A, dtype=np.int64), np.asarray(B, dtype=np.int64)
    m, L = A.shape
    n = B.shape[0]
    h_a, h_b = _row_entropy(A, K), _row_entropy(B, K)
    h_ab = np.empty((m, n))
    rows = max(1, chunk_pairs // max(n, 1))
    for i in range(0, m, rows):
        a = A[i:i + rows]
        r = a.shape[0]
        codes = a[:, None, :] * K + B[None, :, :] + (np.arange(r * n) * K * K).reshape(r, n, 1)
        c = np.bincount(codes.ravel(), minlength=r * n * K * K).reshape(r, n, K * K)
        h_ab[i:i + r] = math.log(L) - xlogy(c, c).sum(-1) / L
    h_ab = np.clip(h_ab, 0.0, None)
    mi = np.clip(h_a[:, None] + h_b[None, :] - h_ab, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(h_ab > 1e-12, 1.0 - mi / h_ab, 0.0)
    return np.clip(d, 0.0, 1.0)


def detection_scores_loop(outputs: Sequence[Sequence[tuple]], family: Iterable[int],
                          inputs: Iterable[int]) -> list[int]:
    """Numerators of eq. (7) (score * |F|) for ``inputs``; outputs[m][x] are label tuples."""
    fam = set(int(m) for m in family)
    inside = [m for m in range(len(outputs)) if m in fam]
    others = [m for m in range(len(outputs)) if m not in fam]
    return [int(ref.detection_score(outputs, x, inside, others) * len(inside)) for x in inputs]

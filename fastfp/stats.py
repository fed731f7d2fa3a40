"""Decision statistics both methods use: ROC curve, ROC AUC, threshold and TPR at a target FPR,
F1, identification outcomes with abstention, and the one-sided binomial test of a match count.

Scores follow scikit-learn's convention: higher score = more positive (pass ``-distance`` for
distances). Array arguments are anything numpy accepts; results are Python floats / numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validate

__all__ = ["binomial_p_value", "binomial_threshold", "f1", "identification_counts", "roc_auc",
           "roc_curve", "threshold_at_fpr", "tpr_at_fpr"]


# --------------------------------------------------------------------------- binary decisions
def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"labels: length {y.size} does not match scores' {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores: must be finite")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels: expected 0 (negative) / 1 (positive) values")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels: need at least one positive and one negative")
    return s, y


def roc_curve(scores: ArrayLike,  # [N]
              labels: ArrayLike,  # [N] 0 / 1
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score (decide positive iff score >= t),
    starting at (0, 0) with threshold +inf (scikit-learn's curve, no point dropped)."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    s, y = _scores_labels(scores, labels)
    fpr, tpr, thresholds = sk_roc_curve(y, s, drop_intermediate=False)
    thresholds[0] = np.inf  # scikit-learn < 1.3 put max(score) + 1 there
    return fpr, tpr, thresholds


def roc_auc(scores: ArrayLike,  # [N]
            labels: ArrayLike,  # [N] 0 / 1
            ) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + P(tie) / 2 (Mann-Whitney)."""
    from sklearn.metrics import roc_auc_score

    s, y = _scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


def threshold_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.05) -> float:
    """Smallest threshold t whose false-positive rate (negatives with score >= t) is <= ``fpr``
    (the paper's empirical quantile of the negatives)."""
    fpr = _validate.real("fpr", fpr, lo=0.0, hi=1.0)
    f, _, t = roc_curve(scores, labels)
    return float(t[np.nonzero(f <= fpr + 1e-12)[0][-1]])


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.05) -> float:
    """True-positive rate at the threshold :func:`threshold_at_fpr` sets."""
    fpr = _validate.real("fpr", fpr, lo=0.0, hi=1.0)
    f, t, _ = roc_curve(scores, labels)
    return float(t[np.nonzero(f <= fpr + 1e-12)[0][-1]])


def f1(predicted: ArrayLike,  # [N] 0 / 1
       labels: ArrayLike,  # [N] 0 / 1
       ) -> float:
    """F1 score of binary decisions (1 = positive); 0 when there are no true positives."""
    p = np.asarray(predicted).ravel()
    y = np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"labels: length {y.size} does not match predicted's {p.size}")
    for name, a in (("predicted", p), ("labels", y)):
        if not np.all(np.isin(a, (0, 1))):
            raise ValueError(f"{name}: expected 0 / 1 values")
    p, y = p.astype(bool), y.astype(bool)
    tp = np.sum(p & y)
    denom = 2 * tp + np.sum(p & ~y) + np.sum(~p & y)
    return float(2 * tp / denom) if denom else 0.0


# ----------------------------------------------------------------------------- identification
def identification_counts(predicted: Iterable[Any], truth: Iterable[Any], *,
                          abstain: Any = None) -> dict[str, Any]:
    """Outcomes of identification with abstention: ``predicted[i] == abstain`` (default None; also
    -1 for integer arrays) is an abstention (H0), else correct iff equal to ``truth[i]``.

    Returns counts and rates: ``{"correct", "abstain", "wrong", "n", "success", "abstain_rate",
    "error"}`` (rates are fractions of n)."""
    pred, tru = list(predicted), list(truth)
    if len(pred) != len(tru):
        raise ValueError(f"truth: length {len(tru)} does not match predicted's {len(pred)}")
    if not pred:
        raise ValueError("predicted: expected at least one decision")

    def is_abstain(p: Any) -> bool:
        if abstain is not None:
            return p == abstain
        return p is None or (isinstance(p, (int, np.integer)) and p == -1)

    n_abs = sum(is_abstain(p) for p in pred)
    n_ok = sum((not is_abstain(p)) and p == t for p, t in zip(pred, tru, strict=True))
    n = len(pred)
    n_bad = n - n_abs - n_ok
    return {"correct": n_ok, "abstain": n_abs, "wrong": n_bad, "n": n,
            "success": n_ok / n, "abstain_rate": n_abs / n, "error": n_bad / n}


# ------------------------------------------------------------------------------ binomial test
def _binomial_args(n: int, p: float) -> tuple[int, float]:
    return _validate.integer("n", n, lo=0), _validate.real("p", p, lo=0.0, hi=1.0)


def binomial_p_value(count: int, n: int, p: float) -> float:
    """One-sided binomial test: P(X >= ``count``) for X ~ Binomial(``n``, ``p``)."""
    n, p = _binomial_args(n, p)
    count = _validate.integer("count", count, lo=0, hi=n)
    from scipy import stats

    return float(stats.binom.sf(count - 1, n, p))


def binomial_threshold(n: int, p: float, alpha: float) -> float:
    """The smallest match rate ``count / n`` whose one-sided p-value (:func:`binomial_p_value`)
    is below ``alpha``; ``inf`` when no count of ``n`` reaches it."""
    n, p = _binomial_args(n, p)
    alpha = _validate.real("alpha", alpha, lo=0.0, hi=1.0)
    from scipy import stats

    tails = stats.binom.sf(np.arange(n + 1) - 1, n, p)
    below = (tails < alpha).nonzero()[0]
    return float(below[0]) / n if below.size else float("inf")

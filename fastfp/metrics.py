"""Evaluation metrics of both papers.

C-examples (Wang et al., IJCAI'21, Sect. 4.1):

- **robustness**: accuracy of the fingerprint (fraction of inputs classified as their labels) on
  copies of the protected model pruned by unstructured global magnitude pruning at rates 40..80 %.
  The paper prunes "5 times at each pruning ratio" following Han et al. (prune, then retrain the
  remaining weights), whose accuracy drop is < 1 %. Magnitude pruning alone is deterministic, so
  here a *repeat* is: prune (same mask every time), then, when ``data`` is given, fine-tune the
  remaining weights for ``epochs`` with a different data order (seed = ``seed + repeat``), the mask
  kept fixed. Without ``data`` every repeat is the same model, so it is evaluated once.
- **transferability**: mean accuracy of the fingerprint on other models (same architecture, other
  seed; or other architectures).
- **uniqueness** = robustness - transferability (in [-1, 1]; higher is better).

FBI (Maho et al., TIFS'23): ROC AUC, TPR at a target FPR (threshold from the negatives), F1, and
identification outcomes correct / abstain / wrong. Scores follow scikit-learn's convention: higher
score = more positive (pass ``-distance`` for distances).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from numpy.typing import ArrayLike

from . import _validate as V
from ._training import check_data, deterministic, fit, prunable
from .fingerprint import Fingerprint

PRUNE_RATES = (0.4, 0.5, 0.6, 0.7, 0.8)
Data = tuple[torch.Tensor, torch.Tensor]  # (x, y): images and their classes
Copies = Mapping[float, Sequence[nn.Module]]


class _HasArrays(Protocol):
    inputs: torch.Tensor
    labels: torch.Tensor


FingerprintLike = _HasArrays | tuple[torch.Tensor, torch.Tensor] | list[Any]


# ------------------------------------------------------------------------------- fingerprints
def _as_fingerprint(fp: Fingerprint | FingerprintLike) -> Fingerprint:
    """A :class:`~fastfp.Fingerprint` from one, from any object with ``inputs`` / ``labels``, or
    from an ``(inputs, labels)`` pair."""
    if isinstance(fp, Fingerprint):
        return fp
    inputs, labels = getattr(fp, "inputs", None), getattr(fp, "labels", None)
    if inputs is None and isinstance(fp, (tuple, list)) and len(fp) == 2:
        inputs, labels = fp
    inputs = V.tensor("fp.inputs", inputs, floating=True)
    labels = V.tensor("fp.labels", labels)
    if inputs.dim() != 4:
        raise ValueError(f"fp.inputs: expected images (num, C, H, W), got shape "
                         f"{tuple(inputs.shape)}")
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"fp: inputs and labels must have the same non-zero length, "
                         f"got {len(inputs)} and {len(labels)}")
    V.labels("fp.labels", labels)
    return Fingerprint(inputs, labels)


def fp_accuracy(fp: Fingerprint | FingerprintLike, model: nn.Module,
                batch_size: int = 256) -> float:
    """Fraction of the fingerprint's inputs that ``model`` classifies as the fingerprint's labels.

    ``fp``: a Fingerprint, an object with ``inputs`` and ``labels``, or an ``(inputs, labels)``
    pair. This is :func:`fastfp.cexamples.verify`: the model runs in eval mode (restored
    afterwards), on inputs cast to its device and dtype.
    """
    from .cexamples import verify

    V.module("model", model)
    batch_size = V.integer("batch_size", batch_size, lo=1)
    return verify(model, _as_fingerprint(fp), batch_size=batch_size)


def pruned_copies(model: nn.Module, rates: Iterable[float] = PRUNE_RATES, repeats: int = 5,
                  data: Data | None = None, *, epochs: int = 1, lr: float = 0.01, seed: int = 0,
                  progress: bool = False) -> dict[float, list[nn.Module]]:
    """``{rate: [pruned model per repeat]}``: global magnitude pruning, then (with ``data``) a short
    retraining of the remaining weights, the mask fixed (Han et al.). See the module docstring."""
    from torch.nn.utils import prune
    from tqdm.auto import tqdm

    rates = [V.real("rates", r, lo=0.0, hi=1.0) for r in rates]
    if not rates:
        raise ValueError("rates: expected at least one pruning rate")
    repeats = V.integer("repeats", repeats, lo=1)
    epochs = V.integer("epochs", epochs, lo=0)
    lr = V.real("lr", lr, lo=0.0)
    seed = V.integer("seed", seed, lo=0)
    V.module("model", model)
    if data is None:
        repeats = 1  # deterministic: every repeat would be the same model
    else:
        x, y = check_data(data)
    if not prunable(model):  # checked here: torch's global pruning fails obscurely on no layers
        raise ValueError("model: has no Conv2d or Linear layer to prune")
    out: dict[float, list[nn.Module]] = {}
    bar = tqdm(total=len(rates) * repeats, desc="pruned copies", disable=not progress)
    for r in rates:
        out[r] = []
        for rep in range(repeats):
            m = copy.deepcopy(model).float()
            params = [(layer, "weight") for layer in prunable(m)]
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=r)
            if data is not None and epochs > 0:
                opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
                m.train()
                with deterministic():
                    fit(m, x, y, opt, epochs=epochs, batch_size=64,
                        generator=torch.Generator().manual_seed(seed + rep))
            for layer, name in params:
                prune.remove(layer, name)  # bake the mask in: weights stay exactly zero
            out[r].append(m.eval())
            bar.update(1)
    bar.close()
    return out


def robustness_per_rate(fp: Fingerprint | FingerprintLike, model: nn.Module | None = None,
                        rates: Iterable[float] = PRUNE_RATES, repeats: int = 5,
                        data: Data | None = None, *, copies: Copies | None = None, epochs: int = 1,
                        seed: int = 0) -> dict[float, float]:
    """``{rate: mean fingerprint accuracy over the repeats}``; pass ``copies`` (from
    :func:`pruned_copies`) to reuse pruned models across fingerprints."""
    fp = _as_fingerprint(fp)
    if copies is None:
        copies = pruned_copies(V.module("model", model), rates, repeats, data, epochs=epochs,
                               seed=seed)
    return {r: float(np.mean([fp_accuracy(fp, m) for m in ms])) for r, ms in copies.items()}


def robustness(fp: Fingerprint | FingerprintLike, model: nn.Module | None = None,
               rates: Iterable[float] = PRUNE_RATES, repeats: int = 5, data: Data | None = None,
               *, copies: Copies | None = None, epochs: int = 1, seed: int = 0) -> float:
    """Mean over pruning rates (and repeats) of the fingerprint's accuracy on pruned copies."""
    per = robustness_per_rate(fp, model, rates, repeats, data, copies=copies, epochs=epochs,
                              seed=seed)
    return float(np.mean(list(per.values())))


def transferability(fp: Fingerprint | FingerprintLike,
                    other_models: Mapping[str, nn.Module] | Iterable[nn.Module]) -> float:
    """Mean accuracy of the fingerprint on ``other_models`` (a list or a dict of models)."""
    models = list(other_models.values()) if isinstance(other_models, Mapping) \
        else list(other_models)
    if not models:
        raise ValueError("other_models: expected at least one model")
    fp = _as_fingerprint(fp)
    return float(np.mean([fp_accuracy(fp, m) for m in models]))


def uniqueness(fp: Fingerprint | FingerprintLike, model: nn.Module | None = None,
               other_models: Mapping[str, nn.Module] | Iterable[nn.Module] | None = None,
               rates: Iterable[float] = PRUNE_RATES, repeats: int = 5, data: Data | None = None,
               *, copies: Copies | None = None, epochs: int = 1, seed: int = 0) -> float:
    """Robustness - transferability (C-examples paper's Uniqueness Score, as a fraction)."""
    if other_models is None:
        raise ValueError("other_models: expected at least one model")
    return robustness(fp, model, rates, repeats, data, copies=copies, epochs=epochs, seed=seed) \
        - transferability(fp, other_models)


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


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score (decide positive iff score >= t),
    starting at (0, 0) with threshold +inf (scikit-learn's curve, no point dropped)."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    s, y = _scores_labels(scores, labels)
    fpr, tpr, thresholds = sk_roc_curve(y, s, drop_intermediate=False)
    thresholds[0] = np.inf  # scikit-learn < 1.3 put max(score) + 1 there
    return fpr, tpr, thresholds


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + P(tie) / 2 (Mann-Whitney)."""
    from sklearn.metrics import roc_auc_score

    s, y = _scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


def threshold_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.05) -> float:
    """Smallest threshold t whose false-positive rate (negatives with score >= t) is <= ``fpr``
    (the paper's empirical quantile of the negatives)."""
    fpr = V.real("fpr", fpr, lo=0.0, hi=1.0)
    f, _, t = roc_curve(scores, labels)
    return float(t[np.nonzero(f <= fpr + 1e-12)[0][-1]])


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.05) -> float:
    """True-positive rate at the threshold :func:`threshold_at_fpr` sets."""
    fpr = V.real("fpr", fpr, lo=0.0, hi=1.0)
    f, t, _ = roc_curve(scores, labels)
    return float(t[np.nonzero(f <= fpr + 1e-12)[0][-1]])


def f1(predicted: ArrayLike, labels: ArrayLike) -> float:
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

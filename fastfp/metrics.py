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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _validate as V

PRUNE_RATES = (0.4, 0.5, 0.6, 0.7, 0.8)


# ------------------------------------------------------------------------------- fingerprints
def _fp_arrays(fp):
    inputs, labels = getattr(fp, "inputs", None), getattr(fp, "labels", None)
    if inputs is None and isinstance(fp, (tuple, list)) and len(fp) == 2:
        inputs, labels = fp
    V.tensor("fp.inputs", inputs, min_dim=2, floating=True)
    V.tensor("fp.labels", labels)
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"fp: inputs and labels must have the same non-zero length, "
                         f"got {len(inputs)} and {len(labels)}")
    return inputs, labels


@torch.no_grad()
def fp_accuracy(fp, model: nn.Module, batch_size: int = 256) -> float:
    """Fraction of the fingerprint's inputs that ``model`` classifies as the fingerprint's labels.

    The model runs in eval mode (its mode is restored afterwards): a model left in training mode
    (a fresh torchvision model, a copy being fine-tuned) must not answer with batch statistics, nor
    have its BatchNorm running statistics changed by the measurement.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    x, y = _fp_arrays(fp)
    batch_size = V.integer("batch_size", batch_size, lo=1)
    p = next((q for q in model.parameters() if q.is_floating_point()), None)
    # Inputs go to the model's device and float dtype (a float64 model rejects float32 inputs).
    device, dtype = (p.device, p.dtype) if p is not None else (None, None)
    correct = 0
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(y), batch_size):
            out = model(x[i:i + batch_size].to(device=device, dtype=dtype))
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ValueError("model: expected 2-D logits (batch, num_classes), got "
                                 f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}")
            if int(y.max()) >= out.shape[1]:
                raise ValueError(f"fp: labels go up to {int(y.max())}, but the model outputs "
                                 f"{out.shape[1]} classes")
            correct += (out.argmax(-1).cpu() == y[i:i + batch_size].cpu()).sum().item()
    finally:
        model.train(was_training)
    return correct / len(y)


def pruned_copies(model: nn.Module, rates=PRUNE_RATES, repeats: int = 5, data=None, *,
                  epochs: int = 1, lr: float = 0.01, seed: int = 0, progress: bool = False):
    """``{rate: [pruned model per repeat]}``: global magnitude pruning, then (with ``data``) a short
    retraining of the remaining weights, the mask fixed (Han et al.). See the module docstring."""
    from torch.nn.utils import prune
    from tqdm.auto import tqdm

    from .variants import _prunable
    from .zoo import _deterministic

    rates = [V.real("rates", r, lo=0.0, hi=1.0) for r in rates]
    if not rates:
        raise ValueError("rates: expected at least one pruning rate")
    repeats = V.integer("repeats", repeats, lo=1)
    epochs = V.integer("epochs", epochs, lo=0)
    if data is None:
        repeats = 1  # deterministic: every repeat would be the same model
    else:
        x, y = data
        V.tensor("data[0]", x, floating=True)
        if len(x) != len(y) or len(y) == 0:
            raise ValueError("data: x and y must have the same non-zero length")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not _prunable(model):  # checked here: torch's global pruning fails obscurely on no layers
        raise ValueError("model: has no Conv2d or Linear layer to prune")
    out = {}
    bar = tqdm(total=len(rates) * repeats, desc="pruned copies", disable=not progress)
    for r in rates:
        out[r] = []
        for rep in range(repeats):
            m = copy.deepcopy(model).float()
            params = [(layer, "weight") for layer in _prunable(m)]
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=r)
            if data is not None and epochs > 0:
                g = torch.Generator().manual_seed(seed + rep)
                opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
                m.train()
                with _deterministic():
                    for _ in range(epochs):
                        perm = torch.randperm(len(y), generator=g)
                        for i in range(0, len(y), 64):
                            idx = perm[i:i + 64]
                            loss = F.cross_entropy(m(x[idx]), y[idx])
                            opt.zero_grad(set_to_none=True)
                            loss.backward()
                            opt.step()
            for layer, name in params:
                prune.remove(layer, name)  # bake the mask in: weights stay exactly zero
            out[r].append(m.eval())
            bar.update(1)
    bar.close()
    return out


def robustness_per_rate(fp, model: nn.Module = None, rates=PRUNE_RATES, repeats: int = 5, data=None, *,
                        copies=None, epochs: int = 1, seed: int = 0) -> dict[float, float]:
    """``{rate: mean fingerprint accuracy over the repeats}``; pass ``copies`` (from
    :func:`pruned_copies`) to reuse pruned models across fingerprints."""
    if copies is None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        copies = pruned_copies(model, rates, repeats, data, epochs=epochs, seed=seed)
    _fp_arrays(fp)
    return {r: float(np.mean([fp_accuracy(fp, m) for m in ms])) for r, ms in copies.items()}


def robustness(fp, model: nn.Module = None, rates=PRUNE_RATES, repeats: int = 5, data=None, *,
               copies=None, epochs: int = 1, seed: int = 0) -> float:
    """Mean over pruning rates (and repeats) of the fingerprint's accuracy on pruned copies."""
    per = robustness_per_rate(fp, model, rates, repeats, data, copies=copies, epochs=epochs, seed=seed)
    return float(np.mean(list(per.values())))


def transferability(fp, other_models) -> float:
    """Mean accuracy of the fingerprint on ``other_models`` (a list or a dict of models)."""
    models = list(other_models.values()) if isinstance(other_models, dict) else list(other_models)
    if not models:
        raise ValueError("other_models: expected at least one model")
    return float(np.mean([fp_accuracy(fp, m) for m in models]))


def uniqueness(fp, model: nn.Module = None, other_models=None, rates=PRUNE_RATES, repeats: int = 5,
               data=None, *, copies=None, epochs: int = 1, seed: int = 0) -> float:
    """Robustness - transferability (C-examples paper's Uniqueness Score, as a fraction)."""
    if other_models is None:
        raise ValueError("other_models: expected at least one model")
    return robustness(fp, model, rates, repeats, data, copies=copies, epochs=epochs, seed=seed) \
        - transferability(fp, other_models)


# --------------------------------------------------------------------------- binary decisions
def _scores_labels(scores, labels):
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


def roc_curve(scores, labels):
    """``(fpr, tpr, thresholds)``: one point per distinct score (decide positive iff score >= t),
    starting at (0, 0) with threshold +inf."""
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + P(tie) / 2 (Mann-Whitney)."""
    s, y = _scores_labels(scores, labels)
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks for ties
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_at_fpr(scores, labels, fpr: float = 0.05) -> float:
    """Smallest threshold t whose false-positive rate (negatives with score >= t) is <= ``fpr``
    (the paper's empirical quantile of the negatives)."""
    fpr = V.real("fpr", fpr, lo=0.0, hi=1.0)
    f, _, t = roc_curve(scores, labels)
    return float(t[np.nonzero(f <= fpr + 1e-12)[0][-1]])


def tpr_at_fpr(scores, labels, fpr: float = 0.05) -> float:
    """True-positive rate at the threshold :func:`threshold_at_fpr` sets."""
    fpr = V.real("fpr", fpr, lo=0.0, hi=1.0)
    f, t, _ = roc_curve(scores, labels)
    return float(t[np.nonzero(f <= fpr + 1e-12)[0][-1]])


def f1(predicted, labels) -> float:
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


def identification_counts(predicted, truth, *, abstain=None) -> dict:
    """Outcomes of identification with abstention: ``predicted[i] == abstain`` (default None; also
    -1 for integer arrays) is an abstention (H0), else correct iff equal to ``truth[i]``.

    Returns counts and rates: ``{"correct", "abstain", "wrong", "n", "success", "abstain_rate",
    "error"}`` (rates are fractions of n)."""
    pred, tru = list(predicted), list(truth)
    if len(pred) != len(tru):
        raise ValueError(f"truth: length {len(tru)} does not match predicted's {len(pred)}")
    if not pred:
        raise ValueError("predicted: expected at least one decision")

    def is_abstain(p):
        if abstain is not None:
            return p == abstain
        return p is None or (isinstance(p, (int, np.integer)) and p == -1)

    n_abs = sum(is_abstain(p) for p in pred)
    n_ok = sum((not is_abstain(p)) and p == t for p, t in zip(pred, tru))
    n = len(pred)
    n_bad = n - n_abs - n_ok
    return {"correct": n_ok, "abstain": n_abs, "wrong": n_bad, "n": n,
            "success": n_ok / n, "abstain_rate": n_abs / n, "error": n_bad / n}

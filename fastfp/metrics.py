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
identification outcomes correct / abstain / wrong, from :mod:`fastfp.stats` (re-exported here).
Scores follow scikit-learn's convention: higher score = more positive (pass ``-distance`` for
distances).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn as nn

from . import _validate
from ._models import check_labels, check_model
from ._training import check_data, deterministic, fit, prunable
from .fingerprint import Fingerprint
from .stats import (
    f1,
    identification_counts,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
    tpr_at_fpr,
)
from .variants import prune_global

if TYPE_CHECKING:
    from .cexamples.verdict import Suspect

__all__ = ["PRUNE_RATES", "Copies", "Data", "FingerprintLike", "f1", "fp_accuracy",
           "Evaluation", "evaluate", "identification_counts", "pruned_copies", "robustness",
           "robustness_per_rate",
           "roc_auc", "roc_curve", "threshold_at_fpr", "tpr_at_fpr", "transferability",
           "uniqueness"]

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
    inputs = _validate.tensor("fp.inputs", inputs, floating=True)
    labels = _validate.tensor("fp.labels", labels)
    if inputs.dim() != 4:
        raise ValueError(f"fp.inputs: expected images (num, C, H, W), got shape "
                         f"{tuple(inputs.shape)}")
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"fp: inputs and labels must have the same non-zero length, "
                         f"got {len(inputs)} and {len(labels)}")
    check_labels(labels, "fp.labels")
    return Fingerprint(inputs, labels)


def fp_accuracy(fp: Fingerprint | FingerprintLike, model: Suspect,
                batch_size: int = 256) -> float:
    """Fraction of the fingerprint's inputs that ``model`` classifies as the fingerprint's labels.

    ``fp``: a Fingerprint, an object with ``inputs`` and ``labels``, or an ``(inputs, labels)``
    pair. This is :func:`fastfp.cexamples.verify`: the model runs in eval mode (restored
    afterwards), on inputs cast to its device and dtype; a black box (:mod:`fastfp.blackbox`)
    is asked the 8-bit examples.
    """
    from .cexamples import verify
    from .cexamples.verdict import is_blackbox

    if not is_blackbox(model):
        check_model(model)
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    return verify(model, _as_fingerprint(fp), batch_size=batch_size)


def pruned_copies(model: nn.Module, rates: Iterable[float] = PRUNE_RATES, repeats: int = 5,
                  data: Data | None = None, *, epochs: int = 1, lr: float = 0.01, seed: int = 0,
                  progress: bool = False) -> dict[float, list[nn.Module]]:
    """``{rate: [pruned model per repeat]}``: global magnitude pruning
    (:func:`fastfp.variants.prune_global`), then (with ``data``) a short retraining of the
    remaining weights, the mask fixed (Han et al.). See the module docstring."""
    from tqdm.auto import tqdm

    rates = [_validate.real("rates", r, lo=0.0, hi=1.0) for r in rates]
    if not rates:
        raise ValueError("rates: expected at least one pruning rate")
    repeats = _validate.integer("repeats", repeats, lo=1)
    epochs = _validate.integer("epochs", epochs, lo=0)
    lr = _validate.real("lr", lr, lo=0.0)
    seed = _validate.integer("seed", seed, lo=0)
    check_model(model)
    if data is None:
        repeats = 1  # deterministic: every repeat would be the same model
    else:
        x, y = check_data(data)
    if not prunable(model):  # checked here: torch's global pruning fails obscurely on no layers
        raise ValueError("model: has no Conv2d or Linear layer to prune")
    base = copy.deepcopy(model).float()  # pruned and retrained in float32, whatever the model's

    def retrainer(rep: int) -> Callable[[nn.Module], None] | None:
        def retrain(m: nn.Module) -> None:
            opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
            m.train()
            with deterministic():
                fit(m, x, y, opt, epochs=epochs, batch_size=64,
                    generator=torch.Generator().manual_seed(seed + rep))
        return retrain if data is not None and epochs > 0 else None

    out: dict[float, list[nn.Module]] = {}
    bar = tqdm(total=len(rates) * repeats, desc="pruned copies", disable=not progress)
    for r in rates:
        out[r] = []
        for rep in range(repeats):
            out[r].append(prune_global(base, r, retrain=retrainer(rep)).eval())
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
        copies = pruned_copies(check_model(model), rates, repeats, data, epochs=epochs,
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
                    other_models: Mapping[str, Suspect] | Iterable[Suspect]) -> float:
    """Mean accuracy of the fingerprint on ``other_models`` (a list or a dict of models or black
    boxes)."""
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


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A fingerprint's scores over the owner's model and other models (``fastfp evaluate``)."""

    accuracy: float                              # on the owner's model
    robustness_per_rate: dict[float, float]      # {pruning rate: accuracy on pruned copies}
    robustness: float                            # their mean
    transferability_per_model: dict[str, float]  # {name: accuracy on that other model}
    transferability: float | None                # their mean (None without other models)
    uniqueness: float | None                     # robustness - transferability


def evaluate(fp: Fingerprint, model: nn.Module, others: Mapping[str, Suspect] | None = None,
             rates: Iterable[float] = PRUNE_RATES) -> Evaluation:
    """Robustness on pruned copies of ``model`` at ``rates``, transferability to ``others``
    (models or black boxes, each asked once) and uniqueness, as :func:`robustness`,
    :func:`transferability` and :func:`uniqueness` define them."""
    fp = _as_fingerprint(fp)
    check_model(model)
    others = dict(others or {})
    copies = pruned_copies(model, rates)
    per_rate = robustness_per_rate(fp, copies=copies)
    robust = float(np.mean(list(per_rate.values())))
    per_other = {name: fp_accuracy(fp, m) for name, m in others.items()}
    transfer = float(np.mean(list(per_other.values()))) if per_other else None
    return Evaluation(fp_accuracy(fp, model), per_rate, robust, per_other, transfer,
                      None if transfer is None else robust - transfer)

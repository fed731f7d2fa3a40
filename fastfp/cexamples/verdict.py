"""A decision, not a rate: is a suspect model a copy of the fingerprinted one?

The match rate of the suspect on the fingerprint is compared with a *null rate*, the rate at
which models that are not copies match it: estimated from ``negatives`` (unrelated models the
user supplies), else from the transferability recorded at generation (``meta["null_rate"]``,
from ``generate(..., negatives=...)``),
else chance level ``1 / num_classes`` (with a warning: the weakest null, since characteristic
examples transfer above chance to related architectures). Under the null hypothesis each of the
``n`` examples matches independently with that probability, so the match count is
Binomial(n, null_rate) and a one-sided binomial test gives the p-value. The suspect is judged a
copy when ``p_value < alpha``, or, with an explicit ``threshold``, when its match rate reaches it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch

from .. import _validate, stats
from .._models import check_model, eval_mode
from . import checks
from .settings import PRECISIONS, check_normalize


@dataclasses.dataclass(frozen=True)
class Verdict:
    match_rate: float   # fraction of the fingerprint the suspect classifies as its labels
    null_rate: float    # the same fraction expected from a model that is not a copy
    threshold: float    # the smallest match rate judged a copy
    p_value: float      # P(match count >= observed | null), one-sided binomial
    is_copy: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def verify(model: torch.nn.Module, fp, batch_size: int = 256, device: object = None,
           precision: str = "fp32") -> float:
    """Fraction of ``fp.inputs`` that ``model`` classifies as ``fp.labels`` (0..1)."""
    from ..fingerprint import Fingerprint

    model = checks.check_model(model)
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp: expected a fastfp.Fingerprint, got {type(fp).__name__}")
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    precision = _validate.choice("precision", precision, PRECISIONS)
    dev = checks.check_device(device, model)
    if len(fp) == 0:
        raise ValueError("fp: the fingerprint is empty")
    norm = fp.meta.get("normalize")
    if norm:
        model = checks.normalized(model, check_normalize(norm, fp.inputs.shape[1]))
    mdtype = checks.model_dtype(model) or torch.float32
    correct = 0
    with eval_mode(model):
        with torch.no_grad():
            for b in range(0, len(fp), batch_size):
                x = fp.inputs[b:b + batch_size].to(dev, mdtype)
                ctx = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
                       if precision == "bf16" else torch.autocast(dev.type, enabled=False))
                with ctx:
                    try:
                        out = model(x)
                    except torch.OutOfMemoryError:
                        raise
                    except Exception as exc:
                        # Typically a fingerprint made for another input shape: say which.
                        raise ValueError(f"fp: the model's forward pass failed on fingerprint "
                                         f"inputs of shape {tuple(x.shape[1:])} "
                                         f"({type(exc).__name__}: {exc})") from exc
                checks.check_logits(out, x.shape[0])
                expected = fp.meta.get("num_classes")
                if expected is not None and out.shape[1] != expected:
                    raise ValueError(f"model: outputs {out.shape[1]} classes, but the fingerprint "
                                     f"was made for {expected}")
                if int(fp.labels.max()) >= out.shape[1]:
                    raise ValueError(f"fp: labels go up to {int(fp.labels.max())}, but the model "
                                     f"outputs {out.shape[1]} classes")
                pred = out.argmax(dim=1).cpu()
                correct += int((pred == fp.labels[b:b + batch_size]).sum())
    return correct / len(fp)


def null_rate_of(fp, negatives: Sequence[torch.nn.Module] | None, batch_size: int = 256) -> float:
    """The null match rate (see the module docstring); negatives are checked before any work."""
    n, num_classes = len(fp), fp.meta.get("num_classes")
    if negatives:
        if isinstance(negatives, torch.nn.Module):
            negatives = [negatives]
        for i, neg in enumerate(negatives):
            check_model(neg, f"negatives[{i}]")
            try:
                checks.probe(neg, fp.inputs[:1], num_classes, checks.model_device(neg))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"negatives[{i}]: not a classifier of the fingerprint's "
                                 f"{num_classes} classes ({exc})") from None
        matches = sum(round(verify(neg, fp, batch_size=batch_size) * n) for neg in negatives)
        # Laplace's rule of succession: a null of exactly 0 would make any match a certainty.
        return (matches + 1) / (len(negatives) * n + 2)
    if fp.meta.get("null_rate") is not None:
        return float(fp.meta["null_rate"])
    if not num_classes:
        num_classes = int(fp.labels.max()) + 1
    warnings.warn("verdict: no negatives given and no null rate recorded in the fingerprint; "
                  f"testing against chance level 1/{num_classes}, the weakest null (pass "
                  "unrelated models as negatives)", stacklevel=3)
    return 1.0 / num_classes


def verdict(model: torch.nn.Module, fp, *, negatives: Sequence[torch.nn.Module] | None = None,
            threshold: float | None = None, alpha: float = 0.01,
            batch_size: int = 256) -> Verdict:
    """Decide whether ``model`` is a copy of the model ``fp`` was generated from."""
    from ..fingerprint import Fingerprint

    checks.check_model(model)
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp: expected a fastfp.Fingerprint, got {type(fp).__name__}")
    alpha = _validate.real("alpha", alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a significance level in (0, 1), got {alpha}")
    if threshold is not None:
        threshold = _validate.real("threshold", threshold, lo=0.0, hi=1.0)
    null = null_rate_of(fp, negatives, batch_size)
    n = len(fp)
    rate = verify(model, fp, batch_size=batch_size)
    count = round(rate * n)
    p_value = stats.binomial_p_value(count, n, null)
    if threshold is None:
        threshold = stats.binomial_threshold(n, null, alpha)
        is_copy = p_value < alpha
    else:
        is_copy = rate >= threshold
    return Verdict(match_rate=rate, null_rate=null, threshold=threshold, p_value=p_value,
                   is_copy=bool(is_copy))

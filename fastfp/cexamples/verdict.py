"""A decision, not a rate: is a suspect a copy of the fingerprinted model?

A suspect is a torch model (run here on the fingerprint's exact examples) or a black box of
:mod:`fastfp.blackbox` (a served model, an ONNX file, a function, recorded answers): a black box is
sent the examples as 8-bit images, as a remote party would receive them, through its own budget
and answer cache, and its top-1 answer is compared with the fingerprint's label.

The match rate is compared with a *null rate*, the rate at which models that are not copies match
the fingerprint, measured on unrelated models: ``negatives`` given now, or the rate recorded at
generation (``meta["null_rate"]`` from ``generate(..., negatives=...)``). Without either there is
no decision unless the caller asks for a fixed ``threshold`` or explicitly for ``null="chance"``
(1 / num_classes, the weakest null: characteristic examples transfer to unrelated models far above
chance). Under the null hypothesis each of the ``n`` examples matches independently with that
probability, so the match count is Binomial(n, null_rate) and a one-sided binomial test gives the
p-value. The suspect is judged a copy when ``p_value < alpha``, or, with an explicit
``threshold``, when its match rate reaches it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import TypeGuard

import numpy as np
import torch

from .. import _validate, stats
from .._models import check_model, eval_mode
from ..blackbox import BlackBox, Recorded
from ..suspects import SuspectError
from . import checks
from .settings import PRECISIONS, check_normalize

# What verify / verdict accept as a suspect (or a negative).
Suspect = torch.nn.Module | BlackBox | Recorded
NULLS = ("negatives", "recorded", "chance", "threshold")  # where a verdict's null comes from
NO_NULL = ("null: no null rate measured on unrelated models: give negatives (models that are not "
           "copies), or a fingerprint generated with negatives (meta['null_rate']); or pass "
           "threshold=T, or null='chance' for chance level, the weakest null")


@dataclasses.dataclass(frozen=True)
class Verdict:
    match_rate: float   # fraction of the fingerprint the suspect classifies as its labels
    null_rate: float    # the same fraction expected from a model that is not a copy
    threshold: float    # the smallest match rate judged a copy
    p_value: float      # P(match count >= observed | null), one-sided binomial
    is_copy: bool
    null: str = "chance"    # where null_rate comes from: one of NULLS
    null_models: int = 0    # unrelated models behind it (0 for chance level or a threshold)
    rounded: bool = False   # a black box got the examples rounded to 8 bits (not exactly them)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Null:
    """A verdict's null: its rate, where it comes from (one of :data:`NULLS`) and from how many
    unrelated models."""

    rate: float
    source: str
    models: int


def query_images(fp) -> tuple[torch.Tensor, bool]:
    """The examples as a black box receives them: [num, C, H, W] float32 rounded to 8 bits (what
    a PNG holds), and whether the rounding changed any pixel (False for ``quantize=8``)."""
    images = (fp.inputs * 255).round().clamp(0, 255) / 255
    return images, not torch.equal(images, fp.inputs)


def check_decision(alpha: object, threshold: object) -> tuple[float, float | None]:
    """The significance level in (0, 1) and the optional fixed threshold in [0, 1], checked."""
    alpha = _validate.real("alpha", alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a significance level in (0, 1), got {alpha}")
    if threshold is not None:
        threshold = _validate.real("threshold", threshold, lo=0.0, hi=1.0)
    return alpha, threshold


def is_blackbox(suspect: object) -> TypeGuard[BlackBox | Recorded]:
    """Whether ``suspect`` is asked as a black box (a :mod:`fastfp.blackbox` object)."""
    return isinstance(suspect, BlackBox | Recorded)


def _check_fp(fp: object):
    from ..fingerprint import Fingerprint

    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp: expected a fastfp.Fingerprint, got {type(fp).__name__}")
    if len(fp) == 0:
        raise ValueError("fp: the fingerprint is empty")
    return fp


def verify(model: Suspect, fp, batch_size: int = 256, device: object = None,
           precision: str = "fp32") -> float:
    """Fraction of ``fp.inputs`` that ``model`` classifies as ``fp.labels`` (0..1).

    ``model``: a torch classifier (``device`` and ``precision`` apply to it), or a black box
    (:mod:`fastfp.blackbox`: its top-1 answers on the 8-bit examples, see :func:`query_images`;
    :class:`~fastfp.blackbox.BudgetExceeded` when they exceed its ``max_queries``)."""
    return _matches(model, fp, batch_size, device, precision)[0] / len(fp)


def _matches(model: Suspect, fp, batch_size: int = 256, device: object = None,
             precision: str = "fp32") -> tuple[int, bool]:
    """(examples matched, whether a black box got them rounded)."""
    if is_blackbox(model):
        fp = _check_fp(fp)
        return _blackbox_matches(model, fp)
    model = checks.check_model(model)
    fp = _check_fp(fp)
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    precision = _validate.choice("precision", precision, PRECISIONS)
    dev = checks.check_device(device, model)
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
                    except (torch.OutOfMemoryError, SuspectError):
                        raise  # SuspectError (a timeout, NaN outputs) names the model itself
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
    return correct, False


def _blackbox_matches(box: BlackBox | Recorded, fp) -> tuple[int, bool]:
    """Top-1 answers of a black box on the 8-bit examples (recorded answers: one row per
    example, in order), compared with the labels."""
    n = len(fp)
    images, rounded = query_images(fp)
    if rounded:
        warnings.warn("verify: the fingerprint is not 8-bit (generate with quantize=8): the "
                      "black box gets its examples rounded to 8 bits, not exactly them",
                      stacklevel=4)
    if isinstance(box, Recorded):
        if box.row is None and len(box.labels) != n:
            raise ValueError(f"answers: {len(box.labels)} rows, the fingerprint has {n} "
                             "examples (one row per exported image, in order)")
        answers = np.asarray(box(np.arange(n)))
    else:
        answers = box.ask(images)
    top1 = np.asarray(answers).reshape(n, -1)[:, 0]
    classes = fp.meta.get("num_classes")
    if classes is not None and (top1.min() < 0 or top1.max() >= classes):
        raise ValueError(f"{box.identity()}: answered label {int(top1.max())} or "
                         f"{int(top1.min())}, outside the fingerprint's classes 0..{classes - 1}")
    return int((torch.from_numpy(top1.astype(np.int64)) == fp.labels).sum()), rounded


def _check_negatives(fp, negatives: Sequence[Suspect]) -> list[Suspect]:
    """The negatives as a list, each a black box or a classifier of the fingerprint's classes
    (checked before any work)."""
    if isinstance(negatives, torch.nn.Module) or is_blackbox(negatives):
        negatives = [negatives]
    negatives = list(negatives)
    num_classes = fp.meta.get("num_classes")
    for i, neg in enumerate(negatives):
        if is_blackbox(neg):
            continue
        net: torch.nn.Module = check_model(neg, f"negatives[{i}]")
        try:
            checks.probe(net, fp.inputs[:1], num_classes, checks.model_device(net))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"negatives[{i}]: not a classifier of the fingerprint's "
                             f"{num_classes} classes ({exc})") from None
    return negatives


def null_rate_of(fp, negatives: Sequence[Suspect], batch_size: int = 256) -> float:
    """The null match rate measured on ``negatives`` (unrelated models or black boxes), checked
    before any work: Laplace's rule of succession over all their examples."""
    negatives = _check_negatives(_check_fp(fp), negatives) if negatives else []
    if not negatives:
        raise ValueError("negatives: expected at least one unrelated model")
    return _measured(fp, negatives, batch_size)


def _measured(fp, negatives: list[Suspect], batch_size: int) -> float:
    matches = sum(_matches(neg, fp, batch_size)[0] for neg in negatives)
    # A null of exactly 0 would make any match a certainty.
    return (matches + 1) / (len(negatives) * len(fp) + 2)


def null_of(fp, negatives: Sequence[Suspect] | None = None, *, null: str | None = None,
            threshold: float | None = None, batch_size: int = 256) -> Null:
    """The null a verdict uses, in this order: ``negatives``, the rate recorded at generation,
    ``threshold`` (the decision needs no null; the p-value is against chance), ``null="chance"``;
    with none of them a ValueError that says what is missing (before any work)."""
    if null is not None and null != "chance":
        raise ValueError(f"null: expected None or 'chance', got {null!r}")
    classes = fp.meta.get("num_classes") or int(fp.labels.max()) + 1
    if negatives:
        negatives = _check_negatives(fp, negatives)
        return Null(_measured(fp, negatives, batch_size), "negatives", len(negatives))
    recorded = fp.meta.get("null_rate")
    if recorded is not None:
        rate = _validate.real("fp.meta['null_rate']", recorded, lo=0.0, hi=1.0)
        models = fp.meta.get("null_models")
        return Null(rate, "recorded", int(models) if isinstance(models, int) else 0)
    if threshold is not None:
        return Null(1.0 / classes, "threshold", 0)
    if null == "chance":
        return Null(1.0 / classes, "chance", 0)
    raise ValueError(NO_NULL)


def verdict(model: Suspect, fp, *, negatives: Sequence[Suspect] | None = None,
            threshold: float | None = None, alpha: float = 0.01, batch_size: int = 256,
            null: str | None = None) -> Verdict:
    """Decide whether ``model`` (a torch model or a black box) is a copy of the model ``fp`` was
    generated from, against the null of :func:`null_of` (``null="chance"``: chance level when
    nothing better is known)."""
    if not is_blackbox(model):
        checks.check_model(model)
    fp = _check_fp(fp)
    alpha, threshold = check_decision(alpha, threshold)
    h0 = null_of(fp, negatives, null=null, threshold=threshold, batch_size=batch_size)
    n = len(fp)
    count, rounded = _matches(model, fp, batch_size)
    p_value = stats.binomial_p_value(count, n, h0.rate)
    if threshold is None:
        threshold = stats.binomial_threshold(n, h0.rate, alpha)
        is_copy = p_value < alpha
    else:
        is_copy = count / n >= threshold
    return Verdict(match_rate=count / n, null_rate=h0.rate, threshold=threshold,
                   p_value=p_value, is_copy=bool(is_copy), null=h0.source,
                   null_models=h0.models, rounded=rounded)


def describe_null(v: Verdict, num_classes: int) -> str:
    """Where a verdict's null comes from, in words (what the command line prints)."""
    if v.null == "negatives":
        return f"{v.null_models} negative model{'s' if v.null_models != 1 else ''}"
    if v.null == "recorded":
        return (f"the transferability recorded at generation, {v.null_models} model"
                f"{'s' if v.null_models != 1 else ''}")
    weakest = f"chance level 1/{num_classes}: the weakest null"
    return weakest if v.null == "chance" else f"{weakest}; the decision is the fixed threshold"

"""The caller's model, handled the same way everywhere: the one model check, the one label check,
and the eval-mode guard that gives the model back in the mode it came in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

from . import _validate

M = TypeVar("M")


def check_model(model: object, name: str = "model") -> torch.nn.Module:
    """A ``torch.nn.Module`` whose parameters and buffers hold data (none on the meta device)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module classifier, got "
                        f"{type(model).__name__}")
    for t in (*model.parameters(), *model.buffers()):
        if t.is_meta:
            raise ValueError(f"{name}: has tensors on the meta device (shapes without data); "
                             "load its weights first (model.to_empty(device=...), then "
                             "load_state_dict)")
    return model


def check_labels(labels: object, name: str = "labels", *, n: int | None = None,
                 num_classes: int | None = None) -> torch.Tensor:
    """Class indices: a 1-D integer tensor ``[N]`` of values in [0, num_classes) (non-negative
    when ``num_classes`` is None), of length ``n`` if given. Returned as given."""
    y = _validate.tensor(name, labels)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class indices, got {y.dtype}")
    if y.dim() != 1 or (n is not None and y.shape[0] != n):
        want = "(N,)" if n is None else f"({n},)"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(y.shape)}")
    if y.numel():
        low, top = (int(v) for v in y.aminmax())
        if num_classes is not None and (low < 0 or top >= num_classes):
            raise ValueError(f"{name}: expected class indices in [0, {num_classes - 1}], got "
                             f"values in [{low}, {top}]")
        if low < 0:
            raise ValueError(f"{name}: expected non-negative class indices, got {low}")
    return y


@contextlib.contextmanager
def eval_mode(model: M) -> Iterator[M]:
    """``with eval_mode(model):`` runs ``model`` in eval mode, then restores the train / eval flag
    of every submodule as it was (also when the body raises). Callables without ``eval`` (a
    black box) pass through untouched."""
    modules: list[Any] = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    saved = [(m, m.training) for m in modules]
    was = getattr(model, "training", None)
    if callable(getattr(model, "eval", None)):
        model.eval()  # type: ignore[attr-defined]
    try:
        yield model
    finally:
        if saved:
            for m, flag in saved:
                m.training = flag
        elif was is not None and callable(getattr(model, "train", None)):
            model.train(was)  # type: ignore[attr-defined]

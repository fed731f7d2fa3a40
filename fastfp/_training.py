"""The one training loop of fastfp (zoo training, fine-tuning variants, retraining pruned copies),
the layers that pruning acts on, and bit-reproducible CPU execution."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_data(data: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Training data: a pair (x, y) of float inputs and class labels of one non-zero length."""
    from . import _validate
    from ._models import check_labels

    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data: expected a pair (x, y) of tensors")
    x, y = data
    _validate.tensor("data[0]", x, floating=True)
    check_labels(y, "data[1]")
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"data: x and y must have the same non-zero length, got {len(x)} and "
                         f"{len(y)}")
    return x, y


def prunable(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers of ``model``, in module order (what pruning acts on)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """Bit-reproducible CPU training: deterministic kernels and a fixed thread count (restored)."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, *,
        epochs: int, batch_size: int, generator: torch.Generator,
        transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """Minibatch cross-entropy training: each epoch draws a permutation from ``generator``, then
    ``transform(x_batch, generator)`` (e.g. augmentation) and one optimizer step per batch;
    ``scheduler`` steps once per epoch. The model's train/eval mode is the caller's choice."""
    n = len(y)
    top = int(y.max()) if n else -1
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx] if transform is None else transform(x[idx], generator)
            out = model(xb)
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                shape = tuple(getattr(out, "shape", ()))
                raise TypeError("model: expected a classifier returning 2-D logits "
                                f"(batch, classes), got {type(out).__name__} {shape}")
            if top >= out.shape[1]:
                raise ValueError(f"y: labels go up to {top}, but the model outputs {out.shape[1]} "
                                 "classes")
            loss = F.cross_entropy(out, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()

"""Baselines for the weight noise: what a user writes without fastfp.

- :func:`perturb_naive`: one ``uniform_`` draw and one add per parameter tensor (two kernels and
  an extra temporary per tensor; on CPU torch's generator is single-threaded);
- :func:`grad_mean_naive`: RC+GM as published code does it, q deep copies of the model perturbed
  in place, one forward and one input-gradient each;
- :func:`grad_plain`: q x (forward + input gradient) of the bare model, no noise at all: the
  unavoidable work, against which the overhead of noisy copies is measured.

The noise here comes from torch's generator (not fastfp's stream), so outputs are compared with
fastfp statistically; :mod:`fastfp.reference.noise` gives the exact same-stream twin.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def perturb_naive(params: Sequence[torch.Tensor], delta: float,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
    return [p + torch.empty_like(p).uniform_(-delta, delta, generator=generator) for p in params]


def grad_mean_naive(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: float, q: int,
                    seed: int = 0) -> torch.Tensor:
    device = x.device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(q):
        noisy = copy.deepcopy(model).eval()
        with torch.no_grad():
            for p in noisy.parameters():
                p.add_(torch.empty_like(p).uniform_(-delta, delta, generator=generator))
        xg = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(noisy(xg), labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
        total += g
    return total / q


def grad_plain(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, q: int) -> torch.Tensor:
    total = torch.zeros_like(x)
    xg = x.detach().requires_grad_(True)
    for _ in range(q):
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), labels, reduction="sum"), xg)
        total += g
    return total / q

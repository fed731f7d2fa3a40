"""Baseline for characteristic examples: the eager loop a user would write today.

torchattacks-style targeted PGD: one Python loop over steps; for the gradient mean, a Python
loop of q deep-copied models perturbed in place; the high-pass through torch-dct's FFT DCT
(:func:`bench.baselines.dct.highpass_fft`); per-example early stop by masking (no compaction).

``noise="torch"`` (timed) draws the weight noise with ``torch.empty_like(p).uniform_``, as a user
would; ``noise="philox"`` draws fastfp's stream (:mod:`fastfp.reference.noise`) so that the output
can be compared exactly with :func:`fastfp.cexamples.generate` (correctness checks).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastfp.cexamples import settings_for
from fastfp.reference import noise as ref_noise
from fastfp.reference.cexamples import start

from .dct import highpass_fft


def _perturbed_copy(model, delta, seed, offset, noise, generator):
    noisy = copy.deepcopy(model).eval()
    with torch.no_grad():
        if noise == "philox":
            masters = [p.detach() for p in model.parameters()]
            for p, new in zip(noisy.parameters(),
                              ref_noise.perturb(masters, delta, seed, offset), strict=True):
                p.copy_(new)
        else:
            for p in noisy.parameters():
                p.add_(torch.empty_like(p).uniform_(-delta, delta, generator=generator))
    return noisy


def eager_generate(model: nn.Module, num: int, input_shape: Sequence[int], num_classes: int,
                   method: str = "ltrc", k: int | None = None, delta: float | None = None,
                   q: int = 10, alpha: float | None = None, steps: int = 500, eta: float = 1e-6,
                   seed: int = 0, device: torch.device | str | None = None,
                   noise: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (x float32 CPU, labels int64 CPU), same start and targets as fastfp's.

    As fastfp, the examples are valid images: the loss (early stop) and the result are those of
    x clamped to [0, 1] (the high-pass after the clamp may leave the range)."""
    s = settings_for(method, tuple(input_shape), k=k, delta=delta, q=q, alpha=alpha, steps=steps,
                     eta=eta, seed=seed)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x0, labels = start(num, tuple(input_shape), num_classes, s.seed)
    x, y = x0.to(device), labels.to(device)
    g = torch.Generator(device=device).manual_seed(s.seed)
    model.eval()
    active = torch.ones(num, dtype=torch.bool, device=device)
    for t in range(s.steps):
        if s.eta > 0:  # per-example early stop, by masking
            with torch.no_grad():
                loss = F.cross_entropy(model(x.clamp(0.0, 1.0)), y, reduction="none")
                active &= loss >= s.eta
            if not bool(active.any()):
                break
        if s.method != "vanilla" and s.delta > 0:
            grad = torch.zeros_like(x)
            for c in range(s.q):
                noisy = _perturbed_copy(model, s.delta, s.seed, t * s.q + c, noise, g)
                xg = x.clone().requires_grad_(True)
                loss = F.cross_entropy(noisy(xg), y, reduction="sum")
                grad += torch.autograd.grad(loss, xg)[0]
            grad /= s.q
        else:
            xg = x.clone().requires_grad_(True)
            grad = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)[0]
        new = torch.clamp(x - s.alpha * grad.sign(), 0.0, 1.0)
        if s.k > 0:
            new = highpass_fft(new, s.k)
        x = torch.where(active.view(-1, 1, 1, 1), new, x)
    return x.detach().clamp(0.0, 1.0).to("cpu", torch.float32), labels


def bare_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, q: int) -> torch.Tensor:
    """q x (forward + input gradient) of the unperturbed model: the floor an ltrc step can reach."""
    total = torch.zeros_like(x)
    for _ in range(q):
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        total += torch.autograd.grad(loss, xg)[0]
    return total / q

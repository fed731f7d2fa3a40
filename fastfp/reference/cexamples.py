"""Characteristic examples, literally from the paper (Wang et al., IJCAI'21, eq. 1-4), one by one.

For each example (x_0, l):

    for t = 0 .. steps-1:
        if Loss_theta(x_t, l) < eta: stop                      # eq. (1): an eta-optimal example
        for c = 0 .. q-1:                                        # q = 1 for rc (and vanilla)
            theta_c = theta + Delta(seed, t * q + c)             # Delta ~ U(-delta, delta), fresh
            g_c = grad_x Loss_{theta_c}(x_t, l)
        g = mean_c g_c                                           # gradient mean (rcgm, ltrc)
        x_{t+1} = HighPass(Clip_[0,1](x_t - alpha * sign(g)))    # eq. (2), (3); k = 0: no high-pass

The example stored, and tested against eta, is x_t clipped to [lo, hi] and, with ``quantize`` bits,
rounded to 2^bits - 1 levels (a valid image: the high-pass leaves the box).

The noise draws come from :mod:`fastfp.reference.noise` (the stream contract), the step from
:mod:`fastfp.reference.dct`, so nothing fast is involved. Readable and slow by design.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .._models import eval_mode
from . import dct, noise


def start(num: int, input_shape, num_classes: int, seed: int):
    """x_0 ~ U[0, 1) per pixel and targets ~ U{0 .. num_classes-1}, from one CPU generator."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((num, *input_shape), generator=g, dtype=torch.float32)
    labels = torch.randint(0, num_classes, (num,), generator=g, dtype=torch.int64)
    return x0, labels


def _dtype(model):
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def loss(model, x, label) -> torch.Tensor:
    """Loss_theta(x, l): cross-entropy of one example to its target label."""
    return F.cross_entropy(model(x.unsqueeze(0)), label.view(1))


def noisy_model(model, delta: float, seed: int, offset: int):
    """F_{theta + Delta}: a deep copy whose parameters carry the noise of stream ``offset``."""
    copy_ = copy.deepcopy(model).eval()
    with torch.no_grad():
        new = noise.perturb([p.detach() for p in model.parameters()], delta, seed, offset)
        for p, value in zip(copy_.parameters(), new, strict=True):
            p.copy_(value)
    return copy_


def input_gradient(model, x, label) -> torch.Tensor:
    xg = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(model, xg, label), xg)
    return g


def stored(x, s):
    """The example x stands for: in [lo, hi], rounded to the quantisation levels if any."""
    x = torch.clamp(x, s.lo, s.hi)
    quantize = getattr(s, "quantize", None)
    if quantize:
        levels = 2 ** quantize - 1
        x = torch.round((x - s.lo) / (s.hi - s.lo) * levels) / levels * (s.hi - s.lo) + s.lo
    return x


def generate_one(model, x0, label, settings):
    """One example's trajectory; returns (stored x_final, steps_used, final clean loss)."""
    s = settings
    noisy = s.method != "vanilla" and s.delta > 0
    q = s.q if s.method in ("rcgm", "ltrc") else 1
    x = x0.clone()
    for t in range(s.steps):
        if s.eta > 0:
            with torch.no_grad():
                value = loss(model, stored(x, s), label).item()
                if value < s.eta:
                    return stored(x, s), t, value
        if noisy:
            grads = [input_gradient(noisy_model(model, s.delta, s.seed, t * q + c), x, label)
                     for c in range(q)]
            g = sum(grads) / q
        else:
            g = input_gradient(model, x, label)
        x = torch.clamp(x - s.alpha * torch.sign(g), s.lo, s.hi)
        if s.k > 0:
            x = dct.highpass(x, s.k)
    with torch.no_grad():
        return stored(x, s), s.steps, loss(model, stored(x, s), label).item()


def optimize(model, x0, labels, settings):
    """All examples, one after the other: (x float32, steps_used int64, final_loss float64)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = torch.float64 if _dtype(model) == torch.float64 else torch.float32
    xs, used, losses = [], [], []
    with eval_mode(model):
        for i in range(x0.shape[0]):
            x, n, value = generate_one(model, x0[i].to(device, dtype), labels[i].to(device),
                                       settings)
            xs.append(x.to("cpu", torch.float32))
            used.append(n)
            losses.append(value)
    return (torch.stack(xs), torch.tensor(used, dtype=torch.int64),
            torch.tensor(losses, dtype=torch.float64))


def generate(model, num, input_shape, num_classes, settings):
    """x_0 and targets from ``settings.seed``, then :func:`optimize`: (x, labels, steps, loss)."""
    x0, labels = start(num, input_shape, num_classes, settings.seed)
    x, used, final = optimize(model, x0, labels, settings)
    return x, labels, used, final

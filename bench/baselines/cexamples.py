"""Baseline for characteristic examples: the eager loop a user would write today.

torchattacks-style targeted PGD: one Python loop over steps; for the gradient mean, a Python
loop of q deep-copied models perturbed in place; the high-pass through a DCT library
(``bench/baselines/dct.py`` of the ops area when it offers one, else the literal matrix DCT of
:mod:`fastfp.reference.dct`); per-example early stop by masking (no compaction).

``noise="torch"`` (timed) draws the weight noise with ``torch.empty_like(p).uniform_``, as a user
would; ``noise="philox"`` draws fastfp's stream (:mod:`fastfp.reference.noise`) so that the output
can be compared exactly with :func:`fastfp.cexamples.generate` (correctness checks).
"""

from __future__ import annotations

import copy
import importlib

import torch
import torch.nn.functional as F


def _highpass():
    """The DCT high-pass a user would pick: the ops area's torch-dct-style baseline if present."""
    for module in ("baselines.dct", "baselines.ops"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in ("highpass_torch_dct", "highpass_fft", "torch_dct_highpass", "highpass"):
            fn = getattr(mod, name, None)
            if callable(fn):
                return fn
    from fastfp.reference.dct import highpass

    return highpass


def _perturbed_copy(model, delta, seed, offset, noise, generator):
    noisy = copy.deepcopy(model).eval()
    with torch.no_grad():
        if noise == "philox":
            from fastfp.reference import noise as ref_noise

            masters = [p.detach() for p in model.parameters()]
            for p, new in zip(noisy.parameters(), ref_noise.perturb(masters, delta, seed, offset)):
                p.copy_(new)
        else:
            for p in noisy.parameters():
                p.add_(torch.empty_like(p).uniform_(-delta, delta, generator=generator))
    return noisy


def eager_generate(model, num, input_shape, num_classes, method="ltrc", k=None, delta=None, q=10,
                   alpha=None, steps=500, eta=1e-6, seed=0, device=None, noise="torch"):
    """Returns (x float32 CPU, labels int64 CPU), same start and targets as fastfp's."""
    from fastfp.cexamples import settings_for
    from fastfp.reference.cexamples import start

    s = settings_for(method, tuple(input_shape), k=k, delta=delta, q=q, alpha=alpha, steps=steps,
                     eta=eta, seed=seed)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    highpass = _highpass()
    x0, labels = start(num, tuple(input_shape), num_classes, s.seed)
    x, y = x0.to(device), labels.to(device)
    g = torch.Generator(device=device).manual_seed(s.seed)
    model.eval()
    active = torch.ones(num, dtype=torch.bool, device=device)
    for t in range(s.steps):
        if s.method != "vanilla" and s.delta > 0:
            if s.eta > 0:
                with torch.no_grad():
                    active &= F.cross_entropy(model(x), y, reduction="none") >= s.eta
            grad = torch.zeros_like(x)
            for c in range(s.q):
                noisy = _perturbed_copy(model, s.delta, s.seed, t * s.q + c, noise, g)
                xg = x.clone().requires_grad_(True)
                loss = F.cross_entropy(noisy(xg), y, reduction="sum")
                grad += torch.autograd.grad(loss, xg)[0]
            grad /= s.q
        else:
            xg = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y, reduction="none")
            grad = torch.autograd.grad(loss.sum(), xg)[0]
            if s.eta > 0:
                active &= loss.detach() >= s.eta
        if not bool(active.any()):
            break
        new = torch.clamp(x - s.alpha * grad.sign(), 0.0, 1.0)
        if s.k > 0:
            new = highpass(new, s.k)
        x = torch.where(active.view(-1, 1, 1, 1), new, x)
    return x.detach().to("cpu", torch.float32), labels


def bare_gradients(model, x, y, q):
    """q x (forward + input gradient) of the unperturbed model: the floor an ltrc step can reach."""
    total = torch.zeros_like(x)
    for _ in range(q):
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        total += torch.autograd.grad(loss, xg)[0]
    return total / q

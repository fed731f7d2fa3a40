"""The weight-noise gradient mean used by rc / rcgm / ltrc, on top of :mod:`fastfp.noise`.

Three ways to the same mean (same noise bits from ``fastfp.noise.perturb``, stream
``offset + c`` for copy ``c``):

- batched (default for ``nn.Module``): the copies' weights are stacked and evaluated in one
  ``torch.func.vmap`` call, ``copies`` at a time: one grouped kernel per layer instead of q, which
  is what pays on small inputs where per-call overhead dominates;
- ``fastfp.noise.grad_mean``'s loop: one copy after the other (when vmap cannot trace the model, or
  ``copies == 1``);
- in place, for TorchScript modules (``functional_call`` refuses them): the noise is written into
  the parameters and the master weights are copied back bit for bit afterwards.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

_NO_VMAP: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()  # models vmap failed on


def grad_mean(model, x, labels, delta, q, seed, offset=0, copies=1):
    from .. import noise

    if isinstance(model, torch.jit.ScriptModule):
        return _grad_mean_in_place(model, x, labels, delta, q, seed, offset)
    if copies > 1 and q > 1 and model not in _NO_VMAP:
        try:
            return _grad_mean_vmap(model, x, labels, delta, q, seed, offset, copies)
        except Exception:  # data-dependent control flow, in-place ops on inputs, ...
            _NO_VMAP.add(model)
    # generate checked the model and labels once: skip the public function's per-step checks
    named = list(model.named_parameters())
    return noise._grad_mean(model, [n for n, _ in named], [p.detach() for _, p in named], x, labels,
                            delta, q, seed, offset)


def _grad_mean_vmap(model, x, labels, delta, q, seed, offset, copies):
    from torch.func import functional_call, grad, vmap

    from .. import noise

    named = list(model.named_parameters())
    names = [n for n, _ in named]
    masters = [p.detach() for _, p in named]

    def loss(weights, xx):
        out = functional_call(model, dict(zip(names, weights)), (xx,))
        return F.cross_entropy(out.float(), labels, reduction="sum")

    per_copy_grad = vmap(grad(loss, argnums=1), in_dims=(0, None))
    total = None
    for first in range(0, q, copies):
        n = min(copies, q - first)
        stacked = [torch.empty((n, *p.shape), dtype=p.dtype, device=p.device) for p in masters]
        for c in range(n):
            noise.perturb(masters, delta, seed, offset + first + c, out=[s[c] for s in stacked])
        g = per_copy_grad(stacked, x.detach()).sum(0)
        total = g if total is None else total.add_(g)
    return total / q


def _grad_mean_in_place(model, x, labels, delta, q, seed, offset):
    from .. import noise

    params = list(model.parameters())
    masters = [p.detach().clone() for p in params]
    xg = x.detach().requires_grad_(True)
    total = None
    try:
        for c in range(q):
            with torch.no_grad():
                noise.perturb(masters, delta, seed, offset + c, out=[p.data for p in params])
            out = model(xg)
            (g,) = torch.autograd.grad(F.cross_entropy(out.float(), labels, reduction="sum"), xg)
            total = g if total is None else total.add_(g)
    finally:
        with torch.no_grad():
            for p, m in zip(params, masters):
                p.copy_(m)
    return total / q

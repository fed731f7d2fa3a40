"""The weight-noise gradient mean used by rc / rcgm / ltrc, from :mod:`fastfp.noise`.

Kept behind one function so the engine does not care which implementation serves it.
``fastfp.noise.grad_mean`` runs the noisy copies through ``torch.func.functional_call``, which
TorchScript modules refuse; for those the same noise is written into the parameters in place and
the master weights are copied back bit for bit afterwards (same draws, same result).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grad_mean(model, x, labels, delta, q, seed, offset=0):
    from .. import noise

    if isinstance(model, torch.jit.ScriptModule):
        return _grad_mean_in_place(model, x, labels, delta, q, seed, offset)
    return noise.grad_mean(model, x, labels, delta, q, seed, offset=offset)


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

"""Functional fused ops: ``highpass`` and ``sign_step`` (validation + dispatch).

Provisional: dispatches to the reference twin until the fast paths land.
"""

from __future__ import annotations

import torch

from . import _validate, backend
from .reference import dct as _ref


def _check_k(k, h: int, w: int) -> int:
    return _validate.integer("k", k, lo=0, hi=max(h + w - 2, 0))


def highpass(x: torch.Tensor, k: int) -> torch.Tensor:
    _validate.tensor("x", x, min_dim=2, floating=True)
    k = _check_k(k, *x.shape[-2:])
    backend.record("highpass", "reference")
    return _ref.highpass(x, k) if k > 0 else x.clone()


def sign_step(x, grad, alpha, k=0, lo=0.0, hi=1.0):
    _validate.tensor("x", x, min_dim=2, floating=True)
    _validate.tensor("grad", grad, floating=True)
    _validate.same_layout("grad", grad, "x", x)
    alpha = _validate.real("alpha", alpha, lo=0.0)
    k = _check_k(k, *x.shape[-2:])
    lo = _validate.real("lo", lo)
    hi = _validate.real("hi", hi, lo=lo)
    backend.record("sign_step", "reference")
    return _ref.sign_step(x, grad, alpha, k, lo, hi)
